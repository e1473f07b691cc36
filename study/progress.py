"""Progress lines for a running study (a Tune callback; Tune's own table is turned off)."""
from __future__ import annotations

import time

from ray.tune import Callback

from study.core import metrics as M
from study.core.status import COMPLETED, ERRORED, RUNNING, STOPPED, trial_status


class Progress(Callback):
    """One line per trial state change (and at most every ``every_s`` seconds on results):
    trials running/completed/stopped/errored, cells with a completed run, the best validation
    accuracy so far, and the compute spent (target FLOPs of every trial + each distinct source
    model once, keyed by the source key the trial reports)."""

    def __init__(self, max_epochs: int, num_cells: int = 0, every_s: float = 15.0):
        self.max_epochs, self.num_cells, self.every_s = max_epochs, num_cells, every_s
        self.t0 = time.time()
        self.last_print = 0.0
        self.best = (float("-inf"), None)
        self.flops: dict[str, float] = {}
        self.sources: dict[str, float] = {}
        self.state: dict[str, str] = {}
        self.cells_done: set[str] = set()

    def _line(self, force: bool = False):
        now = time.time()
        if not force and now - self.last_print < self.every_s:
            return
        self.last_print = now
        states = list(self.state.values())
        counts = {k: states.count(k) for k in (RUNNING, COMPLETED, STOPPED, ERRORED)}
        compute = sum(self.flops.values()) + sum(self.sources.values())
        best = f"{self.best[0]:.3f} ({self.best[1]})" if self.best[1] else "-"
        cells = f" | cells done {len(self.cells_done)}/{self.num_cells}" if self.num_cells else ""
        print(f"[{now - self.t0:6.0f}s] trials: {counts[RUNNING]} running, "
              f"{counts[COMPLETED]} completed, {counts[STOPPED]} stopped early, "
              f"{counts[ERRORED]} errored{cells} | best {M.VAL_ACC} {best} | compute "
              f"{compute:.3g} FLOP", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.state[trial.trial_id] = RUNNING
        self._line(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(M.VAL_ACC, float("-inf")) > self.best[0]:
            self.best = (result[M.VAL_ACC], trial.trial_id)
        self.flops[trial.trial_id] = result.get(M.TARGET_FLOPS, 0.0)
        if result.get(M.SOURCE_KEY):
            self.sources[result[M.SOURCE_KEY]] = result.get(M.SOURCE_FLOPS, 0.0)
        self._line()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, error=True)

    def _end(self, trial, error: bool):
        epochs = (trial.last_result or {}).get(M.EPOCH, 0)
        st = self.state[trial.trial_id] = trial_status(epochs, self.max_epochs, ended=True, error=error)
        if st == COMPLETED and trial.config.get(M.CELL):
            self.cells_done.add(trial.config[M.CELL])
        self._line(force=True)
