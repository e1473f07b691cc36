"""Per-trial rules of the report: the Pareto frontier, compute spent under early stopping vs FIFO,
the finalists. Pure functions on the trials frame (no I/O, no Ray), tested on hand-made rows.

Conventions: accuracy columns are in [0, 1] and maximised; compute columns (FLOPs, seconds) are
minimised. NaN values never win anything.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.load import EPOCHS, SOURCE_KEY
from study.core import metrics as M
from study.core.status import COMPLETED, REPORTED


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows not dominated in (minimise x, maximise y), sorted by x ascending.

    A row is dominated when another has x <= and y >= with one strict. Of exact duplicates the
    first row is kept. Rows with NaN in x or y are ignored."""
    d = df.dropna(subset=[x, y])
    if d.empty:
        return d.copy()
    d = d.sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for idx, yv in zip(d.index, d[y]):
        if yv > best:
            keep.append(idx)
            best = yv
    return d.loc[keep].copy()


def early_stopping_accounting(trials: pd.DataFrame, target_epochs: int,
                              flops: str = M.TARGET_FLOPS,
                              source_flops: str = M.SOURCE_FLOPS) -> dict:
    """Compute actually spent (under whichever early-stopping rule ran) versus an estimate of
    FIFO (every trial to target_epochs).

    spent: the cumulative target-stage cost column ``flops`` (FLOPs, or seconds with wall_s)
    summed per status, plus each source model's ``source_flops`` once (keyed by
    ``source_key``). FIFO estimate: per trial, its per-epoch cost x target_epochs,
    plus each source model once. Trials that reported no epoch add nothing to either (their
    per-epoch cost is unknown). savings = fifo / spent."""
    t = trials
    spent = {s: float(t.loc[t["status"] == s, flops].fillna(0).sum())
             for s in REPORTED}
    src = t[t[SOURCE_KEY].notna()] if SOURCE_KEY in t else t.iloc[0:0]
    source_total = float(src.drop_duplicates(SOURCE_KEY)[source_flops].fillna(0).sum())
    per_epoch = t[flops] / t[EPOCHS].where(t[EPOCHS] > 0)
    fifo_target = float((per_epoch.fillna(0) * target_epochs).sum())
    total = sum(spent.values()) + source_total
    fifo = fifo_target + source_total
    n = {s: int((t["status"] == s).sum()) for s in REPORTED}
    return {"trials": n, "spent": spent, "source": source_total, "total": total,
            "fifo_target": fifo_target, "fifo": fifo, "sources": int(src[SOURCE_KEY].nunique()),
            "savings": fifo / total if total > 0 else math.nan,
            "epochs_run": int(t[EPOCHS].sum()), "epochs_fifo": int(len(t) * target_epochs)}


def finalists(trials: pd.DataFrame, k: int = 6, metric: str = M.VAL_ACC) -> pd.DataFrame:
    """Up to k trials per split that ran to the end (completed), best ``metric`` first; where a
    split has no completed trial, its trials that ran longest."""
    out = []
    for _, g in trials.groupby(M.SPLIT, sort=True):
        c = g[g["status"] == COMPLETED]
        if c.empty:
            c = g[g[EPOCHS] == g[EPOCHS].max()]
        out.append(c.sort_values(metric, ascending=False, kind="stable").head(k))
    return pd.concat(out) if out else trials.iloc[0:0]
