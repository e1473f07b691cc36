"""`study report` and `study compare`: report.md, a self-contained report.html (figures embedded
as data URIs), PNG figures, trials/epochs as CSV and Parquet, and a terminal summary.

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

from analysis import frontier as F
from analysis import plots
from analysis.load import (BEST_VAL_ACC, COMPLETED, DEVICE_S, EPOCHS, ERRORED, RUNNING,
                           SOURCE_FLOPS_AMORTISED, STOPPED, TOTAL_DEVICE_S, TOTAL_FLOPS,
                           ReportError, Study, load_study)
from trainables import metrics as M

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

def _pm(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    s = f"{100 * mean:.1f}%"
    return s + (f" ± {100 * std:.1f}" if std is not None and not math.isnan(std) else "")


def headline(trials: pd.DataFrame) -> pd.DataFrame:
    """Best configuration per split x backbone, and per split over all backbones: highest mean
    validation accuracy over seeds among completed trials; a split x backbone without any
    completed trial falls back to its best trial of any status (marked in 'basis')."""
    sums = (TOTAL_FLOPS, M.TARGET_FLOPS, SOURCE_FLOPS_AMORTISED, TOTAL_DEVICE_S,
            M.TRAINABLE_PARAMS, EPOCHS)
    t = trials.copy()
    t[M.TRAINABLE_PARAMS] = pd.to_numeric(t[M.TRAINABLE_PARAMS], errors="coerce")
    comp = F.aggregate_repeats(t[t["status"] == COMPLETED], sums=sums)
    best = F.best_per_group(comp, [M.SPLIT, M.BACKBONE], f"{M.VAL_ACC}_mean")
    best["basis"] = "completed"
    have = set(zip(best[M.SPLIT], best[M.BACKBONE]))
    anyst = F.aggregate_repeats(t, sums=sums)
    fb = F.best_per_group(anyst, [M.SPLIT, M.BACKBONE], f"{M.VAL_ACC}_mean")
    fb = fb[[(s, b) not in have for s, b in zip(fb[M.SPLIT], fb[M.BACKBONE])]].copy()
    fb["basis"] = "not completed"
    best = pd.concat([best, fb], ignore_index=True).sort_values(
        [M.SPLIT, M.BACKBONE], key=lambda s: s.astype(str).str.replace("(all)", "~"),
        kind="stable")
    return pd.DataFrame({
        "split": best[M.SPLIT], "backbone": best[M.BACKBONE], "init": best[M.INIT],
        "frozen depth": best[M.FROZEN_DEPTH], "lr": best[M.LR], "seeds": best["n"],
        "val acc (mean ± std)": [_pm(m, s) for m, s in zip(best[f"{M.VAL_ACC}_mean"],
                                                            best[f"{M.VAL_ACC}_std"])],
        "test acc (mean ± std)": [_pm(m, s) for m, s in zip(best[f"{M.TEST_ACC}_mean"],
                                                             best[f"{M.TEST_ACC}_std"])],
        "epochs": best[f"{EPOCHS}_mean"],
        "FLOPs total (incl. source share)": best[f"{TOTAL_FLOPS}_mean"],
        "FLOPs target": best[f"{M.TARGET_FLOPS}_mean"],
        "device_s (incl. source share)": best[f"{TOTAL_DEVICE_S}_mean"],
        "trainable params": best[f"{M.TRAINABLE_PARAMS}_mean"],
        "basis": best["basis"], "trials": best["trial_ids"],
    }).reset_index(drop=True)


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


# ----------------------------------------------------------------------------- one study

def study_sections(s: Study, out: Path, prefix: str = "") -> list[Section]:
    t, secs = s.trials, []
    splits = _splits(t)
    n = t["status"].value_counts().to_dict()

    h = Section("1. Headline: best configurations")
    h.p(f"Study {s.name!r}: {len(t)} trials — " + ", ".join(
        f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING)) +
        f". Target epochs (ASHA max_t): {s.target_epochs}.")
    if (t["status"] == RUNNING).any() or s.summary is None:
        inc = t.loc[t["status"] == RUNNING, "trial_id"].tolist()
        h.p("PARTIAL RESULTS: the study is still running or was interrupted (no summary.json); "
            f"incomplete trials: {', '.join(inc) or 'none'}.")
    h.p("Best configuration per split and backbone (and over all backbones) by validation "
        "accuracy at the last epoch; the test split is reported, never used to select. "
        "Accuracies of different splits are not comparable (different target classes).")
    h.table(headline(t), "Best configurations")
    err = t[t["status"] == ERRORED]
    if not err.empty:
        h.p(f"{len(err)} trial(s) errored (after the spec's max_failures retries); the study went "
            "on without them. Their last error:")
        cols = ["trial_id", M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR, EPOCHS, "error"]
        h.table(err[[c for c in cols if c in err.columns]], "Errored trials")
    secs.append(h)

    fr = Section("2. Accuracy vs compute: Pareto frontier")
    fr.p("Each trial is one point: its last validation accuracy against the compute it spent. "
         "'Total' adds the trial's share of its source model (source FLOPs / trials that used "
         "that source model); 'target' counts the transfer stage only.")
    for sp in splits:
        f = plots.save(plots.frontier(t, sp), out / f"{prefix}frontier_{sp}.png")
        fr.fig(f, f"Split {sp}: validation accuracy vs compute, with and without the amortised "
                  "source cost")
        st = t[t[M.SPLIT] == sp]
        fr.table(_frontier_table(st, TOTAL_FLOPS), f"Split {sp}: frontier, total compute "
                                                   "(target + amortised source)")
        fr.table(_frontier_table(st, M.TARGET_FLOPS), f"Split {sp}: frontier, target compute only")
    secs.append(fr)

    d = Section("3. Accuracy vs frozen depth (transfer-depth curves)")
    d.p("Best validation accuracy per frozen depth, one curve per backbone and init, per split "
        "(cf. Yosinski et al. 2014). Depth 0 fine-tunes everything; depth = number of frozen "
        "backbone stages. Scratch baselines are dotted lines. Faint dots: individual trials "
        "(including ones ASHA stopped after fewer epochs).")
    d.fig(plots.save(plots.depth_curves(t, splits), out / f"{prefix}depth.png"),
          "Validation accuracy vs frozen depth per split")
    dc = F.depth_curves(t, M.VAL_ACC).rename(columns={"n": "trials"})
    d.table(dc, "Best validation accuracy per depth")
    secs.append(d)

    g = Section("4. Transfer gain over training from scratch")
    g.p("Gain = best transferred accuracy − best scratch-baseline accuracy, per split and "
        "backbone ('(all)': over all backbones). Validation accuracy of every trial counts "
        "(a stopped trial is a real, shorter run); the test-accuracy table uses completed "
        "trials only. '–': a side has no trial.")
    g.table(F.transfer_gain(t, BEST_VAL_ACC).rename(columns={
        "best_transfer": "best transfer val acc", "best_scratch": "best scratch val acc",
        "best_transfer_init": "transfer init"}), "Validation accuracy (all trials)")
    g.table(F.transfer_gain(t, M.TEST_ACC, statuses=[COMPLETED]).rename(columns={
        "best_transfer": "best transfer test acc", "best_scratch": "best scratch test acc",
        "best_transfer_init": "transfer init"}), "Test accuracy (completed trials)")
    budgets = F.budget_grid(t[TOTAL_FLOPS])
    g.p("At equal compute budgets (log-spaced between the cheapest and the dearest trial): best "
        "validation accuracy among the trials whose total compute (target + amortised source) "
        "is within the budget.")
    ren = {"budget": "budget FLOPs", "best_transfer": "transfer val acc",
           "best_scratch": "scratch val acc"}
    gb = F.gain_at_budgets(t.assign(_all=F.ALL), budgets, x=TOTAL_FLOPS, y=BEST_VAL_ACC,
                           by=(M.SPLIT, "_all")).rename(columns={"_all": M.BACKBONE})
    g.table(gb.rename(columns=ren), "Gain at equal compute, over all backbones")
    gb = F.gain_at_budgets(t, budgets, x=TOTAL_FLOPS, y=BEST_VAL_ACC).dropna(subset=["gain"])
    g.table(gb.rename(columns=ren), "Gain at equal compute per backbone (budgets where both "
                                    "a transferred and a scratch trial fit)")
    secs.append(g)

    lc = Section("5. Finalists: learning curves, per-class metrics, confusion")
    fin = F.finalists(t)
    lc.fig(plots.save(plots.learning_curves(s.epochs, fin, splits), out / f"{prefix}learning.png"),
           "Validation accuracy per epoch; coloured: finalists (trials that ran to max_t)")
    for sp in splits:
        b = _best_trial(t[t[M.SPLIT] == sp])
        if b is None:
            lc.p(f"Split {sp}: no completed trial, so no test metrics yet.")
            continue
        lc.p(f"Split {sp}: best trial {b['trial_id']} ({b[M.BACKBONE]}, init {b[M.INIT]}, "
             f"frozen depth {b[M.FROZEN_DEPTH]}, lr {b[M.LR]:.3g}): test accuracy "
             f"{100 * b[M.TEST_ACC]:.1f}%, macro precision {100 * b[M.TEST_PRECISION]:.1f}%, "
             f"recall {100 * b[M.TEST_RECALL]:.1f}%, F1 {100 * b[M.TEST_F1]:.1f}%.")
        lc.table(_per_class(b), f"Split {sp}: per-class test metrics of trial {b['trial_id']}")
        lc.fig(plots.save(plots.confusion(b, s.target_classes(sp)),
                          out / f"{prefix}confusion_{sp}.png"),
               f"Split {sp}: test confusion matrix of trial {b['trial_id']}")
    secs.append(lc)

    a = Section("6. ASHA accounting")
    acc = F.asha_accounting(t, s.target_epochs)
    acc_s = F.asha_accounting(t.assign(_src_s=t["source_train_s"]), s.target_epochs,
                              flops=DEVICE_S, source_flops="_src_s")
    a.p(f"ASHA ran {acc['epochs_run']} of {acc['epochs_fifo']} trial-epochs. Compute spent: "
        f"{acc['total']:.3g} FLOPs ({acc_s['total']:.0f} device-seconds); FIFO (every trial to "
        f"max_t = {s.target_epochs} epochs, each source model once) is estimated at "
        f"{acc['fifo']:.3g} FLOPs ({acc_s['fifo']:.0f} device-seconds): savings factor "
        f"x{acc['savings']:.2f} in FLOPs, x{acc_s['savings']:.2f} in device time. The estimate "
        "uses each trial's per-epoch cost; trials that reported no epoch count as zero.")
    at = _asha_table(acc)
    at["device_s"] = [acc_s["spent"][COMPLETED], acc_s["spent"][STOPPED],
                      acc_s["spent"][ERRORED], acc_s["spent"][RUNNING], acc_s["source"],
                      acc_s["total"], acc_s["fifo"]]
    a.table(at, "Compute by trial status")
    a.fig(plots.save(plots.asha(acc), out / f"{prefix}asha.png"),
          "Compute spent under ASHA vs the FIFO estimate")
    secs.append(a)

    p = Section("7. Provenance")
    p.table(_provenance(s), "Study")
    if s.sources:
        p.table(pd.DataFrame([{"source model": k, "trained by": v.get("trained_by"),
                               "users": len(v.get("users", [])), "epochs": v.get("epochs"),
                               "source FLOPs": v.get("flops"), "source val acc": v.get("val_acc"),
                               "source test acc": v.get("test_acc"), "train_s": v.get("train_s")}
                              for k, v in sorted(s.sources.items())]), "Shared source models")
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
    tmp = out / "report.html.tmp"
    tmp.write_text(render_html(title, sections))
    os.replace(tmp, out / "report.html")
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


def summary_text(s: Study, label: str | None = None) -> str:
    h = headline(s.trials)
    h = h[h["backbone"] == F.ALL]
    acc = F.asha_accounting(s.trials, s.target_epochs)
    n = s.trials["status"].value_counts().to_dict()
    lines = [f"study {label or s.name}: {len(s.trials)} trials ("
             + ", ".join(f"{n.get(k, 0)} {k}" for k in (COMPLETED, STOPPED, ERRORED, RUNNING))
             + ")" + ("" if s.summary else " — PARTIAL: study running or interrupted")]
    rows = [("split", "best config", "val acc", "test acc", "FLOPs (total)")]
    for _, r in h.iterrows():
        cfg = next(iter(s.trials.loc[s.trials["trial_id"] == r["trials"].split(",")[0]]
                        .itertuples()), None)
        rows.append((str(r["split"]), f"{cfg.backbone}/{cfg.init} d{cfg.frozen_depth} "
                     f"lr {cfg.lr:.3g}" if cfg else "?", r["val acc (mean ± std)"]
                     + ("" if r["basis"] == "completed" else " (not completed)"),
                     r["test acc (mean ± std)"], f"{r['FLOPs total (incl. source share)']:.3g}"))
    w = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.append(f"  ASHA: spent {acc['total']:.3g} FLOPs vs ~{acc['fifo']:.3g} FIFO "
                 f"(savings x{acc['savings']:.2f})")
    return "\n".join(lines)


def default_out(path: str, name: str) -> Path:
    return Path(f"report-{name}") if "://" in path else Path(path).expanduser() / "report"


def make_report(path, out=None, force: bool = False) -> tuple[Path, str]:
    """Write the report of one study; returns (output dir, terminal summary)."""
    s = load_study(path)
    out = Path(out) if out else default_out(str(path), s.name)
    _prepare_out(out, [s], "report", force)
    _write(out, f"Study report: {s.name}", study_sections(s, out), [s], "report")
    _tables(out, [s])
    return out, summary_text(s) + f"\nreport: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)"


# ----------------------------------------------------------------------------- compare

def _labels(studies: list[Study]) -> list[str]:
    names = [s.name for s in studies]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def compare_sections(studies: list[Study], labels: list[str], out: Path) -> list[Section]:
    secs = []
    st = Section("1. Studies")
    st.table(pd.DataFrame([{
        "study": lab, "path": s.path, "created": s.created,
        "code version": s.provenance.get("code_version"),
        "data fingerprint": str((s.provenance.get("data") or {}).get("fingerprint", ""))[:16],
        "trials": len(s.trials),
        **{k: int((s.trials["status"] == k).sum()) for k in (COMPLETED, STOPPED, ERRORED, RUNNING)},
        "finished": "yes" if s.summary else "no (partial)"} for s, lab in zip(studies, labels)]))
    fps = {str((s.provenance.get("data") or {}).get("fingerprint")) for s in studies}
    if len(fps) > 1:
        st.p("Note: the studies use different data (fingerprints differ); accuracies may not be "
             "comparable.")
    secs.append(st)

    hs = []
    for s, lab in zip(studies, labels):
        h = headline(s.trials)
        h.insert(0, "study", lab)
        hs.append(h)
    hd = pd.concat(hs, ignore_index=True)
    b = Section("2. Best configurations per study")
    b.table(hd[hd["backbone"] == F.ALL].reset_index(drop=True), "Best over all backbones")
    b.table(hd[hd["backbone"] != F.ALL].reset_index(drop=True), "Best per backbone")
    secs.append(b)

    d = Section(f"3. Differences (relative to study {labels[0]})")
    d.p("Per split, the best configuration of each study (over all backbones) against the first "
        "study's: accuracy differences in percentage points, compute as ratios.")
    base = {r[M.SPLIT]: r for _, r in _best_rows(studies[0]).iterrows()}
    rows = []
    for s, lab in zip(studies[1:], labels[1:]):
        for _, r in _best_rows(s).iterrows():
            b0 = base.get(r[M.SPLIT])
            if b0 is None:
                continue
            rows.append({"study": lab, "split": r[M.SPLIT],
                         "Δ val acc gain": r[f"{M.VAL_ACC}_mean"] - b0[f"{M.VAL_ACC}_mean"],
                         "Δ test acc gain": r[f"{M.TEST_ACC}_mean"] - b0[f"{M.TEST_ACC}_mean"],
                         "FLOPs ratio (best config)": r[f"{TOTAL_FLOPS}_mean"]
                         / b0[f"{TOTAL_FLOPS}_mean"]})
    for s, lab in zip(studies[1:], labels[1:]):
        a0, a1 = (F.asha_accounting(x.trials, x.target_epochs) for x in (studies[0], s))
        rows.append({"study": lab, "split": "(whole study)",
                     "FLOPs ratio (whole study spent)": a1["total"] / a0["total"]})
    d.table(pd.DataFrame(rows))
    secs.append(d)

    f = Section("4. Accuracy vs compute: overlaid Pareto frontiers")
    allsplits = sorted({sp for s in studies for sp in _splits(s.trials)})
    for sp in allsplits:
        f.fig(plots.save(plots.compare_frontiers(
            {lab: s.trials for s, lab in zip(studies, labels)}, sp), out / f"compare_frontier_{sp}.png"),
            f"Split {sp}: Pareto frontiers of the studies (total compute incl. source share)")
        parts = []
        for s, lab in zip(studies, labels):
            ft = _frontier_table(s.trials[s.trials[M.SPLIT] == sp], TOTAL_FLOPS)
            ft = ft[ft["frontier of"] == "all backbones"].drop(columns="frontier of")
            ft.insert(0, "study", lab)
            parts.append(ft)
        f.table(pd.concat(parts, ignore_index=True), f"Split {sp}: frontier points")
    secs.append(f)

    g = Section("5. Transfer-depth curves and transfer gain")
    dcs, gs = [], []
    for s, lab in zip(studies, labels):
        dc = F.depth_curves(s.trials, M.VAL_ACC)
        dc.insert(0, "study", lab)
        dcs.append(dc)
        tg = F.transfer_gain(s.trials, BEST_VAL_ACC)
        tg.insert(0, "study", lab)
        gs.append(tg)
    g.table(pd.concat(dcs, ignore_index=True).rename(columns={"n": "trials"}),
            "Best validation accuracy per frozen depth")
    g.table(pd.concat(gs, ignore_index=True).rename(columns={
        "best_transfer": "best transfer val acc", "best_scratch": "best scratch val acc",
        "best_transfer_init": "transfer init"}), "Transfer gain (validation, all trials)")
    secs.append(g)

    lc = Section("6. Finalists: learning curves and the best trials' test metrics")
    rows = []
    for i, (s, lab) in enumerate(zip(studies, labels)):
        t, splits = s.trials, _splits(s.trials)
        lc.fig(plots.save(plots.learning_curves(s.epochs, F.finalists(t), splits),
                          out / f"compare_{i}_learning.png"),
               f"Study {lab}: validation accuracy per epoch; coloured: finalists")
        for sp in splits:
            b = _best_trial(t[t[M.SPLIT] == sp])
            if b is None:
                continue
            rows.append({"study": lab, M.SPLIT: sp, "trial": b["trial_id"],
                         M.BACKBONE: b[M.BACKBONE], M.INIT: b[M.INIT],
                         M.FROZEN_DEPTH: b[M.FROZEN_DEPTH], M.LR: b[M.LR],
                         "test acc": b[M.TEST_ACC], "macro precision": b[M.TEST_PRECISION],
                         "macro recall": b[M.TEST_RECALL], "macro f1": b[M.TEST_F1]})
            lc.fig(plots.save(plots.confusion(b, s.target_classes(sp)),
                              out / f"compare_{i}_confusion_{sp}.png"),
                   f"Study {lab}, split {sp}: test confusion matrix of trial {b['trial_id']}")
    if rows:
        lc.table(pd.DataFrame(rows), "Best completed trial per study and split (test split)")
    else:
        lc.p("No study has a completed trial yet, so there are no test metrics.")
    secs.append(lc)

    a = Section("7. ASHA accounting")
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

    p = Section("8. Provenance")
    pv = [_provenance(s).set_index("item")["value"].rename(lab) for s, lab in zip(studies, labels)]
    p.table(pd.concat(pv, axis=1).reset_index())
    secs.append(p)
    return secs


def _best_rows(s: Study) -> pd.DataFrame:
    comp = F.aggregate_repeats(s.trials[s.trials["status"] == COMPLETED], sums=(TOTAL_FLOPS,))
    if comp.empty:
        comp = F.aggregate_repeats(s.trials, sums=(TOTAL_FLOPS,))
    return F.best_per_group(comp, [M.SPLIT], f"{M.VAL_ACC}_mean", overall=False)


def make_compare(paths, out=None, force: bool = False) -> tuple[Path, str]:
    if len(paths) < 2:
        raise ReportError("compare needs at least two study directories")
    studies = [load_study(p) for p in paths]
    labels = _labels(studies)
    out = Path(out) if out else Path("compare-" + "-vs-".join(labels))
    _prepare_out(out, studies, "compare", force)
    _write(out, "Study comparison: " + " vs ".join(labels),
           compare_sections(studies, labels, out), studies, "compare")
    _tables(out, studies, labels)
    text = "\n".join(summary_text(s, lab) for s, lab in zip(studies, labels))
    return out, text + f"\ncomparison: {out / 'report.html'} (and report.md, PNGs, CSV, Parquet)"
