"""Tune's experiment state file, kept recoverable.

Tune (2.60) writes ``experiment_state-<session>.json`` in place (``open``, then ``json.dump``): a
driver killed during that write leaves it empty or cut off, and ``study resume`` would then lose
every trial it lists (seen in the driver-kill test: 1 of 10 trials came back). ``StateBackup``
keeps a copy of the last complete one; ``restore_cut_experiment_state`` puts it back on resume
when the file does not parse. Local study directories only (with ``s3://``/``gs://`` storage Tune
writes the file in a local staging directory and uploads it).
"""
from __future__ import annotations

import json
from pathlib import Path

from ray.tune import Callback

from study.core.layout import is_uri, write_atomic

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
    """Copies the experiment state file whenever Tune saves the experiment: ``get_state`` is
    Tune's public callback-state hook, called as Tune saves (after it has written the state
    file). Only a copy that looks complete is kept, and the restore parses it before use, so
    correctness does not depend on that order."""

    def __init__(self, sdir: str):
        self.sdir = sdir

    def get_state(self) -> dict:
        backup_experiment_state(self.sdir)
        return {}

    def set_state(self, state: dict) -> None:
        pass
