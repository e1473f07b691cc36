"""Report figures (matplotlib, Agg): labelled axes with units, log-scale compute, legends that
name backbone / init / split. Every function takes frames and returns a Figure; ``save`` writes
a PNG."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from analysis.frontier import pareto_front  # noqa: E402
from analysis.load import TOTAL_FLOPS  # noqa: E402
from study.core import metrics as M  # noqa: E402
from study.core.design import SCRATCH  # noqa: E402
from study.core import stats as S  # noqa: E402
from study.core.status import COMPLETED  # noqa: E402
from analysis.words import group_text, size_text  # noqa: E402

MARKERS = {"source": "o", "imagenet": "s", "scratch": "^"}
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 9, "figure.dpi": 110, "savefig.dpi": 110,
                     "axes.grid": True, "grid.alpha": 0.3})


def colors(names) -> dict:
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(map(str, set(names))))}


def save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _backbone_init_handles(col: dict, t) -> list:
    """Legend entries: one colour per backbone present in ``t``, one marker per init."""
    handles = [Line2D([], [], color=c, marker="o", ls="", label=f"backbone {b}")
               for b, c in col.items() if b in set(t[M.BACKBONE])]
    handles += [Line2D([], [], color="grey", marker=MARKERS.get(i, "D"), ls="", label=f"init {i}")
                for i in sorted(set(t[M.INIT].dropna()))]
    return handles


def _legend_below(fig, handles, ncol=4):
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(ncol, len(handles)), frameon=False)


def _pct(ax):
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))


def frontier(trials: pd.DataFrame, split: str, y: str = M.VAL_ACC,
             stopped: str | None = "stopped early") -> plt.Figure:
    """Accuracy vs compute for one split: left with the amortised source cost, right without.
    Filled markers: completed trials; hollow: stopped / errored / running (stopped trials stay
    visible here, never in the cell statistics); ``stopped``: what the legend calls a stopped
    trial (e.g. "stopped by ASHA"; None: the study stopped none early). With a ``cell_run`` column
    (``analysis.cells.scatter_points``), the trials that count in the cell statistics are ringed.
    Black steps: the Pareto frontier over all backbones; dashed: per backbone."""
    t = trials[trials[M.SPLIT] == split]
    col = colors(trials[M.BACKBONE].dropna())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, x, title in ((axes[0], TOTAL_FLOPS, "target + amortised source compute"),
                         (axes[1], M.TARGET_FLOPS, "target compute only")):
        for (b, init), g in t.groupby([M.BACKBONE, M.INIT]):
            for done, gg in g.groupby(g["status"] == COMPLETED):
                ax.scatter(gg[x], gg[y], marker=MARKERS.get(init, "D"), s=42, linewidths=1.3,
                           facecolors=col[b] if done else "none", edgecolors=col[b], zorder=3)
        if "cell_run" in t:
            r = t[t["cell_run"].astype(bool)]
            ax.scatter(r[x], r[y], marker="o", s=110, facecolors="none", edgecolors="0.35",
                       linewidths=0.8, zorder=2)
        for b, g in t.groupby(M.BACKBONE):
            f = pareto_front(g, x, y)
            if len(f) > 1:
                ax.step(f[x], f[y], where="post", color=col[b], ls="--", lw=1, alpha=0.8)
        f = pareto_front(t, x, y)
        ax.step(f[x], f[y], where="post", color="black", lw=1.6, zorder=2)
        ax.set_xscale("log")
        ax.set_xlabel(f"compute: {title.replace(' compute', '')} (FLOPs, log scale)")
        ax.set_title(f"split {split}: {title}")
    axes[0].set_ylabel(f"validation accuracy ({y}, last epoch)")
    _pct(axes[0])
    handles = _backbone_init_handles(col, t)
    handles += [Line2D([], [], color="grey", marker="o", ls="", mfc="none",
                       label=f"{stopped} / incomplete" if stopped else "incomplete"),
                *([Line2D([], [], color="0.35", marker="o", ms=10, ls="", mfc="none",
                          label="counts in the cell statistics")] if "cell_run" in t else []),
                Line2D([], [], color="black", lw=1.6, label="Pareto frontier (all backbones)"),
                Line2D([], [], color="grey", ls="--", lw=1, label="Pareto frontier per backbone")]
    fig.tight_layout()
    _legend_below(fig, handles, ncol=4)
    return fig


def _metric_label(summary: pd.DataFrame) -> str:
    m = summary["metric"].iloc[0] if "metric" in summary and len(summary) else M.TEST_ACC
    return {M.TEST_ACC: "test accuracy", M.VAL_ACC: "validation accuracy"}.get(m, str(m))


def _errorbar(ax, x, g, color, marker, **kw):
    """Means with their 95 % interval; cells with one run (no interval) get hollow markers."""
    one = g["n"] < 2
    ax.errorbar(x, g["mean"], yerr=g["ci"].fillna(0).values, color=color, marker="none",
                capsize=3, lw=kw.pop("lw", 1.5), **kw)
    ax.scatter(np.asarray(x)[~one.values], g.loc[~one, "mean"], color=color, marker=marker,
               s=36, zorder=4)
    ax.scatter(np.asarray(x)[one.values], g.loc[one, "mean"], facecolors="white",
               edgecolors=[color], marker=marker, s=36, zorder=4, linewidths=1.3)


def depth_curves(summary: pd.DataFrame, splits) -> plt.Figure:
    """Mean accuracy of each cell's runs vs frozen depth with 95 % t intervals, one line per
    backbone x init, one panel per split (Yosinski et al. 2014). Scratch baselines (no frozen
    stage) are dotted horizontal lines with their interval as a band. Hollow markers: cells with
    a single run (no interval). Only completed runs (``analysis.cells.cell_runs``) are drawn."""
    splits = list(splits)
    col = colors(summary[M.BACKBONE].dropna()) if len(summary) else {}
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False,
                             sharey=True)
    handles = {}
    for ax, split in zip(axes[0], splits):
        t = summary[summary[M.SPLIT] == split]
        maxd = max(1, int(t[M.FROZEN_DEPTH].max())) if len(t) else 1
        lines = list(t.groupby([M.BACKBONE, M.INIT], sort=True))
        for i, ((b, init), g) in enumerate(lines):
            if init == SCRATCH:
                z = g.iloc[0]
                ax.axhline(z["mean"], color=col[b], ls=":", lw=1.5)
                if np.isfinite(z["ci"]):
                    ax.axhspan(z["lo"], z["hi"], color=col[b], alpha=0.1, lw=0)
                handles[(b, init)] = Line2D([], [], color=col[b], ls=":",
                                            label=f"{b} / scratch (baseline, band: 95 % CI)")
                continue
            g = g.sort_values(M.FROZEN_DEPTH)
            off = 0.06 * (i - (len(lines) - 1) / 2)  # keeps overlapping bars apart
            _errorbar(ax, g[M.FROZEN_DEPTH].astype(float).values + off, g, col[b],
                      MARKERS.get(init, "D"), ls="-" if init == "source" else "--")
            handles[(b, init)] = Line2D([], [], color=col[b], marker=MARKERS.get(init, "D"),
                                        ls="-" if init == "source" else "--",
                                        label=f"{b} / init {init}")
        ax.set_xlim(-0.4, maxd + 0.4)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("frozen depth (backbone stages kept frozen)")
        ax.set_title(f"split {split}")
    axes[0][0].set_ylabel(f"{_metric_label(summary)}: mean of the cell's runs ± 95 % CI")
    _pct(axes[0][0])
    fig.tight_layout()
    hs = [handles[k] for k in sorted(handles)]
    hs.append(Line2D([], [], color="grey", marker="o", ls="", mfc="white",
                     label="one run (no interval)"))
    _legend_below(fig, hs, ncol=3)
    return fig


def compare_depth_curves(summaries: dict, split: str) -> plt.Figure:
    """Overlaid cell depth curves of several studies (label -> cell summary) for one split: one
    panel per backbone, colour = study, marker = init, scratch as a dotted line (band: 95 % CI)."""
    backbones = sorted({str(b) for s in summaries.values() if len(s)
                        for b in s.loc[s[M.SPLIT] == split, M.BACKBONE].dropna()}) or ["–"]
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.2 * len(backbones), 4.2),
                             squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    handles = []
    for j, (label, summ) in enumerate(summaries.items()):
        c = cmap(j % 10)
        handles.append(Line2D([], [], color=c, lw=2, label=f"study {label}"))
        for ax, b in zip(axes[0], backbones):
            t = summ[(summ[M.SPLIT] == split) & (summ[M.BACKBONE] == b)] if len(summ) else summ
            for init, g in t.groupby(M.INIT, sort=True):
                if init == SCRATCH:
                    z = g.iloc[0]
                    ax.axhline(z["mean"], color=c, ls=":", lw=1.5)
                    if np.isfinite(z["ci"]):
                        ax.axhspan(z["lo"], z["hi"], color=c, alpha=0.08, lw=0)
                    continue
                g = g.sort_values(M.FROZEN_DEPTH)
                off = 0.08 * (j - (len(summaries) - 1) / 2)
                _errorbar(ax, g[M.FROZEN_DEPTH].astype(float).values + off, g, c,
                          MARKERS.get(init, "D"), ls="-" if init == "source" else "--")
    for ax, b in zip(axes[0], backbones):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("frozen depth (backbone stages kept frozen)")
        ax.set_title(f"split {split}: {b}")
    first = next((s for s in summaries.values() if len(s)), pd.DataFrame())
    axes[0][0].set_ylabel(f"{_metric_label(first)}: mean ± 95 % CI")
    _pct(axes[0][0])
    inits = sorted({str(i) for s in summaries.values() if len(s) for i in s[M.INIT].dropna()})
    handles += [Line2D([], [], color="grey", marker=MARKERS.get(i, "D"),
                       ls=":" if i == SCRATCH else ("-" if i == "source" else "--"),
                       label=f"init {i}" + (" (baseline)" if i == SCRATCH else ""))
                for i in inits]
    fig.tight_layout()
    _legend_below(fig, handles, ncol=4)
    return fig


def transfer_gain(gains: pd.DataFrame) -> plt.Figure:
    """Transfer gain over scratch (points) with its 95 % CI (paired per seed, or Welch: column
    ``test``), one row per split x backbone x init (``analysis.cells.transfer_gain_cells``); hollow: no interval (a side has one run)."""
    g = gains.dropna(subset=["gain"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.42 * max(1, len(g))))
    col = colors(g[M.BACKBONE]) if len(g) else {}
    for i, r in g.iterrows():
        c = col[r[M.BACKBONE]]
        lo, hi = r["lo"], r["hi"]
        if np.isfinite(lo):
            ax.plot([100 * lo, 100 * hi], [i, i], color=c, lw=2)
        ax.scatter([100 * r["gain"]], [i], color=c if np.isfinite(lo) else "white",
                   edgecolors=[c], marker=MARKERS.get(r[M.INIT], "D"), s=48, zorder=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(g)), [f"{r[M.SPLIT]}: {r[M.BACKBONE]} / {r[M.INIT]} d{r['depth']}"
                                  for _, r in g.iterrows()])
    ax.invert_yaxis()
    ax.set_xlabel("gain over scratch (accuracy points; bar: 95 % CI, paired per seed or Welch)")
    ax.set_title("transfer gain: best transferred depth vs the scratch cell")
    if g.empty:
        ax.text(0.5, 0.5, "no cell pair with a scratch baseline", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    return fig


def transfer_by_size(pays: pd.DataFrame, tolerance_points: float) -> plt.Figure:
    """When transfer pays (``analysis.pays.transfer_by_size``): one column per split x backbone
    x init. Top: test accuracy (mean ± 95 % CI) against images per target class, log scale, for
    scratch and for transfer at the depth shown at each size (its depth labelled). Bottom: the
    gain (points) with its simultaneous bounds, coloured by verdict, 0 and +tolerance drawn."""
    fams = list(pays.groupby([M.SPLIT, M.BACKBONE, M.INIT], sort=True)) if len(pays) else []
    n = max(1, len(fams))
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 6.2), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    vcol = {S.GAIN_BETTER: "tab:green", S.GAIN_NOT: "tab:gray", S.GAIN_SCRATCH: "tab:red",
            S.UNDECIDED: "tab:orange"}
    for j, (key, f) in enumerate(fams):
        f = f.sort_values(M.SIZE)
        x = f[M.SIZE].astype(float).to_numpy()
        log = bool((x > 0).all())
        if not log:  # a size of "all" (no size set) has no place on a log axis
            x = np.arange(1, len(x) + 1, dtype=float)
        top, bot = axes[0, j], axes[1, j]
        for side, mcol, color, label in (("scratch", "mean_scratch", "tab:gray", "scratch"),
                                          ("transfer", "mean_transfer", "tab:blue",
                                           f"{key[2]} (depth shown)")):
            m = pd.to_numeric(f[mcol], errors="coerce").to_numpy()
            ci = pd.to_numeric(f[f"ci_{side}"], errors="coerce").fillna(0).to_numpy()
            top.errorbar(x, m, yerr=ci, color=color, marker="o", capsize=3, label=label)
        for xi, (_, r) in zip(x, f.iterrows()):
            if pd.notna(r["mean_transfer"]):
                top.annotate(f"d{int(r['depth'])}", (xi, r["mean_transfer"]),
                             textcoords="offset points", xytext=(4, 4), fontsize=8)
            c = vcol.get(r["verdict"], "gray")
            if pd.notna(r["lo"]) and pd.notna(r["hi"]):
                bot.plot([xi, xi], [100 * r["lo"], 100 * r["hi"]], color=c, lw=2.2)
            if pd.notna(r["gain"]):
                bot.scatter([xi], [100 * r["gain"]], color=c, s=36, zorder=3)
        if log:
            top.set_xscale("log")
        _pct(top)
        top.set_title(f"{key[0]} / {key[1]} / {key[2]}", fontsize=10)
        top.set_ylabel("test accuracy")
        top.legend(loc="lower right", fontsize=8)
        bot.axhline(0, color="black", lw=0.8)
        bot.axhline(tolerance_points, color="tab:green", lw=0.8, ls="--")
        bot.set_ylabel("gain over scratch (points)")
        bot.set_xlabel("images per target class (log scale)")
        bot.set_xticks(x, [size_text(v) for v in f[M.SIZE]])
        bot.minorticks_off()
    if not fams:
        axes[0, 0].text(0.5, 0.5, "no transferred group with a scratch baseline", ha="center",
                        transform=axes[0, 0].transAxes)
    handles = [Line2D([], [], color=c, lw=2.2, label=v) for v, c in vcol.items()]
    _legend_below(fig, handles)
    fig.tight_layout()
    return fig


def cell_frontier(summary: pd.DataFrame, frontier: pd.DataFrame, split: str,
                  x: str = TOTAL_FLOPS) -> plt.Figure:
    """Cells of one split: mean accuracy (± 95 % CI) vs mean compute per run (target +
    amortised source); black steps: the cells' Pareto frontier. Hollow: cells with one run."""
    t = summary[summary[M.SPLIT] == split]
    col = colors(summary[M.BACKBONE].dropna()) if len(summary) else {}
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for (b, init), g in t.groupby([M.BACKBONE, M.INIT], sort=True):
        _errorbar(ax, g[x].values, g, col[b], MARKERS.get(init, "D"), ls="none", lw=1.2)
        for _, r in g.iterrows():
            ax.annotate(f"d{int(r[M.FROZEN_DEPTH])}", (r[x], r["mean"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points", color=col[b])
    f = frontier[frontier[M.SPLIT] == split] if len(frontier) else frontier
    if len(f):
        ax.step(f[x], f["mean"], where="post", color="black", lw=1.6, zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("mean compute per run: target + amortised source (FLOPs, log scale)")
    ax.set_ylabel(f"{_metric_label(summary)}: mean ± 95 % CI")
    _pct(ax)
    ax.set_title(f"split {split}: cells (label: frozen depth) and their Pareto frontier")
    handles = _backbone_init_handles(col, t)
    handles += [Line2D([], [], color="grey", marker="o", ls="", mfc="white",
                       label="one run (no interval)"),
                Line2D([], [], color="black", lw=1.6, label="Pareto frontier of cells")]
    fig.tight_layout()
    _legend_below(fig, handles, ncol=4)
    return fig


def learning_curves(epochs: pd.DataFrame, finalists: pd.DataFrame, splits) -> plt.Figure:
    """Validation accuracy per epoch: every trial in grey (early stopping's pruning), finalists
    coloured."""
    splits = list(splits)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False,
                             sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, split in zip(axes[0], splits):
        e = epochs[epochs[M.SPLIT] == split]
        for _, g in e.groupby("trial_id"):
            ax.plot(g[M.EPOCH], g[M.VAL_ACC], color="0.7", lw=0.8, marker=".", ms=5, zorder=1)
        fin = finalists[finalists[M.SPLIT] == split]
        for i, (_, r) in enumerate(fin.iterrows()):
            g = e[e["trial_id"] == r["trial_id"]]
            ax.plot(g[M.EPOCH], g[M.VAL_ACC], color=cmap(i % 10), marker=".", lw=1.6, zorder=3,
                    label=f"{r['trial_id']}: {r[M.BACKBONE]}/{r[M.INIT]} d{r[M.FROZEN_DEPTH]} "
                          f"lr {r[M.LR]:.3g}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("target epoch")
        ax.set_title(f"split {split}")
        if len(fin):
            ax.legend(loc="lower right", fontsize=7.5, framealpha=0.85)
    axes[0][0].set_ylabel("validation accuracy")
    _pct(axes[0][0])
    # the key once for all panels (a long title per panel overlapped at 4 splits)
    fig.suptitle("grey: every trial; dots: stopped after that epoch; colour: finalists",
                 fontsize=10)
    fig.tight_layout()
    return fig


def confusion(trial: pd.Series, classes: list[str]) -> plt.Figure:
    cm = np.array(json.loads(trial[M.TEST_CONFUSION]))
    n = len(cm)
    classes = classes if len(classes) == n else [str(i) for i in range(n)]
    size = max(3.6, 0.55 * n + 2.2)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(cm, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)
    ax.set_title(f"test confusion (images), trial {trial['trial_id']}\n"
                 f"{trial[M.SPLIT]}: {trial[M.BACKBONE]}/{trial[M.INIT]} d{trial[M.FROZEN_DEPTH]}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="test images")
    fig.tight_layout()
    return fig


def early_stopping(acc: dict, name: str, stopped: str, label: str = "") -> plt.Figure:
    """Stacked bars: compute spent (by trial status, + source models) under the early-stopping
    rule ``name`` (e.g. "ASHA"; "FIFO": none) vs the FIFO estimate; ``stopped``: what a stopped
    trial is called (``analysis.frontier.early_stopping_accounting`` gives ``acc``)."""
    fig, ax = plt.subplots(figsize=(9, 2.6))
    parts = [("completed", acc["spent"]["completed"], "#2b8cbe"),
             (stopped, acc["spent"]["stopped"], "#a6bddb"),
             ("errored", acc["spent"]["errored"], "#e34a33"),
             ("running", acc["spent"]["running"], "#fdbb84"),
             ("source models", acc["source"], "#756bb1")]
    left = 0.0
    for part, v, c in parts:
        if v > 0:
            ax.barh(1, v, left=left, color=c, label=part)
            left += v
    ax.barh(0, acc["fifo_target"], color="0.6", label="FIFO estimate: target trials")
    if acc["source"] > 0:
        ax.barh(0, acc["source"], left=acc["fifo_target"], color="#756bb1")
    ax.set_yticks([0, 1], ["FIFO (estimate:\nall trials to target_epochs)", f"{name} (spent)"])
    ax.set_xlabel("compute (FLOPs)")
    ax.set_title(f"{label + ': ' if label else ''}{name} spent {acc['total']:.3g} FLOPs; "
                 f"FIFO would spend ~{acc['fifo']:.3g} (savings x{acc['savings']:.2f})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=6, frameon=False)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig


def compare_frontiers(summaries: dict, frontiers: dict, split: str,
                      x: str = TOTAL_FLOPS) -> plt.Figure:
    """Overlaid cell Pareto frontiers of several studies (label -> cell summary, label ->
    ``analysis.cells.cell_frontier``) for one split; dots: every cell, with its 95 % CI."""
    fig, ax = plt.subplots(figsize=(8, 4.4))
    cmap = plt.get_cmap("tab10")
    first = pd.DataFrame()
    for i, (label, summ) in enumerate(summaries.items()):
        t = summ[summ[M.SPLIT] == split] if len(summ) else summ
        if t.empty:
            continue
        first = t if first.empty else first
        c = cmap(i % 10)
        _errorbar(ax, t[x].values, t, c, "o", ls="none", lw=1, alpha=0.5)
        f = frontiers[label]
        f = f[f[M.SPLIT] == split] if len(f) else f
        if len(f):
            ax.step(f[x], f["mean"], where="post", color=c, lw=1.8, label=f"study {label}")
    ax.set_xscale("log")
    ax.set_xlabel("mean compute per run: target + amortised source (FLOPs, log scale)")
    ax.set_ylabel(f"{_metric_label(first)}: mean ± 95 % CI")
    _pct(ax)
    ax.set_title(f"split {split}: Pareto frontiers of cells (dots: every cell)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


VERDICT_COLORS = {S.SHOWN_BEST: "black", "within tolerance": "tab:green", "worse": "tab:red",
                  "undecided": "tab:orange"}


def forest(comparisons: pd.DataFrame, tolerance_points: float, level: str) -> plt.Figure:
    """The Answer at a glance (``analysis.cells.comparison_rows``): one panel per split x
    backbone x init, one row per depth: the bounds of its difference from the unknown best
    (points; ``level`` names them), its paired difference from its strongest rival (dot), the
    -tolerance line, its verdict and the compute it saves against the most accurate depth."""
    keys = [M.SPLIT, M.SIZE, M.BACKBONE, M.INIT]
    groups = list(comparisons.groupby(keys, sort=True)) if len(comparisons) else []
    heights = [0.6 + 0.38 * len(g) for _, g in groups] or [1.0]
    fig, axes = plt.subplots(len(heights), 1, figsize=(8.5, 0.6 + sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no transferred cell has a completed run", ha="center",
                        transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
        return fig
    vals = pd.concat([comparisons["lo"], comparisons["hi"], comparisons["diff"]])
    vals = pd.to_numeric(vals, errors="coerce").dropna()
    lim = max([tolerance_points * 1.5] + [abs(100 * x) for x in vals])
    for ax, (key, g) in zip(axes[:, 0], groups):
        g = g.sort_values("depth").reset_index(drop=True)
        ax.axvspan(-tolerance_points, lim * 1.2, color="tab:green", alpha=0.08, lw=0)
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(-tolerance_points, color="tab:green", lw=0.8, ls="--")
        labels = []
        for i, r in g.iterrows():
            c = VERDICT_COLORS.get(r["verdict"], "gray")
            lo = -lim * 1.1 if pd.isna(r["lo"]) else 100 * r["lo"]
            hi = lim * 1.1 if pd.isna(r["hi"]) else 100 * r["hi"]
            ax.plot([lo, hi], [i, i], color=c, lw=2.2)
            if pd.notna(r["diff"]):
                ax.scatter([100 * r["diff"]], [i], color=c, s=42, zorder=3,
                           marker="*" if r["answer"] else "o")
            save = "" if pd.isna(r["saving"]) or r["leader"] else \
                f", saves {100 * r['saving']:.0f} %"
            labels.append(f"d{int(r['depth'])} (n={int(r['n'])}): {r['verdict']}{save}")
        ax.set_yticks(range(len(g)), labels)
        ax.invert_yaxis()
        ax.set_xlim(-lim * 1.1, lim * 1.1)
        ax.set_title(group_text(*key) + " — ★ the answer", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel(f"test accuracy minus the best depth's (points, paired per seed); "
                           f"bar: {level} bounds; dot: vs strongest rival; dashed: "
                           f"−{tolerance_points:g} points")
    fig.tight_layout()
    return fig
