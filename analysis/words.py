"""The report's words for numbers: accuracies in % with intervals, differences in signed
points with a real minus sign, p-values, depths as sentences. Pure formatting, no statistics."""
from __future__ import annotations

import math


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


def size_text(size) -> str:
    """Images per target class as the report says it: '30', or 'all' (no size set: 0)."""
    try:
        n = int(size)
    except (TypeError, ValueError):
        return "all"
    return str(n) if n > 0 else "all"


def group_text(split, size, backbone, init, sep: str = " / ") -> str:
    """An answer group in words: '5to5 / 30 img/class / scratch_cnn / source' (the size left
    out for a study that sets none)."""
    parts = [str(split)] + ([f"{size_text(size)} img/class"] if size_text(size) != "all" else [])
    return sep.join(parts + [str(backbone), str(init)])


def drop_all_sizes(table, column: str = "images per class"):
    """A table without its size column when every row is 'all' (the study sets no size)."""
    if column in table and (table[column] == "all").all():
        return table.drop(columns=[column])
    return table
