"""`study compare`: several studies side by side, every one judged by the same rules
(``analysis.cells``) and described with the per-study content of the report's modules
(``analysis.view``, ``analysis.answer``, ``analysis.report``'s tables, ``analysis.words``): each
study's Answer, the differences to the first study, overlaid depth curves and frontiers,
finalists, early-stopping accounting and provenance."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from analysis import cells as C
from analysis import frontier as F
from analysis import plots
from analysis import answer as A
from analysis import report as R
from analysis import view as V
from analysis import words as W
from analysis.load import ReportError, Study, load_study
from analysis.output import publish
from analysis.render import Section, prose
from study.core import metrics as M
from study.core.design import cell_id
from study.core.status import COMPLETED, REPORTED, STOPPED

ANSWER_KEYS = C.GROUP_KEYS  # split, target size, backbone, init


def _labels(studies: list[Study]) -> list[str]:
    names = [s.name for s in studies]
    return [(n if names.count(n) == 1 else f"{n}#{i + 1}") + ("-SIMULATED" if s.simulated else "")
            for i, (n, s) in enumerate(zip(names, studies))]


def _answers_side_by_side(views: list[V.CellView], labels: list[str]) -> pd.DataFrame:
    """One row per split x backbone x init, two columns per study: its best depth (mean ± CI,
    n) and its answer."""
    keys = sorted({tuple(r) for v in views for r in v.answer[ANSWER_KEYS].itertuples(index=False)},
                  key=lambda k: tuple(map(str, k)))
    rows = []
    for k in keys:
        row = {"split": k[0], "images per class": W.size_text(k[1]), "backbone": k[2],
               "init": k[3]}
        for v, lab in zip(views, labels):
            a = v.answer
            m = a[(a[M.SPLIT] == k[0]) & (a[M.SIZE] == k[1]) & (a[M.BACKBONE] == k[2])
                  & (a[M.INIT] == k[3])]
            if m.empty:
                row[f"{lab}: best depth"] = row[f"{lab}: answer"] = "–"
                continue
            r = m.iloc[0]
            row[f"{lab}: best depth"] = A.best_depth_text(r)
            row[f"{lab}: answer"] = A.recommendation(r)
        rows.append(row)
    return W.drop_all_sizes(pd.DataFrame(rows))


def _differences(views: list[V.CellView], labels: list[str], studies: list[Study],
                 accs: list[dict]) -> pd.DataFrame:
    """Per split x backbone x init, each study's best depth against the first study's: the
    difference of their mean test accuracies with its Welch 95 % CI and p; then each study's
    compute against the first's (``accs``: their ``V.accounting``)."""
    base = views[0].answer.set_index(ANSWER_KEYS) if len(views[0].answer) else None
    bsum = views[0].summary.set_index(M.CELL)
    rows = []
    for v, lab in zip(views[1:], labels[1:]):
        summ = v.summary.set_index(M.CELL)
        for _, r in v.answer.iterrows():
            k = tuple(r[c] for c in ANSWER_KEYS)
            if base is None or k not in base.index:
                continue
            b = base.loc[k]
            split, size, backbone, init = k
            cb = bsum.loc[cell_id(split, backbone, init, b["best_depth"], size or None)]
            cr = summ.loc[cell_id(split, backbone, init, r["best_depth"], size or None)]
            w = C.welch(cr["mean"], cr["std"], cr["n"], cb["mean"], cb["std"], cb["n"])
            rows.append({"study": lab, "split": split, "images per class": W.size_text(size),
                         "backbone": backbone, "init": init,
                         "best depth": f"d{int(b['best_depth'])} → d{int(r['best_depth'])}",
                         "Δ best-depth test acc gain": w["diff"],
                         "Δ 95 % CI (points)": W.ci_text(w["lo"], w["hi"]),
                         "p (Welch, two-sided)": W.p_text(w["p"]),
                         "answer depth": f"{_depth(b['cheap_depth'])} → "
                                         f"{_depth(r['cheap_depth'])}"})
    a0 = accs[0]
    for a1, lab in zip(accs[1:], labels[1:]):
        rows.append({"study": lab, "split": "(whole study)",
                     "FLOPs ratio (whole study spent)": a1["total"] / a0["total"]
                     if a0["total"] else math.nan})
    return W.drop_all_sizes(pd.DataFrame(rows))


def _depth(d) -> str:
    """'d2', or 'none' for a group without an answer."""
    return "none" if W._nan(d) else f"d{int(d)}"


def _stacked(views, labels, table, by_cell: bool = True) -> pd.DataFrame:
    """``table(view)`` of every study, one below the other with a first column "study"; with
    ``by_cell``, rows sorted by cell, then study (side by side per cell)."""
    parts = []
    for v, lab in zip(views, labels):
        d = table(v)
        d.insert(0, "study", lab)
        parts.append(d)
    d = pd.concat(parts, ignore_index=True)
    if by_cell and "cell" in d and len(d):
        d = d.sort_values(["cell", "study"], kind="stable").reset_index(drop=True)
    return d


@dataclasses.dataclass
class Compared:
    """What every section of a comparison reads: the studies, their labels, their cell views
    (``analysis.view``), their early-stopping accounting, and where figures go."""
    studies: list
    labels: list
    views: list
    accs: list
    out: Path


def compare_sections(studies: list[Study], labels: list[str], out: Path,
                     tolerance=None) -> list[Section]:
    """The comparison's sections; every study is judged by the same rules (analysis.cells),
    each with its own spec's tolerance unless ``tolerance`` (points) is given."""
    c = Compared(studies, labels, [V.cell_view(s, tolerance) for s in studies],
                 [V.accounting(s) for s in studies], out)
    return [section(c) for section in (_studies, _answers, _differences_section, _depth_curves,
                                        _gains, _frontiers, _finalists, _stopping, _provenance)]


def _studies(c: Compared) -> Section:
    st = Section("1. Studies")
    st.table(pd.DataFrame([{
        "study": lab, "path": s.path, "created": s.created,
        "code version": s.provenance.get("code_version"),
        "data fingerprint": str((s.provenance.get("data") or {}).get("fingerprint", ""))[:16],
        "trials": len(s.trials),
        **{k: int((s.trials["status"] == k).sum()) for k in REPORTED},
        "cells": len(v.coverage), "cells with a run": len(v.coverage) - len(V.no_run_cells(v)),
        "confirm seeds": v.seeds, "tolerance (points)": f"{v.tol_points:g}",
        "finished": "yes" if s.summary else "no (partial)"}
        for s, lab, v in zip(c.studies, c.labels, c.views)]))
    fps = {str((s.provenance.get("data") or {}).get("fingerprint")) for s in c.studies}
    if len(fps) > 1:
        st.p("Note: the studies use different data (fingerprints differ); accuracies may not be "
             "comparable.")
    return st


def _answers(c: Compared) -> Section:
    views, labels = c.views, c.labels
    b = Section("2. Answer per study: how much to freeze")
    for v, lab in zip(views, labels):
        if v.post_hoc:
            b.p(f"Study {lab}: {A.post_hoc_text(v)}")
    b.p(A.rule_text(views[0], [v.stopping for v in views]))
    if len({v.tol_points for v in views}) > 1:
        b.p("The studies' specs set different tolerances (see section 1); each study is judged "
            "by its own. Pass one tolerance to judge them alike.")
    for v, lab in zip(views, labels):
        note = V.mode_note(v)
        if note:
            b.p(f"Study {lab}: {note}")
        single = V.single_run_cells(v)
        if single:
            b.p(f"Study {lab}: cells with only 1 completed run (no interval): {', '.join(single)}.")
        if V.no_run_cells(v):
            b.p(f"Study {lab}: cells without any completed run: {', '.join(V.no_run_cells(v))}.")
    b.table(_answers_side_by_side(views, labels), "How much to freeze, side by side")
    b.table(_stacked(views, labels, R.coverage_table), "Per-cell coverage")
    return b


def _differences_section(c: Compared) -> Section:
    d = Section(f"3. Differences (relative to study {c.labels[0]})")
    d.p(prose("""
        Per split, backbone and init, each study's most accurate depth against the first
        study's: difference of the mean test accuracies in percentage points with the Welch 95 %
        CI ('–': a side has one run), and how the most accurate depth and the answer's depth moved;
        compute as ratios."""))
    d.table(_differences(c.views, c.labels, c.studies, c.accs))
    return d


def _splits(c: Compared) -> list[str]:
    return sorted({sp for s in c.studies for sp in V.splits_of(s.trials)})


def _depth_curves(c: Compared) -> Section:
    views, labels = c.views, c.labels
    sec = Section("4. Accuracy vs frozen depth: overlaid cell curves (95 % CI)")
    sec.p(prose("""
        Mean test accuracy of each cell's completed runs per frozen depth with 95 % t intervals,
        one colour per study, one panel per backbone; dotted: the scratch cells. Hollow: one
        run."""))
    for sp in _splits(c):
        sec.fig(plots.save(plots.compare_depth_curves(
            {lab: v.summary for v, lab in zip(views, labels)}, sp), c.out / f"compare_depth_{sp}.png"),
            f"Split {sp}: test accuracy vs frozen depth, studies overlaid")
    sec.table(_stacked(views, labels, R.cell_table), "Cells of every study (side by side per cell)")
    return sec


def _gains(c: Compared) -> Section:
    g = Section("5. Transfer gain over scratch")
    g.p(prose("""
        Per study, the transferred depth of its Answer (none while a group has no answer)
        against the scratch cell (completed confirmation runs only): gain in points, 95 % CI and
        two-sided p (paired per seed; Welch where the cells share fewer than 2 seeds, column
        'test')."""))
    g.table(_stacked(c.views, c.labels, R.gain_table), "Transfer gain over scratch (test accuracy)")
    return g


def _frontiers(c: Compared) -> Section:
    views, labels = c.views, c.labels
    f = Section("6. Accuracy vs compute: overlaid Pareto frontiers of cells")
    f.p(prose("""
        Cells' mean test accuracy against their mean compute per run (target + amortised
        source); one frontier per study."""))
    for sp in _splits(c):
        f.fig(plots.save(plots.compare_frontiers({lab: v.summary for v, lab in zip(views, labels)},
                                                 {lab: v.frontier for v, lab in zip(views, labels)},
                                                 sp), c.out / f"compare_frontier_{sp}.png"),
              f"Split {sp}: Pareto frontiers of cells of the studies (total compute incl. source "
              "share)")
        f.table(_stacked(views, labels, lambda v: R.cell_frontier_table(v, sp), by_cell=False),
                f"Split {sp}: frontier cells")
    return f


def _finalists(c: Compared) -> Section:
    lc = Section("7. Finalists: learning curves and the best trials' test metrics")
    rows = []
    for i, (s, lab) in enumerate(zip(c.studies, c.labels)):
        t = s.trials
        lc.fig(plots.save(plots.learning_curves(s.epochs, F.finalists(t), V.splits_of(t)),
                          c.out / f"compare_{i}_learning.png"),
               f"Study {lab}: validation accuracy per epoch; coloured: finalists")
        for sp, bt in V.best_trials(t):
            if bt is None:
                continue
            rows.append({"study": lab, M.SPLIT: sp, "trial": bt["trial_id"],
                         M.BACKBONE: bt[M.BACKBONE], M.INIT: bt[M.INIT],
                         M.FROZEN_DEPTH: bt[M.FROZEN_DEPTH], M.LR: bt[M.LR],
                         "test acc": bt[M.TEST_ACC], "macro precision": bt[M.TEST_PRECISION],
                         "macro recall": bt[M.TEST_RECALL], "macro f1": bt[M.TEST_F1]})
            lc.fig(plots.save(plots.confusion(bt, s.target_classes(sp)),
                              c.out / f"compare_{i}_confusion_{sp}.png"),
                   f"Study {lab}, split {sp}: test confusion matrix of trial {bt['trial_id']}")
    if rows:
        lc.table(pd.DataFrame(rows), "Best completed trial per study and split (test split)")
    else:
        lc.p("No study has a completed trial yet, so there are no test metrics.")
    return lc


def _stopping(c: Compared) -> Section:
    a = Section("8. Early-stopping accounting")
    a.table(pd.DataFrame([{
        "study": lab, "early stopping": v.stopping.label, "trials": len(s.trials),
        "epochs run": acc["epochs_run"], "epochs FIFO": acc["epochs_fifo"],
        "FLOPs completed": acc["spent"][COMPLETED], "FLOPs stopped": acc["spent"][STOPPED],
        "FLOPs source": acc["source"], "FLOPs spent": acc["total"],
        "FLOPs FIFO estimate": acc["fifo"], "savings factor": acc["savings"]}
        for s, lab, v, acc in zip(c.studies, c.labels, c.views, c.accs)]))
    return a


def _provenance(c: Compared) -> Section:
    p = Section("9. Provenance")
    pv = [R.provenance_table(s).set_index("item")["value"].rename(lab)
          for s, lab in zip(c.studies, c.labels)]
    p.table(pd.concat(pv, axis=1).reset_index())
    return p


def make_compare(paths, out=None, force: bool = False, tolerance=None) -> tuple[Path, str]:
    """Compare studies side by side by the same rules; ``tolerance`` in accuracy points (None:
    each study's spec's report.tolerance)."""
    if len(paths) < 2:
        raise ReportError("compare needs at least two study directories")
    studies = [load_study(p) for p in paths]
    for s in studies:
        V.tolerance_points(s.spec, tolerance)
    labels = _labels(studies)
    out = Path(out) if out else Path("compare-" + "-vs-".join(labels))
    publish(out, studies, "compare", force, "Study comparison: " + " vs ".join(labels),
            lambda o: compare_sections(studies, labels, o, tolerance), labels)
    text = "\n".join(R.summary_text(s, lab, tolerance) for s, lab in zip(studies, labels))
    return out, text + f"\ncomparison: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)"
