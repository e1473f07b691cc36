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
from analysis.load import COMPLETED, TOTAL_FLOPS  # noqa: E402
from trainables import metrics as M  # noqa: E402

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


def _legend_below(fig, handles, ncol=4):
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(ncol, len(handles)), frameon=False)


def _pct(ax):
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))


def frontier(trials: pd.DataFrame, split: str, y: str = M.VAL_ACC) -> plt.Figure:
    """Accuracy vs compute for one split: left with the amortised source cost, right without.
    Filled markers: completed trials; hollow: stopped / errored / running. Black steps: the
    Pareto frontier over all backbones; dashed: per backbone."""
    t = trials[trials[M.SPLIT] == split]
    col = colors(trials[M.BACKBONE].dropna())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, x, title in ((axes[0], TOTAL_FLOPS, "target + amortised source compute"),
                         (axes[1], M.TARGET_FLOPS, "target compute only")):
        for (b, init), g in t.groupby([M.BACKBONE, M.INIT]):
            for done, gg in g.groupby(g["status"] == COMPLETED):
                ax.scatter(gg[x], gg[y], marker=MARKERS.get(init, "D"), s=42, linewidths=1.3,
                           facecolors=col[b] if done else "none", edgecolors=col[b], zorder=3)
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
    handles = [Line2D([], [], color=c, marker="o", ls="", label=f"backbone {b}")
               for b, c in col.items() if b in set(t[M.BACKBONE])]
    handles += [Line2D([], [], color="grey", marker=MARKERS.get(i, "D"), ls="", label=f"init {i}")
                for i in sorted(set(t[M.INIT].dropna()))]
    handles += [Line2D([], [], color="grey", marker="o", ls="", mfc="none",
                       label="stopped by ASHA / incomplete"),
                Line2D([], [], color="black", lw=1.6, label="Pareto frontier (all backbones)"),
                Line2D([], [], color="grey", ls="--", lw=1, label="Pareto frontier per backbone")]
    fig.tight_layout()
    _legend_below(fig, handles, ncol=4)
    return fig


def depth_curves(trials: pd.DataFrame, splits, y: str = M.VAL_ACC) -> plt.Figure:
    """Best accuracy vs frozen depth, one line per backbone x init, one panel per split
    (Yosinski et al. 2014). Scratch baselines (no frozen stage) are dotted horizontal lines."""
    splits = list(splits)
    col = colors(trials[M.BACKBONE].dropna())
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False,
                             sharey=True)
    handles = {}
    for ax, split in zip(axes[0], splits):
        t = trials[(trials[M.SPLIT] == split)].dropna(subset=[y])
        maxd = max(1, int(t[M.FROZEN_DEPTH].max())) if len(t) else 1
        for (b, init), g in t.groupby([M.BACKBONE, M.INIT]):
            if init == "scratch":
                v = g[y].max()
                ax.axhline(v, color=col[b], ls=":", lw=1.5)
                handles[(b, init)] = Line2D([], [], color=col[b], ls=":",
                                            label=f"{b} / scratch (baseline)")
                continue
            best = g.groupby(M.FROZEN_DEPTH)[y].max()
            ax.plot(best.index, best.values, color=col[b], marker=MARKERS.get(init, "D"), lw=1.5)
            ax.scatter(g[M.FROZEN_DEPTH], g[y], color=col[b], alpha=0.25, s=14)
            handles[(b, init)] = Line2D([], [], color=col[b], marker=MARKERS.get(init, "D"),
                                        label=f"{b} / init {init}")
        ax.set_xlim(-0.3, maxd + 0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("frozen depth (backbone stages kept frozen)")
        ax.set_title(f"split {split}")
    axes[0][0].set_ylabel(f"best validation accuracy ({y})")
    _pct(axes[0][0])
    fig.tight_layout()
    _legend_below(fig, [handles[k] for k in sorted(handles)], ncol=3)
    return fig


def learning_curves(epochs: pd.DataFrame, finalists: pd.DataFrame, splits) -> plt.Figure:
    """Validation accuracy per epoch: every trial in grey (ASHA's pruning), finalists coloured."""
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
        ax.set_title(f"split {split} (grey: every trial; dots: stopped after that epoch)")
        if len(fin):
            ax.legend(loc="lower right", fontsize=7.5, framealpha=0.85)
    axes[0][0].set_ylabel("validation accuracy")
    _pct(axes[0][0])
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


def asha(acc: dict, label: str = "") -> plt.Figure:
    """Stacked bars: compute spent (by trial status, + source models) vs the FIFO estimate."""
    fig, ax = plt.subplots(figsize=(9, 2.6))
    parts = [("completed", acc["spent"]["completed"], "#2b8cbe"),
             ("stopped by ASHA", acc["spent"]["stopped"], "#a6bddb"),
             ("errored", acc["spent"]["errored"], "#e34a33"),
             ("running", acc["spent"]["running"], "#fdbb84"),
             ("source models", acc["source"], "#756bb1")]
    left = 0.0
    for name, v, c in parts:
        if v > 0:
            ax.barh(1, v, left=left, color=c, label=name)
            left += v
    ax.barh(0, acc["fifo_target"], color="0.6", label="FIFO estimate: target trials")
    if acc["source"] > 0:
        ax.barh(0, acc["source"], left=acc["fifo_target"], color="#756bb1")
    ax.set_yticks([0, 1], ["FIFO (estimate:\nall trials to max_t)", "ASHA (spent)"])
    ax.set_xlabel("compute (FLOPs)")
    ax.set_title(f"{label + ': ' if label else ''}ASHA spent {acc['total']:.3g} FLOPs; "
                 f"FIFO would spend ~{acc['fifo']:.3g} (savings x{acc['savings']:.2f})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=6, frameon=False)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig


def compare_frontiers(studies: dict, split: str, x: str = TOTAL_FLOPS,
                      y: str = M.VAL_ACC) -> plt.Figure:
    """Overlaid Pareto frontiers of several studies (label -> trials) for one split."""
    fig, ax = plt.subplots(figsize=(8, 4.4))
    cmap = plt.get_cmap("tab10")
    for i, (label, t) in enumerate(studies.items()):
        t = t[t[M.SPLIT] == split]
        if t.empty:
            continue
        c = cmap(i % 10)
        ax.scatter(t[x], t[y], color=c, alpha=0.35, s=18)
        f = pareto_front(t, x, y)
        ax.step(f[x], f[y], where="post", color=c, lw=1.8, marker="o", ms=4,
                label=f"study {label}")
    ax.set_xscale("log")
    ax.set_xlabel("compute, target + amortised source (FLOPs, log scale)")
    ax.set_ylabel(f"validation accuracy ({y})")
    _pct(ax)
    ax.set_title(f"split {split}: Pareto frontiers (dots: all trials)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
