"""Decisive answers: is a cheaper cell as good as the best one, and how many seeds settle it.

Pure functions on plain data (dicts of per-seed accuracies), no I/O; numpy and ``scipy.stats``
only (scipy imported inside the functions that need it). Tested in ``tests/test_stats.py``,
measured by ``benchmarks/racing.py``.

Units. Accuracies are fractions in [0, 1]; ``tolerance`` is in the same unit (a caller with a
tolerance in accuracy points passes ``points / 100``). ``alpha`` is a probability. ``flops`` is the
compute of one run of a cell, any unit, the same for every cell of a group (lower = cheaper).

Comparison of a candidate cell c with the best cell b (``compare``), per-seed test accuracies
c_s, b_s keyed by seed s:

* paired t (at least 2 seeds in common, S = the common seeds, n = |S|):
      d_s = c_s - b_s,  diff = sum(d_s) / n,  sd = sqrt(sum((d_s - diff)^2) / (n - 1)),
      se = sd / sqrt(n),  df = n - 1.
  Seeds only one side has are left out (pairing removes the per-seed effect both cells share:
  the same seed trains the same source model and draws the same data order).
* Welch (fewer than 2 common seeds, at least 2 runs on each side, all runs):
      diff = mean(c) - mean(b),  se = sqrt(s_c^2/n_c + s_b^2/n_b),
      df = se^4 / ((s_c^2/n_c)^2/(n_c - 1) + (s_b^2/n_b)^2/(n_b - 1))   (s: sd with ddof=1).
* none (otherwise): diff = mean(c) - mean(b) when both have runs; no bounds; undecided.

Bounds: one-sided (1 - alpha) lower and upper confidence bounds of the true difference,
      lo = diff - t(1 - alpha, df) * se,   hi = diff + t(1 - alpha, df) * se,
i.e. the two ends of a (1 - 2 alpha) two-sided interval. When se = 0 (every paired difference
identical, or no spread on either side for Welch) the bounds collapse to diff: identical per-seed
differences are treated as exact, and the verdict is decided by diff itself.

Verdicts (non-inferiority, the two one-sided tests of TOST against the margin -tolerance):
      equivalent  iff  lo > -tolerance   (shown no worse than the best by tolerance or more)
      worse       iff  hi < -tolerance   (shown worse than the best by more than tolerance)
      undecided   otherwise (including test "none").
A candidate with exactly the best's per-seed values (same seeds, same accuracies, e.g. the best
compared with itself) is "equivalent" with diff = lo = hi = 0 at any tolerance >= 0 and any n.
Each verdict errs with probability <= alpha when the per-seed differences are normal (paired) or
the runs are (Welch, approximately): P(equivalent | true diff <= -tolerance) <= alpha and
P(worse | true diff >= -tolerance) <= alpha.

Racing (``next_seeds``): after the first ``seeds`` confirmation seeds every open comparison (one
that could still change the answer) gets one more seed, up to ``max_seeds`` confirmation seeds
(``max_seeds + 1`` runs per cell with the tuning run). A cell is compared at most
``looks(seeds, max_seeds)`` times, so each look uses ``alpha_per_look(alpha, looks)``
(Bonferroni): the probability that a cell whose true difference is -tolerance or worse is ever
called equivalent, at whatever look the racing stops, is at most alpha (for a fixed best cell;
the best is the cell with the highest observed mean, so it is itself an estimate, see
``benchmarks/racing.py`` for what that selection costs).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Mapping, Optional

PAIRED = "paired t"
WELCH = "welch"
NONE = "none"
EQUIVALENT = "equivalent"
WORSE = "worse"
UNDECIDED = "undecided"

_MAX_SEEDS_TO_DECIDE = 10 ** 9  # beyond this ``seeds_to_decide`` is None (the gap is ~0)


@dataclass(frozen=True)
class Comparison:
    """A candidate cell against the best cell (``compare``); ``asdict`` gives plain JSON (no NaN:
    unknown values are None).

    diff: mean difference candidate - best (accuracy fraction; paired: over the common seeds).
    lo, hi: one-sided (1 - alpha) lower / upper confidence bounds of the difference (None for
        test "none").
    se: standard error of diff (None for "none"); df: degrees of freedom of the t quantile.
    n_candidate, n_best: runs with a value on each side; n_pairs: seeds both have (the paired
        test uses these; 0 or 1 means it could not be made).
    test: "paired t", "welch" or "none".
    verdict: "equivalent" (lo > -tolerance), "worse" (hi < -tolerance) or "undecided".
    seeds_to_decide: undecided only: about how many runs per cell in total would decide it if
        diff and the spread stayed as observed; None when decided, when the spread is unknown
        (test "none") or zero, or when diff is exactly at the margin -tolerance.
    tolerance, alpha: what it was decided with."""
    diff: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    se: Optional[float]
    df: Optional[float]
    n_candidate: int
    n_best: int
    n_pairs: int
    test: str
    verdict: str
    seeds_to_decide: Optional[int]
    tolerance: float
    alpha: float

    def to_dict(self) -> dict:
        """The same as ``dataclasses.asdict`` (every field is a plain scalar), faster."""
        return {f: getattr(self, f) for f in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Comparison))


# ----------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=8192)
def t_quantile(p: float, df: float) -> float:
    """t(p, df): the p-quantile of Student's t with ``df`` degrees of freedom (cached)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def _check(tolerance: float, alpha: float) -> None:
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0 (accuracy fraction), got "
                         f"{tolerance!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")


def _seed(s):
    """Seeds are integers; "3" (a JSON object key) is read as 3."""
    try:
        return int(s)
    except (TypeError, ValueError):
        return s


def _values(accs: Mapping) -> dict:
    """seed -> float accuracy, seeds as ints where possible, non-finite / missing values
    dropped."""
    out = {}
    for s, v in (accs or {}).items():
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            out[s if type(s) is int else _seed(s)] = v
    return out


def _mean_sd(x: list) -> tuple[float, float]:
    """Mean and sd (ddof=1; 0 when every value is identical, NaN for one value)."""
    n = len(x)
    m = math.fsum(x) / n
    if n < 2:
        return m, math.nan
    if all(v == x[0] for v in x):
        return x[0], 0.0
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in x) / (n - 1))


def _verdict(lo: Optional[float], hi: Optional[float], tolerance: float) -> str:
    if lo is None or hi is None:
        return UNDECIDED
    if lo > -tolerance:
        return EQUIVALENT
    if hi < -tolerance:
        return WORSE
    return UNDECIDED


_TABLE_N = 4096  # runs per cell covered by the precomputed quantile table of ``seeds_needed``


@functools.lru_cache(maxsize=64)
def _shrink_table(alpha: float):
    """g[i] = t(1 - alpha, n - 1) / sqrt(n) for n = i + 2 (n = 2 .. _TABLE_N + 1), decreasing."""
    import numpy as np
    from scipy import stats

    n = np.arange(2, _TABLE_N + 2)
    return stats.t.ppf(1 - alpha, n - 1) / np.sqrt(n)


def seeds_needed(sd: float, gap: float, alpha: float, at_least: int = 2) -> Optional[int]:
    """Smallest n >= ``at_least`` (and >= 2) with t(1 - alpha, n - 1) * sd / sqrt(n) < gap: the
    runs per cell after which a one-sided (1 - alpha) bound lies within ``gap`` of the mean
    (``sd``: per-pair sd of the difference; ``gap`` = |diff + tolerance|, both accuracy
    fractions). None when sd or gap is not a positive finite number, or n would exceed 1e9.
    The left side decreases in n: a lookup in a table of exact quantiles up to n = 4097, then
    an exponential and binary search with t(1 - alpha, v) = z + (z^3 + z) / (4 v) +
    (5 z^5 + 16 z^3 + 3 z) / (96 v^2), z the normal quantile, v = n - 1."""
    if not (math.isfinite(sd) and math.isfinite(gap)) or sd <= 0 or gap <= 0:
        return None
    import numpy as np

    at_least = max(2, int(at_least))
    g = _shrink_table(float(alpha))
    i = int(np.searchsorted(-g, -gap / sd, side="right"))  # first index with g < gap / sd
    if i < len(g):
        return max(i + 2, at_least)

    z = NormalDist().inv_cdf(1 - alpha)

    def ok(n: int) -> bool:  # n > 4097: t from its Cornish-Fisher expansion (error < 1e-10)
        v = n - 1
        t = z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v * v)
        return t * sd / math.sqrt(n) < gap

    # t(1-alpha, n-1) > z(1-alpha), so no n <= (z sd / gap)^2 can satisfy it: start above
    floor_n = (z * sd / gap) ** 2
    if floor_n >= _MAX_SEEDS_TO_DECIDE:
        return None
    lo = max(len(g) + 1, at_least, int(floor_n) + 1)
    if ok(lo):
        return lo
    hi = lo * 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if lo > _MAX_SEEDS_TO_DECIDE:
            return None
    while hi - lo > 1:  # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi if hi <= _MAX_SEEDS_TO_DECIDE else None


# ----------------------------------------------------------------------------- comparison

def compare(candidate: Mapping, best: Mapping, tolerance: float, alpha: float) -> Comparison:
    """Compare a candidate cell with the best cell (see the module docstring for the formulas).

    ``candidate``, ``best``: seed -> test accuracy (fraction); non-finite values are dropped.
    ``tolerance``: the margin, accuracy fraction (>= 0); ``alpha``: error rate of each one-sided
    bound, in (0, 0.5). Paired t on the common seeds when there are >= 2, else Welch when both
    sides have >= 2 runs, else "none" (undecided). Zero spread: bounds = diff (treated as exact).

    ``seeds_to_decide`` (undecided only): with gap = |diff + tolerance| (how far the mean is from
    the margin; the bound that must cross it is lo when diff > -tolerance, hi otherwise, and
    both move by t * se), the smallest n with t(1 - alpha, n - 1) * sd / sqrt(n) < gap, where
    sd is the observed per-pair sd of the differences (paired) or sqrt(s_c^2 + s_b^2) (Welch,
    equal runs per cell, df n - 1: slightly conservative); at least one more run than now."""
    _check(tolerance, alpha)
    return _compare(_values(candidate), _values(best), float(tolerance), float(alpha))


def _sorted(seeds) -> list:
    try:
        return sorted(seeds)
    except TypeError:  # seeds of mixed types
        return sorted(seeds, key=lambda s: (str(type(s)), str(s)))


def _compare(c: dict, b: dict, tolerance: float, alpha: float) -> Comparison:
    """``compare`` on cleaned values (``_values``), arguments already checked."""
    nc, nb = len(c), len(b)
    common = _sorted(set(c) & set(b))
    npairs = len(common)
    base = dict(n_candidate=nc, n_best=nb, n_pairs=npairs, tolerance=float(tolerance),
                alpha=float(alpha))

    if nc and c == b:  # the same runs (e.g. the best with itself): exactly no difference
        return Comparison(diff=0.0, lo=0.0, hi=0.0, se=0.0,
                          df=float(npairs - 1) if npairs >= 2 else None,
                          test=PAIRED if npairs >= 2 else NONE, verdict=EQUIVALENT,
                          seeds_to_decide=None, **base)

    if npairs >= 2:
        d = [c[s] - b[s] for s in common]
        diff, sd = _mean_sd(d)
        se, df, test = sd / math.sqrt(npairs), float(npairs - 1), PAIRED
        spread, n_now = sd, npairs
    elif nc >= 2 and nb >= 2:
        mc, sc = _mean_sd(list(c.values()))
        mb, sb = _mean_sd(list(b.values()))
        diff = mc - mb
        vc, vb = sc ** 2 / nc, sb ** 2 / nb
        se, test = math.sqrt(vc + vb), WELCH
        df = (float((vc + vb) ** 2 / (vc ** 2 / (nc - 1) + vb ** 2 / (nb - 1)))
              if se > 0 else None)
        spread, n_now = math.sqrt(sc ** 2 + sb ** 2), max(nc, nb)
    else:
        diff = (math.fsum(c.values()) / nc - math.fsum(b.values()) / nb) if nc and nb else None
        return Comparison(diff=diff, lo=None, hi=None, se=None, df=None, test=NONE,
                          verdict=UNDECIDED, seeds_to_decide=None, **base)

    if se == 0:
        lo = hi = diff
    else:
        half = t_quantile(1 - alpha, df) * se
        lo, hi = diff - half, diff + half
    verdict = _verdict(lo, hi, tolerance)
    need = None
    if verdict == UNDECIDED:
        need = seeds_needed(spread, abs(diff + tolerance), alpha, at_least=n_now + 1)
    return Comparison(diff=float(diff), lo=float(lo), hi=float(hi), se=float(se), df=df,
                      test=test, verdict=verdict, seeds_to_decide=need, **base)


# ----------------------------------------------------------------------------- racing looks

def looks(seeds: int, max_seeds: int) -> int:
    """How often a comparison can be looked at while racing: once after the first ``seeds``
    confirmation seeds, then once per added seed up to ``max_seeds``: max_seeds - seeds + 1."""
    if int(seeds) != seeds or int(max_seeds) != max_seeds or seeds < 0 or max_seeds < seeds:
        raise ValueError(f"need integers 0 <= seeds <= max_seeds, got seeds={seeds!r}, "
                         f"max_seeds={max_seeds!r}")
    return int(max_seeds) - int(seeds) + 1


def alpha_per_look(alpha: float, looks: int) -> float:
    """alpha / looks (Bonferroni over the racing looks): a cell is called equivalent at some look
    with probability <= sum over looks of alpha / looks = alpha, whatever rule stops the
    racing, so the overall false-equivalence rate stays <= alpha."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if int(looks) != looks or looks < 1:
        raise ValueError(f"looks must be an integer >= 1, got {looks!r}")
    return alpha / int(looks)


# ----------------------------------------------------------------------------- group answer

def _flops(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.inf
    return x if math.isfinite(x) else math.inf


def _prepare(cells: list) -> list:
    out = []
    for i, c in enumerate(cells):
        accs = _values(c.get("accs") or {})
        n = len(accs)
        out.append(dict(cell=str(c["cell"]), depth=c.get("depth"), flops=c.get("flops"),
                        _flops=_flops(c.get("flops")), accs=accs, n=n, _i=i,
                        mean=math.fsum(accs.values()) / n if n else None))
    ids = [p["cell"] for p in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cell ids must be unique, got {ids}")
    return out


def _cheapness(p: dict) -> tuple:
    """Cheapest first; ties: the more accurate, then the cell id."""
    return p["_flops"], -p["mean"], p["cell"]


def group_answer(cells: list, tolerance: float, alpha: float, *,
                 check_best: bool = False) -> dict:
    """The answer for one group of comparable cells (e.g. the depths of one split x backbone x
    init).

    ``cells``: dicts with ``cell`` (id), ``depth``, ``flops`` (compute of one run; lower =
    cheaper; missing / non-finite = never cheaper) and ``accs`` (seed -> test accuracy).
    ``tolerance`` (accuracy fraction) and ``alpha`` go to ``compare``.

    * best: the cell with the highest mean accuracy over its runs (ties: cheaper, then id).
    * every cell is compared with the best (``compare(cell, best)``; the best with itself is
      "equivalent", diff 0).
    * answer: the cheapest cell shown equivalent, the best itself included (so never None when
      a cell has runs); cheapest_equivalent: the cheapest equivalent cell other than the best,
      or None. Ties in flops: the higher mean.
    * open: the undecided cells cheaper than the answer (each could still become the answer),
      cheapest first; decided: no open cell.
    * check_best (off by default): the best is picked by its observed mean, so a cheap cell
      that is truly worse by the tolerance or more is the best, hence the answer, untested,
      whenever noise lifts its mean above the others' (``benchmarks/racing.py``: in ~15 % of
      pairs at sd 0.02). With ``check_best`` and the answer being the best, every dearer cell
      c is also compared the other way round, ``compare(best, c)`` (reported as
      ``best_check``); c is open (after the cheaper ones) until the best is shown equivalent
      to it, i.e. until the best is shown no worse than c by the tolerance.
    * compute_saved: 1 - flops(answer) / flops(best) (0 when the answer is the best; None when a
      flops value is unknown or the best's is <= 0).

    Returns a JSON-friendly dict: best, answer, cheapest_equivalent, comparisons (cell id ->
    ``Comparison`` fields + cell, depth, flops, n (runs), mean, role "best"/"candidate"),
    best_check (the verdict of compare(best, cell) with ``check_best``, else None), decided,
    open, compute_saved, no_runs (cells without a run: not compared, never open, they have no
    configuration to race), tolerance, alpha, check_best."""
    _check(tolerance, alpha)
    prepared = _prepare(cells)
    ran = [p for p in prepared if p["n"]]
    no_runs = [p["cell"] for p in prepared if not p["n"]]
    out = dict(best=None, answer=None, cheapest_equivalent=None, comparisons={}, decided=False,
               open=[], compute_saved=None, no_runs=no_runs, tolerance=float(tolerance),
               alpha=float(alpha), check_best=bool(check_best))
    if not ran:
        return out
    best = min(ran, key=lambda p: (-p["mean"], p["_flops"], p["cell"]))
    verdicts = {}
    for p in ran:
        comp = _compare(p["accs"], best["accs"], float(tolerance), float(alpha))
        verdicts[p["cell"]] = comp.verdict
        out["comparisons"][p["cell"]] = dict(
            cell=p["cell"], depth=p["depth"], flops=p["flops"], n=p["n"], mean=p["mean"],
            role="best" if p is best else "candidate", **comp.to_dict(), best_check=None)
    equivalent = [p for p in ran if p is not best and verdicts[p["cell"]] == EQUIVALENT]
    answer = min([best] + equivalent, key=_cheapness)
    cheapest = min(equivalent, key=_cheapness) if equivalent else None
    open_ = sorted((p for p in ran if p is not best and verdicts[p["cell"]] == UNDECIDED
                    and p["_flops"] < answer["_flops"]), key=_cheapness)
    if check_best and answer is best:
        unproven = []
        for p in ran:
            if p is best or not p["_flops"] > best["_flops"]:
                continue
            rev = _compare(best["accs"], p["accs"], float(tolerance), float(alpha)).verdict
            out["comparisons"][p["cell"]]["best_check"] = rev
            if rev != EQUIVALENT:
                unproven.append(p)
        open_ += sorted(unproven, key=_cheapness)
    saved = None
    if math.isfinite(answer["_flops"]) and math.isfinite(best["_flops"]) and best["_flops"] > 0:
        saved = 1.0 - answer["_flops"] / best["_flops"]
    out.update(best=best["cell"], answer=answer["cell"],
               cheapest_equivalent=cheapest["cell"] if cheapest else None,
               decided=not open_, open=[p["cell"] for p in open_], compute_saved=saved)
    return out


# ----------------------------------------------------------------------------- racing

def next_seed(accs: Mapping, start: int = 0) -> int:
    """The seed a cell runs next: the smallest integer seed >= ``start`` it has no run for (so
    gaps left by failed runs are filled first, and cells that started with the same seeds stay
    paired)."""
    have = set(accs)
    s = int(start)
    while s in have:
        s += 1
    return s


def next_seeds(cells: list, tolerance: float, alpha: float, max_seeds: int, *,
               check_best: bool = False) -> list:
    """The racing rule: the cells that get one more run now (each with its ``next_seed``, counted
    from the group's lowest seed), in the order of ``cells``.

    A cell has the tuning run's seed plus its confirmation seeds; the ceiling is ``max_seeds``
    confirmation seeds, i.e. ``max_seeds + 1`` runs per cell. Every ``open`` cell of
    ``group_answer(cells, tolerance, alpha)`` below the ceiling gets a seed. Pairing needs the
    same seeds in both cells, so when the best cell lacks the seed an open cell is about to run,
    the best gets one too (its own next seed, which is then that seed or an earlier one the
    open cell already has: either way one more pair); an open cell whose new seed could not be
    paired because the best is at the ceiling gets none. Empty when the group is decided or
    every open cell is at the ceiling. ``alpha`` is the per-look level (``alpha_per_look``);
    ``check_best`` goes to ``group_answer``."""
    if int(max_seeds) != max_seeds or max_seeds < 0:
        raise ValueError(f"max_seeds must be an integer >= 0, got {max_seeds!r}")
    ans = group_answer(cells, tolerance, alpha, check_best=check_best)
    if ans["best"] is None or ans["decided"]:
        return []
    ceiling = int(max_seeds) + 1
    prepared = {p["cell"]: p for p in _prepare(cells)}
    all_seeds = [s for p in prepared.values() for s in p["accs"]]
    start = min(int(s) for s in all_seeds)
    best = prepared[ans["best"]]
    chosen = set()
    for cid in ans["open"]:
        p = prepared[cid]
        if p["n"] >= ceiling:
            continue
        s = next_seed(p["accs"], start)
        if s not in best["accs"]:
            if best["n"] >= ceiling:
                continue
            chosen.add(best["cell"])
        chosen.add(cid)
    return [p["cell"] for p in sorted(prepared.values(), key=lambda p: p["_i"])
            if p["cell"] in chosen]


def simulate_racing(true_diffs: list, sd: float, seeds: int, max_seeds: int, tolerance: float,
                    alpha: float, rng, *, sd_seed: Optional[float] = None,
                    base: float = 0.8, check_best: bool = False) -> dict:
    """Race one synthetic group; returns what the procedure concluded.

    Cells: "ref" (true mean ``base`` = 0.8, flops 1) and "c0", "c1", ... with true means
    base + true_diffs[i], cheaper in that order (flops 1 - (i + 1) / (k + 1) for k cells: list
    the diffs from the least to the most frozen depth). Run r of cell j with seed s has test
    accuracy  mu_j + u_s + e_{j,s},  u_s ~ N(0, sd_seed) shared by every cell run with seed s
    (common random numbers: the same seed shifts all cells alike; default sd_seed = sd),
    e_{j,s} ~ N(0, sd) independent (not clipped to [0, 1]: with sd ~0.02 around 0.8 it never
    leaves it). ``rng``: a ``numpy.random.Generator``.

    Every cell starts with seeds 0..seeds (tuning run + ``seeds`` confirmation seeds); then
    ``next_seeds`` with alpha_per_look(alpha, looks(seeds, max_seeds)) adds runs until it
    returns nothing (decided, or the open cells at the ceiling max_seeds + 1 runs);
    ``check_best`` goes to ``next_seeds`` and ``group_answer``.

    Returns: cells (ids), true_diffs ({id: true mean - base}), verdicts ({id: "best" for the
    final best, else its comparison's verdict}), best, answer, decided, runs ({id: runs}),
    rounds (racing rounds after the first look), seeds_used (confirmation runs over all cells:
    sum(runs - 1)), seeds_ceiling (every cell at the ceiling: cells x max_seeds), alpha_look."""
    k = len(true_diffs)
    ids = ["ref"] + [f"c{i}" for i in range(k)]
    mu = [base] + [base + float(d) for d in true_diffs]
    flops = [1.0] + [1.0 - (i + 1) / (k + 1) for i in range(k)]
    sd_seed = sd if sd_seed is None else sd_seed
    u = rng.normal(0.0, sd_seed, max_seeds + 1)
    e = rng.normal(0.0, sd, (k + 1, max_seeds + 1))
    value = [[float(mu[j] + u[s] + e[j, s]) for s in range(max_seeds + 1)] for j in range(k + 1)]
    cells = [dict(cell=ids[j], depth=j, flops=flops[j],
                  accs={s: value[j][s] for s in range(seeds + 1)}) for j in range(k + 1)]
    index = {cid: j for j, cid in enumerate(ids)}
    a = alpha_per_look(alpha, looks(seeds, max_seeds))
    rounds = 0
    while True:
        add = next_seeds(cells, tolerance, a, max_seeds, check_best=check_best)
        if not add:
            break
        rounds += 1
        for cid in add:
            j = index[cid]
            s = next_seed(cells[j]["accs"], 0)
            cells[j]["accs"][s] = value[j][s]
    ans = group_answer(cells, tolerance, a, check_best=check_best)
    verdicts = {cid: ("best" if cid == ans["best"] else ans["comparisons"][cid]["verdict"])
                for cid in ids}
    runs = {c["cell"]: len(c["accs"]) for c in cells}
    return dict(cells=ids, true_diffs=dict(zip(ids, [0.0] + [float(d) for d in true_diffs])),
                verdicts=verdicts, best=ans["best"], answer=ans["answer"],
                decided=ans["decided"], runs=runs, rounds=rounds,
                seeds_used=sum(n - 1 for n in runs.values()),
                seeds_ceiling=(k + 1) * int(max_seeds), alpha_look=a)
