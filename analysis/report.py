"""`study report` and `study compare`: report.md, a self-contained report.html (figures embedded
as data URIs), PNG figures, trials/epochs as CSV and Parquet, and a terminal summary.

The report answers the study's question first (section 1, "Answer": how many stages to freeze,
per split x backbone x init), by the rules of ``analysis.cells``: statistics over each cell's
completed runs of its best configuration, 95 % t intervals, Welch tests, a tolerance in accuracy
points (``report.tolerance`` in the spec, 1.0 by default). Then coverage, depth curves, transfer
gain, the cells' Pareto frontier, and the per-trial sections (scatter plots where stopped trials
stay visible, learning curves, finalists, ASHA accounting, provenance).

A report directory carries report.json naming the studies it was made from (name + created
timestamp from provenance.json); writing a report of other studies there is refused unless
``force``.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import cells as C
from analysis import frontier as F
from study.core.layout import write_atomic
from analysis import plots
from analysis.load import (COMPLETED, DEVICE_S, EPOCHS, ERRORED, RUNNING, STOPPED, TOTAL_FLOPS,
                           ReportError, Study, load_study)
from study.core import metrics as M

MARKER = "report.json"
OUTPUT_FILES = ("report.md", "report.html")


# ----------------------------------------------------------------------------- document model

@dataclasses.dataclass
class Section:
    title: str
    blocks: list = dataclasses.field(default_factory=list)  # (kind, payload...)

    def p(self, text):
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame, caption: str = ""):
        self.blocks.append(("table", df, caption))

    def fig(self, path: Path, caption: str):
        self.blocks.append(("fig", Path(path), caption))

    def pre(self, text):
        self.blocks.append(("pre", text))


def _fmt_cell(col: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    c = col.lower()
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if "gain" in c or c.startswith("Δ") or c.startswith("delta"):
        return f"{100 * v:+.1f} pp"
    if any(k in c for k in ("acc", "precision", "recall", "f1")):
        return f"{100 * v:.1f}%"
    if "flops" in c or "budget" in c:
        return f"{v:.3g}"
    if c.endswith("_s") or "seconds" in c or c.endswith("(s)"):
        return f"{v:.1f}"
    if c == "lr":
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.3g}" if not v.is_integer() else f"{int(v)}"
    return str(v)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    return [[_fmt_cell(str(c), v) for c, v in zip(df.columns, row)]
            for row in df.itertuples(index=False)]


def render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "pre":
                out += ["```", b[1].rstrip(), "```", ""]
            elif b[0] == "fig":
                out += [f"![{b[2]}]({b[1].name})", "", f"*{b[2]}*", ""]
            elif b[0] == "table":
                df, cap = b[1], b[2]
                if cap:
                    out += [f"**{cap}**", ""]
                if df.empty:
                    out += ["(none)", ""]
                    continue
                esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(esc(c) for c in df.columns) + " |")
                out.append("|" + "---|" * len(df.columns))
                out += ["| " + " | ".join(esc(x) for x in r) + " |" for r in _cells(df)]
                out.append("")
    return "\n".join(out)


CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #444}h2{margin-top:2em;
border-bottom:1px solid #bbb}table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f0f0f0}
td.t,td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;
font-weight:600;padding:.3em 0}figure{margin:1em 0}img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.8em;
overflow:auto;font-size:.8em}nav a{margin-right:1em}"""


def _td(x: str) -> str:
    """Numbers right-aligned, text left-aligned."""
    t = x.replace("%", "").replace(" pp", "").replace("±", "").replace("–", "0")
    num = all(p.replace(".", "", 1).replace("e+", "").replace("e-", "").lstrip("+-").isdigit()
              for p in t.split()) if t.strip() else False
    return f"<td>{html.escape(x)}</td>" if num else f"<td class='t'>{html.escape(x)}</td>"


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>{e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           "<nav>" + "".join(f"<a href='#s{i}'>{e(s.title)}</a>"
                             for i, s in enumerate(sections)) + "</nav>"]
    for i, s in enumerate(sections):
        out.append(f"<h2 id='s{i}'>{e(s.title)}</h2>")
        for b in s.blocks:
            if b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "pre":
                out.append(f"<pre>{e(b[1])}</pre>")
            elif b[0] == "fig":
                data = base64.b64encode(b[1].read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(b[2])}'>"
                           f"<figcaption>{e(b[2])}</figcaption></figure>")
            elif b[0] == "table":
                df, cap = b[1], b[2]
                if df.empty:
                    out.append(f"<p><b>{e(cap)}</b> (none)</p>" if cap else "<p>(none)</p>")
                    continue
                rows = "".join("<tr>" + "".join(_td(x) for x in r) + "</tr>"
                               for r in _cells(df))
                out.append(f"<table>{f'<caption>{e(cap)}</caption>' if cap else ''}<thead><tr>"
                           + "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
                           + f"</tr></thead><tbody>{rows}</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out)



# ----------------------------------------------------------------------------- tables

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


def _asha_table(acc: dict) -> pd.DataFrame:
    n = acc["trials"]
    rows = [("completed trials", n[COMPLETED], acc["spent"][COMPLETED]),
            ("stopped by ASHA", n[STOPPED], acc["spent"][STOPPED]),
            ("errored", n[ERRORED], acc["spent"][ERRORED]),
            ("running / incomplete", n[RUNNING], acc["spent"][RUNNING]),
            (f"source models (each once: {acc['sources']})", acc["sources"], acc["source"]),
            ("total spent", sum(n.values()), acc["total"]),
            ("FIFO estimate (every trial to max_t)", sum(n.values()), acc["fifo"])]
    return pd.DataFrame(rows, columns=["", "count", "FLOPs"])


def _best_trial(t: pd.DataFrame):
    c = t[(t["status"] == COMPLETED) & t[M.TEST_CONFUSION].notna()]
    return None if c.empty else c.loc[c[M.VAL_ACC].idxmax()]


def _splits(t: pd.DataFrame) -> list[str]:
    return sorted(map(str, t[M.SPLIT].dropna().unique()))


# ----------------------------------------------------------------------------- cells

METRIC = M.TEST_ACC  # what the answer compares: test accuracy of each cell's completed runs
DEFAULT_TOLERANCE = 1.0  # accuracy points, when the spec has no report.tolerance


def _spec_get(spec, *keys, default=None):
    cur = spec
    for k in keys:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(k)
    return default if cur is None else cur


def tolerance_points(spec: dict, tolerance=None) -> float:
    """The equivalence tolerance in accuracy points: ``tolerance`` if given, else the spec's
    ``report.tolerance``, else 1.0. A bad ``tolerance`` argument raises ReportError; a bad spec
    value (older or hand-edited study.yaml) falls back to the default."""
    if tolerance is not None:
        try:
            v = float(tolerance)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise ReportError(f"tolerance: {tolerance!r} is not a number of accuracy points >= 0")
        return v
    try:
        v = float(_spec_get(spec, "report", "tolerance", default=DEFAULT_TOLERANCE))
    except (TypeError, ValueError):
        return DEFAULT_TOLERANCE
    return v if math.isfinite(v) and v >= 0 else DEFAULT_TOLERANCE


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
    tol_points: float
    seeds: int  # confirm seeds k from the spec (0: none)
    mode: str  # "compare", "best", or "old" (a study written before cells)


def cell_view(s: Study, tolerance=None) -> CellView:
    tol = tolerance_points(s.spec, tolerance)
    try:
        seeds = max(0, int(_spec_get(s.spec, "confirm", "seeds", default=0)))
    except (TypeError, ValueError):
        seeds = 0
    mode = str(_spec_get(s.spec, "search", "mode", default=""))
    if not mode:
        new = (s.trials[M.PHASE] == M.PHASE_CONFIRM).any() or "confirm" in s.spec
        mode = "compare" if new else "old"
    runs = C.cell_runs(s.trials)
    summ = C.cell_summary(runs, METRIC)
    return CellView(runs=runs, summary=summ, val=C.cell_summary(runs, M.VAL_ACC),
                    coverage=C.cell_coverage(s.trials, runs),
                    answer=C.depth_answer(summ, tolerance=tol / 100),
                    gains=C.transfer_gain_cells(summ), frontier=C.cell_frontier(summ),
                    tol_points=tol, seeds=seeds, mode=mode)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _mci(mean, ci, n=None) -> str:
    """'72.0% ± 5.0 (n=3)': mean and 95 % CI half-width in points; '–' without an interval."""
    if _nan(mean):
        return "–"
    s = f"{100 * mean:.1f}% ± " + ("–" if _nan(ci) else f"{100 * ci:.1f}")
    return s + (f" (n={int(n)})" if n is not None else "")


def _pts(x) -> str:
    """An accuracy difference in signed points, with a real minus sign: '−1.2', '+0.4'."""
    return "–" if _nan(x) else f"{100 * x:+.1f}".replace("-", "\u2212")


def _ci(lo, hi) -> str:
    return "–" if _nan(lo) or _nan(hi) else f"[{_pts(lo)}, {_pts(hi)}]"


def _p(p) -> str:
    return "–" if _nan(p) else (f"{p:.2g}" if p >= 0.001 else "<0.001")


def _freeze(d: int) -> str:
    return f"freeze {d} stage{'' if d == 1 else 's'}" + (" (fine-tune everything)" if d == 0 else "")


def recommendation(r) -> str:
    """One answer row as a sentence: 'freeze d stages: X % less compute, −Y points [95 % CI
    lo, hi]' (compute: mean target FLOPs; points: cheapest minus best depth's mean)."""
    d = int(r["cheap_depth"])
    if d == int(r["best_depth"]):
        why = ("no cheaper depth is equivalent" if r.get("cheaper_depths", 1)
               else "also the cheapest depth compared")
        return f"{_freeze(d)}: the most accurate depth ({why})"
    save = "–" if _nan(r["saving_target"]) else f"{100 * r['saving_target']:.0f} %"
    ci = _ci(r["delta_lo"], r["delta_hi"])
    return (f"{_freeze(d)}: {save} less compute, {_pts(r['delta'])} points "
            f"[95 % CI {ci.strip('[]')}]")


def _answer_table(v: CellView) -> pd.DataFrame:
    rows = []
    for _, r in v.answer.iterrows():
        rows.append({
            "split": r[M.SPLIT], "backbone": r[M.BACKBONE], "init": r[M.INIT],
            "depths": r["depths"], "best depth": int(r["best_depth"]),
            "test acc at best (mean ± 95 % CI)": _mci(r["best_mean"], r["best_ci"], r["best_n"]),
            "cheapest equivalent depth": int(r["cheap_depth"]),
            "test acc at cheapest": _mci(r["cheap_mean"], r["cheap_ci"], r["cheap_n"]),
            "answer": recommendation(r),
            "total compute saved (incl. source)": "–" if _nan(r["saving_total"])
            else f"{100 * r['saving_total']:.0f} %",
            "one-sided p": _p(r["p_less"]), "rule": r["rule"],
            "cells with 1 run": r["single_run"] or "none"})
    return pd.DataFrame(rows)


def _rule_text(v: CellView) -> str:
    runs = (f"the k+1 = {v.seeds + 1} completed runs of each cell's best configuration (its "
            f"best tune trial, then {v.seeds} more seeds)" if v.seeds else
            "the completed runs of each cell's best configuration (this study has no confirm "
            "phase: usually 1 run per cell, so no intervals)")
    return (f"Metric: test accuracy, mean over {runs}. A cell's best configuration is the "
            "learning rate of its completed tune trial with the best validation accuracy "
            "(the test split never selects). A seed changes the source model (each seed trains "
            "its own), the new head's initialisation, the data order and the augmentation draws "
            "(ImageNet weights are the same for every seed). Only completed trials count: a "
            "trial ASHA stopped or that errored never enters a mean, an interval, a curve or a "
            "gain. Rule: the best depth has the highest mean; a depth is equivalent to it when "
            f"its mean is within {v.tol_points:g} accuracy point(s) of the best depth's "
            "(report.tolerance) AND it is not significantly lower (one-sided Welch t-test, "
            "α = 0.05); when either side has fewer than 2 runs only the tolerance applies "
            "(column 'rule'). The answer is the equivalent depth with the lowest mean target "
            "FLOPs: 'X % less compute' compares mean target FLOPs per run with the best depth's, "
            "'points' is its mean minus the best depth's, with the Welch 95 % CI of that "
            "difference. Intervals are 95 % t intervals of the mean; '–': one run, no interval.")


def _mode_note(v: CellView) -> str | None:
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


def _no_run_cells(v: CellView) -> list[str]:
    return v.coverage.loc[v.coverage["runs"] == 0, M.CELL].tolist()


def _coverage_table(v: CellView) -> pd.DataFrame:
    c = v.coverage
    return pd.DataFrame({
        "cell": c[M.CELL], "tune trials": c["tune trials"], "completed": c[f"tune {COMPLETED}"],
        "stopped": c[f"tune {STOPPED}"], "errored": c[f"tune {ERRORED}"],
        "running": c[f"tune {RUNNING}"],
        "confirm runs (completed / trials)": [f"{a} / {b}" for a, b in
                                              zip(c["confirm completed"], c["confirm trials"])],
        "runs counted": c["runs"], "chosen lr": c[M.LR]})


def _cell_table(v: CellView) -> pd.DataFrame:
    s = v.summary
    val = v.val.set_index(M.CELL)["mean"] if len(v.val) else pd.Series(dtype=float)
    return pd.DataFrame({
        "cell": s[M.CELL], "lr": s[M.LR], "runs": s["n"],
        "test acc (mean ± 95 % CI)": [_mci(m, c) for m, c in zip(s["mean"], s["ci"])],
        "std (points)": ["–" if _nan(x) else f"{100 * x:.2f}" for x in s["std"]],
        "val acc (mean)": [val.get(c, math.nan) for c in s[M.CELL]],
        "target FLOPs (mean)": s[M.TARGET_FLOPS],
        "total FLOPs incl. source (mean)": s[TOTAL_FLOPS],
        "device_s (mean)": s[DEVICE_S], "trials": s["trial_ids"]})


def _gain_table(v: CellView) -> pd.DataFrame:
    g = v.gains
    return pd.DataFrame({
        "split": g[M.SPLIT], "backbone": g[M.BACKBONE], "init": g[M.INIT], "best depth": g["depth"],
        "transfer test acc (mean ± 95 % CI)": [_mci(m, c, n) for m, c, n in
                                               zip(g["mean_transfer"], g["ci_transfer"],
                                                   g["n_transfer"])],
        "scratch test acc (mean ± 95 % CI)": [_mci(m, c, n) if n else "– (no scratch cell)"
                                              for m, c, n in zip(g["mean_scratch"],
                                                                 g["ci_scratch"], g["n_scratch"])],
        "gain": g["gain"], "gain 95 % CI (points)": [_ci(a, b) for a, b in zip(g["lo"], g["hi"])],
        "p (Welch, two-sided)": [_p(p) for p in g["p"]]})


def _cell_frontier_table(v: CellView, split: str) -> pd.DataFrame:
    f = v.frontier
    f = f[f[M.SPLIT] == split] if len(f) else f
    return pd.DataFrame({
        "cell": f[M.CELL], "lr": f[M.LR], "runs": f["n"],
        "test acc (mean ± 95 % CI)": [_mci(m, c) for m, c in zip(f["mean"], f["ci"])],
        "total FLOPs incl. source (mean)": f[TOTAL_FLOPS], "target FLOPs (mean)": f[M.TARGET_FLOPS]})


# ----------------------------------------------------------------------------- one study

def study_sections(s: Study, out: Path, prefix: str = "", tolerance=None) -> list[Section]:
    """The report's sections; ``tolerance`` in accuracy points (None: the spec's)."""
    t, secs = s.trials, []
    splits = _splits(t)
    n = t["status"].value_counts().to_dict()
    v = cell_view(s, tolerance)

    h = Section("1. Answer: how much to freeze")
    nocell = _no_run_cells(v)
    h.p(f"Study {s.name!r}: {len(t)} trials — " + ", ".join(
        f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING)) +
        f". Target epochs (ASHA max_t): {s.target_epochs}. Cells: {len(v.coverage)}, "
        f"{len(v.coverage) - len(nocell)} with a completed run; confirm seeds per cell: "
        f"{v.seeds}.")
    if (t["status"] == RUNNING).any() or s.summary is None:
        inc = t.loc[t["status"] == RUNNING, "trial_id"].tolist()
        h.p("PARTIAL RESULTS: the study is still running or was interrupted (no summary.json); "
            f"incomplete trials: {', '.join(inc) or 'none'}.")
    h.p(_rule_text(v))
    note = _mode_note(v)
    if note:
        h.p(note)
    if v.answer.empty:
        h.p("No transferred cell (init other than scratch) has a completed run yet, so there is "
            "no answer.")
    else:
        h.table(_answer_table(v), "How much to freeze, per split, backbone and init "
                                  "(accuracies of different splits are not comparable)")
    single = v.summary.loc[v.summary["n"] < 2, M.CELL].tolist()
    if single:
        h.p(f"Cells with only 1 completed run (no interval, equivalence by the tolerance only): "
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
    secs.append(h)

    cv = Section("2. Cells: coverage and runs")
    cv.p("One row per cell (split/backbone/init/d<frozen depth>): its tune trials (learning-rate "
         "samples; early stopping compares them only with trials of the same cell) and how they "
         "ended, its confirm runs (the best configuration again with new seeds), and the runs "
         "that count (completed trials of the chosen learning rate).")
    cv.p("Every cell has at least one completed run." if not nocell else
         f"{len(nocell)} cell(s) have no completed run: {', '.join(nocell)}.")
    cv.table(_coverage_table(v), "Per-cell coverage")
    secs.append(cv)

    d = Section("3. Accuracy vs frozen depth (cell runs, 95 % CI)")
    d.p("Mean test accuracy of each cell's completed runs against its frozen depth, with 95 % t "
        "intervals; one line per backbone and init, per split (cf. Yosinski et al. 2014). Depth 0 "
        "fine-tunes everything; depth = number of frozen backbone stages. Scratch baselines are "
        "dotted lines (band: their interval). Hollow markers: one run, no interval. Stopped "
        "trials are not drawn (see the scatter plots of section 5).")
    d.fig(plots.save(plots.depth_curves(v.summary, splits), out / f"{prefix}depth.png"),
          "Test accuracy vs frozen depth per split (mean ± 95 % CI of the cells' runs)")
    d.table(_cell_table(v), "Cells: test accuracy over their runs")
    secs.append(d)

    g = Section("4. Transfer gain over scratch")
    g.p("Per split, backbone and transferred init: the most accurate depth's runs against the "
        "scratch cell's runs of the same split and backbone. Both sides are completed runs, so "
        "they trained for the same target epochs. Gain = difference of the mean test accuracies "
        "(points), with the Welch 95 % CI and the two-sided Welch test's p; '–' where a side has "
        "fewer than 2 runs. The depth is picked on the same metric, so its gain is slightly "
        "optimistic.")
    if v.gains.dropna(subset=["gain"]).empty:
        g.p("No transferred cell has a scratch cell with completed runs to compare with.")
    else:
        g.fig(plots.save(plots.transfer_gain(v.gains), out / f"{prefix}gain.png"),
              "Transfer gain over scratch with Welch 95 % CIs")
    g.table(_gain_table(v), "Transfer gain over scratch (test accuracy, completed runs)")
    secs.append(g)

    fr = Section("5. Accuracy vs compute: Pareto frontier of cells")
    fr.p("Each cell is one point: the mean test accuracy of its runs (± 95 % CI) against their "
         "mean compute, target plus the amortised source cost (source FLOPs / trials that used "
         "that source model). The black steps are the Pareto frontier of cells. Below, every "
         "trial (its last validation accuracy; hollow: stopped by ASHA or incomplete; ringed: "
         "the runs that count in the cell statistics), with and without the source cost.")
    sc = C.scatter_points(t, v.runs)
    for sp in splits:
        fr.fig(plots.save(plots.cell_frontier(v.summary, v.frontier, sp),
                          out / f"{prefix}cell_frontier_{sp}.png"),
               f"Split {sp}: cells' mean test accuracy vs mean total compute")
        fr.table(_cell_frontier_table(v, sp), f"Split {sp}: Pareto frontier of cells")
        f = plots.save(plots.frontier(sc, sp), out / f"{prefix}frontier_{sp}.png")
        fr.fig(f, f"Split {sp}: every trial's validation accuracy vs compute, with and without "
                  "the amortised source cost")
        st = t[t[M.SPLIT] == sp]
        fr.table(_frontier_table(st, TOTAL_FLOPS), f"Split {sp}: trial frontier, total compute "
                                                   "(target + amortised source)")
        fr.table(_frontier_table(st, M.TARGET_FLOPS), f"Split {sp}: trial frontier, target "
                                                      "compute only")
    secs.append(fr)

    lc = Section("6. Finalists: learning curves, per-class metrics, confusion")
    fin = F.finalists(t)
    lc.fig(plots.save(plots.learning_curves(s.epochs, fin, splits), out / f"{prefix}learning.png"),
           "Validation accuracy per epoch; coloured: finalists (trials that ran to max_t)")
    for sp in splits:
        b = _best_trial(t[t[M.SPLIT] == sp])
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
    secs.append(lc)

    a = Section("7. ASHA accounting")
    acc = F.asha_accounting(t, s.target_epochs)
    acc_s = F.asha_accounting(t.assign(_src_s=t["source_train_s"]), s.target_epochs,
                              flops=DEVICE_S, source_flops="_src_s")
    a.p(f"ASHA ran {acc['epochs_run']} of {acc['epochs_fifo']} trial-epochs. Compute spent: "
        f"{acc['total']:.3g} FLOPs ({acc_s['total']:.0f} device-seconds); FIFO (every trial to "
        f"max_t = {s.target_epochs} epochs, each source model once) is estimated at "
        f"{acc['fifo']:.3g} FLOPs ({acc_s['fifo']:.0f} device-seconds): savings factor "
        f"x{acc['savings']:.2f} in FLOPs, x{acc_s['savings']:.2f} in device time. The estimate "
        "uses each trial's per-epoch cost; trials that reported no epoch count as zero.")
    ph = t.groupby(M.PHASE)
    a.table(pd.DataFrame({"phase": list(ph.groups), "trials": ph.size().values,
                          "completed": ph["status"].apply(lambda x: (x == COMPLETED).sum()).values,
                          "stopped": ph["status"].apply(lambda x: (x == STOPPED).sum()).values,
                          "target FLOPs": ph[M.TARGET_FLOPS].sum().values}),
            "Compute by phase (tune: learning-rate search inside the cells; confirm: new seeds)")
    at = _asha_table(acc)
    at["device_s"] = [acc_s["spent"][COMPLETED], acc_s["spent"][STOPPED],
                      acc_s["spent"][ERRORED], acc_s["spent"][RUNNING], acc_s["source"],
                      acc_s["total"], acc_s["fifo"]]
    a.table(at, "Compute by trial status")
    a.fig(plots.save(plots.asha(acc), out / f"{prefix}asha.png"),
          "Compute spent under ASHA vs the FIFO estimate")
    secs.append(a)

    p = Section("8. Provenance")
    p.table(_provenance(s), "Study")
    if s.sources:
        p.table(pd.DataFrame([{"source model": k, "trained by": i.get("trained_by"),
                               "users": len(i.get("users", [])), "epochs": i.get("epochs"),
                               "source FLOPs": i.get("flops"), "source val acc": i.get("val_acc"),
                               "source test acc": i.get("test_acc"), "train_s": i.get("train_s")}
                              for k, i in sorted(s.sources.items())]), "Shared source models")
    p.pre(s.spec_text)
    secs.append(p)
    return secs


def _provenance(s: Study) -> pd.DataFrame:
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
            ("report generated", _now())]
    return pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows],
                        columns=["item", "value"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- output dir

def _identity(studies: list[Study]) -> list[dict]:
    return [{"name": s.name, "created": s.created} for s in studies]


def _prepare_out(out: Path, studies: list[Study], kind: str, force: bool) -> None:
    ident = _identity(studies)
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: output path exists and is not a directory")
    if marker.exists() and not force:
        try:
            old = json.loads(marker.read_text())
            old_ident = [{"name": x.get("name"), "created": x.get("created")}
                         for x in old.get("studies", [])]
        except (OSError, ValueError, AttributeError) as e:
            raise ReportError(f"{marker}: unreadable report marker ({e}); use --force to "
                              "overwrite") from e
        if old_ident != ident or old.get("kind") != kind:
            raise ReportError(
                f"{out}: holds a {old.get('kind', 'report')} of "
                f"{', '.join(repr(x['name']) + ' (' + str(x['created']) + ')' for x in old_ident)}"
                f", not of {', '.join(repr(x['name']) + ' (' + str(x['created']) + ')' for x in ident)}; "
                "choose another -o or use --force to overwrite")
    elif not marker.exists() and not force and any((out / f).exists() for f in OUTPUT_FILES):
        raise ReportError(f"{out}: holds a report without {MARKER} (of an unknown study); choose "
                          "another -o or use --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)


def _write(out: Path, title: str, sections: list[Section], studies: list[Study], kind: str):
    (out / "report.md").write_text(render_md(title, sections))
    write_atomic(out / "report.html", render_html(title, sections))
    (out / MARKER).write_text(json.dumps({
        "kind": kind, "studies": [{**i, "path": s.path} for i, s in
                                  zip(_identity(studies), studies)],
        "generated": _now()}, indent=1))


def _tables(out: Path, studies: list[Study], labels: list[str] | None = None) -> None:
    ts, es = [], []
    for i, s in enumerate(studies):
        tt, ee = s.trials.copy(), s.epochs.copy()
        if labels:
            tt.insert(0, "study", labels[i])
            ee.insert(0, "study", labels[i])
        ts.append(tt)
        es.append(ee)
    t, e = pd.concat(ts, ignore_index=True), pd.concat(es, ignore_index=True)
    for df, name in ((t, "trials"), (e, "epochs")):
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)


def summary_text(s: Study, label: str | None = None, tolerance=None,
                 view: CellView | None = None) -> str:
    v = view or cell_view(s, tolerance)
    acc = F.asha_accounting(s.trials, s.target_epochs)
    n = s.trials["status"].value_counts().to_dict()
    lines = [f"study {label or s.name}: {len(s.trials)} trials ("
             + ", ".join(f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING))
             + ")" + ("" if s.summary else " — PARTIAL: study running or interrupted"),
             f"  cells: {len(v.coverage)}, {len(v.coverage) - len(_no_run_cells(v))} with a "
             f"completed run; answer by test accuracy, tolerance {v.tol_points:g} point(s)"]
    rows = [("split", "backbone / init", "best depth (test acc, 95 % CI)", "answer")]
    for sp in _splits(s.trials):
        a = v.answer[v.answer[M.SPLIT].astype(str) == sp]
        if a.empty:
            rows.append((sp, "–", "no transferred cell has a completed run yet", ""))
        for _, r in a.iterrows():
            rows.append((sp, f"{r[M.BACKBONE]} / {r[M.INIT]}",
                         f"d{int(r['best_depth'])}: "
                         f"{_mci(r['best_mean'], r['best_ci'], r['best_n'])}",
                         recommendation(r)))
    w = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.append(f"  ASHA: spent {acc['total']:.3g} FLOPs vs ~{acc['fifo']:.3g} FIFO "
                 f"(savings x{acc['savings']:.2f})")
    return "\n".join(lines)


def default_out(path: str, name: str) -> Path:
    return Path(f"report-{name}") if "://" in path else Path(path).expanduser() / "report"


def make_report(path, out=None, force: bool = False, tolerance=None) -> tuple[Path, str]:
    """Write the report of one study; returns (output dir, terminal summary). ``tolerance``: the
    equivalence tolerance in accuracy points (None: the spec's report.tolerance, default 1.0)."""
    s = load_study(path)
    tolerance_points(s.spec, tolerance)  # a bad tolerance fails before anything is written
    out = Path(out) if out else default_out(str(path), s.name)
    _prepare_out(out, [s], "report", force)
    _write(out, f"Study report: {s.name}", study_sections(s, out, tolerance=tolerance), [s],
           "report")
    _tables(out, [s])
    return out, (summary_text(s, tolerance=tolerance)
                 + f"\nreport: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)")


# ----------------------------------------------------------------------------- compare

def _labels(studies: list[Study]) -> list[str]:
    names = [s.name for s in studies]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


ANSWER_KEYS = [M.SPLIT, M.BACKBONE, M.INIT]


def _answers_side_by_side(views: list[CellView], labels: list[str]) -> pd.DataFrame:
    """One row per split x backbone x init, two columns per study: its best depth (mean ± CI,
    n) and its answer."""
    keys = sorted({tuple(r) for v in views for r in v.answer[ANSWER_KEYS].itertuples(index=False)},
                  key=lambda k: tuple(map(str, k)))
    rows = []
    for k in keys:
        row = dict(zip(["split", "backbone", "init"], k))
        for v, lab in zip(views, labels):
            a = v.answer
            m = a[(a[M.SPLIT] == k[0]) & (a[M.BACKBONE] == k[1]) & (a[M.INIT] == k[2])]
            if m.empty:
                row[f"{lab}: best depth"] = row[f"{lab}: answer"] = "–"
                continue
            r = m.iloc[0]
            row[f"{lab}: best depth"] = (f"d{int(r['best_depth'])}: "
                                         f"{_mci(r['best_mean'], r['best_ci'], r['best_n'])}")
            row[f"{lab}: answer"] = recommendation(r)
        rows.append(row)
    return pd.DataFrame(rows)


def _differences(views: list[CellView], labels: list[str], studies: list[Study]) -> pd.DataFrame:
    """Per split x backbone x init, each study's best depth against the first study's: the
    difference of their mean test accuracies with its Welch 95 % CI and p."""
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
            cb = bsum.loc[f"{k[0]}/{k[1]}/{k[2]}/d{int(b['best_depth'])}"]
            cr = summ.loc[f"{k[0]}/{k[1]}/{k[2]}/d{int(r['best_depth'])}"]
            w = C.welch(cr["mean"], cr["std"], cr["n"], cb["mean"], cb["std"], cb["n"])
            rows.append({"study": lab, "split": k[0], "backbone": k[1], "init": k[2],
                         "best depth": f"d{int(b['best_depth'])} → d{int(r['best_depth'])}",
                         "Δ best-depth test acc gain": w["diff"],
                         "Δ 95 % CI (points)": _ci(w["lo"], w["hi"]),
                         "p (Welch, two-sided)": _p(w["p"]),
                         "cheapest equivalent depth": f"d{int(b['cheap_depth'])} → "
                                                      f"d{int(r['cheap_depth'])}"})
    for s, lab in zip(studies[1:], labels[1:]):
        a0, a1 = (F.asha_accounting(x.trials, x.target_epochs) for x in (studies[0], s))
        rows.append({"study": lab, "split": "(whole study)",
                     "FLOPs ratio (whole study spent)": a1["total"] / a0["total"]
                     if a0["total"] else math.nan})
    return pd.DataFrame(rows)


def _stacked(views, labels, table) -> pd.DataFrame:
    parts = []
    for v, lab in zip(views, labels):
        d = table(v)
        d.insert(0, "study", lab)
        parts.append(d)
    d = pd.concat(parts, ignore_index=True)
    if "cell" in d and len(d):
        d = d.sort_values(["cell", "study"], kind="stable").reset_index(drop=True)
    return d


def compare_sections(studies: list[Study], labels: list[str], out: Path,
                     tolerance=None) -> list[Section]:
    """The comparison's sections; every study is judged by the same rules (analysis.cells),
    each with its own spec's tolerance unless ``tolerance`` (points) is given."""
    views = [cell_view(s, tolerance) for s in studies]
    secs = []
    st = Section("1. Studies")
    st.table(pd.DataFrame([{
        "study": lab, "path": s.path, "created": s.created,
        "code version": s.provenance.get("code_version"),
        "data fingerprint": str((s.provenance.get("data") or {}).get("fingerprint", ""))[:16],
        "trials": len(s.trials),
        **{k: int((s.trials["status"] == k).sum()) for k in (COMPLETED, STOPPED, ERRORED, RUNNING)},
        "cells": len(v.coverage), "cells with a run": len(v.coverage) - len(_no_run_cells(v)),
        "confirm seeds": v.seeds, "tolerance (points)": f"{v.tol_points:g}",
        "finished": "yes" if s.summary else "no (partial)"}
        for s, lab, v in zip(studies, labels, views)]))
    fps = {str((s.provenance.get("data") or {}).get("fingerprint")) for s in studies}
    if len(fps) > 1:
        st.p("Note: the studies use different data (fingerprints differ); accuracies may not be "
             "comparable.")
    secs.append(st)

    b = Section("2. Answer per study: how much to freeze")
    b.p(_rule_text(views[0]))
    if len({v.tol_points for v in views}) > 1:
        b.p("The studies' specs set different tolerances (see section 1); each study is judged "
            "by its own. Pass one tolerance to judge them alike.")
    for v, lab in zip(views, labels):
        note = _mode_note(v)
        if note:
            b.p(f"Study {lab}: {note}")
        single = v.summary.loc[v.summary["n"] < 2, M.CELL].tolist()
        if single:
            b.p(f"Study {lab}: cells with only 1 completed run (no interval): {', '.join(single)}.")
        if _no_run_cells(v):
            b.p(f"Study {lab}: cells without any completed run: {', '.join(_no_run_cells(v))}.")
    b.table(_answers_side_by_side(views, labels), "How much to freeze, side by side")
    b.table(_stacked(views, labels, _coverage_table), "Per-cell coverage")
    secs.append(b)

    d = Section(f"3. Differences (relative to study {labels[0]})")
    d.p("Per split, backbone and init, each study's most accurate depth against the first "
        "study's: difference of the mean test accuracies in percentage points with the Welch 95 % "
        "CI ('–': a side has one run), and how the best and the cheapest equivalent depth moved; "
        "compute as ratios.")
    d.table(_differences(views, labels, studies))
    secs.append(d)

    allsplits = sorted({sp for s in studies for sp in _splits(s.trials)})
    c = Section("4. Accuracy vs frozen depth: overlaid cell curves (95 % CI)")
    c.p("Mean test accuracy of each cell's completed runs per frozen depth with 95 % t intervals, "
        "one colour per study, one panel per backbone; dotted: the scratch cells. Hollow: one run.")
    for sp in allsplits:
        c.fig(plots.save(plots.compare_depth_curves(
            {lab: v.summary for v, lab in zip(views, labels)}, sp), out / f"compare_depth_{sp}.png"),
            f"Split {sp}: test accuracy vs frozen depth, studies overlaid")
    c.table(_stacked(views, labels, _cell_table), "Cells of every study (side by side per cell)")
    secs.append(c)

    g = Section("5. Transfer gain over scratch")
    g.p("Per study, the most accurate transferred depth against the scratch cell (completed runs "
        "only): gain in points, Welch 95 % CI and two-sided p.")
    g.table(_stacked(views, labels, _gain_table), "Transfer gain over scratch (test accuracy)")
    secs.append(g)

    f = Section("6. Accuracy vs compute: overlaid Pareto frontiers of cells")
    f.p("Cells' mean test accuracy against their mean compute per run (target + amortised source); "
        "one frontier per study.")
    for sp in allsplits:
        f.fig(plots.save(plots.compare_frontiers({lab: v.summary for v, lab in zip(views, labels)},
                                                 {lab: v.frontier for v, lab in zip(views, labels)},
                                                 sp), out / f"compare_frontier_{sp}.png"),
              f"Split {sp}: Pareto frontiers of cells of the studies (total compute incl. source "
              "share)")
        parts = []
        for v, lab in zip(views, labels):
            ft = _cell_frontier_table(v, sp)
            ft.insert(0, "study", lab)
            parts.append(ft)
        f.table(pd.concat(parts, ignore_index=True), f"Split {sp}: frontier cells")
    secs.append(f)

    lc = Section("7. Finalists: learning curves and the best trials' test metrics")
    rows = []
    for i, (s, lab) in enumerate(zip(studies, labels)):
        t, splits = s.trials, _splits(s.trials)
        lc.fig(plots.save(plots.learning_curves(s.epochs, F.finalists(t), splits),
                          out / f"compare_{i}_learning.png"),
               f"Study {lab}: validation accuracy per epoch; coloured: finalists")
        for sp in splits:
            bt = _best_trial(t[t[M.SPLIT] == sp])
            if bt is None:
                continue
            rows.append({"study": lab, M.SPLIT: sp, "trial": bt["trial_id"],
                         M.BACKBONE: bt[M.BACKBONE], M.INIT: bt[M.INIT],
                         M.FROZEN_DEPTH: bt[M.FROZEN_DEPTH], M.LR: bt[M.LR],
                         "test acc": bt[M.TEST_ACC], "macro precision": bt[M.TEST_PRECISION],
                         "macro recall": bt[M.TEST_RECALL], "macro f1": bt[M.TEST_F1]})
            lc.fig(plots.save(plots.confusion(bt, s.target_classes(sp)),
                              out / f"compare_{i}_confusion_{sp}.png"),
                   f"Study {lab}, split {sp}: test confusion matrix of trial {bt['trial_id']}")
    if rows:
        lc.table(pd.DataFrame(rows), "Best completed trial per study and split (test split)")
    else:
        lc.p("No study has a completed trial yet, so there are no test metrics.")
    secs.append(lc)

    a = Section("8. ASHA accounting")
    rows = []
    for s, lab in zip(studies, labels):
        acc = F.asha_accounting(s.trials, s.target_epochs)
        rows.append({"study": lab, "trials": len(s.trials), "epochs run": acc["epochs_run"],
                     "epochs FIFO": acc["epochs_fifo"], "FLOPs completed": acc["spent"][COMPLETED],
                     "FLOPs stopped": acc["spent"][STOPPED], "FLOPs source": acc["source"],
                     "FLOPs spent": acc["total"], "FLOPs FIFO estimate": acc["fifo"],
                     "savings factor": acc["savings"]})
    a.table(pd.DataFrame(rows))
    secs.append(a)

    p = Section("9. Provenance")
    pv = [_provenance(s).set_index("item")["value"].rename(lab) for s, lab in zip(studies, labels)]
    p.table(pd.concat(pv, axis=1).reset_index())
    secs.append(p)
    return secs


def make_compare(paths, out=None, force: bool = False, tolerance=None) -> tuple[Path, str]:
    """Compare studies side by side by the same rules; ``tolerance`` in accuracy points (None:
    each study's spec's report.tolerance, default 1.0)."""
    if len(paths) < 2:
        raise ReportError("compare needs at least two study directories")
    studies = [load_study(p) for p in paths]
    for s in studies:
        tolerance_points(s.spec, tolerance)
    labels = _labels(studies)
    out = Path(out) if out else Path("compare-" + "-vs-".join(labels))
    _prepare_out(out, studies, "compare", force)
    _write(out, "Study comparison: " + " vs ".join(labels),
           compare_sections(studies, labels, out, tolerance), studies, "compare")
    _tables(out, studies, labels)
    text = "\n".join(summary_text(s, lab, tolerance) for s, lab in zip(studies, labels))
    return out, text + f"\ncomparison: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)"
