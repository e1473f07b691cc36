"""Where a report goes and what is written there: the output directory (refused when it holds a
report of other studies, unless ``force``), report.md, report.html, report.json (the marker naming
the studies: name + created timestamp from provenance.json) and the trials / epochs tables as
CSV and Parquet."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis.load import ReportError, Study
from analysis.render import Section, render_html, render_md
from study.core.layout import write_atomic

MARKER = "report.json"
OUTPUT_FILES = ("report.md", "report.html")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_out(path: str, name: str) -> Path:
    return Path(f"report-{name}") if "://" in path else Path(path).expanduser() / "report"


def _identity(studies: list[Study]) -> list[dict]:
    return [{"name": s.name, "created": s.created} for s in studies]


def prepare_out(out: Path, studies: list[Study], kind: str, force: bool) -> None:
    """Create ``out``, or refuse (ReportError) when it holds a ``kind`` report of other studies,
    or a report without a marker, unless ``force``."""
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


def _plain(x):
    """JSON without NaN: non-finite floats become null (numpy scalars become Python's)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_report(out: Path, title: str, sections: list[Section], studies: list[Study],
                 kind: str, data: dict | None = None) -> None:
    """report.md, report.html and report.json: the marker (kind, the studies) plus ``data``
    (a report's Answer as data)."""
    (out / "report.md").write_text(render_md(title, sections))
    write_atomic(out / "report.html", render_html(title, sections))
    write_atomic(out / MARKER, json.dumps(_plain({
        "kind": kind, "studies": [{**i, "path": s.path} for i, s in
                                  zip(_identity(studies), studies)],
        "generated": now(), **(data or {})}), indent=1, allow_nan=False))


def write_tables(out: Path, studies: list[Study], labels: list[str] | None = None) -> None:
    """trials and epochs of the studies as CSV and Parquet; with ``labels``, a first column
    "study" says whose row it is."""
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


def publish(out: Path, studies: list[Study], kind: str, force: bool, title: str, sections,
            labels: list[str] | None = None, data: dict | None = None) -> None:
    """The whole output of a report (``kind`` "report") or comparison ("compare"): ``out``
    prepared (or refused), then ``sections(out)`` built (their figures are written to ``out``),
    rendered and written with the marker, and the studies' tables."""
    prepare_out(out, studies, kind, force)
    write_report(out, title, sections(out), studies, kind, data)
    write_tables(out, studies, labels)
