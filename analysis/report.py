"""`study report`: the report of one study, and the per-study content the comparison
(``analysis.compare``) reuses: the cell view, its tables and sentences, the terminal summary.

The report answers the study's question first (section 1, "Answer": how many stages to freeze,
per split x backbone x init), by the rules of ``analysis.cells``: statistics over each cell's
completed runs of its best configuration; depths compared with the best depth paired per seed
(``study.core.stats``: three verdicts, equivalent / worse / undecided, within a tolerance in
accuracy points, ``report.tolerance``, at ``report.alpha``, split over the racing's looks when
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
from study.core import metrics as M
from study.core import spec as S
from study.core.status import COMPLETED, ERRORED, RUNNING, STOPPED

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
    """The equivalence tolerance in accuracy points: ``tolerance`` if given, else the spec's
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


def answer_alpha(spec: dict) -> tuple[float, float, int]:
    """(alpha of each verdict, the spec's report.alpha, looks): the spec's ``report.alpha`` (its
    default when absent), split over the racing looks when the study raced (``confirm.max_seeds``
    above ``confirm.seeds``: ``stats.alpha_per_look``), so the report decides with the level
    the racing decided with."""
    from study.core import stats as ST

    try:
        alpha = float(_spec_get(spec, "report", "alpha", default=spec_default("report.alpha")))
    except (TypeError, ValueError):
        alpha = float(spec_default("report.alpha"))
    k = confirm_seeds(spec)
    try:
        ceiling = int(_spec_get(spec, "confirm", "max_seeds", default=k))
    except (TypeError, ValueError):
        ceiling = k
    looks = ST.looks(k, ceiling) if ceiling > k else 1
    return ST.alpha_per_look(alpha, looks), alpha, looks


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
    alpha: float  # of each verdict (per look when the study raced)
    alpha_spec: float  # the spec's report.alpha
    looks: int  # racing looks the alpha is split over (1: no racing)
    seeds: int  # confirm seeds k from the spec (0: none)
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
    alpha, alpha_spec, looks = answer_alpha(s.spec)
    answer = C.depth_answer(runs, tolerance=tol / 100, alpha=alpha, metric=METRIC)
    return CellView(runs=runs, summary=summ, val=C.cell_summary(runs, M.VAL_ACC),
                    coverage=C.cell_coverage(s.trials, runs), answer=answer,
                    gains=C.transfer_gain_cells(runs), frontier=C.cell_frontier(summ),
                    comparisons=C.comparison_rows(answer), tol_points=tol, alpha=alpha,
                    alpha_spec=alpha_spec, looks=looks, seeds=confirm_seeds(s.spec), mode=mode,
                    stopping=EarlyStopping.of(s.spec))


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
    compute, shown equivalent: −Y points (lower bound −Z)' or 'the most accurate depth (every
    cheaper depth shown worse)'. Undecided: which cheaper depths are still open, and what would
    decide them (``what_decides``)."""
    d = int(r["cheap_depth"])
    if d == int(r["best_depth"]):
        head = f"{_freeze(d)}: the most accurate depth"
        if not r.get("cheaper_depths", 1):
            return head + " (also the cheapest depth compared)"
    else:
        save = "–" if _nan(r["saving_target"]) else f"{100 * r['saving_target']:.0f} %"
        head = (f"{_freeze(d)}: {save} less compute, shown equivalent: {_pts(r['delta'])} "
                f"points (lower bound {_pts(r['delta_lo'])})")
    if r["decided"]:
        return head + ("" if d != int(r["best_depth"]) else " (every cheaper depth shown worse)")
    return (f"UNDECIDED: {r['open']} not yet shown equivalent or worse (so far: {head}); "
            f"{what_decides(r)}")


def what_decides(r) -> str:
    """What would decide an undecided answer row: 'about N runs per cell would decide it if
    the observed difference and spread held' (N: the most any open comparison needs,
    ``stats.Comparison.seeds_to_decide``), or, where an open comparison has no spread to
    extrapolate from (fewer than 2 runs on a side), that 2 runs per cell with the same seeds
    are needed first."""
    need = r.get("seeds_to_decide")
    g = r.get("group") or {}
    tests = {g["comparisons"][c]["test"] for c in g.get("open", [])} if g else set()
    if "none" in tests:
        return ("at least 2 runs per cell with the same seeds are needed before it can be "
                "judged (more confirmation seeds)")
    if _nan(need):
        return "more runs per cell would decide it"
    return (f"about {int(need)} runs per cell would decide it if the observed difference and "
            "spread held")


def best_depth_text(r) -> str:
    """An answer row's best depth: 'd2: 72.0% ± 5.0 (n=3)'."""
    return f"d{int(r['best_depth'])}: {mean_ci(r['best_mean'], r['best_ci'], r['best_n'])}"


def _answer_table(v: CellView) -> pd.DataFrame:
    rows = []
    for _, r in v.answer.iterrows():
        rows.append({
            "split": r[M.SPLIT], "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "best depth": f"d{int(r['best_depth'])}",
            "test acc at best (mean ± 95 % CI)": mean_ci(r["best_mean"], r["best_ci"],
                                                         r["best_n"]),
            "answer": recommendation(r), "decided": "yes" if r["decided"] else "NO",
            "verdicts (vs best)": r["verdicts"] or "–",
            "total compute saved (incl. source)": "–" if _nan(r["saving_total"])
            else f"{100 * r['saving_total']:.0f} %"})
    return pd.DataFrame(rows)


def comparison_table(v: CellView) -> pd.DataFrame:
    """Every depth against its group's best: verdict, paired difference with its one-sided
    bounds, the test, runs, what would decide it."""
    rows = []
    for _, c in v.comparisons.iterrows():
        best = c["verdict"] == "best"
        rows.append({
            "group": f"{c[M.SPLIT]} / {c[M.BACKBONE]} / {c[M.INIT]}", "depth": f"d{c['depth']}",
            "runs": int(c["n"]), "test acc (mean)": "–" if _nan(c["mean"]) else f"{100 * c['mean']:.1f}%",
            "verdict": c["verdict"] + (" (answer)" if c["answer"] else ""),
            "difference from best (points)": "0" if best else _pts(c["diff"]),
            f"one-sided {100 * (1 - v.alpha):.4g} % bounds": "–" if best else ci_text(c["lo"], c["hi"]),
            "test": "–" if best else c["test"],
            "runs per cell to decide": "–" if _nan(c["seeds_to_decide"]) or c["seeds_to_decide"] is None
            else int(c["seeds_to_decide"]),
            "compute saved": "–" if _nan(c["saving"]) else f"{100 * c['saving']:.0f} %"})
    return pd.DataFrame(rows)


def rule_text(v: CellView, stoppings: list[EarlyStopping] | None = None) -> str:
    """How the answer is reached; ``stoppings``: the early-stopping rules of the studies it
    speaks of (None: ``v``'s)."""
    runs = (f"the completed runs of each cell's best configuration (its best tune trial, then "
            f"{v.seeds} more seeds{', and more where racing asked for them' if v.looks > 1 else ''})"
            if v.seeds else
            "the completed runs of each cell's best configuration (this study has no confirm "
            "phase: usually 1 run per cell, so nothing can be decided)")
    level = (f"α = {v.alpha:.4g} per comparison (report.alpha {v.alpha_spec:g} split over the "
             f"{v.looks} looks of the racing, as the racing decided)" if v.looks > 1 else
             f"α = {v.alpha:g} (report.alpha)")
    return (f"Metric: test accuracy of {runs}. A cell's best configuration is the learning rate "
            "of its completed tune trial with the best validation accuracy (the test split never "
            "selects). A seed changes the source model (each seed trains its own), the new "
            "head's initialisation, the data order and the augmentation draws, and runs with "
            "the same seed in the depths of one group share all of that, so depths are compared "
            "paired: per seed, the difference from the best depth (paired t; Welch only where "
            "runs cannot be paired, column 'test'). Only completed trials count: "
            f"{_never_counted(stoppings or [v.stopping])} never enters a mean, an interval, a "
            "curve or a gain. Rule: the best depth has the highest mean; every other depth gets "
            "one of three verdicts from the one-sided bounds of its difference from the best, "
            f"at {level}: equivalent (lower bound above −{v.tol_points:g} points, "
            "report.tolerance), worse (upper bound below −tolerance), or undecided. The answer "
            "is the cheapest depth (mean target FLOPs per run) shown equivalent, the best itself "
            "included; a group is decided when no undecided cheaper depth could still replace it, "
            "and an undecided group says which depths are open and about how many runs per cell "
            "would decide them. Intervals of single cells are 95 % t intervals of the mean.")


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
        "split": g[M.SPLIT], "backbone": g[M.BACKBONE], "init": g[M.INIT], "best depth": g["depth"],
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
    h.p(f"Study {s.name!r}: {len(t)} trials — " + ", ".join(
        f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING)) +
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
                   "study is still running) would decide it." if v.looks > 1 else
                   "more seeds (confirm.seeds, or racing with confirm.max_seeds) would decide it.")))
        level = f"{100 * (1 - v.alpha):.4g} %"
        h.fig(plots.save(plots.forest(v.comparisons, v.tol_points, level),
                        out / f"{prefix}answer_forest.png"),
                 "The answer at a glance: each depth's paired difference from its group's best")
        h.table(comparison_table(v), "Every depth against its group's best (paired per seed)")
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


def racing_counts(s: Study, v: CellView) -> dict | None:
    """What racing saved (studies that raced; None otherwise), counted from the trials over the
    cells the Answer compares (scratch cells never race): cells, ceiling (confirm.max_seeds),
    confirm_runs (confirmation trials run, whatever their status), ceiling_runs (cells x
    ceiling), flops_run / flops_ceiling (the same weighted by each cell's mean target FLOPs per
    run) and saved = 1 - flops_run / flops_ceiling."""
    try:
        ceiling = int(_spec_get(s.spec, "confirm", "max_seeds", default=v.seeds))
    except (TypeError, ValueError):
        return None
    if v.looks <= 1 or ceiling <= v.seeds:
        return None
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
    return {"cells": len(cells), "ceiling": ceiling, "confirm_runs": int(ran.sum()),
            "ceiling_runs": ceiling * len(cells), "flops_run": done, "flops_ceiling": full,
            "saved": 1 - done / full if full > 0 else None}


def racing_savings(s: Study, v: CellView) -> str | None:
    """``racing_counts`` as a sentence (None: the study did not race)."""
    r = racing_counts(s, v)
    if r is None:
        return None
    saved = "–" if r["saved"] is None else f"{100 * r['saved']:.0f} %"
    return (f"Racing: {r['confirm_runs']} confirmation runs in the {r['cells']} compared cells, "
            f"against {r['ceiling_runs']} if every cell had got the ceiling of {r['ceiling']} "
            f"seeds: {saved} of that confirmation compute saved ({r['flops_run']:.3g} vs "
            f"{r['flops_ceiling']:.3g} target FLOPs).")


def answer_data(s: Study, v: CellView) -> dict:
    """The Answer as data (report.json): the tolerance (points and fraction) and alpha it was
    decided with, per group the best depth, the answer, the cheapest depth shown equivalent
    (or null), whether it is decided, the open depths, and every comparison (verdict,
    difference, bounds, test, runs, runs to decide, per-seed test accuracies); ``racing``:
    ``racing_counts`` (null when the study did not race)."""
    groups = []
    for _, r in v.answer.iterrows():
        g = r["group"]
        depth = {cid: c["depth"] for cid, c in g["comparisons"].items()}
        groups.append({
            "split": r[M.SPLIT], "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "best": {"cell": g["best"], "depth": depth[g["best"]]},
            "answer": {"cell": g["answer"], "depth": depth[g["answer"]]},
            "cheapest_equivalent": None if g["cheapest_equivalent"] is None else
            {"cell": g["cheapest_equivalent"], "depth": depth[g["cheapest_equivalent"]]},
            "decided": g["decided"], "open": [{"cell": c, "depth": depth[c]} for c in g["open"]],
            "seeds_to_decide": None if _nan(r["seeds_to_decide"]) else int(r["seeds_to_decide"]),
            "compute_saved": g["compute_saved"],
            "comparisons": [{k: c[k] for k in ("cell", "depth", "role", "verdict", "diff", "lo",
                                                "hi", "test", "n", "n_pairs", "mean", "flops",
                                                "seeds_to_decide", "accs")}
                            for c in sorted(g["comparisons"].values(), key=lambda c: c["depth"])]})
    return {"answer": {"metric": METRIC, "tolerance_points": v.tol_points,
                       "tolerance": v.tol_points / 100, "alpha": v.alpha,
                       "alpha_spec": v.alpha_spec, "looks": v.looks,
                       "bounds": f"one-sided {1 - v.alpha:.6g}", "groups": groups,
                       "racing": racing_counts(s, v)}}


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
        Per split, backbone and transferred init: the most accurate depth's runs against the
        scratch cell's runs of the same split and backbone. Both sides are completed runs, so
        they trained for the same target epochs. Runs with the same seed draw the same data
        order and augmentations in both cells, so they are compared paired: gain = mean per-seed
        difference of the test accuracies (points) over the seeds both cells ran, with its 95 %
        t interval and the two-sided paired t test's p. Where the cells share fewer than 2
        seeds: difference of the means with Welch's interval and p (column 'test'); '–' where a
        side has fewer than 2 runs. The depth is picked on the same metric, so its gain is
        slightly optimistic."""))
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
             + ", ".join(f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING))
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
    equivalence tolerance in accuracy points (None: the spec's report.tolerance)."""
    s = load_study(path)
    tolerance_points(s.spec, tolerance)  # a bad tolerance fails before anything is written
    out = Path(out) if out else default_out(str(path), s.name)
    v = cell_view(s, tolerance)
    publish(out, [s], "report", force,
            f"Study report: {s.name}" + (" (SIMULATED: not measured results)" if s.simulated else ""),
            lambda o: study_sections(s, o, view=v), data=answer_data(s, v))
    return out, (summary_text(s, view=v)
                 + f"\nreport: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)")
