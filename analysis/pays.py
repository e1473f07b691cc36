"""When transfer pays, section 2 of a report: per split x backbone x transferred init, transfer
against scratch at every target size (``data.target_train_per_class``), by
``study.core.stats.transfer_gain`` (the racing's own rule): each depth's paired gain over the
scratch baseline of its size, simultaneous over the group's depths and the family's sizes, so
the verdicts of a family (its sizes together) are wrong with probability at most alpha. The
gain shown is the Answer's depth's (the most accurate observed while the Answer is undecided);
its interval is the simultaneous one, so choosing the depth on the same runs does not make it
optimistic. As a table, a figure (accuracy against images per class, log scale, with the gain
beneath) and data (report.json)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.cells import seed_accuracies
from analysis.load import Study
from analysis.render import Section
from analysis.view import METRIC, CellView, recorded_design
from analysis.words import _freeze, _nan, _pts, ci_text, mean_ci, size_text
from study.core import metrics as M
from study.core import stats as ST
from study.core.design import SCRATCH

FAMILY_KEYS = [M.SPLIT, M.BACKBONE, M.INIT]  # a family: its sizes share one guarantee
COLUMNS = FAMILY_KEYS + [M.SIZE, "verdict", "depth", "depth_from", "answer_depth", "decided",
                         "gain", "lo", "hi", "test", "n_pairs", "mean_transfer", "ci_transfer",
                         "n_transfer", "mean_scratch", "ci_scratch", "n_scratch", "scratch_cell",
                         "cell", "alpha_bound", "sizes", "depths"]


def _sizes_of(s: Study, v: CellView) -> int:
    """S, the sizes a family's guarantee spans: the recorded design's (what the racing spent
    alpha over), else the sizes the runs name."""
    design = recorded_design(s.spec)
    if design is not None:
        return len(design.sizes)
    return max(1, v.answer[M.SIZE].nunique()) if len(v.answer) else 1


def transfer_by_size(s: Study, v: CellView) -> pd.DataFrame:
    """One row per answer group (split x size x backbone x transferred init) with a scratch
    baseline: the verdict (``stats.GAIN_VERDICTS``), the depth reported (the Answer's when it
    has one, ``depth_from`` "answer"; else the most accurate observed, "leader"), its gain over
    scratch (points as fractions) with the simultaneous bounds lo / hi, the test and pairs,
    both sides' means and 95 % intervals (for the figure), and ``depths``: every depth's gain
    and bounds (report.json)."""
    sizes = _sizes_of(s, v)
    summ = v.summary
    rows = []
    for _, r in v.answer.iterrows():
        g = r["group"]
        sc = summ[(summ[M.SPLIT] == r[M.SPLIT]) & (summ[M.SIZE] == r[M.SIZE])
                  & (summ[M.BACKBONE] == r[M.BACKBONE]) & (summ[M.INIT] == SCRATCH)]
        if sc.empty:
            continue
        z = sc.iloc[0]
        zacc = seed_accuracies(v.runs[v.runs[M.CELL] == z[M.CELL]], METRIC)
        cells = [{"cell": c, "depth": comp["depth"], "accs": comp["accs"]}
                 for c, comp in g["comparisons"].items()]
        gain = ST.transfer_gain(cells, zacc, v.tol_points / 100, v.alpha, sizes=sizes,
                                racing=v.racing)
        cell = g["answer"] or g["leader"]
        d = gain["depths"].get(cell, {})
        t = summ[summ[M.CELL] == cell]
        t = t.iloc[0] if len(t) else None
        rows.append({
            **{k: r[k] for k in FAMILY_KEYS}, M.SIZE: int(r[M.SIZE]),
            "verdict": gain["verdict"], "depth": g["comparisons"][cell]["depth"],
            "depth_from": "answer" if g["answer"] else "leader",
            "answer_depth": None if g["answer"] is None else g["comparisons"][g["answer"]]["depth"],
            "decided": bool(g["decided"]),
            "gain": d.get("diff"), "lo": d.get("lo"), "hi": d.get("hi"), "test": d.get("test"),
            "n_pairs": d.get("n_pairs", 0),
            "mean_transfer": None if t is None else t["mean"],
            "ci_transfer": None if t is None else t["ci"],
            "n_transfer": 0 if t is None else int(t["n"]),
            "mean_scratch": z["mean"], "ci_scratch": z["ci"], "n_scratch": int(z["n"]),
            "scratch_cell": z[M.CELL], "cell": cell, "alpha_bound": gain["alpha_bound"],
            "sizes": sizes,
            "depths": {c: {"depth": x["depth"], "gain": x["diff"], "lo": x["lo"], "hi": x["hi"],
                           "n_pairs": x["n_pairs"]} for c, x in gain["depths"].items()}})
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(FAMILY_KEYS + [M.SIZE], kind="stable").reset_index(drop=True)


def family_summary(pays: pd.DataFrame) -> list[dict]:
    """Per family (split x backbone x init): the sizes at which transfer is shown better,
    shown not better (incl. scratch better), undecided; ``last_shown``: the largest size at
    which the gain is shown; and the Answer's depth at every size, as data and as a sentence."""
    out = []
    for k, f in pays.groupby(FAMILY_KEYS, sort=True):
        f = f.sort_values(M.SIZE)
        better = [int(x) for x in f.loc[f["verdict"] == ST.GAIN_BETTER, M.SIZE]]
        notb = [int(x) for x in f.loc[f["verdict"].isin([ST.GAIN_NOT, ST.GAIN_SCRATCH]), M.SIZE]]
        und = [int(x) for x in f.loc[f["verdict"] == ST.UNDECIDED, M.SIZE]]
        depths = [(int(r[M.SIZE]), r["answer_depth"], bool(r["decided"]))
                  for _, r in f.iterrows()]
        out.append({**dict(zip(FAMILY_KEYS, k)), "better": better, "not_better": notb,
                    "undecided": und, "last_shown": max(better) if better else None,
                    "answer_depths": [{"size": n, "depth": d, "decided": dec}
                                      for n, d, dec in depths],
                    "depth_sentence": depth_sentence(depths)})
    return out


def depth_sentence(depths: list[tuple]) -> str:
    """The Answer's depth across sizes in words, runs of equal depth merged: 'freeze 2 stages
    up to 30 images per class, fine-tune everything from 100' (undecided sizes named)."""
    parts, i = [], 0
    while i < len(depths):
        j = i
        while j + 1 < len(depths) and depths[j + 1][1:] == depths[i][1:]:
            j += 1
        n0, d, dec = depths[i]
        n1 = depths[j][0]
        what = ("no answer yet" if d is None or _nan(d) else
                _freeze(int(d)) + ("" if dec else " (undecided)"))
        where = (f"at {size_text(n0)}" if i == j else f"from {size_text(n0)} to {size_text(n1)}")
        if i == 0 and j == len(depths) - 1:
            where = "at every size"
        elif i == 0 and i != j:
            where = f"up to {size_text(n1)}"
        elif j == len(depths) - 1 and i != j:
            where = f"from {size_text(n0)}"
        parts.append(f"{what} {where}")
        i = j + 1
    return ", ".join(parts) + (" images per class" if depths and size_text(depths[-1][0]) != "all"
                               else "")


def pays_table(pays: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "split": pays[M.SPLIT], "backbone": pays[M.BACKBONE], "init": pays[M.INIT],
        "images per class": [size_text(n) for n in pays[M.SIZE]],
        "verdict": pays["verdict"],
        "depth": [f"d{int(d)}" + ("" if src == "answer" else " (most accurate observed)")
                  for d, src in zip(pays["depth"], pays["depth_from"])],
        "transfer test acc": [mean_ci(m, c, n) for m, c, n in
                              zip(pays["mean_transfer"], pays["ci_transfer"], pays["n_transfer"])],
        "scratch test acc": [mean_ci(m, c, n) for m, c, n in
                             zip(pays["mean_scratch"], pays["ci_scratch"], pays["n_scratch"])],
        "gain (points)": ["–" if _nan(x) else _pts(x) for x in pays["gain"]],
        "simultaneous bounds": [ci_text(a, b) for a, b in zip(pays["lo"], pays["hi"])],
        "pairs": pays["n_pairs"]})


def rule_text(v: CellView, sizes: int) -> str:
    return (f"Rule: at each size, every depth of the group against the scratch baseline of the "
            f"same split, size and backbone, paired per seed (a seed draws the same target "
            f"images, source model, head, batches and augmentations in both), two-sided paired t "
            f"bounds, each side at α / (2 × depths × sizes) (α = {v.alpha:g}, sizes = {sizes}"
            + (", spent over the racing's looks as the Answer's" if v.racing else "")
            + "): all bounds of a split × backbone × init hold together with probability "
            f"≥ 1 − α, so whichever depth is shown (the Answer's, chosen on the same runs) its "
            f"interval stays honest. *Transfer better*: some depth's lower bound above 0. "
            f"*Scratch better*: every depth's upper bound below 0. *Not better*: every depth's "
            f"upper bound below +{v.tol_points:g} point(s) (report.tolerance): no depth gains "
            f"the tolerance. Else *undecided*. Guarantee: the chance that any verdict of a "
            f"split × backbone × init, across its sizes, is wrong is at most α.")


def _budget_text(s: Study) -> str | None:
    design = recorded_design(s.spec)
    if design is None or design.sizes == (None,):
        return None
    sp = design.spec
    parts = []
    for split in sp.splits:
        steps = design.min_steps(split.name)
        parts.append(f"{split.name}: at least {steps} optimizer steps per run at every size")
    return ("Training budget (target_steps"
            + (f" = {sp.target_steps}" if sp.target_steps else ": null, the steps the largest "
               "size takes in target_epochs epochs") + "): " + "; ".join(parts)
            + f". A size whose {sp.target_epochs} epochs give fewer steps makes each epoch "
            "several passes over its images (column passes of the epochs table), so small sizes "
            "are not compared undertrained; the learning rate is tuned at every size under this "
            "budget.")


def pays_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    h = Section("2. When transfer pays: transfer against scratch by target-set size")
    pays = transfer_by_size(s, v)
    sizes = _sizes_of(s, v)
    if sizes < 2:
        h.p("This study trains the target stage at one size "
            f"({size_text(pays[M.SIZE].iloc[0]) if len(pays) else 'all'} images per class); "
            "give data.target_train_per_class a list of sizes (e.g. [10, 30, 100]) to see "
            "where transfer stops paying. The gain at this size, by the rule below:")
    budget = _budget_text(s)
    if budget:
        h.p(budget)
    h.p(rule_text(v, sizes))
    if pays.empty:
        h.p("No transferred group has a scratch baseline with completed runs: nothing to "
            "compare.")
        return h
    for f in family_summary(pays):
        lab = f"{f[M.SPLIT]} / {f[M.BACKBONE]} / {f[M.INIT]}"
        shown = ("transfer is last shown better at "
                 f"{size_text(f['last_shown'])} images per class" if f["last_shown"] is not None
                 else "transfer is shown better at no size")
        h.p(f"{lab}: {shown}. Better at: {_list(f['better'])}; not better at: "
            f"{_list(f['not_better'])}; undecided at: {_list(f['undecided'])}. The Answer: "
            f"{f['depth_sentence']}.")
    h.fig(plots.save(plots.transfer_by_size(pays, v.tol_points), out / f"{prefix}pays.png"),
          "Test accuracy against images per target class (log scale): scratch and transfer at "
          "the depth shown, mean ± 95 % CI; beneath, the gain with its simultaneous bounds")
    h.table(pays_table(pays), "Transfer against scratch at every size (gain of the depth shown; "
                              "bounds simultaneous over depths and sizes)")
    return h


def _list(sizes: list) -> str:
    return ", ".join(size_text(n) for n in sizes) or "none"


def pays_data(s: Study, v: CellView) -> dict:
    """``pays_section`` as data (report.json ``transfer_by_size``)."""
    pays = transfer_by_size(s, v)
    rows = []
    for _, r in pays.iterrows():
        rows.append({k: (None if isinstance(x, float) and math.isnan(x) else x)
                     for k, x in r.items()})
    return {"transfer_by_size": {
        "procedure": "every depth against its size's scratch baseline, paired t, two-sided, "
                     "Bonferroni over 2 x depths x sizes (and the racing's looks)",
        "guarantee": "per split x backbone x init: P(any verdict across its sizes wrong) "
                     "<= alpha",
        "alpha": v.alpha, "tolerance_points": v.tol_points, "sizes": _sizes_of(s, v),
        "verdicts": list(ST.GAIN_VERDICTS), "rows": rows,
        "families": family_summary(pays) if len(pays) else []}}
