"""The Answer, section 1 of a report: how much to freeze, per split x backbone x init, by
``study.core.stats`` (multiple comparisons with the best), as sentences, tables, a forest plot
and data (report.json); what it guarantees; what racing cost."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.load import EPOCHS, Study
from analysis.render import Section
from analysis.view import (METRIC, SIMULATED_BANNER, CellView, EarlyStopping, _never_counted,
                           mode_note, no_run_cells, single_run_cells)
from analysis.words import (_freeze, _nan, _pts, ci_text, drop_all_sizes, group_text, mean_ci,
                            size_text)
from study.core import metrics as M
from study.core.status import ERRORED, REPORTED, RUNNING


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
    # the depths cheaper than the answer (target FLOPs per run, the rule's own order): the
    # ones that must be shown worse to decide it
    g = r.get("group") or {}
    comps = g.get("comparisons", {})
    cost = comps[g["answer"]]["flops"] if g.get("answer") in comps else None
    below = ([f"d{c['depth']}" for c in comps.values() if cost is not None and c["flops"] is not None
              and c["flops"] < cost] if comps else None)
    if shown_best:
        head = f"{_freeze(d)}: shown the most accurate depth"
        if below == []:
            head += " (also the cheapest depth compared)"
    else:
        save = ("" if _nan(r["saving_target"]) or d == int(r["best_depth"]) else
                f"{100 * r['saving_target']:.0f} % less compute than d{int(r['best_depth'])} "
                "(the most accurate observed), ")
        head = (f"{_freeze(d)}: {save}within −{tol:g} points of the best, shown (lower bound "
                f"{_pts(r['delta_lo'])} against every depth that could be the best)")
    if r["decided"]:
        return head + (" (every cheaper depth shown worse)" if below else "")
    cheaper_open = [o for o in str(r["open"]).split(",") if o in (below or [])]
    return (f"UNDECIDED: {', '.join(cheaper_open) or r['open']} not yet shown within tolerance "
            f"or worse (so far: {head}); more paired runs would decide it")


def best_depth_text(r) -> str:
    """An answer row's most accurate depth observed: 'd2: 72.0% ± 5.0 (n=3)'."""
    return f"d{int(r['best_depth'])}: {mean_ci(r['best_mean'], r['best_ci'], r['best_n'])}"


def _answer_table(v: CellView) -> pd.DataFrame:
    rows = []
    for _, r in v.answer.iterrows():
        rows.append({
            "split": r[M.SPLIT], "images per class": size_text(r[M.SIZE]),
            "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "most accurate (observed)": f"d{int(r['best_depth'])}"
            + (" (shown)" if r["best_shown"] else ""),
            "its test acc (mean ± 95 % CI)": mean_ci(r["best_mean"], r["best_ci"], r["best_n"]),
            "answer": recommendation(r), "decided": "yes" if r["decided"] else "NO",
            "could be the best": r["possible_best"] or "–",
            "verdicts": r["verdicts"] or "–",
            "total compute saved (incl. source)": "–" if _nan(r["saving_total"])
            else f"{100 * r['saving_total']:.0f} %"})
    return drop_all_sizes(pd.DataFrame(rows))


def comparison_table(v: CellView) -> pd.DataFrame:
    """Every depth against the unknown best: verdict, whether it could be the best, its paired
    difference from its strongest rival, the simultaneous bounds of its difference from the
    best, the test, runs."""
    rows = []
    for _, c in v.comparisons.iterrows():
        rows.append({
            "group": group_text(c[M.SPLIT], c[M.SIZE], c[M.BACKBONE], c[M.INIT]),
            "depth": f"d{c['depth']}",
            "runs": int(c["n"]), "test acc (mean)": "–" if _nan(c["mean"]) else f"{100 * c['mean']:.1f}%",
            "verdict": c["verdict"] + (" (answer)" if c["answer"] else ""),
            "could be the best": "yes" if c["possible_best"] else "no",
            "vs strongest rival (points)": "–" if c["rival"] is None else
            f"{_pts(c['diff'])} vs d{str(c['rival']).rsplit('/d', 1)[-1]}",
            "bounds of (depth − best), simultaneous": ci_text(c["lo"], c["hi"]),
            "test": c["test"],
            "compute vs the most accurate": "–" if _nan(c["saving"]) or c["leader"]
            else f"{100 * c['saving']:.0f} % less" if c["saving"] >= 0
            else f"{-100 * c['saving']:.0f} % more"})
    return pd.DataFrame(rows)


def guarantee_text(v: CellView) -> str:
    """What the Answer promises, per group, and how many groups the report answers."""
    n = len(v.answer)
    spend = (f"spent over the racing's {v.racing[1] - v.racing[0] + 1} looks ({v.racing[0]} to "
             f"{v.racing[1]} runs per cell) in proportion to n², as the racing spent it"
             if v.racing else "at one look")
    return (f"Guarantee, per group: whatever the true accuracies, the chance that a decided "
            f"answer is {v.tol_points:g} point(s) or more below the group's true best is at most "
            f"α = {v.alpha:g} (report.alpha, {spend}; each pairwise bound at the look's share "
            f"of α / (depths − 1)). This report answers {n} group(s): the guarantee holds for "
            f"each, so up to {n} × {v.alpha:g} = {n * v.alpha:.3g} wrong decided answers are "
            "expected at worst across them. A wrong 'worse' needs two bounds to miss: all "
            "verdicts of a group together err with probability at most 2α.")


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
                f"{group_text(r[M.SPLIT], r[M.SIZE], r[M.BACKBONE], r[M.INIT])} ({r['open']} open)"
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
        h.p(f"Cells without any completed run (left out of the answer; see section 3): "
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
        fixed[group_text(r[M.SPLIT], r[M.SIZE], r[M.BACKBONE], r[M.INIT], sep="/")] = (
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
            "split": r[M.SPLIT], "target_size": int(r[M.SIZE]) or None,
            "backbone": r[M.BACKBONE], "init": r[M.INIT],
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
