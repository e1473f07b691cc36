"""Read a study directory (local path or storage URI) into two tidy DataFrames.

``trials``: one row per trial — config, status, best/last validation metrics, test metrics,
compute with and without the amortised source-model cost, wall time.
``epochs``: one row per reported epoch (with the trial's config and status).

Both carry the trial's cell (``M.CELL``: "<split>/<backbone>/<init>/d<frozen_depth>", the
compared condition) and phase (``M.PHASE``: "tune", a learning-rate sample inside its cell, or
"confirm", the cell's best configuration trained again with a new seed). Studies written before
cells existed lack both keys: the cell is derived from the four config keys and the phase is
"tune".

Statuses: the one rule of ``study.core.status`` applied to the study's record
(``trials.jsonl``, ``study.core.record``): completed (reached target_epochs), stopped (by the
early-stopping rule), errored, interrupted (the study was interrupted before the trial ended),
running (not ended, and the study has no summary.json yet: running, or its driver was killed).
Studies written before the record existed: a trial has ended when the study has a summary.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from study.core import metrics as M
from study.core.design import cell_id, depth_of

from study.core.layout import filesystem  # noqa: E402
from study.core.layout import (PROVENANCE_FILE, RECORD_FILE, SOURCES_DIR, STUDY_FILE,  # noqa: F401
                               SUMMARY_FILE)
from study.core.record import fold, parse
# the one status vocabulary and rule of the record, progress lines, summary.json and reports
from study.core.status import INTERRUPTED, RUNNING, trial_status
RESULT_FILE = "result.json"
ERROR_FILES = ("error.txt", "error.pkl")

# Derived trial columns (the config and metric names come from study.core.metrics).
BEST_VAL_ACC = "best_val_acc"
BEST_EPOCH = "best_epoch"
SOURCE_KEY = "source_key"
SOURCE_USERS = "source_users"  # trials that used the trial's source model (users.txt)
SOURCE_TRAIN_S = "source_train_s"
SOURCE_FLOPS_AMORTISED = "source_flops_amortised"  # source_flops / source_users
TOTAL_FLOPS = "total_flops"  # target_flops + source_flops_amortised
DEVICE_S = "device_s"  # target-stage seconds (= wall_s)
TOTAL_DEVICE_S = "total_device_s"  # device_s + source train seconds / source_users
EPOCH_FLOPS = "epoch_flops"  # target FLOPs of one epoch (target_flops / epochs)
EPOCHS = "epochs"  # epochs reported
TARGET_EPOCHS = "target_epochs"
ALL_SIZES = 0  # M.SIZE of a run on every training image (no data.target_train_per_class)


class ReportError(Exception):
    """Bad input for a report: not a study, empty study, unreadable results. Names the path."""


@dataclasses.dataclass
class Study:
    path: str
    name: str
    spec: dict
    spec_text: str
    provenance: dict
    summary: dict | None
    sources: dict  # key -> info.json (+ "users": [...])
    trials: pd.DataFrame
    epochs: pd.DataFrame
    target_epochs: int

    @property
    def created(self) -> str:
        return str(self.provenance.get("created", ""))

    @property
    def finished(self) -> bool:
        return self.summary is not None and not (self.trials[M.SPLIT].size and
                                                 (self.trials["status"] == RUNNING).any())

    @property
    def simulated(self) -> bool:
        """A rehearsal (``study run --simulate``): its numbers come from a cost model."""
        return bool(self.provenance.get("simulated")) or bool((self.summary or {}).get("simulated"))

    def target_classes(self, split: str) -> list[str]:
        s = (self.provenance.get("data") or {}).get("splits", {}).get(split) or {}
        return list(s.get("target") or [])


# ----------------------------------------------------------------------------- storage

class _Store:
    """Just enough filesystem for a study, local path or URI alike (``study.core.layout.filesystem``:
    pyarrow.fs for both)."""

    def __init__(self, path: str):
        import pyarrow.fs as pafs

        self.display = str(path)
        self._pafs = pafs
        try:
            self.fs, self.root = filesystem(str(path))
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
            raise ReportError(f"{path}: cannot open storage URI: {e}") from e

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def shown(self, *parts: str) -> str:
        return "/".join([self.display.rstrip("/"), *parts]) if parts else self.display

    def is_dir(self, p: str) -> bool:
        return self.fs.get_file_info(p).type == self._pafs.FileType.Directory

    def is_file(self, p: str) -> bool:
        return self.fs.get_file_info(p).type == self._pafs.FileType.File

    def listdir(self, p: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of the entries of directory p."""
        infos = self.fs.get_file_info(self._pafs.FileSelector(p, allow_not_found=True))
        return sorted((i.base_name, i.type == self._pafs.FileType.Directory) for i in infos)

    def read_text(self, p: str) -> str:
        with self.fs.open_input_stream(p) as f:
            return f.read().decode()


def _read_json(store: _Store, rel: str, required: bool = False):
    p = store.join(*rel.split("/"))
    if not store.is_file(p):
        if required:
            raise ReportError(f"{store.shown(rel)}: missing")
        return None
    try:
        return json.loads(store.read_text(p))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{store.shown(rel)}: unreadable: {e}") from e


# ----------------------------------------------------------------------------- loading

def load_study(path) -> Study:
    """Read a study directory. Raises ReportError (naming the path) for a path that is not a
    study directory, a study with no results yet, or results that cannot be read."""
    store = _Store(str(path))
    if not store.is_dir(store.root):
        raise ReportError(f"{store.shown()}: no such study directory")
    if not store.is_file(store.join(STUDY_FILE)):
        raise ReportError(f"{store.shown()}: not a study directory (no {STUDY_FILE}; "
                          "expected <storage>/<name> as written by `study run`)")
    try:
        spec_text = store.read_text(store.join(STUDY_FILE))
        spec = yaml.safe_load(spec_text)
        if not isinstance(spec, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise ReportError(f"{store.shown(STUDY_FILE)}: unreadable study spec: {e}") from e
    provenance = _read_json(store, PROVENANCE_FILE) or {}
    summary = _read_json(store, SUMMARY_FILE)
    name = str(spec.get("name") or provenance.get("study") or Path(store.root).name)
    target_epochs = spec.get("target_epochs")
    record = _record(store, target_epochs, study_running=summary is None)
    sources = _sources(store)

    records, epoch_rows = [], []
    seen = set()
    for entry, is_dir in store.listdir(store.root):
        if not is_dir or entry == SOURCES_DIR:
            continue
        tdir = store.join(entry)
        names = {n for n, _ in store.listdir(tdir)}
        if not ({RESULT_FILE, "params.json", *ERROR_FILES} & names):
            continue  # not a trial folder (e.g. a report written next to the trials)
        rows = _last_per_epoch(_read_results(store, entry)) if RESULT_FILE in names else []
        params = _read_json(store, f"{entry}/params.json") if "params.json" in names else None
        trial_id = (rows[-1].get("trial_id") if rows else None) or entry.split("_", 1)[0]
        seen.add(trial_id)
        err = None
        if "error.txt" in names:
            try:
                err = store.read_text(store.join(entry, "error.txt")).strip().splitlines()
                err = err[-1] if err else "error"
            except (OSError, UnicodeDecodeError):
                err = "error (error.txt unreadable)"
        elif "error.pkl" in names:
            err = "error (see error.pkl)"
        rec = record.get(trial_id)
        records.append(dict(trial_id=trial_id, trial_dir=entry, rows=rows,
                            config=(rows[-1].get("config") if rows else None) or params
                            or (rec or {}).get("config") or {},
                            error=err or (rec or {}).get("error"), record=rec))
    for trial_id, rec in record.items():  # trials that started but have no folder yet
        if trial_id not in seen:
            records.append(dict(trial_id=trial_id, trial_dir=None, rows=[],
                                config=rec.get("config") or {}, error=rec.get("error"),
                                record=rec))
    if not records or not any(r["rows"] for r in records):
        raise ReportError(f"{store.shown()}: empty study: no trial has reported a result yet")

    if not isinstance(target_epochs, int) or target_epochs < 1:
        target_epochs = max(int(r["rows"][-1].get(M.EPOCH, 0)) for r in records if r["rows"])
    users = {t: k for k, info in sources.items() for t in info.get("users", [])}

    trials = []
    for r in records:
        row = _trial_row(r, target_epochs, summary is not None, sources, users)
        trials.append(row)
        for e in r["rows"]:
            epoch_rows.append({"trial_id": row["trial_id"],
                               **{k: row[k] for k in (M.SPLIT, M.SIZE, M.BACKBONE, M.INIT,
                                                      M.FROZEN_DEPTH,
                                                      M.LR, M.SEED, M.CELL, M.PHASE, "status")},
                               **{k: e.get(k) for k in M.PER_EPOCH if k not in (
                                   M.TRAINABLE_PARAMS, M.TOTAL_PARAMS)}})
    tdf = pd.DataFrame(trials)
    _fill_source_users(tdf)
    tdf = tdf.sort_values([M.SPLIT, M.SIZE, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, "trial_id"],
                          na_position="last", kind="stable").reset_index(drop=True)
    edf = pd.DataFrame(epoch_rows)
    if len(edf):
        edf = edf.sort_values(["trial_id", M.EPOCH], kind="stable").reset_index(drop=True)
    return Study(path=store.display, name=name, spec=spec, spec_text=spec_text,
                 provenance=provenance, summary=summary, sources=sources, trials=tdf,
                 epochs=edf, target_epochs=int(target_epochs))


def _last_per_epoch(rows: list[dict]) -> list[dict]:
    """One row per epoch, the last reported (a trial resumed from a checkpoint older than its
    last report trains those epochs again, e.g. after Ctrl-C or a driver kill; a retried trial
    without a checkpoint starts over), in epoch order."""
    last = {}
    for i, r in enumerate(rows):
        last[r.get(M.EPOCH, f"#{i}")] = r
    return sorted(last.values(), key=lambda r: (r.get(M.EPOCH) is None, r.get(M.EPOCH) or 0))


def _read_results(store: _Store, entry: str) -> list[dict]:
    rel = f"{entry}/{RESULT_FILE}"
    try:
        text = store.read_text(store.join(entry, RESULT_FILE))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{store.shown(rel)}: unreadable: {e}") from e
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # a line still being written by a running trial
            raise ReportError(f"{store.shown(rel)}: unreadable results: line {i}: {e}") from e
        rows.append(d)
    return rows


def _record(store: _Store, target_epochs, study_running: bool) -> dict:
    """trial_id -> the trial folded from the study's record (``trials.jsonl``; {} for studies
    written before it existed)."""
    if not store.is_file(store.join(RECORD_FILE)) or not isinstance(target_epochs, int):
        return {}
    try:
        return fold(parse(store.read_text(store.join(RECORD_FILE))), target_epochs, study_running)
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{store.shown(RECORD_FILE)}: unreadable: {e}") from e


def _sources(store: _Store) -> dict:
    d = store.join(SOURCES_DIR)
    if not store.is_dir(d):
        return {}
    out = {}
    for key, is_dir in store.listdir(d):
        if not is_dir:
            continue
        info = _read_json(store, f"{SOURCES_DIR}/{key}/info.json") or {}
        users_p = store.join(SOURCES_DIR, key, "users.txt")
        users = store.read_text(users_p).split() if store.is_file(users_p) else []
        out[key] = {**info, "users": users}
    return out


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def size_key(size) -> int:
    """A run's target size as the frames hold it: images per target class, ``ALL_SIZES`` (0)
    for a run on every training image (the spec set no size; older studies)."""
    try:
        v = int(size)
    except (TypeError, ValueError):
        return ALL_SIZES
    return v if v > 0 else ALL_SIZES


def cell_of(split, backbone, init, frozen_depth, size=None) -> str | None:
    """The cell name "<split>[/n<size>]/<backbone>/<init>/d<frozen_depth>" (None if a key is
    missing). Scratch trains every stage, so its depth is 0 whatever the config says."""
    if any(v is None or (isinstance(v, float) and math.isnan(v))
           for v in (split, backbone, init)):
        return None
    try:
        return cell_id(split, backbone, init, frozen_depth, size_key(size) or None)
    except (TypeError, ValueError):
        return None


def _trial_row(r: dict, target_epochs: int, study_ended: bool, sources: dict,
               users: dict) -> dict:
    rows, cfg = r["rows"], dict(r["config"] or {})
    last = rows[-1] if rows else {}
    epochs = int(last.get(M.EPOCH, 0) or 0)
    rec = r["record"]
    if rec is not None:  # the record knows how the trial ended (or that it has not)
        status = trial_status(max(epochs, rec["epoch"]), target_epochs, ended=rec["ended"],
                              error=bool(rec["error"]) or (bool(r["error"]) and rec["ended"]),
                              study_running=not study_ended)
    else:
        status = trial_status(epochs, target_epochs, ended=study_ended or bool(r["error"]),
                              error=bool(r["error"]), study_running=True)
    vals = [_num(e.get(M.VAL_ACC)) for e in rows]
    best_i = int(np.nanargmax(vals)) if rows and not all(map(math.isnan, vals)) else None
    key = (rows[-1].get(M.SOURCE_KEY) if rows else None) or users.get(r["trial_id"])  # reported by the trial; users.txt for older studies
    src = sources.get(key, {}) if key else {}
    row = {
        "trial_id": r["trial_id"], "status": status,
        M.SPLIT: cfg.get(M.SPLIT), M.SIZE: size_key(cfg.get(M.SIZE)),
        M.BACKBONE: cfg.get(M.BACKBONE), M.INIT: cfg.get(M.INIT),
        M.FROZEN_DEPTH: depth_of(cfg.get(M.INIT), cfg.get(M.FROZEN_DEPTH)),
        M.LR: _num(cfg.get(M.LR)),
        # the effective seed (repeats shift it), as the trial reported it
        M.SEED: last.get(M.SEED, cfg.get(M.SEED)),
        M.REPEAT: cfg.get(M.REPEAT, 0),
        # cell and phase: from the config; derived for studies written before cells existed
        M.CELL: cfg.get(M.CELL) or cell_of(cfg.get(M.SPLIT), cfg.get(M.BACKBONE),
                                           cfg.get(M.INIT), cfg.get(M.FROZEN_DEPTH),
                                           cfg.get(M.SIZE)),
        M.PHASE: cfg.get(M.PHASE) or M.PHASE_TUNE,
        EPOCHS: epochs, TARGET_EPOCHS: target_epochs,
        BEST_VAL_ACC: vals[best_i] if best_i is not None else math.nan,
        BEST_EPOCH: rows[best_i].get(M.EPOCH) if best_i is not None else None,
        M.VAL_ACC: _num(last.get(M.VAL_ACC)), M.VAL_LOSS: _num(last.get(M.VAL_LOSS)),
        M.TRAIN_LOSS: _num(last.get(M.TRAIN_LOSS)),
        M.TEST_ACC: _num(last.get(M.TEST_ACC)), M.TEST_PRECISION: _num(last.get(M.TEST_PRECISION)),
        M.TEST_RECALL: _num(last.get(M.TEST_RECALL)), M.TEST_F1: _num(last.get(M.TEST_F1)),
        M.TARGET_FLOPS: _num(last.get(M.TARGET_FLOPS, 0.0 if not rows else None)),
        M.SOURCE_FLOPS: _num(last.get(M.SOURCE_FLOPS, src.get("flops", 0.0))),
        M.SOURCE_SHARED_BY: _num(last.get(M.SOURCE_SHARED_BY)),
        SOURCE_KEY: key, SOURCE_USERS: len(src.get("users", [])) if key else math.nan,
        SOURCE_TRAIN_S: _num(src.get("train_s")) if key else math.nan,
        M.SOURCE_VAL_ACC: _num(last.get(M.SOURCE_VAL_ACC)),
        M.WALL_S: _num(last.get(M.WALL_S, 0.0 if not rows else None)),
        M.TRAINABLE_PARAMS: last.get(M.TRAINABLE_PARAMS), M.TOTAL_PARAMS: last.get(M.TOTAL_PARAMS),
        "error": r["error"], "trial_dir": r["trial_dir"],
        M.TEST_CONFUSION: json.dumps(last[M.TEST_CONFUSION]) if M.TEST_CONFUSION in last else None,
        M.TEST_PER_CLASS: json.dumps(last[M.TEST_PER_CLASS]) if M.TEST_PER_CLASS in last else None,
    }
    row[EPOCH_FLOPS] = row[M.TARGET_FLOPS] / epochs if epochs else math.nan
    return row


def _fill_source_users(t: pd.DataFrame) -> None:
    """Amortised source cost = source FLOPs / trials that used that source model. Without the
    sources folder (URI storage keeps it node-local), count the trials per (split, backbone,
    seed) that report a source cost."""
    uses_source = (t[M.INIT] == "source") & (t[M.SOURCE_FLOPS].fillna(0) > 0)
    missing = uses_source & t[SOURCE_KEY].isna()
    if missing.any():
        key = (t[M.SPLIT].astype(str) + "/" + t[M.BACKBONE].astype(str) + "/s"
               + t[M.SEED].astype(str))
        t.loc[missing, SOURCE_KEY] = "inferred:" + key[missing]
        counts = t.loc[uses_source].groupby(SOURCE_KEY)["trial_id"].transform("count")
        t.loc[missing, SOURCE_USERS] = np.maximum(
            counts[missing].astype(float), t.loc[missing, M.SOURCE_SHARED_BY].fillna(1))
    users = t[SOURCE_USERS].where(uses_source).fillna(1).clip(lower=1)
    t[SOURCE_FLOPS_AMORTISED] = np.where(uses_source, t[M.SOURCE_FLOPS].fillna(0) / users, 0.0)
    t.loc[~uses_source, M.SOURCE_FLOPS] = t.loc[~uses_source, M.SOURCE_FLOPS].fillna(0.0)
    t[TOTAL_FLOPS] = t[M.TARGET_FLOPS] + t[SOURCE_FLOPS_AMORTISED]
    t[DEVICE_S] = t[M.WALL_S]
    t[TOTAL_DEVICE_S] = t[M.WALL_S] + np.where(
        uses_source, t[SOURCE_TRAIN_S].fillna(0) / users, 0.0)
    t["incomplete"] = t["status"].isin([RUNNING, INTERRUPTED])
