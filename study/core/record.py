"""The study's record, ``<study>/trials.jsonl``: its events and how they fold into one row per
trial (pure: no Ray, no pandas; ``study.recorder`` writes it, the runner's summary and the
analysis read it). One JSON object per line:

  {"event": "start",  "trial_id", "cell", "role", "config", "t"}
  {"event": "result", "trial_id", "epoch", "val_acc", "test_acc", "target_flops", ..., "t"}
  {"event": "end",    "trial_id", "status", "epoch", "error", "t"}
  {"event": "study",  "interrupted": bool, "t"}     (each time Tune returns)

A resumed study appends to the same file: a trial's last ``start`` / ``end`` wins (a trial
errored, then retried on resume and completed, is completed).

A configuration is handed out once per study (its cell, learning rate, seed and phase say which
run it is), so two trial ids with the same configuration mean one run created twice: a driver
stopped or killed after the searcher created a trial and before Tune's next experiment snapshot
forgets that trial, and on ``study resume`` the searcher (restored from the same snapshot) hands
its configuration out again. The later trial is the run; the earlier one is *recreated*
(``recreated``) and left out of the fold.
"""
from __future__ import annotations

import json

from study.core import metrics as M
from study.core.status import COMPLETED, trial_status

RESULT_KEYS = (M.EPOCH, M.VAL_ACC, M.TEST_ACC, M.TARGET_FLOPS, M.SOURCE_FLOPS, M.EPOCH_S,
               M.TEST_S, M.WALL_S, M.SOURCE_KEY, M.REPLAYED)


def parse(text: str) -> list[dict]:
    """The events of a record's text; a cut-off line (a driver killed mid-write) is skipped."""
    out = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    return out


def fold(events: list[dict], target_epochs: int, study_running: bool = False) -> dict:
    """trial_id -> {trial_id, config, cell, role, epoch, the last result's metrics, ended,
    error, status}, the status by the one rule (``study.core.status.trial_status``).

    A ``study`` event (Tune returned) ends the trials still open then: as interrupted when the
    study was interrupted, else as ended without error (e.g. its time budget ran out). Trials
    open after the last ``study`` event are running if ``study_running``, else interrupted (the
    driver was killed)."""
    trials: dict[str, dict] = {}
    for e in events:
        kind, tid = e.get("event"), e.get("trial_id")
        if kind == "study":
            if not e.get("interrupted"):
                for t in trials.values():
                    t["ended"] = True
            continue
        if tid is None:
            continue
        t = trials.setdefault(tid, {"trial_id": tid, "config": {}, "ended": False, "error": None,
                                    "epoch": 0})
        if kind == "start":
            t.update(config=e.get("config") or t["config"], cell=e.get("cell"),
                     role=e.get("role"), ended=False, error=None)
        elif kind == "result":
            t.update({k: e[k] for k in RESULT_KEYS if k in e})
            t["epoch"] = int(e.get(M.EPOCH) or 0)
        elif kind == "end":
            t.update(ended=True, error=e.get("error"))
            t["epoch"] = max(t["epoch"], int(e.get(M.EPOCH) or 0))
    for tid in recreated(events):
        trials.pop(tid, None)
    for t in trials.values():
        t["status"] = trial_status(t["epoch"], target_epochs, ended=t["ended"],
                                   error=bool(t["error"]), study_running=study_running)
    return trials


def config_key(cfg: dict) -> str:
    """A configuration's identity as text (key order and value types aside)."""
    return json.dumps(cfg, sort_keys=True, default=str)


def recreated(events: list[dict]) -> list[str]:
    """Trial ids whose configuration a later-started trial ran again (see the module
    docstring), in the order they started."""
    last: dict[str, str] = {}  # config -> the trial id that started it last
    order: list[str] = []
    for e in events:
        if e.get("event") == "start" and e.get("trial_id") and e.get("config"):
            key = config_key(e["config"])
            if last.get(key) not in (None, e["trial_id"]):
                order.append(last[key])
            last[key] = e["trial_id"]
    live = set(last.values())
    return [t for t in dict.fromkeys(order) if t not in live]


def seed_runs(table: dict) -> dict:
    """cell -> {seed: test_acc} of the completed confirmation runs of each cell (the runs the
    Answer compares: the tuning run that chose the configuration never measures it), from a
    ``fold``ed record. Mode compare; cells without a confirmation trial are left out."""
    out: dict = {}
    for t in table.values():
        c = t.get("config") or {}
        if (t["status"] == COMPLETED and c.get(M.PHASE) == M.PHASE_CONFIRM
                and t.get(M.TEST_ACC) is not None):
            out.setdefault(c[M.CELL], {})[int(c[M.SEED])] = t[M.TEST_ACC]
    return out
