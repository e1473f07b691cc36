"""Early stopping inside a cell (mode best: a split), as a Tune scheduler built on Tune's public
``FIFOScheduler``; the rules are the pure functions of ``study.policy``.

Only tuning trials are ever stopped: confirmation trials (``phase: confirm``) run to
``target_epochs``. The rung records are plain data (``state()`` / ``load_state()``); Tune pickles a
scheduler only when a study starts, so ``RungState``, a Tune callback whose state Tune saves with
every experiment checkpoint, carries them across ``study resume``.
"""
from __future__ import annotations

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study import policy
from study.core import metrics as M


class CellScheduler(FIFOScheduler):
    """``rule``: 'halving' or 'asha' (see study.policy); ``group_sizes``: tuning trials per group
    (cell id, or split in mode best); ``group_key``: config key naming the group."""

    def __init__(self, *, rule: str, group_key: str, group_sizes: dict, grace: int, rf: float,
                 max_t: int, metric: str = M.OBJECTIVE, mode: str = M.MODE,
                 time_attr: str = M.EPOCH):
        super().__init__()
        if mode != "max":
            raise ValueError("CellScheduler maximises its metric")
        self.rule, self.group_key, self.rf = rule, group_key, rf
        self.score_metric, self.time_attr = metric, time_attr
        self.ms = policy.milestones(grace, rf, max_t)
        self.sizes = dict(group_sizes)
        self.keep = {g: policy.keep_counts(n, rf, len(self.ms)) for g, n in group_sizes.items()}
        self.rungs: dict[str, dict[int, dict[str, float]]] = {}
        self.num_stopped = 0

    # Tune's scheduler interface (public: ray.tune.schedulers.TrialScheduler)
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        cfg = trial.config
        if cfg.get(M.PHASE) == M.PHASE_CONFIRM or self.score_metric not in result:
            return TrialScheduler.CONTINUE
        g = str(cfg.get(self.group_key))
        rungs = self.rungs.setdefault(g, {})
        t, score, tid = int(result[self.time_attr]), float(result[self.score_metric]), trial.trial_id
        if self.rule == "asha":
            stop = False
            for m in self.ms:
                if t >= m and tid not in rungs.setdefault(m, {}):
                    before = dict(rungs[m])
                    rungs[m][tid] = score
                    stop = stop or policy.asha_stops(before, score, self.rf)
        else:
            policy.record(rungs, tid, t, score, self.ms)
            n = self.sizes.get(g, 1)
            stop = policy.halving_stops(rungs, tid, self.keep.get(g) or policy.keep_counts(
                n, self.rf, len(self.ms)), self.ms, n)
        if stop:
            self.num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_error(self, tune_controller, trial) -> None:
        # An errored trial's scores no longer rule anyone out (it will never complete).
        for rungs in self.rungs.values():
            for rec in rungs.values():
                rec.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"CellScheduler({self.rule}): {self.num_stopped} stopped"

    # plain-data state (RungState)
    def state(self) -> dict:
        return {"rule": self.rule, "milestones": self.ms, "num_stopped": self.num_stopped,
                "rungs": {g: {str(m): dict(rec) for m, rec in r.items()}
                          for g, r in self.rungs.items()}}

    def load_state(self, state: dict) -> None:
        if state["milestones"] != self.ms or state["rule"] != self.rule:
            raise ValueError(f"saved rungs ({state['rule']} at {state['milestones']}) do not match "
                             f"this scheduler ({self.rule} at {self.ms})")
        self.rungs = {g: {int(m): dict(rec) for m, rec in r.items()}
                      for g, r in state["rungs"].items()}
        self.num_stopped = state["num_stopped"]


class RungState(Callback):
    """Saves the scheduler's rung records with Tune's experiment state; restores them on resume
    (``Callback.get_state`` / ``set_state``: Tune's public callback-state hooks)."""

    def __init__(self, scheduler: CellScheduler):
        self.scheduler = scheduler
        self.restored: dict | None = None  # what a resume loaded (for logs and tests)

    def get_state(self) -> dict | None:
        return {"rungs": self.scheduler.state()}

    def set_state(self, state: dict) -> None:
        self.scheduler.load_state(state["rungs"])
        self.restored = state["rungs"]
        counts = {}
        for r in state["rungs"]["rungs"].values():
            for m, rec in r.items():
                counts[int(m)] = counts.get(int(m), 0) + len(rec)
        text = ", ".join(f"epoch {m}: {n}" for m, n in sorted(counts.items()))
        print(f"rung records restored ({text or 'none yet'})", flush=True)
