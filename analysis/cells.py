"""Cells compared fairly: pure functions on the trials frame (no I/O, no Ray), tested on hand-made
rows in tests/test_analysis_cells.py.

A *cell* is one (split, backbone, init, frozen_depth) combination (``M.CELL``). Inside a cell
only the learning rate is tuned (phase "tune"); the cell's best configuration is then trained
again with k more seeds (phase "confirm"). A cell's *runs* are the completed trials of its chosen
configuration (``cell_runs``); every statistic here is computed over those runs only. Trials that
early stopping stopped, that errored or that are still running never count: they did not train
for the same number of epochs, so their accuracies are not comparable. They stay visible in the
per-trial scatter data (``scatter_points``).

Statistics, for a cell with runs x_1..x_n of the metric (accuracy in [0, 1]):
  mean  m = sum(x_i) / n
  std   s = sqrt(sum((x_i - m)^2) / (n - 1))                  (NaN for n = 1)
  95 % confidence half-width  h = t(0.975, n - 1) * s / sqrt(n)   (NaN for n = 1)
Two cells a, b (Welch, unequal variances):
  difference d = m_a - m_b, standard error se = sqrt(s_a^2/n_a + s_b^2/n_b),
  degrees of freedom  df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))
  95 % CI  d ± t(0.975, df) * se,  statistic T = d / se,
  p (two-sided) = 2 * P(t_df > |T|),  p (one-sided, H1: m_a < m_b) = P(t_df < T).
Both need n >= 2 on each side; otherwise they are NaN. Two cells paired by seed (``paired``: runs
with the same seed share the data order and augmentation draws, in one split x backbone x init
also the source model and the head's initialisation), over the n seeds both have:
  d_s = a_s - b_s,  difference d = mean(d_s),  se = sd(d_s) / sqrt(n),  df = n - 1,
  95 % CI  d ± t(0.975, df) * se,  T = d / se, p as above;  NaN for n < 2.
Depths of one split x backbone x init are compared paired, per seed (``depth_answer``:
``study.core.stats``, the rule the racing uses too); the transfer gain over the scratch cell is
paired too (same seeds, same data order), Welch where the two cells share fewer than 2 seeds;
studies side by side are compared with Welch (their runs are not paired).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.frontier import pareto_front
from analysis.load import ALL_SIZES, DEVICE_S, TOTAL_FLOPS, cell_of, size_key
from study.core import metrics as M
from study.core.design import SCRATCH
from study.core.status import COMPLETED, REPORTED

CELL_KEYS = (M.SPLIT, M.SIZE, M.BACKBONE, M.INIT, M.FROZEN_DEPTH)
GROUP_KEYS = [M.SPLIT, M.SIZE, M.BACKBONE, M.INIT]  # an answer group: its depths compared
LEVEL = 0.95  # confidence level of every interval
ROLE = "role"  # in cell_runs: "selected" (the tune trial that chose the lr), "tune" or "confirm"


# ----------------------------------------------------------------------------- statistics

def ci_halfwidth(std: float, n: int, level: float = LEVEL) -> float:
    """Half-width of the t confidence interval of a mean: t((1+level)/2, n-1) * std / sqrt(n).
    NaN for n < 2 (one run says nothing about the spread)."""
    if n is None or n < 2 or std is None or not np.isfinite(std):
        return math.nan
    return float(stats.t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n))


def welch(mean_a, std_a, n_a, mean_b, std_b, n_b, level: float = LEVEL) -> dict:
    """Welch's comparison of two means from summary statistics (a minus b), see the module
    docstring: diff, se, df, lo, hi (CI of the difference at ``level``), t, p (two-sided),
    p_less (one-sided, H1: mean_a < mean_b). All but diff are NaN when n_a < 2 or n_b < 2.
    With se = 0 (no spread on either side) the CI is [diff, diff] and the p-values are 0 or 1."""
    diff = float(mean_a - mean_b)
    out = dict(diff=diff, se=math.nan, df=math.nan, lo=math.nan, hi=math.nan, t=math.nan,
               p=math.nan, p_less=math.nan)
    if n_a is None or n_b is None or n_a < 2 or n_b < 2 or not np.isfinite(diff):
        return out
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if se > 0 else math.nan
    return _t_result(diff, se, df, level)


def paired(a: dict, b: dict, level: float = LEVEL) -> dict:
    """Two cells' runs compared seed by seed (a minus b; ``a``, ``b``: seed -> value, e.g.
    ``seed_accuracies``), over the seeds both have, see the module docstring: the keys of
    ``welch`` plus n_pairs. All but diff are NaN when fewer than 2 seeds are shared (diff too
    when none is)."""
    common = sorted(set(a) & set(b), key=str)
    d = np.array([a[s] - b[s] for s in common], dtype=float)
    n = len(d)
    diff = float(d.mean()) if n else math.nan
    if n < 2 or not np.isfinite(diff):
        return dict(diff=diff, se=math.nan, df=math.nan, lo=math.nan, hi=math.nan, t=math.nan,
                    p=math.nan, p_less=math.nan, n_pairs=n)
    se = 0.0 if np.all(d == d[0]) else float(d.std(ddof=1) / math.sqrt(n))
    return {**_t_result(diff, se, float(n - 1), level), "n_pairs": n}


def _t_result(diff: float, se: float, df: float, level: float) -> dict:
    """CI, t and p-values of a difference with standard error ``se`` and ``df`` degrees of
    freedom. se = 0 (no spread): the CI is [diff, diff], the p-values 0 or 1."""
    if se == 0:
        return dict(diff=diff, se=0.0, df=df, lo=diff, hi=diff,
                    t=math.copysign(math.inf, diff) if diff else 0.0,
                    p=1.0 if diff == 0 else 0.0, p_less=0.0 if diff < 0 else 1.0)
    tq = stats.t.ppf((1 + level) / 2, df)
    t = diff / se
    return dict(diff=diff, se=se, df=float(df), lo=diff - tq * se, hi=diff + tq * se, t=t,
                p=float(2 * stats.t.sf(abs(t), df)), p_less=float(stats.t.cdf(t, df)))


# ----------------------------------------------------------------------------- runs

def with_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``trials`` with ``M.CELL`` and ``M.PHASE`` filled in where missing (frames of
    old studies, or hand-made ones): cell from the four keys, phase "tune"."""
    t = trials.copy()
    t[M.SIZE] = [size_key(x) for x in t[M.SIZE]] if M.SIZE in t else ALL_SIZES
    if M.CELL not in t:
        t[M.CELL] = None
    if M.PHASE not in t:
        t[M.PHASE] = None
    miss = t[M.CELL].isna()
    if miss.any():
        keys = [M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.SIZE]
        t.loc[miss, M.CELL] = [cell_of(*k) for k in t.loc[miss, keys].itertuples(index=False)]
    t[M.PHASE] = t[M.PHASE].fillna(M.PHASE_TUNE)
    return t


def _same_lr(a: pd.Series, lr: float) -> pd.Series:
    return pd.Series(np.isclose(a.astype(float), lr, rtol=1e-9, atol=0.0), index=a.index)


def cell_runs(trials: pd.DataFrame, select: str = M.VAL_ACC) -> pd.DataFrame:
    """The runs that count, per cell: completed trials of the cell's chosen configuration
    that took no part in choosing it.

    A cell with completed confirm trials: those (fresh seeds of the chosen learning rate, the
    most frequent one should they differ). The tune trial that chose the learning rate is left
    out: its test accuracy belongs to the best of several learning rates on its own noise, so it
    is optimistic (more so in cells with a flat optimum). A cell without a completed confirm
    trial (a smoke run, mode best's other cells, a study without a confirm phase): the tune
    trial(s) of the learning rate with the best mean ``select`` (validation accuracy), role
    "selected", one run, so nothing about it can be decided. Stopped, errored and running
    trials never count; a cell without a completed trial has no runs.

    Returns those rows of ``trials`` (all columns, cell and phase filled in) plus ``role``:
    "selected" (tune trial with the chosen lr) or "confirm"."""
    t = with_cells(trials)
    done = t[(t["status"] == COMPLETED) & t[M.CELL].notna() & t[M.LR].notna()]
    parts = []
    for _, g in done.groupby(M.CELL, sort=True):
        conf = g[g[M.PHASE] == M.PHASE_CONFIRM]
        if len(conf):
            lr = float(conf[M.LR].astype(float).value_counts(sort=True).index[0])
        else:
            by_lr = g.groupby(M.LR, sort=True)[select].mean().dropna()
            if by_lr.empty:
                continue
            lr = float(by_lr.idxmax())
        r = (conf if len(conf) else g)
        r = r[_same_lr(r[M.LR], lr)].copy()
        r[ROLE] = np.where(r[M.PHASE] == M.PHASE_CONFIRM, M.PHASE_CONFIRM, "selected")
        parts.append(r)
    if not parts:
        return t.iloc[0:0].assign(**{ROLE: pd.Series(dtype=object)})
    out = pd.concat(parts)
    order = (out[ROLE] == M.PHASE_CONFIRM).astype(int)  # the selecting tune trial first
    return (out.assign(_o=order).sort_values([M.CELL, "_o", "trial_id"], kind="stable")
            .drop(columns="_o"))


def cell_summary(runs: pd.DataFrame, metric: str = M.TEST_ACC,
                 level: float = LEVEL) -> pd.DataFrame:
    """One row per cell of ``runs`` (from ``cell_runs``): the cell keys, cell, lr, n (runs with
    a value of ``metric``), mean, std (ddof=1; NaN for n=1), ci (the t interval's half-width at
    ``level``, see ``ci_halfwidth``; NaN for n=1), lo / hi (mean ∓ ci), and the means over the
    runs of target_flops, total_flops (target + amortised source) and device_s; trial_ids joined
    by ','. ``metric`` names the metric. Cells where no run has the metric are left out."""
    cols = (list(CELL_KEYS) + [M.CELL, M.LR, "n", "mean", "std", "ci", "lo", "hi",
                                M.TARGET_FLOPS, TOTAL_FLOPS, DEVICE_S, "trial_ids", "metric"])
    rows = []
    for cell, g in runs.groupby(M.CELL, sort=True):
        v = g[metric].astype(float).dropna()
        if v.empty:
            continue
        n, mean = len(v), float(v.mean())
        std = float(v.std(ddof=1)) if n > 1 else math.nan
        ci = ci_halfwidth(std, n, level)
        first = g.iloc[0]
        rows.append({**{k: first[k] for k in CELL_KEYS}, M.CELL: cell, M.LR: float(first[M.LR]),
                     "n": n, "mean": mean, "std": std, "ci": ci, "lo": mean - ci,
                     "hi": mean + ci,
                     **{c: float(g[c].astype(float).mean()) if c in g else math.nan
                        for c in (M.TARGET_FLOPS, TOTAL_FLOPS, DEVICE_S)},
                     "trial_ids": ",".join(map(str, g["trial_id"])) if "trial_id" in g else "",
                     "metric": metric})
    return pd.DataFrame(rows, columns=cols)


def cell_coverage(trials: pd.DataFrame, runs: pd.DataFrame | None = None,
                  cells: list | None = None) -> pd.DataFrame:
    """Per cell: tune trials and how they ended (completed / stopped / errored / running),
    confirm trials and how many completed, the runs that count (``cell_runs``) and the chosen
    lr. A cell with 0 runs has no completed trial of its chosen configuration. ``cells``: the
    study design's cells (``study.core.design.Cell``), so a cell no trial has reached yet is
    listed too (with zeros); None: the cells the trials name."""
    t = with_cells(trials)
    runs = cell_runs(t) if runs is None else runs
    nrun = runs.groupby(M.CELL).size() if len(runs) else pd.Series(dtype=int)
    lr = runs.groupby(M.CELL)[M.LR].first() if len(runs) else pd.Series(dtype=float)
    rows = []
    for cell, g in t[t[M.CELL].notna()].groupby(M.CELL, sort=True):
        tune, conf = g[g[M.PHASE] != M.PHASE_CONFIRM], g[g[M.PHASE] == M.PHASE_CONFIRM]
        first = g.iloc[0]
        rows.append({**{k: first[k] for k in CELL_KEYS}, M.CELL: cell, "tune trials": len(tune),
                     **{f"tune {s}": int((tune["status"] == s).sum())
                        for s in REPORTED},
                     "confirm trials": len(conf),
                     "confirm completed": int((conf["status"] == COMPLETED).sum()),
                     "runs": int(nrun.get(cell, 0)), M.LR: lr.get(cell, math.nan)})
    seen = {r[M.CELL] for r in rows}
    for c in cells or []:
        if c.id not in seen:
            rows.append({M.SPLIT: c.split, M.SIZE: size_key(c.size), M.BACKBONE: c.backbone,
                         M.INIT: c.init,
                         M.FROZEN_DEPTH: c.depth, M.CELL: c.id, "tune trials": 0,
                         **{f"tune {s}": 0 for s in REPORTED}, "confirm trials": 0,
                         "confirm completed": 0, "runs": 0, M.LR: math.nan})
    rows.sort(key=lambda r: (str(r[M.SPLIT]), r[M.SIZE], r[M.CELL]))
    cols = (list(CELL_KEYS) + [M.CELL, "tune trials"]
            + [f"tune {s}" for s in REPORTED]
            + ["confirm trials", "confirm completed", "runs", M.LR])
    return pd.DataFrame(rows, columns=cols)


def scatter_points(trials: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every trial for the accuracy-vs-compute scatter plots, whatever its status (a stopped
    trial is a real, cheaper run and stays visible there), with ``cell_run``: True for the
    trials that count in the cell statistics."""
    t = with_cells(trials)
    runs = cell_runs(t) if runs is None else runs
    t["cell_run"] = t["trial_id"].isin(set(runs["trial_id"])) if len(runs) else False
    return t


def _as_summary(summary_or_runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    if "mean" in summary_or_runs and "n" in summary_or_runs:
        return summary_or_runs
    return cell_summary(summary_or_runs, metric)


# ----------------------------------------------------------------------------- answers

def _best(g: pd.DataFrame) -> pd.Series:
    """Highest mean; ties: fewer target FLOPs, then the shallower depth."""
    return g.sort_values(["mean", M.TARGET_FLOPS, M.FROZEN_DEPTH],
                         ascending=[False, True, True], kind="stable").iloc[0]


def seed_accuracies(g: pd.DataFrame, metric: str = M.TEST_ACC) -> dict:
    """seed -> ``metric`` of one cell's runs (rows of ``cell_runs``). Runs with the same seed in
    cells of one split x backbone x init share the source model, the head's initialisation, the
    data order and the augmentation draws, so they are compared paired. A cell whose seeds are
    missing or repeat (studies written before seeds were recorded) gets keys no other cell has,
    so it is compared unpaired (Welch)."""
    v = g[[M.SEED, metric]].dropna(subset=[metric]) if M.SEED in g else g[[metric]].dropna()
    if M.SEED in v and v[M.SEED].notna().all() and v[M.SEED].is_unique:
        return {int(sd): float(x) for sd, x in zip(v[M.SEED], v[metric])}
    cell = str(g[M.CELL].iloc[0])
    return {f"{cell}#{i}": float(x) for i, x in enumerate(v[metric])}


def depth_answer(runs: pd.DataFrame, tolerance: float = 0.01, alpha: float = 0.05,
                 metric: str = M.TEST_ACC, racing: tuple | None = None) -> pd.DataFrame:
    """How much to freeze, per split x backbone x init (init != scratch), from ``cell_runs``:
    ``study.core.stats.group_answer`` on each cell's per-seed ``metric`` (the one decision
    rule, the same the racing uses: multiple comparisons with the best; ``tolerance`` in
    accuracy, 0.01 = 1 point; ``alpha`` per group; ``racing`` = (seeds, ceiling) when the
    study raced, so the report spends alpha as the racing did).

    Columns: split, backbone, init, depths, cheaper_depths (depths cheaper than the leader),
    best_depth (the leader: highest mean, an observation), best_shown (the leader is shown to be
    the most accurate), best_mean, best_ci, best_n, possible_best ("d0,d2": the depths that could
    still be the best), cheap_depth (the answer: the cheapest depth shown within tolerance of
    every possible best; NaN when none is), cheap_mean, cheap_ci, cheap_n, delta / delta_lo /
    test (the answer's paired difference from its strongest rival and the simultaneous lower
    bound of its difference from the best), decided, open (the depths racing would give seeds:
    "d1,d2"), verdicts ("d1 worse, d3 within tolerance"), saving_target / saving_total (1 -
    answer / leader mean target / total FLOPs), best_/cheap_ target_flops and total_flops,
    single_run (depths with 1 run), tolerance, alpha, group (the full ``group_answer`` dict,
    with each cell's per-seed values under ``accs``: report.json)."""
    from study.core import stats as ST

    keys = GROUP_KEYS
    cols = keys + ["depths", "cheaper_depths", "best_depth", "best_shown", "best_mean",
                   "best_ci", "best_n", "possible_best", "cheap_depth", "cheap_mean", "cheap_ci",
                   "cheap_n", "delta", "delta_lo", "test", "decided", "open", "verdicts",
                   "saving_target", "saving_total", "best_target_flops", "cheap_target_flops",
                   "best_total_flops", "cheap_total_flops", "single_run", "tolerance", "alpha",
                   "group"]
    summ = cell_summary(runs, metric)
    s = summ[(summ[M.INIT] != SCRATCH) & summ["mean"].notna()]
    rows = []
    for k, g in s.groupby(keys, sort=True):
        by_cell = g.set_index(M.CELL)
        cells = [{"cell": c, "depth": int(r[M.FROZEN_DEPTH]), "flops": r[M.TARGET_FLOPS],
                  "accs": seed_accuracies(runs[runs[M.CELL] == c], metric)}
                 for c, r in by_cell.iterrows()]
        ans = ST.group_answer(cells, tolerance, alpha, racing=racing)
        for c in cells:  # report.json: the per-seed values behind every comparison
            ans["comparisons"][c["cell"]]["accs"] = {str(sd): x for sd, x in c["accs"].items()}
        b = by_cell.loc[ans["leader"]]
        depth = {cid: f"d{int(by_cell.loc[cid, M.FROZEN_DEPTH])}" for cid in by_cell.index}
        row = {**dict(zip(keys, k)), "depths": len(g),
               "cheaper_depths": int((g[M.TARGET_FLOPS] < b[M.TARGET_FLOPS]).sum()),
               "best_depth": int(b[M.FROZEN_DEPTH]), "best_shown": ans["best"] is not None,
               "best_mean": b["mean"], "best_ci": b["ci"], "best_n": int(b["n"]),
               "possible_best": ",".join(depth[c] for c in ans["possible_best"]),
               "cheap_depth": math.nan, "cheap_mean": math.nan, "cheap_ci": math.nan,
               "cheap_n": 0, "delta": math.nan, "delta_lo": math.nan, "test": "",
               "decided": bool(ans["decided"]),
               "open": ",".join(depth[o] for o in ans["open"]),
               "verdicts": ", ".join(f"{depth[cid]} {v['verdict']}" for cid, v in
                                     sorted(ans["comparisons"].items(),
                                            key=lambda x: x[1]["depth"])),
               "saving_target": math.nan, "saving_total": math.nan,
               "best_target_flops": b[M.TARGET_FLOPS], "cheap_target_flops": math.nan,
               "best_total_flops": b[TOTAL_FLOPS], "cheap_total_flops": math.nan,
               "single_run": ",".join(f"d{int(d)}" for d in g.loc[g["n"] < 2, M.FROZEN_DEPTH]),
               "tolerance": tolerance, "alpha": alpha, "group": ans}
        if ans["answer"] is not None:
            c = by_cell.loc[ans["answer"]]
            comp = ans["comparisons"][ans["answer"]]
            row.update(cheap_depth=int(c[M.FROZEN_DEPTH]), cheap_mean=c["mean"],
                       cheap_ci=c["ci"], cheap_n=int(c["n"]),
                       delta=math.nan if comp["diff"] is None else comp["diff"],
                       delta_lo=math.nan if comp["lo"] is None else comp["lo"],
                       test=comp["test"],
                       saving_target=_saving(c[M.TARGET_FLOPS], b[M.TARGET_FLOPS]),
                       saving_total=_saving(c[TOTAL_FLOPS], b[TOTAL_FLOPS]),
                       cheap_target_flops=c[M.TARGET_FLOPS], cheap_total_flops=c[TOTAL_FLOPS])
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def comparison_rows(answer: pd.DataFrame) -> pd.DataFrame:
    """One row per depth of each group of ``depth_answer``: depth, cell, n (runs), mean,
    verdict (``study.core.stats.VERDICTS``), answer, open, possible_best, leader, rival (the
    strongest other possible best), diff (paired mean difference from the rival), lo / hi (the
    simultaneous bounds of its difference from the best: lower against every possible best,
    upper against the possible bests; None where unbounded), test, n_pairs, saving (1 - its
    target FLOPs / the leader's). The data of the Answer's table and of the forest plot."""
    keys = GROUP_KEYS
    out = []
    for _, r in answer.iterrows():
        g = r["group"]
        lead = g["comparisons"][g["leader"]]
        for cid, c in sorted(g["comparisons"].items(), key=lambda x: x[1]["depth"]):
            out.append({**{k: r[k] for k in keys}, "depth": c["depth"], "cell": cid,
                        "n": c["n"], "mean": c["mean"], "verdict": c["verdict"],
                        "answer": cid == g["answer"], "open": cid in g["open"],
                        "possible_best": c["possible_best"], "leader": cid == g["leader"],
                        "rival": c["rival"], "diff": c["diff"], "lo": c["lo"], "hi": c["hi"],
                        "test": c["test"], "n_pairs": c["n_pairs"],
                        "saving": _saving(_finite(c["flops"]), _finite(lead["flops"])),
                        "tolerance": g["tolerance"]})
    return pd.DataFrame(out, columns=keys + ["depth", "cell", "n", "mean", "verdict", "answer",
                                             "open", "possible_best", "leader", "rival", "diff",
                                             "lo", "hi", "test", "n_pairs", "saving",
                                             "tolerance"])


def _finite(x) -> float:
    return float(x) if x is not None and np.isfinite(x) else math.inf


def _saving(cheap: float, best: float) -> float:
    if not (np.isfinite(cheap) and np.isfinite(best)) or best <= 0:
        return math.nan
    return float(1 - cheap / best)


def transfer_gain_cells(summary_or_runs: pd.DataFrame, metric: str = M.TEST_ACC,
                        level: float = LEVEL, answer: pd.DataFrame | None = None) -> pd.DataFrame:
    """Transfer gain over training from scratch, per split x backbone x transferred init: the
    transferred depth against the scratch cell of the same split and backbone. The depth is the
    Answer's (``answer``: ``depth_answer``, the cheapest depth shown within tolerance of the
    best), not the depth with the highest test mean, which would pick on the very accuracies it
    then reports (optimistic: the maximum of several means). A group without an Answer has no
    depth to report (depth and gain NaN). Without ``answer`` (older callers): the highest mean.
    Every run is a completed trial, so both sides trained for the same target epochs. Accepts
    ``cell_runs`` (paired where it can) or ``cell_summary`` output (Welch only).

    Paired (``cell_runs`` given, the two cells share >= 2 seeds: the same seed draws the same
    data order and augmentations in both): gain = mean per-seed difference over the shared
    seeds, lo / hi its t CI at ``level``, p the two-sided paired t test, test "paired t".
    Otherwise Welch: gain = mean_transfer - mean_scratch, lo / hi / p Welch's, test "welch"
    ("none" and NaN where a side has n < 2). gain is NaN where there is no scratch cell or no
    depth. Columns: split, backbone, init, depth, n_transfer,
    mean_transfer, ci_transfer, n_scratch, mean_scratch, ci_scratch, gain, lo, hi, p, df,
    test, n_pairs."""
    from study.core import stats as ST

    s = _as_summary(summary_or_runs, metric)
    runs = None if s is summary_or_runs else summary_or_runs
    keys = GROUP_KEYS
    cols = keys + ["depth", "n_transfer", "mean_transfer", "ci_transfer", "n_scratch",
                   "mean_scratch", "ci_scratch", "gain", "lo", "hi", "p", "df", "test", "n_pairs"]
    s = s[s["mean"].notna()]
    rows = []
    chosen = None
    if answer is not None:
        chosen = {tuple(r[k] for k in keys): r["cheap_depth"] for _, r in answer.iterrows()}
    for k, g in s[s[M.INIT] != SCRATCH].groupby(keys, sort=True):
        if chosen is None:
            b = _best(g)
        else:
            d = chosen.get(k, math.nan)
            hit = g[g[M.FROZEN_DEPTH] == d] if pd.notna(d) else g.iloc[0:0]
            b = hit.iloc[0] if len(hit) else None
        sc = s[(s[M.SPLIT] == k[0]) & (s[M.SIZE] == k[1]) & (s[M.BACKBONE] == k[2])
               & (s[M.INIT] == SCRATCH)]
        row = {**dict(zip(keys, k)), "depth": math.nan, "n_transfer": 0,
               "mean_transfer": math.nan, "ci_transfer": math.nan, "n_scratch": 0,
               "mean_scratch": math.nan, "ci_scratch": math.nan, "gain": math.nan,
               "lo": math.nan, "hi": math.nan, "p": math.nan, "df": math.nan, "test": "",
               "n_pairs": 0}
        if b is not None:
            row.update(depth=int(b[M.FROZEN_DEPTH]), n_transfer=int(b["n"]),
                       mean_transfer=b["mean"], ci_transfer=b["ci"])
        if len(sc):
            z = sc.iloc[0]
            row.update(n_scratch=int(z["n"]), mean_scratch=z["mean"], ci_scratch=z["ci"])
        if len(sc) and b is not None:
            z = sc.iloc[0]
            w = {"n_pairs": 0}
            if runs is not None:
                w = paired(seed_accuracies(runs[runs[M.CELL] == b[M.CELL]], metric),
                           seed_accuracies(runs[runs[M.CELL] == z[M.CELL]], metric), level)
            if w["n_pairs"] >= 2:
                test = ST.PAIRED
            else:
                w = {**welch(b["mean"], b["std"], b["n"], z["mean"], z["std"], z["n"], level),
                     "n_pairs": w["n_pairs"]}
                test = ST.WELCH if min(b["n"], z["n"]) >= 2 else ST.NONE
            row.update(n_scratch=int(z["n"]), mean_scratch=z["mean"], ci_scratch=z["ci"],
                       gain=w["diff"], lo=w["lo"], hi=w["hi"], p=w["p"], df=w["df"], test=test,
                       n_pairs=w["n_pairs"])
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def cell_frontier(summary: pd.DataFrame, x: str = TOTAL_FLOPS) -> pd.DataFrame:
    """Pareto frontier of cells per split: maximise the cell's mean metric, minimise its mean
    compute ``x`` (default: total, i.e. target + amortised source FLOPs). Uses
    ``analysis.frontier.pareto_front``; rows sorted by split, then compute."""
    parts = [pareto_front(g, x, "mean") for _, g in summary.groupby(M.SPLIT, sort=True)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return summary.iloc[0:0].copy()
    return pd.concat(parts).reset_index(drop=True)
