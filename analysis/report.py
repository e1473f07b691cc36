"""`study report`: the report of one study, and the per-study content the comparison
(``analysis.compare``) reuses: the cell view, its tables and sentences, the terminal summary.

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

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd

from analysis import cells as C
from analysis import frontier as F
from analysis import plots
from analysis.load import DEVICE_S, EPOCHS, TOTAL_FLOPS, ReportError, Study, load_study
from analysis.output import default_out, now, publish
from analysis.render import Section, prose
from study.core import design as D
from study.core import metrics as M
from study.core import spec as S
from study.core.status import COMPLETED, ERRORED, REPORTED, RUNNING, STOPPED

METRIC = M.TEST_ACC  # what the answer compares: test accuracy of each cell's completed runs
# Opens every report (and `study report`'s summary) of a rehearsal; no option removes it.
SIMULATED_BANNER = ("SIMULATED STUDY (study run --simulate): a rehearsal. No model was trained: "
                    "times are the plan's FLOPs over a modelled throughput, accuracies come from "
                    "the cost model in trainables/simulate.py. It checks the spec, the cluster, "
                    "storage, time, cost and the report's shape; its numbers are not results.")


# ----------------------------------------------------------------------------- the study's spec

def spec_default(key: str):
    """The spec schema's default of a dotted key ("report.tolerance", "confirm.seeds"): the one
    place the report takes spec defaults from (``study.core.spec.default_of``)."""
    return S.default_of(key)


def _spec_get(spec, *keys, default=None):
    cur = spec
    for k in keys:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(k)
    return default if cur is None else cur


def tolerance_points(spec: dict, tolerance=None) -> float:
    """The Answer's tolerance (non-inferiority margin) in accuracy points: ``tolerance`` if given, else the spec's
    ``report.tolerance``, else its default. A bad ``tolerance`` argument raises ReportError; a
    bad spec value (older or hand-edited study.yaml) falls back to the default."""
    if tolerance is not None:
        try:
            v = float(tolerance)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise ReportError(f"tolerance: {tolerance!r} is not a number of accuracy points >= 0")
        return v
    default = float(spec_default("report.tolerance"))
    try:
        v = float(_spec_get(spec, "report", "tolerance", default=default))
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) and v >= 0 else default


def answer_alpha(spec: dict) -> tuple[float, tuple | None]:
    """(the spec's report.alpha, racing): ``report.alpha`` (its default when absent) and, when
    the study raced (``confirm.max_seeds`` above ``confirm.seeds``), (seeds, ceiling), so the
    report spends alpha over the looks as the racing did (``stats.look_alpha``)."""
    try:
        alpha = float(_spec_get(spec, "report", "alpha", default=spec_default("report.alpha")))
    except (TypeError, ValueError):
        alpha = float(spec_default("report.alpha"))
    k = confirm_seeds(spec)
    try:
        ceiling = int(_spec_get(spec, "confirm", "max_seeds", default=k) or k)
    except (TypeError, ValueError):
        ceiling = k
    mode = str(_spec_get(spec, "search", "mode", default="compare"))
    return alpha, D.race_levels(mode, k, ceiling)


def confirm_seeds(spec: dict) -> int:
    """The spec's confirm.seeds k (its default when the section lacks it); 0 for a study written
    before the confirm phase existed (no ``confirm`` section)."""
    if not isinstance(spec, dict) or "confirm" not in spec:
        return 0
    try:
        return max(0, int(_spec_get(spec, "confirm", "seeds",
                                    default=spec_default("confirm.seeds"))))
    except (TypeError, ValueError):
        return 0


STOPPING_NAMES = {"halving": "successive halving", "asha": "ASHA", "fifo": "FIFO"}


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """The early-stopping rule a study ran (spec ``scheduler.type``, one of
    study.core.spec.SCHEDULERS), in the report's words."""
    type: str

    @classmethod
    def of(cls, spec: dict) -> "EarlyStopping":
        return cls(str(_spec_get(spec, "scheduler", "type",
                                 default=spec_default("scheduler.type"))))

    @property
    def stops(self) -> bool:
        return self.type != "fifo"

    @property
    def name(self) -> str:
        """The rule's name: successive halving, ASHA, FIFO."""
        return STOPPING_NAMES.get(self.type, self.type)

    @property
    def label(self) -> str:
        """What 'early stopping: ...' says: successive halving, ASHA, none (FIFO)."""
        return self.name if self.stops else f"none ({self.name})"

    @property
    def stopped(self) -> str:
        """What a stopped trial is called."""
        return f"stopped by {self.name}" if self.stops else "stopped early (FIFO stops none)"

    @property
    def not_complete(self) -> str:
        """The trials drawn hollow in the scatter plots."""
        return f"{self.stopped} or incomplete" if self.stops else "incomplete"


def _never_counted(stoppings: list[EarlyStopping]) -> str:
    """'a trial stopped by ASHA or that errored' (rule text), over one or more studies."""
    stops = sorted({st.name for st in stoppings if st.stops})
    if not stops:
        return "a trial that errored or did not finish"
    return f"a trial stopped by {' or '.join(stops)} or that errored"


# ----------------------------------------------------------------------------- cells

@dataclasses.dataclass
class CellView:
    """Everything the report says about cells, computed once per study (analysis.cells)."""
    runs: pd.DataFrame
    summary: pd.DataFrame  # test accuracy per cell
    val: pd.DataFrame  # validation accuracy per cell (same runs)
    coverage: pd.DataFrame
    answer: pd.DataFrame
    gains: pd.DataFrame
    frontier: pd.DataFrame
    comparisons: pd.DataFrame  # one row per depth of each answer group (C.comparison_rows)
    tol_points: float
    alpha: float  # the spec's report.alpha: per group, for every truth
    racing: tuple | None  # (seeds, ceiling) when the study raced (alpha spent over its looks)
    seeds: int  # confirm seeds k from the spec (0: none)
    spec_tol_points: float  # the tolerance the study was specified with
    post_hoc: bool  # the tolerance was chosen after the results (study report --tolerance)
    mode: str  # "compare", "best", or "old" (a study written before cells)
    stopping: EarlyStopping  # the early-stopping rule the study ran


def cell_view(s: Study, tolerance=None) -> CellView:
    tol = tolerance_points(s.spec, tolerance)
    mode = str(_spec_get(s.spec, "search", "mode", default=""))
    if not mode:
        new = (s.trials[M.PHASE] == M.PHASE_CONFIRM).any() or "confirm" in s.spec
        mode = "compare" if new else "old"
    runs = C.cell_runs(s.trials)
    summ = C.cell_summary(runs, METRIC)
    alpha, racing = answer_alpha(s.spec)
    answer = C.depth_answer(runs, tolerance=tol / 100, alpha=alpha, metric=METRIC,
                            racing=racing)
    spec_tol = tolerance_points(s.spec)
    return CellView(runs=runs, summary=summ, val=C.cell_summary(runs, M.VAL_ACC),
                    coverage=C.cell_coverage(s.trials, runs), answer=answer,
                    gains=C.transfer_gain_cells(runs, answer=answer),
                    frontier=C.cell_frontier(summ), comparisons=C.comparison_rows(answer),
                    tol_points=tol, alpha=alpha, racing=racing, seeds=confirm_seeds(s.spec),
                    spec_tol_points=spec_tol, post_hoc=not math.isclose(tol, spec_tol),
                    mode=mode, stopping=EarlyStopping.of(s.spec))


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def mean_ci(mean, ci, n=None) -> str:
    """'72.0% ± 5.0 (n=3)': mean and 95 % CI half-width in points; '–' without an interval."""
    if _nan(mean):
        return "–"
    s = f"{100 * mean:.1f}% ± " + ("–" if _nan(ci) else f"{100 * ci:.1f}")
    return s + (f" (n={int(n)})" if n is not None else "")


def _pts(x) -> str:
    """An accuracy difference in signed points, with a real minus sign: '−1.2', '+0.4'."""
    return "–" if _nan(x) else f"{100 * x:+.1f}".replace("-", "\u2212")


def ci_text(lo, hi) -> str:
    return "–" if _nan(lo) or _nan(hi) else f"[{_pts(lo)}, {_pts(hi)}]"


def p_text(p) -> str:
    return "–" if _nan(p) else (f"{p:.2g}" if p >= 0.001 else "<0.001")


def _freeze(d: int) -> str:
    return f"freeze {d} stage{'' if d == 1 else 's'}" + (" (fine-tune everything)" if d == 0 else "")


def recommendation(r) -> str:
    """One answer row (``C.depth_answer``) as a sentence. Decided: 'freeze d stages: X % less
    compute than the most accurate depth observed, within −T points of the best, shown (lower
    bound −Z)' or 'shown the most accurate depth'. Undecided: the depths still open and, with no
    answer yet, the depths that could still be the best."""
    tol = 100 * float(r["tolerance"])
    if _nan(r["cheap_depth"]):
        return (f"UNDECIDED: no depth is shown within −{tol:g} points of every depth that could "
                f"be the best ({r['possible_best']} could still be the best); more paired runs "
                f"of {r['open'] or r['possible_best']} would decide it")
    d = int(r["cheap_depth"])
    shown_best = bool(r["best_shown"]) and d == int(r["best_depth"])
    if shown_best:
        head = f"{_freeze(d)}: shown the most accurate depth"
        if not r.get("cheaper_depths", 1):
            head += " (also the cheapest depth compared)"
    else:
        save = ("" if _nan(r["saving_target"]) or d == int(r["best_depth"]) else
                f"{100 * r['saving_target']:.0f} % less compute than d{int(r['best_depth'])} "
                "(the most accurate observed), ")
        head = (f"{_freeze(d)}: {save}within −{tol:g} points of the best, shown (lower bound "
                f"{_pts(r['delta_lo'])} against every depth that could be the best)")
    if r["decided"]:
        return head + " (every cheaper depth shown worse)" if r.get("cheaper_depths", 1) or \
            not shown_best else head
    cheaper_open = [o for o in str(r["open"]).split(",") if o and int(o[1:]) > d]
    return (f"UNDECIDED: {', '.join(cheaper_open) or r['open']} not yet shown within tolerance "
            f"or worse (so far: {head}); more paired runs would decide it")


def best_depth_text(r) -> str:
    """An answer row's most accurate depth observed: 'd2: 72.0% ± 5.0 (n=3)'."""
    return f"d{int(r['best_depth'])}: {mean_ci(r['best_mean'], r['best_ci'], r['best_n'])}"


def _answer_table(v: CellView) -> pd.DataFrame:
    rows = []
    for _, r in v.answer.iterrows():
        rows.append({
            "split": r[M.SPLIT], "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "most accurate (observed)": f"d{int(r['best_depth'])}"
            + (" (shown)" if r["best_shown"] else ""),
            "its test acc (mean ± 95 % CI)": mean_ci(r["best_mean"], r["best_ci"], r["best_n"]),
            "answer": recommendation(r), "decided": "yes" if r["decided"] else "NO",
            "could be the best": r["possible_best"] or "–",
            "verdicts": r["verdicts"] or "–",
            "total compute saved (incl. source)": "–" if _nan(r["saving_total"])
            else f"{100 * r['saving_total']:.0f} %"})
    return pd.DataFrame(rows)


def comparison_table(v: CellView) -> pd.DataFrame:
    """Every depth against the unknown best: verdict, whether it could be the best, its paired
    difference from its strongest rival, the simultaneous bounds of its difference from the
    best, the test, runs."""
    rows = []
    for _, c in v.comparisons.iterrows():
        rows.append({
            "group": f"{c[M.SPLIT]} / {c[M.BACKBONE]} / {c[M.INIT]}", "depth": f"d{c['depth']}",
            "runs": int(c["n"]), "test acc (mean)": "–" if _nan(c["mean"]) else f"{100 * c['mean']:.1f}%",
            "verdict": c["verdict"] + (" (answer)" if c["answer"] else ""),
            "could be the best": "yes" if c["possible_best"] else "no",
            "vs strongest rival (points)": "–" if c["rival"] is None else
            f"{_pts(c['diff'])} vs d{str(c['rival']).rsplit('/d', 1)[-1]}",
            "bounds of (depth − best), simultaneous": ci_text(c["lo"], c["hi"]),
            "test": c["test"],
            "compute saved vs the most accurate": "–" if _nan(c["saving"]) or c["leader"]
            else f"{100 * c['saving']:.0f} %"})
    return pd.DataFrame(rows)


def guarantee_text(v: CellView) -> str:
    """What the Answer promises, per group, and how many groups the report answers."""
    n = len(v.answer)
    spend = (f"spent over the racing's {v.racing[1] - v.racing[0] + 1} looks ({v.racing[0]} to "
             f"{v.racing[1]} runs per cell) in proportion to n², as the racing spent it"
             if v.racing else "at one look")
    return (f"Guarantee, per group: whatever the true accuracies, the chance that a decided "
            f"answer is {v.tol_points:g} point(s) or more below the group's true best is at most "
            f"α = {v.alpha:g} (report.alpha, {spend}; each pairwise bound at α / (looks share) / "
            f"(depths − 1)). This report answers {n} group(s): the guarantee holds for each, so "
            f"up to {n} × {v.alpha:g} = {n * v.alpha:.3g} wrong decided answers are expected "
            "at worst across them. 'Shown worse' verdicts are family-wise at α too.")


def post_hoc_text(v: CellView) -> str | None:
    if not v.post_hoc:
        return None
    return (f"POST HOC: this Answer uses a tolerance of {v.tol_points:g} point(s), chosen after "
            f"the results (study report --tolerance), not the {v.spec_tol_points:g} point(s) the "
            "study was specified with. A tolerance picked after seeing the data can be moved "
            "until an answer appears: its verdicts carry no error guarantee. The study's own "
            "Answer is the report without --tolerance.")


def rule_text(v: CellView, stoppings: list[EarlyStopping] | None = None) -> str:
    """How the answer is reached; ``stoppings``: the early-stopping rules of the studies it
    speaks of (None: ``v``'s)."""
    runs = (f"the completed confirmation runs of each cell's best configuration ({v.seeds} fresh "
            f"seeds{', and more where racing asked for them' if v.racing else ''}; the tuning run "
            "that chose the learning rate is not counted: it was selected on its own noise)"
            if v.seeds else
            "the completed run of each cell's best configuration (this study has no confirm "
            "phase: 1 run per cell, the one that selected, so nothing can be decided)")
    return (f"Metric: test accuracy of {runs}. A cell's best configuration is the learning rate "
            "of its completed tune trial with the best validation accuracy (the test split never "
            "selects). A seed changes the source model (each seed trains its own), the new "
            "head's initialisation, the data order and the augmentation draws, and runs with "
            "the same seed in the depths of one group share all of that, so depths are compared "
            "paired, per seed (paired t; Welch only where runs cannot be paired, column 'test'). "
            f"Only completed trials count: {_never_counted(stoppings or [v.stopping])} never "
            "enters a mean, an interval, a curve or a gain. Rule: multiple comparisons with the "
            "best (Hsu 1984, 1996): the depths that could be the best are those no other depth is "
            "shown better than; a depth is *within tolerance* when its lower bound against every "
            f"depth that could be the best lies above −{v.tol_points:g} points (report.tolerance: "
            "non-inferiority, one-sided; not equivalence), *shown best* when it is the only one "
            "that could be the best, *worse* when its upper bound against every depth that could "
            "be the best lies below −tolerance, else *undecided*. The answer is the cheapest "
            "depth within tolerance (mean target FLOPs per run); a group is decided when every "
            "cheaper depth is shown worse. The most accurate depth observed is named as such, "
            "not as the best, unless it is shown. " + guarantee_text(v) + " Intervals of single "
            "cells are 95 % t intervals of the mean.")


def mode_note(v: CellView) -> str | None:
    if v.mode == "best":
        return ("Caution: this study used search.mode 'best' (one search for the single best "
                "configuration, early stopping across each split): cells were not tuned "
                "equally, and a cell's runs are whatever completed, so the comparison of "
                "depths is indicative only.")
    if v.mode == "old":
        return ("Caution: this study was written before cells existed (no tune/confirm phases): "
                "every trial is treated as a tune trial, cells were not tuned equally and "
                "early stopping compared trials across cells, so the comparison of depths is "
                "indicative only.")
    return None


def no_run_cells(v: CellView) -> list[str]:
    return v.coverage.loc[v.coverage["runs"] == 0, M.CELL].tolist()


def single_run_cells(v: CellView) -> list[str]:
    return v.summary.loc[v.summary["n"] < 2, M.CELL].tolist()


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
        "split": g[M.SPLIT], "backbone": g[M.BACKBONE], "init": g[M.INIT],
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
        "test": [_gain_test(t, n) for t, n in zip(g["test"], g["n_pairs"])]})


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

def splits_of(t: pd.DataFrame) -> list[str]:
    return sorted(map(str, t[M.SPLIT].dropna().unique()))


def best_trials(t: pd.DataFrame):
    """(split, its completed trial with the best validation accuracy, or None) per split."""
    for sp in splits_of(t):
        c = t[(t[M.SPLIT] == sp) & (t["status"] == COMPLETED) & t[M.TEST_CONFUSION].notna()]
        yield sp, (None if c.empty else c.loc[c[M.VAL_ACC].idxmax()])


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


def accounting(s: Study) -> dict:
    """Compute spent under the study's early stopping vs the FIFO estimate, in FLOPs
    (``analysis.frontier.early_stopping_accounting``)."""
    return F.early_stopping_accounting(s.trials, s.target_epochs)


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
            (_answer_section, _cells_section, _depth_section, _gain_section, _frontier_section,
             _finalists_section, _stopping_section, _provenance_section)]


def _answer_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    t = s.trials
    n = t["status"].value_counts().to_dict()
    h = Section("1. Answer: how much to freeze")
    if s.simulated:
        h.p(SIMULATED_BANNER)
    nocell = no_run_cells(v)
    if v.post_hoc:
        h.p(post_hoc_text(v))
    h.p(f"Study {s.name!r}: {len(t)} trials — " + ", ".join(
        f"{n.get(k, 0)} {k}" for k in REPORTED) +
        f". Target epochs: {s.target_epochs}; early stopping: {v.stopping.label}. Cells: "
        f"{len(v.coverage)}, {len(v.coverage) - len(nocell)} with a completed run; confirm seeds "
        f"per cell: {v.seeds}.")
    if (t["status"] == RUNNING).any() or s.summary is None:
        inc = t.loc[t["status"] == RUNNING, "trial_id"].tolist()
        h.p("PARTIAL RESULTS: the study is still running or was interrupted (no summary.json); "
            f"incomplete trials: {', '.join(inc) or 'none'}.")
    h.p(rule_text(v))
    note = mode_note(v)
    if note:
        h.p(note)
    if v.answer.empty:
        h.p("No transferred cell (init other than scratch) has a completed run yet, so there is "
            "no answer.")
    else:
        h.table(_answer_table(v), "How much to freeze, per split, backbone and init "
                                  "(accuracies of different splits are not comparable)")
        open_ = v.answer[~v.answer["decided"].astype(bool)]
        h.p(f"Decided: {len(v.answer) - len(open_)} of {len(v.answer)} group(s)."
            + ("" if open_.empty else " Undecided: " + "; ".join(
                f"{r[M.SPLIT]} / {r[M.BACKBONE]} / {r[M.INIT]} ({r['open']} open)"
                for _, r in open_.iterrows()) + ". Their answer is not settled by these runs: "
                + ("more seeds (a higher confirm.max_seeds than the racing's ceiling, unless the "
                   "study is still running) would decide it." if v.racing else
                   "more seeds (confirm.seeds, or racing with confirm.max_seeds) would decide it.")))
        h.fig(plots.save(plots.forest(v.comparisons, v.tol_points, "simultaneous"),
                        out / f"{prefix}answer_forest.png"),
                 "The answer at a glance: each depth's bounds of its difference from the best")
        h.table(comparison_table(v), "Every depth against the unknown best (paired per seed; "
                                     "bounds simultaneous within the group)")
        racing = racing_savings(s, v)
        if racing:
            h.p(racing)
    single = single_run_cells(v)
    if single:
        h.p(f"Cells with only 1 completed run (no interval, nothing can be decided about them): "
            f"{', '.join(single)}.")
    if nocell:
        h.p(f"Cells without any completed run (left out of the answer; see section 2): "
            f"{', '.join(nocell)}.")
    err = t[t["status"] == ERRORED]
    if not err.empty:
        h.p(f"{len(err)} trial(s) errored (after the spec's max_failures retries); the study went "
            "on without them. Their last error:")
        cols = ["trial_id", M.CELL, M.PHASE, M.LR, EPOCHS, "error"]
        h.table(err[[c for c in cols if c in err.columns]], "Errored trials")
    return h


def fixed_n_to_decide(group: dict, tolerance: float, alpha: float) -> int | None:
    """The fewest runs per cell n with which a fixed design (every cell its first n seeds, one
    look at ``alpha``: the same guarantee as racing) decides this group on the seeds measured;
    None when no n up to the seeds every cell has decides it."""
    from study.core import stats as ST

    accs = {c: {ST._seed(sd): x for sd, x in comp["accs"].items()}
            for c, comp in group["comparisons"].items()}
    common = set.intersection(*(set(a) for a in accs.values())) if accs else set()
    order = sorted(common)
    for n in range(2, len(order) + 1):
        keep = set(order[:n])
        rows = [{"cell": c, "depth": comp["depth"], "flops": comp["flops"],
                 "accs": {sd: x for sd, x in accs[c].items() if sd in keep}}
                for c, comp in group["comparisons"].items()]
        if ST.group_answer(rows, tolerance, alpha)["decided"]:
            return n
    return None


def racing_counts(s: Study, v: CellView) -> dict | None:
    """What racing cost against the alternatives (studies that raced; None otherwise), counted
    from the trials over the cells the Answer compares (scratch cells never race): cells,
    ceiling (confirm.max_seeds), confirm_runs (confirmation trials run, whatever their
    status), ceiling_runs (cells x ceiling), flops_run / flops_ceiling (the same weighted by
    each cell's mean target FLOPs per run), saved = 1 - flops_run / flops_ceiling, and
    fixed_runs: per group, the runs of the smallest fixed design (n runs per cell, one look at
    alpha: the same guarantee) that decides it on the seeds measured (None if none does)."""
    if not v.racing:
        return None
    ceiling = v.racing[1]
    t = s.trials
    conf = t[(t[M.PHASE] == M.PHASE_CONFIRM) & t[M.CELL].notna()]
    per_run = v.summary.set_index(M.CELL)[M.TARGET_FLOPS]
    raced = set(v.comparisons["cell"])  # the depths the Answer compares (scratch cells never race)
    cells = [c for c in per_run.index if c in raced and c in set(conf[M.CELL])]
    if not cells:
        return None
    ran = conf[conf[M.CELL].isin(cells)].groupby(M.CELL).size()
    done = float(sum(ran.get(c, 0) * per_run[c] for c in cells))
    full = float(sum(ceiling * per_run[c] for c in cells))
    fixed = {}
    for _, r in v.answer.iterrows():
        g = r["group"]
        n = fixed_n_to_decide(g, v.tol_points / 100, v.alpha)
        fixed[f"{r[M.SPLIT]}/{r[M.BACKBONE]}/{r[M.INIT]}"] = (
            None if n is None else n * len(g["comparisons"]))
    return {"cells": len(cells), "ceiling": ceiling, "confirm_runs": int(ran.sum()),
            "ceiling_runs": ceiling * len(cells), "flops_run": done, "flops_ceiling": full,
            "saved": 1 - done / full if full > 0 else None, "fixed_runs": fixed}


def racing_savings(s: Study, v: CellView) -> str | None:
    """``racing_counts`` as a sentence (None: the study did not race)."""
    r = racing_counts(s, v)
    if r is None:
        return None
    saved = "–" if r["saved"] is None else f"{100 * r['saved']:.0f} %"
    fixed = "; ".join(f"{g}: {'none up to the seeds measured' if n is None else f'{n} runs'}"
                      for g, n in r["fixed_runs"].items())
    return (f"Racing: {r['confirm_runs']} confirmation runs in the {r['cells']} compared cells, "
            f"against {r['ceiling_runs']} if every cell had got the ceiling of {r['ceiling']} "
            f"seeds: {saved} of that confirmation compute saved ({r['flops_run']:.3g} vs "
            f"{r['flops_ceiling']:.3g} target FLOPs). The smallest fixed design with the same "
            f"guarantee (n runs per cell, one look) that decides on these seeds: {fixed} "
            "(known only after the fact: a fixed design must choose n in advance).")


def answer_data(s: Study, v: CellView) -> dict:
    """The Answer as data (report.json): the tolerance (points and fraction) and alpha it was
    decided with, whether the tolerance is post hoc, the racing levels, per group the most
    accurate depth observed (leader), the depth shown best (or null), the depths that could
    still be the best, the answer (or null), whether it is decided, the open depths, and every
    depth's verdict, bounds, test, runs and per-seed test accuracies; ``racing``:
    ``racing_counts`` (null when the study did not race)."""
    groups = []
    for _, r in v.answer.iterrows():
        g = r["group"]
        depth = {cid: c["depth"] for cid, c in g["comparisons"].items()}

        def ref(c):
            return None if c is None else {"cell": c, "depth": depth[c]}
        groups.append({
            "split": r[M.SPLIT], "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "leader": ref(g["leader"]), "best": ref(g["best"]),
            "possible_best": [ref(c) for c in g["possible_best"]],
            "answer": ref(g["answer"]), "decided": g["decided"],
            "open": [ref(c) for c in g["open"]], "compute_saved": g["compute_saved"],
            "alpha_look": g["alpha_look"], "alpha_bound": g["alpha_bound"],
            "comparisons": [{k: c[k] for k in ("cell", "depth", "verdict", "possible_best",
                                                "answer", "rival", "diff", "lo", "hi", "test",
                                                "n", "n_pairs", "mean", "flops", "accs")}
                            for c in sorted(g["comparisons"].values(), key=lambda c: c["depth"])]})
    return {"answer": {"metric": METRIC, "tolerance_points": v.tol_points,
                       "tolerance": v.tol_points / 100, "alpha": v.alpha,
                       "spec_tolerance_points": v.spec_tol_points, "post_hoc": v.post_hoc,
                       "racing": list(v.racing) if v.racing else None,
                       "procedure": "multiple comparisons with the best (Hsu), paired t, "
                                    "Bonferroni over depths - 1 and the racing's looks",
                       "guarantee": "per group: P(decided answer tolerance or more below the "
                                    "true best) <= alpha, for every truth",
                       "groups": groups, "racing_counts": racing_counts(s, v)}}


def _cells_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    nocell = no_run_cells(v)
    cv = Section("2. Cells: coverage and runs")
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
    d = Section("3. Accuracy vs frozen depth (cell runs, 95 % CI)")
    d.p(prose("""
        Mean test accuracy of each cell's completed runs against its frozen depth, with 95 % t
        intervals; one line per backbone and init, per split (cf. Yosinski et al. 2014). Depth 0
        fine-tunes everything; depth = number of frozen backbone stages. Scratch baselines are
        dotted lines (band: their interval). Hollow markers: one run, no interval. Stopped
        trials are not drawn (see the scatter plots of section 5)."""))
    d.fig(plots.save(plots.depth_curves(v.summary, splits_of(s.trials)),
                     out / f"{prefix}depth.png"),
          "Test accuracy vs frozen depth per split (mean ± 95 % CI of the cells' runs)")
    d.table(cell_table(v), "Cells: test accuracy over their runs")
    return d


def _gain_section(s: Study, v: CellView, out: Path, prefix: str) -> Section:
    g = Section("4. Transfer gain over scratch")
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
    fr = Section("5. Accuracy vs compute: Pareto frontier of cells")
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
    lc = Section("6. Finalists: learning curves, per-class metrics, confusion")
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
    a = Section(f"7. Early-stopping accounting: {st.label}")
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
    p = Section("8. Provenance")
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
            rows.append((sp, f"{r[M.BACKBONE]} / {r[M.INIT]}", best_depth_text(r),
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
            lambda o: study_sections(s, o, view=v), data=answer_data(s, v))
    return out, (summary_text(s, view=v)
                 + f"\nreport: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)")
