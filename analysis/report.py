"""`study report`: the report of one study, and the per-study tables the comparison
(``analysis.compare``) reuses. Along its seams: ``analysis.view`` reads a study (the spec's
settings, the ``CellView``), ``analysis.answer`` says the Answer (section 1), this module the
other sections and the terminal summary, ``analysis.words`` formats numbers,
``analysis.render`` / ``analysis.output`` render and publish.

The report answers the study's question first (section 1, "Answer": how many stages to freeze,
per split x backbone x init), by the rules of ``analysis.cells``: statistics over each cell's
completed confirmation runs of its best configuration; depths compared with every depth that
could be the best, paired per seed (``study.core.stats``: multiple comparisons with the best;
verdicts best (shown) / within tolerance / worse / undecided, with a tolerance in accuracy
points, ``report.tolerance``, at ``report.alpha`` per group, spent over the racing's looks when
the study raced), shown as a table, a forest plot and data in report.json. Then coverage, depth
curves, transfer gain (paired per seed too), the cells' Pareto frontier, and the per-trial
sections (scatter plots where stopped trials stay visible, learning curves, finalists,
early-stopping accounting, provenance). The early-stopping rule is
named as the study ran it (spec ``scheduler.type``: successive halving, ASHA, or none: FIFO).

Documents are built as ``analysis.render.Section``s; ``analysis.output`` writes them (report.md,
a self-contained report.html, report.json naming the studies, trials/epochs as CSV and Parquet).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis import cells as C
from analysis import frontier as F
from analysis import plots
from analysis.answer import _answer_section, answer_data, best_depth_text, recommendation
from analysis.pays import pays_data, pays_section
from analysis.load import DEVICE_S, EPOCHS, TOTAL_FLOPS, ReportError, Study, load_study
from analysis.output import default_out, now, publish
from analysis.render import Section, prose
from analysis.view import (SIMULATED_BANNER, CellView, EarlyStopping, accounting, answer_alpha,
                           best_trials, cell_view, confirm_seeds, no_run_cells, spec_default,
                           splits_of, tolerance_points)
from analysis.words import _nan, ci_text, drop_all_sizes, group_text, mean_ci, p_text, size_text
from study.core import metrics as M
from study.core.status import COMPLETED, ERRORED, REPORTED, RUNNING, STOPPED

# `study report`'s API; the view's and the Answer's names are re-exported for one import
__all__ = ["make_report", "summary_text", "study_sections", "recommendation", "answer_data",
           "ReportError", "answer_alpha", "cell_view", "confirm_seeds", "spec_default",
           "tolerance_points", "CellView"]



# ----------------------------------------------------------------------------- the study's spec


# ----------------------------------------------------------------------------- cells


def coverage_table(v: CellView) -> pd.DataFrame:
    c = v.coverage
    return pd.DataFrame({
        "cell": c[M.CELL], "tune trials": c["tune trials"], "completed": c[f"tune {COMPLETED}"],
        "stopped": c[f"tune {STOPPED}"], "errored": c[f"tune {ERRORED}"],
        "running": c[f"tune {RUNNING}"],
        "confirm runs (completed / trials)": [f"{a} / {b}" for a, b in
                                              zip(c["confirm completed"], c["confirm trials"])],
        "runs counted": c["runs"], "chosen lr": c[M.LR]})


def cell_table(v: CellView) -> pd.DataFrame:
    s = v.summary
    val = v.val.set_index(M.CELL)["mean"] if len(v.val) else pd.Series(dtype=float)
    return pd.DataFrame({
        "cell": s[M.CELL], "lr": s[M.LR], "runs": s["n"],
        "test acc (mean ± 95 % CI)": [mean_ci(m, c) for m, c in zip(s["mean"], s["ci"])],
        "std (points)": ["–" if _nan(x) else f"{100 * x:.2f}" for x in s["std"]],
        "val acc (mean)": [val.get(c, math.nan) for c in s[M.CELL]],
        "target FLOPs (mean)": s[M.TARGET_FLOPS],
        "total FLOPs incl. source (mean)": s[TOTAL_FLOPS],
        "device_s (mean)": s[DEVICE_S], "trials": s["trial_ids"]})


def gain_table(v: CellView) -> pd.DataFrame:
    g = v.gains
    return pd.DataFrame({
        "split": g[M.SPLIT], "images per class": [size_text(n) for n in g[M.SIZE]],
        "backbone": g[M.BACKBONE], "init": g[M.INIT],
        "answer depth": ["none yet" if _nan(d) else f"d{int(d)}" for d in g["depth"]],
        "transfer test acc (mean ± 95 % CI)": [mean_ci(m, c, n) for m, c, n in
                                               zip(g["mean_transfer"], g["ci_transfer"],
                                                   g["n_transfer"])],
        "scratch test acc (mean ± 95 % CI)": [mean_ci(m, c, n) if n else "– (no scratch cell)"
                                              for m, c, n in zip(g["mean_scratch"],
                                                                 g["ci_scratch"], g["n_scratch"])],
        "gain": g["gain"],
        "gain 95 % CI (points)": [ci_text(a, b) for a, b in zip(g["lo"], g["hi"])],
        "p (two-sided)": [p_text(p) for p in g["p"]],
        "test": [_gain_test(t, n) for t, n in zip(g["test"], g["n_pairs"])]}).pipe(drop_all_sizes)


def _gain_test(test: str, n_pairs: int) -> str:
    """The gain's test: 'paired t (3 seeds)', 'Welch (fewer than 2 shared seeds)' or '–'."""
    if test == "paired t":
        return f"paired t ({int(n_pairs)} seeds)"
    if test == "welch":
        return "Welch (fewer than 2 shared seeds)"
    return "–"


def cell_frontier_table(v: CellView, split: str) -> pd.DataFrame:
    f = v.frontier
    f = f[f[M.SPLIT] == split] if len(f) else f
    return pd.DataFrame({
        "cell": f[M.CELL], "lr": f[M.LR], "runs": f["n"],
        "test acc (mean ± 95 % CI)": [mean_ci(m, c) for m, c in zip(f["mean"], f["ci"])],
        "total FLOPs incl. source (mean)": f[TOTAL_FLOPS], "target FLOPs (mean)": f[M.TARGET_FLOPS]})


# ----------------------------------------------------------------------------- trials


def _frontier_table(t: pd.DataFrame, x: str) -> pd.DataFrame:
    parts = []
    for label, g in [("all backbones", t)] + [(f"{b}", g) for b, g in t.groupby(M.BACKBONE)]:
        f = F.pareto_front(g, x, M.VAL_ACC)
        f.insert(0, "frontier of", label)
        parts.append(f)
    f = pd.concat(parts, ignore_index=True)
    return f[["frontier of", "trial_id", M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR, "status",
              EPOCHS, M.VAL_ACC, x] + ([M.TARGET_FLOPS] if x != M.TARGET_FLOPS else [])]


def _per_class(trial: pd.Series) -> pd.DataFrame:
    pc = json.loads(trial[M.TEST_PER_CLASS])
    return pd.DataFrame([{"class": c, "precision": v.get("precision"), "recall": v.get("recall"),
                          "f1": v.get("f1"), "support (images)": v.get("support")}
                         for c, v in pc.items()])


def _stopping_table(acc: dict, st: EarlyStopping) -> pd.DataFrame:
    n = acc["trials"]
    rows = [("completed trials", n[COMPLETED], acc["spent"][COMPLETED]),
            (st.stopped, n[STOPPED], acc["spent"][STOPPED]),
            ("errored", n[ERRORED], acc["spent"][ERRORED]),
            ("running / incomplete", n[RUNNING], acc["spent"][RUNNING]),
            (f"source models (each once: {acc['sources']})", acc["sources"], acc["source"]),
            ("total spent", sum(n.values()), acc["total"]),
            ("FIFO estimate (every trial to target_epochs)", sum(n.values()), acc["fifo"])]
    return pd.DataFrame(rows, columns=["", "count", "FLOPs"])


def provenance_table(s: Study) -> pd.DataFrame:
    pv, data = s.provenance, s.provenance.get("data") or {}
    rows = [("study", s.name), ("path", s.path), ("created", pv.get("created")),
            ("code version", pv.get("code_version")),
            ("packages", ", ".join(f"{k} {v}" for k, v in (pv.get("packages") or {}).items())),
            ("data fingerprint", data.get("fingerprint")), ("data origin", data.get("origin")),
            ("images train/val/test", f"{data.get('train_images')}/{data.get('val_images')}/"
                                      f"{data.get('test_images')}"),
            ("search seed", pv.get("seed")), ("host", pv.get("host")),
            ("command", " ".join(map(str, pv.get("command") or []))),
            ("run finished", "yes" if s.summary else "no (partial results)"),
            ("report generated", now())]
    return pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows],
                        columns=["item", "value"])


# ----------------------------------------------------------------------------- one study

def study_sections(s: Study, out: Path, prefix: str = "", tolerance=None,
                   view: CellView | None = None) -> list[Section]:
    """The report's sections; ``tolerance`` in accuracy points (None: the spec's). Figures are
    written to ``out`` (file names prefixed by ``prefix``)."""
    v = view or cell_view(s, tolerance)
    return [section(s, v, out, prefix) for section in
            (_answer_section, pays_section, _cells_section, _depth_section, _gain_section,
             _frontier_section,
             _finalists_section, _stopping_section, _provenance_section)]


def _cells_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    nocell = no_run_cells(v)
    cv = Section("3. Cells: coverage and runs")
    cv.p(prose("""
        One row per cell (split/backbone/init/d<frozen depth>): its tune trials (learning-rate
        samples; early stopping compares them only with trials of the same cell) and how they
        ended, its confirm runs (the best configuration again with new seeds), and the runs that
        count (completed trials of the chosen learning rate)."""))
    cv.p("Every cell has at least one completed run." if not nocell else
         f"{len(nocell)} cell(s) have no completed run: {', '.join(nocell)}.")
    cv.table(coverage_table(v), "Per-cell coverage")
    return cv


def _depth_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    d = Section("4. Accuracy vs frozen depth (cell runs, 95 % CI)")
    d.p(prose("""
        Mean test accuracy of each cell's completed runs against its frozen depth, with 95 % t
        intervals; one line per backbone and init, per split (cf. Yosinski et al. 2014). Depth 0
        fine-tunes everything; depth = number of frozen backbone stages. Scratch baselines are
        dotted lines (band: their interval). Hollow markers: one run, no interval. Stopped
        trials are not drawn (see the scatter plots of section 6)."""))
    d.fig(plots.save(plots.depth_curves(v.summary, splits_of(s.trials)),
                     out / f"{prefix}depth.png"),
          "Test accuracy vs frozen depth per split (mean ± 95 % CI of the cells' runs)")
    d.table(cell_table(v), "Cells: test accuracy over their runs")
    return d


def _gain_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    g = Section("5. Transfer gain over scratch (each answer, 95 % CI)")
    g.p(prose("""
        Per split, backbone and transferred init: the Answer's depth (section 1: the cheapest
        depth shown within tolerance of the best; none while the group has no answer) against
        the scratch cell's runs of the same split and backbone. Both sides are completed runs, so
        they trained for the same target epochs. Runs with the same seed draw the same data
        order and augmentations in both cells, so they are compared paired: gain = mean per-seed
        difference of the test accuracies (points) over the seeds both cells ran, with its 95 %
        t interval and the two-sided paired t test's p. Where the cells share fewer than 2
        seeds: difference of the means with Welch's interval and p (column 'test'); '–' where a
        side has fewer than 2 runs. The depth is not picked as the one with the highest test
        mean, which would make its gain optimistic, and no run that chose a configuration is
        counted."""))
    if v.gains.dropna(subset=["gain"]).empty:
        g.p("No transferred cell has a scratch cell with completed runs to compare with.")
    else:
        g.fig(plots.save(plots.transfer_gain(v.gains), out / f"{prefix}gain.png"),
              "Transfer gain over scratch with 95 % CIs (paired per seed; Welch where not)")
    g.table(gain_table(v), "Transfer gain over scratch (test accuracy, completed runs)")
    return g


def _frontier_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    t, st = s.trials, v.stopping
    fr = Section("6. Accuracy vs compute: Pareto frontier of cells")
    fr.p(prose(f"""
        Each cell is one point: the mean test accuracy of its runs (± 95 % CI) against their
        mean compute, target plus the amortised source cost (source FLOPs / trials that used
        that source model). The black steps are the Pareto frontier of cells. Below, every
        trial (its last validation accuracy; hollow: {st.not_complete}; ringed: the runs that
        count in the cell statistics), with and without the source cost."""))
    sc = C.scatter_points(t, v.runs)
    for sp in splits_of(t):
        fr.fig(plots.save(plots.cell_frontier(v.summary, v.frontier, sp),
                          out / f"{prefix}cell_frontier_{sp}.png"),
               f"Split {sp}: cells' mean test accuracy vs mean total compute")
        fr.table(cell_frontier_table(v, sp), f"Split {sp}: Pareto frontier of cells")
        f = plots.save(plots.frontier(sc, sp, stopped=st.stopped if st.stops else None),
                       out / f"{prefix}frontier_{sp}.png")
        fr.fig(f, f"Split {sp}: every trial's validation accuracy vs compute, with and without "
                  "the amortised source cost")
        spt = t[t[M.SPLIT] == sp]
        fr.table(_frontier_table(spt, TOTAL_FLOPS), f"Split {sp}: trial frontier, total compute "
                                                    "(target + amortised source)")
        fr.table(_frontier_table(spt, M.TARGET_FLOPS), f"Split {sp}: trial frontier, target "
                                                       "compute only")
    return fr


def _finalists_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    t = s.trials
    lc = Section("7. Finalists: learning curves, per-class metrics, confusion")
    lc.fig(plots.save(plots.learning_curves(s.epochs, F.finalists(t), splits_of(t)),
                      out / f"{prefix}learning.png"),
           "Validation accuracy per epoch; coloured: finalists (trials that ran to target_epochs)")
    for sp, b in best_trials(t):
        if b is None:
            lc.p(f"Split {sp}: no completed trial, so no test metrics yet.")
            continue
        lc.p(f"Split {sp}: best trial {b['trial_id']} ({b[M.BACKBONE]}, init {b[M.INIT]}, "
             f"frozen depth {b[M.FROZEN_DEPTH]}, lr {b[M.LR]:.3g}) by validation accuracy: test "
             f"accuracy {100 * b[M.TEST_ACC]:.1f}%, macro precision "
             f"{100 * b[M.TEST_PRECISION]:.1f}%, recall {100 * b[M.TEST_RECALL]:.1f}%, "
             f"F1 {100 * b[M.TEST_F1]:.1f}%.")
        lc.table(_per_class(b), f"Split {sp}: per-class test metrics of trial {b['trial_id']}")
        lc.fig(plots.save(plots.confusion(b, s.target_classes(sp)),
                          out / f"{prefix}confusion_{sp}.png"),
               f"Split {sp}: test confusion matrix of trial {b['trial_id']}")
    return lc


def _stopping_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    """Compute spent under the study's early stopping vs the FIFO estimate."""
    t, st = s.trials, v.stopping
    a = Section(f"8. Early-stopping accounting: {st.label}")
    acc = accounting(s)
    acc_s = F.early_stopping_accounting(t.assign(_src_s=t["source_train_s"]), s.target_epochs,
                                        flops=DEVICE_S, source_flops="_src_s")
    a.p(f"Under {st.name}, the trials ran {acc['epochs_run']} of {acc['epochs_fifo']} "
        f"trial-epochs. Compute spent: {acc['total']:.3g} FLOPs ({acc_s['total']:.0f} "
        f"device-seconds); FIFO (every trial to target_epochs = {s.target_epochs} epochs, each "
        f"source model once) is estimated at {acc['fifo']:.3g} FLOPs ({acc_s['fifo']:.0f} "
        f"device-seconds): savings factor x{acc['savings']:.2f} in FLOPs, "
        f"x{acc_s['savings']:.2f} in device time. The estimate uses each trial's per-epoch cost; "
        "trials that reported no epoch count as zero.")
    ph = t.groupby(M.PHASE)
    a.table(pd.DataFrame({"phase": list(ph.groups), "trials": ph.size().values,
                          "completed": ph["status"].apply(lambda x: (x == COMPLETED).sum()).values,
                          "stopped": ph["status"].apply(lambda x: (x == STOPPED).sum()).values,
                          "target FLOPs": ph[M.TARGET_FLOPS].sum().values}),
            "Compute by phase (tune: learning-rate search inside the cells; confirm: new seeds)")
    at = _stopping_table(acc, st)
    at["device_s"] = [acc_s["spent"][COMPLETED], acc_s["spent"][STOPPED],
                      acc_s["spent"][ERRORED], acc_s["spent"][RUNNING], acc_s["source"],
                      acc_s["total"], acc_s["fifo"]]
    a.table(at, "Compute by trial status")
    a.fig(plots.save(plots.early_stopping(acc, st.name, st.stopped),
                     out / f"{prefix}early_stopping.png"),
          f"Compute spent under {st.name} vs the FIFO estimate")
    return a


def _provenance_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    p = Section("9. Provenance")
    p.table(provenance_table(s), "Study")
    if s.sources:
        p.table(pd.DataFrame([{"source model": k, "trained by": i.get("trained_by"),
                               "users": len(i.get("users", [])), "epochs": i.get("epochs"),
                               "source FLOPs": i.get("flops"), "source val acc": i.get("val_acc"),
                               "source test acc": i.get("test_acc"), "train_s": i.get("train_s")}
                              for k, i in sorted(s.sources.items())]), "Shared source models")
    p.pre(s.spec_text)
    return p


def summary_text(s: Study, label: str | None = None, tolerance=None,
                 view: CellView | None = None) -> str:
    v = view or cell_view(s, tolerance)
    acc = accounting(s)
    n = s.trials["status"].value_counts().to_dict()
    lines = [SIMULATED_BANNER] if s.simulated else []
    lines += [f"study {label or s.name}: {len(s.trials)} trials ("
             + ", ".join(f"{n.get(k, 0)} {k}" for k in REPORTED)
             + ")" + ("" if s.summary else " — PARTIAL: study running or interrupted"),
             f"  cells: {len(v.coverage)}, {len(v.coverage) - len(no_run_cells(v))} with a "
             f"completed run; answer by test accuracy, tolerance {v.tol_points:g} point(s)"]
    rows = [("split", "backbone / init", "best depth (test acc, 95 % CI)", "answer")]
    for sp in splits_of(s.trials):
        a = v.answer[v.answer[M.SPLIT].astype(str) == sp]
        if a.empty:
            rows.append((sp, "–", "no transferred cell has a completed run yet", ""))
        for _, r in a.iterrows():
            rows.append((sp, group_text(r[M.SPLIT], r[M.SIZE], r[M.BACKBONE], r[M.INIT])
                         .split(" / ", 1)[1], best_depth_text(r),
                         recommendation(r)))
    w = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.append(f"  early stopping: {v.stopping.label}; spent {acc['total']:.3g} FLOPs vs "
                 f"~{acc['fifo']:.3g} FIFO (savings x{acc['savings']:.2f})")
    return "\n".join(lines)


def make_report(path, out=None, force: bool = False, tolerance=None) -> tuple[Path, str]:
    """Write the report of one study; returns (output dir, terminal summary). ``tolerance``: the
    Answer's tolerance in accuracy points (None: the spec's report.tolerance; another value
    makes the Answer post hoc, and the report says so first)."""
    s = load_study(path)
    tolerance_points(s.spec, tolerance)  # a bad tolerance fails before anything is written
    out = Path(out) if out else default_out(str(path), s.name)
    v = cell_view(s, tolerance)
    publish(out, [s], "report", force,
            f"Study report: {s.name}" + (" (SIMULATED: not measured results)" if s.simulated else ""),
            lambda o: study_sections(s, o, view=v), data={**answer_data(s, v),
                                                         **pays_data(s, v)})
    return out, (summary_text(s, view=v)
                 + f"\nreport: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)")
