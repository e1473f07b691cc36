"""The report's document model and its two renderings: a report is a title and a list of
``Section``s (paragraphs, tables, figures, preformatted text), written as Markdown
(``render_md``) or as one self-contained HTML page (``render_html``: figures embedded as data
URIs, nothing fetched). Table values are formatted by their column name (``_fmt_cell``)."""
from __future__ import annotations

import base64
import dataclasses
import html
import math
from pathlib import Path

import pandas as pd


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


def prose(text: str) -> str:
    """A paragraph written in the code as an indented triple-quoted string, as one line: runs of
    white space (line breaks, indentation) become one space."""
    return " ".join(text.split())


def _fmt_cell(col: str, v) -> str:
    """A table value as text, by its column's name: accuracies in %, gains in signed points,
    FLOPs and learning rates in 3 significant digits, seconds with one decimal; '–' for none."""
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
