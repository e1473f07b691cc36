"""Writes the study's own record, ``<study>/trials.jsonl`` (format and folding:
``study.core.record``), from a Tune callback (public ``ray.tune.Callback``): one line per trial
event, the status decided by the one rule (``study.core.status``).

Local study directories get each line appended as it happens (a killed driver loses at most
the line being written, which readers skip); with URI storage the file is rewritten as one
object at most every ``flush_s`` seconds and whenever a trial ends or Tune returns.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback

from study.core import metrics as M
from study.core.layout import RECORD_FILE, is_file, is_uri, read_text, write_atomic
from study.core.record import RESULT_KEYS, parse
from study.core.status import trial_status


def read_record(sdir: str) -> list[dict]:
    """The events of ``<sdir>/trials.jsonl`` (local or URI; [] if absent)."""
    path = f"{sdir}/{RECORD_FILE}"
    return parse(read_text(path)) if is_file(path) else []


class Recorder(Callback):
    """Appends the trial events of a running study to ``<sdir>/trials.jsonl`` (see the module
    docstring). Tune pickles its callbacks when a study starts and restores them on resume, so
    ``setup`` (called at every start) re-reads what a URI record already holds."""

    def __init__(self, sdir: str, target_epochs: int, flush_s: float = 10.0):
        self.sdir, self.target_epochs, self.flush_s = sdir, target_epochs, flush_s
        self.path = f"{sdir}/{RECORD_FILE}"
        self.uri = is_uri(sdir)
        self.lines: list[str] = []  # URI storage: the whole file, rewritten as one object
        self._last_flush = 0.0

    def setup(self, **info):
        if self.uri:
            self.lines = read_text(self.path).splitlines() if is_file(self.path) else []

    def _write(self, event: dict, force: bool = False) -> None:
        line = json.dumps({**event, "t": round(time.time(), 3)}, default=str)
        if not self.uri:
            with open(self.path, "a") as f:
                f.write(line + "\n")
            return
        self.lines.append(line)
        if force or time.time() - self._last_flush >= self.flush_s:
            write_atomic(self.path, "\n".join(self.lines) + "\n")
            self._last_flush = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        cfg = trial.config
        self._write({"event": "start", "trial_id": trial.trial_id, "cell": cfg.get(M.CELL),
                     "role": cfg.get(M.PHASE), "config": cfg})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._write({"event": "result", "trial_id": trial.trial_id,
                     **{k: result[k] for k in RESULT_KEYS if k in result}})

    def _end(self, trial, error: str | None):
        epoch = int((trial.last_result or {}).get(M.EPOCH) or 0)
        status = trial_status(epoch, self.target_epochs, ended=True, error=bool(error))
        self._write({"event": "end", "trial_id": trial.trial_id, "status": status,
                     M.EPOCH: epoch, "error": error}, force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        err = getattr(trial, "error_file", None)
        msg = "error"
        try:
            if err and Path(err).exists():
                lines = Path(err).read_text().strip().splitlines()
                msg = lines[-1] if lines else msg
        except OSError:
            pass
        self._end(trial, msg)

    def on_experiment_end(self, trials, **info):
        if self.uri and self.lines:
            write_atomic(self.path, "\n".join(self.lines) + "\n")


def record_study_end(sdir: str, interrupted: bool) -> None:
    """After Tune returned (``interrupted``: by Ctrl-C): one ``study`` event, so trials still
    open then read as interrupted, or as ended (e.g. the time budget ran out)."""
    line = json.dumps({"event": "study", "interrupted": interrupted, "t": round(time.time(), 3)})
    path = f"{sdir}/{RECORD_FILE}"
    if not is_uri(sdir):
        with open(path, "a") as f:
            f.write(line + "\n")
        return
    old = read_text(path) if is_file(path) else ""
    write_atomic(path, old + ("" if not old or old.endswith("\n") else "\n") + line + "\n")

