"""Aggregation rules on the trials frame: pure functions (no I/O, no Ray), tested on hand-made rows.

Conventions: accuracy columns are in [0, 1] and maximised; compute columns (FLOPs, seconds) are
minimised. NaN values never win anything.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.load import (COMPLETED, EPOCHS, ERRORED, RUNNING, SOURCE_KEY, STOPPED,
                           TOTAL_FLOPS)
from study.core import metrics as M

# A configuration: what a trial ran, apart from its seed (repeats differ only in the seed).
CONFIG = (M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR)
ALL = "(all)"


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


def aggregate_repeats(trials: pd.DataFrame, metrics=(M.VAL_ACC, M.TEST_ACC),
                      keys=CONFIG, sums=(TOTAL_FLOPS, M.TARGET_FLOPS)) -> pd.DataFrame:
    """One row per configuration: ``<m>_mean``, ``<m>_std`` (sample std; NaN for one seed) and
    ``n`` (trials, i.e. seeds) for each metric; ``<s>_mean`` for the compute columns; the
    trial ids joined by ','. NaN metrics (e.g. test accuracy of a stopped trial) are skipped."""
    keys = list(keys)
    rows = []
    for k, g in trials.groupby(keys, dropna=False, sort=True):
        r = dict(zip(keys, k if isinstance(k, tuple) else (k,)))
        r["n"] = len(g)
        for m in metrics:
            v = g[m].dropna() if m in g else pd.Series(dtype=float)
            r[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
            r[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        for s in sums:
            if s in g:
                r[f"{s}_mean"] = float(g[s].mean())
        r["trial_ids"] = ",".join(map(str, g["trial_id"])) if "trial_id" in g else ""
        rows.append(r)
    cols = keys + ["n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    return pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])


def best_per_group(df: pd.DataFrame, by, metric: str, overall: bool = True) -> pd.DataFrame:
    """The row with the highest ``metric`` in each group of ``by`` (ties: the first row). With
    ``overall``, the last element of ``by`` is also relaxed: one more row per group of the other
    keys, with that column set to "(all)". Groups where the metric is all NaN are left out."""
    by = [by] if isinstance(by, str) else list(by)
    d = df.dropna(subset=[metric])
    out = []
    if len(d):
        idx = d.groupby(by, sort=True)[metric].idxmax()
        out.append(d.loc[idx.values])
        if overall:
            outer = by[:-1]
            if outer:
                ov = d.loc[d.groupby(outer, sort=True)[metric].idxmax().values].copy()
            else:
                ov = d.loc[[d[metric].idxmax()]].copy()
            ov[by[-1]] = ALL
            out.append(ov)
    if not out:
        return d.iloc[0:0].copy()
    res = pd.concat(out, ignore_index=True)
    return res.sort_values(by, key=lambda s: s.astype(str), kind="stable").reset_index(drop=True)


def transfer_gain(trials: pd.DataFrame, metric: str = M.VAL_ACC,
                  by=(M.SPLIT, M.BACKBONE), statuses=None) -> pd.DataFrame:
    """Best transferred (init != scratch) minus best scratch-baseline ``metric`` per group of
    ``by``, plus one row per split over all backbones (backbone "(all)"). ``statuses``: only
    trials with these statuses count (None: all). Columns: the keys, best_transfer,
    best_transfer_init, best_scratch, gain (NaN when a side has no trial)."""
    by = list(by)
    t = trials if statuses is None else trials[trials["status"].isin(statuses)]
    t = t.dropna(subset=[metric])
    groups = [(k, g) for k, g in t.groupby(by, sort=True)]
    if len(by) > 1:
        groups += [((*(k if isinstance(k, tuple) else (k,)), ALL), g)
                   for k, g in t.groupby(by[:-1], sort=True)]
    rows = []
    for k, g in groups:
        k = k if isinstance(k, tuple) else (k,)
        tr, sc = g[g[M.INIT] != "scratch"], g[g[M.INIT] == "scratch"]
        bt = tr.loc[tr[metric].idxmax()] if len(tr) else None
        bs = sc[metric].max() if len(sc) else math.nan
        rows.append({**dict(zip(by, k)),
                     "best_transfer": bt[metric] if bt is not None else math.nan,
                     "best_transfer_init": bt[M.INIT] if bt is not None else None,
                     "best_scratch": bs,
                     "gain": (bt[metric] - bs) if bt is not None else math.nan})
    res = pd.DataFrame(rows, columns=by + ["best_transfer", "best_transfer_init",
                                          "best_scratch", "gain"])
    return res.sort_values(by, key=lambda s: s.astype(str), kind="stable").reset_index(drop=True)


def gain_at_budgets(trials: pd.DataFrame, budgets, x: str = TOTAL_FLOPS,
                    y: str = M.VAL_ACC, by=(M.SPLIT, M.BACKBONE)) -> pd.DataFrame:
    """Transfer gain at equal compute: for each group and budget B, the best ``y`` of the
    transferred trials with ``x`` <= B minus that of the scratch trials with ``x`` <= B (every
    trial counts: a trial ASHA stopped is a real, cheaper run)."""
    by = list(by)
    t = trials.dropna(subset=[x, y])
    rows = []
    for k, g in t.groupby(by, sort=True):
        k = k if isinstance(k, tuple) else (k,)
        for b in budgets:
            w = g[g[x] <= b]
            tr, sc = w.loc[w[M.INIT] != "scratch", y], w.loc[w[M.INIT] == "scratch", y]
            bt = tr.max() if len(tr) else math.nan
            bs = sc.max() if len(sc) else math.nan
            rows.append({**dict(zip(by, k)), "budget": float(b), "best_transfer": bt,
                         "best_scratch": bs, "gain": bt - bs})
    return pd.DataFrame(rows, columns=by + ["budget", "best_transfer", "best_scratch", "gain"])


def budget_grid(values, n: int = 4) -> list[float]:
    """``n`` log-spaced compute budgets from the smallest to the largest positive value."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], float)
    if not len(v):
        return []
    lo, hi = v.min(), v.max()
    if lo == hi:
        return [float(hi)]
    return [float(b) for b in np.geomspace(lo, hi, n)]


def depth_curves(trials: pd.DataFrame, metric: str = M.VAL_ACC) -> pd.DataFrame:
    """Best ``metric`` per (split, backbone, init, frozen_depth) and the number of trials there."""
    keys = [M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH]
    d = trials.dropna(subset=[metric])
    if d.empty:
        return pd.DataFrame(columns=keys + [metric, "n"])
    g = d.groupby(keys, sort=True)[metric]
    return pd.concat([g.max(), g.size().rename("n")], axis=1).reset_index()


def asha_accounting(trials: pd.DataFrame, target_epochs: int, flops: str = M.TARGET_FLOPS,
                    source_flops: str = M.SOURCE_FLOPS) -> dict:
    """Compute actually spent versus an estimate of FIFO (every trial to target_epochs).

    spent: the cumulative target-stage cost column ``flops`` (FLOPs, or seconds with wall_s)
    summed per status, plus each source model's ``source_flops`` once (keyed by
    ``source_key``). FIFO estimate: per trial, its per-epoch cost x target_epochs,
    plus each source model once. Trials that reported no epoch add nothing to either (their
    per-epoch cost is unknown). savings = fifo / spent."""
    t = trials
    spent = {s: float(t.loc[t["status"] == s, flops].fillna(0).sum())
             for s in (COMPLETED, STOPPED, ERRORED, RUNNING)}
    src = t[t[SOURCE_KEY].notna()] if SOURCE_KEY in t else t.iloc[0:0]
    source_total = float(src.drop_duplicates(SOURCE_KEY)[source_flops].fillna(0).sum())
    per_epoch = t[flops] / t[EPOCHS].where(t[EPOCHS] > 0)
    fifo_target = float((per_epoch.fillna(0) * target_epochs).sum())
    total = sum(spent.values()) + source_total
    fifo = fifo_target + source_total
    n = {s: int((t["status"] == s).sum()) for s in (COMPLETED, STOPPED, ERRORED, RUNNING)}
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
