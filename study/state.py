"""Tune's experiment state file: the one module that reads it, used only by ``study resume``.

Kept recoverable:

Tune (2.60) writes ``experiment_state-<session>.json`` in place (``open``, then ``json.dump``): a
driver killed during that write leaves it empty or cut off, and ``study resume`` would then lose
every trial it lists (seen in the driver-kill test: 1 of 10 trials came back). ``StateBackup``
keeps a copy of the last complete one; ``restore_cut_experiment_state`` puts it back on resume
when the file does not parse. Local study directories only (with ``s3://``/``gs://`` storage Tune
writes the file in a local staging directory and uploads it).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ray.tune import Callback

from study.core.layout import REPORT_AGAIN_FILE, is_uri, write_atomic

STATE_BACKUP_SUFFIX = ".complete"  # experiment_state-<session>.json.complete


def _newest_state(sdir: str) -> Path | None:
    states = sorted(Path(sdir).glob("experiment_state-*.json"))
    return states[-1] if states else None


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def backup_experiment_state(sdir: str) -> None:
    """Keep a copy of the newest experiment state file, if it looks complete. Called on every
    Tune save, so it checks the end of the JSON object (``}``) instead of parsing the whole file
    (28 ms for the quick example's 1.6 MB; the restore parses the copy before using it)."""
    state = _newest_state(sdir)
    if state is not None and (data := state.read_bytes()).rstrip().endswith(b"}"):
        write_atomic(f"{state}{STATE_BACKUP_SUFFIX}", data)


def restore_cut_experiment_state(sdir: str, log=print) -> bool:
    """If the newest experiment state file does not parse, put back its last complete copy. The
    copy may be one save older: a trial that reported in between resumes from its checkpoint.
    Returns whether it restored."""
    state = _newest_state(sdir) if not is_uri(sdir) else None
    if state is None or _parses(state.read_text()):
        return False
    backup = Path(f"{state}{STATE_BACKUP_SUFFIX}")
    if not backup.exists() or not _parses(text := backup.read_text()):
        log(f"{state.name} was cut off when the driver stopped and has no complete copy")
        return False
    write_atomic(state, text)
    log(f"{state.name} was cut off when the driver stopped; restored its last complete copy")
    return True


class StateBackup(Callback):
    """Copies the experiment state file when Tune saves the experiment, at most every
    ``every_s`` seconds: ``get_state`` is Tune's public callback-state hook, called as Tune saves
    (after it has written the state file). Only a copy that looks complete is kept, and the
    restore parses it before use, so correctness does not depend on that order.

    Not at every save: at 672 trials the file is 20 MB and Tune saves it several times a second.
    A copy some seconds old is as good a fallback: ``study resume`` reconciles the restored
    searcher with it (``StudySearcher.reconcile``) and restored trials resume from their newest
    checkpoint on storage (``trainables/resume.py``)."""

    def __init__(self, sdir: str, every_s: float = 10.0):
        self.sdir, self.every_s = sdir, every_s
        self._last = float("-inf")

    def get_state(self) -> dict:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            backup_experiment_state(self.sdir)
            self._last = now
        return {}

    def __getstate__(self):
        return {"sdir": self.sdir, "every_s": self.every_s}

    def __setstate__(self, state):
        self.__init__(state["sdir"], state.get("every_s", 10.0))

    def set_state(self, state: dict) -> None:
        pass


def repair_dangling_checkpoints(sdir: str, log=print) -> list[str]:
    """Tune deletes a trial's oldest kept checkpoint (num_to_keep) a moment before it saves the
    experiment state that points to the new one; a driver killed in between leaves a state that
    points to a deleted checkpoint, and Tune would fail that trial ("does not exist on storage
    anymore"). The newer checkpoint is on disk: put it where the state looks (local storage).
    The trial then resumes after the newer checkpoint's epoch, as the trainable reads its epoch
    from the checkpoint itself; a ``REPORT_AGAIN_FILE`` in it makes the trainable first report
    that epoch's result (saved in the checkpoint), which Tune never received. Returns what was repaired.

    Tune has no public API for this, so it reads the experiment state *file* (JSON: each
    trial's ``relative_logdir`` and ``last_result.checkpoint_dir_name``, written by Ray 2.60);
    anything it does not recognise is logged and skipped: the resume then goes on without the
    repair (a trial caught in that window fails as it would without it)."""
    if is_uri(sdir):
        return []
    states = sorted(Path(sdir).glob("experiment_state-*.json"))
    if not states:
        return []
    fixed = []
    try:
        for trial_json, meta_json in json.loads(states[-1].read_text())["trial_data"]:
            trial, meta = json.loads(trial_json), json.loads(meta_json)
            name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
            if not name or trial.get("status") == "TERMINATED":
                continue
            tdir = Path(sdir) / trial["relative_logdir"]
            missing = tdir / name
            if missing.exists():
                continue
            newer = sorted(d for d in tdir.glob("checkpoint_*") if d.is_dir() and d.name > name)
            if newer:
                # the oldest newer one (with num_to_keep > 1 there may be several): the trial
                # reports its epoch again and recomputes the later ones, so the restored
                # experiment (which saw none of them) misses no epoch
                shutil.copytree(newer[0], missing)
                (missing / REPORT_AGAIN_FILE).touch()  # its result never reached Tune
                fixed.append(f"trial {trial['trial_id']}: its recorded checkpoint {name} was "
                             f"deleted before the driver stopped; resuming from {newer[0].name} "
                             f"(its epoch's result reported again)")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log(f"checkpoint repair skipped: {states[-1].name} is not in the layout this version "
            f"knows (Ray 2.60 layout expected): {type(e).__name__}: {e}")
    return fixed




def tune_trials(sdir: str) -> dict | None:
    """trial id -> {"config", "status", "last_result"} of the newest experiment state file
    (Ray 2.60 layout: ``trial_data`` pairs of trial JSON and run-metadata JSON), for the
    restored searcher to reconcile with (``StudySearcher.reconcile``); None if there is no
    such file or it is not in the layout this version knows (the searcher is then restored as
    saved)."""
    state = _newest_state(sdir) if not is_uri(sdir) else None
    if state is None:
        return None
    try:
        out = {}
        for trial_json, meta_json in json.loads(state.read_text())["trial_data"]:
            trial, meta = json.loads(trial_json), json.loads(meta_json)
            out[trial["trial_id"]] = {"config": trial.get("config") or {},
                                      "status": trial.get("status"),
                                      "last_result": meta.get("last_result") or {}}
        return out
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def prepare_resume(sdir: str, log=print) -> dict | None:
    """Before ``Tuner.restore``: put back a cut-off experiment state, repair checkpoints the
    state points to but Tune deleted a moment before the driver stopped. Returns the trials
    Tune will restore (``tune_trials``)."""
    restore_cut_experiment_state(sdir, log)
    for msg in repair_dangling_checkpoints(sdir, log):
        log(msg)
    return tune_trials(sdir)
