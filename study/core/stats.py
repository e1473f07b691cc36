"""Decisive answers that stay right when the best is unknown.

Pure functions on plain data (dicts of per-seed accuracies, numpy arrays), no I/O; numpy and
``scipy.stats`` only (scipy imported inside the functions that need it). Tested in
``tests/test_stats.py``, measured by ``benchmarks/racing.py``.

Units. Accuracies are fractions in [0, 1]; ``tolerance`` is in the same unit (a caller with a
tolerance in accuracy points passes ``points / 100``). ``alpha`` is a probability. ``flops`` is the
compute of one run of a cell, any unit, the same for every cell of a group (lower = cheaper).

**The question.** A group (the depths of one split x backbone x init) has K cells with true mean
accuracies mu_1 .. mu_K and an unknown best mu* = max_j mu_j. The Answer is the cheapest depth
whose accuracy is within ``tolerance`` of mu*. The guarantee (``group_answer``): for every
configuration of true means, any K, and any racing path,

    P(a depth i is called "within tolerance" although mu_i <= mu* - tolerance) <= alpha,

so a decided Answer is wrong (its depth truly ``tolerance`` or more below the best) with
probability at most alpha, and so is "the most accurate depth, shown". The test is
**non-inferiority** against the best (one-sided): "within tolerance" never means "equivalent".

**Pairwise bounds** (``compare``), per-seed test accuracies c_s, b_s keyed by seed s:

* paired t (at least 2 seeds in common, S = the common seeds, n = |S|):
      d_s = c_s - b_s,  diff = sum(d_s) / n,  sd = sqrt(sum((d_s - diff)^2) / (n - 1)),
      se = sd / sqrt(n),  df = n - 1.
  Pairing removes the per-seed effect both cells share (the same seed trains the same source
  model and draws the same data subset, order and augmentation).
* Welch (fewer than 2 common seeds, at least 2 runs on each side, all runs):
      diff = mean(c) - mean(b),  se = sqrt(s_c^2/n_c + s_b^2/n_b),
      df = se^4 / ((s_c^2/n_c)^2/(n_c - 1) + (s_b^2/n_b)^2/(n_b - 1)).
* none (otherwise): no bounds (lo = -inf, hi = +inf in the group rule).

  lo = diff - t(1 - a, df) * se,   hi = diff + t(1 - a, df) * se   (one-sided, level a each);
  se = 0 (identical differences) collapses both to diff. lo(c, b) = -hi(b, c).

**The group rule: multiple comparisons with the best** (Hsu 1984, "Constrained simultaneous
confidence intervals for multiple comparisons with the best", Ann. Statist. 12; Hsu 1996,
*Multiple Comparisons*, ch. 4), with Bonferroni in place of Dunnett's constant (unequal,
paired standard errors) and over racing's looks:

    a = look_alpha(alpha, n) / (K - 1)   the level of every one-sided pairwise bound at a look
                                         with n runs per cell (all of alpha without racing)
    B = { j : hi(j, k) > 0 for every k != j }          the depths that could still be the best
    L_i = min over j in B, j != i of lo(i, j)          lower bound of mu_i - mu*
    U_i = max over j in B, j != i of hi(i, j)          upper bound of mu_i - mu* (i not in B)

    i is "within tolerance"  iff  L_i > -tolerance
    i is "best (shown)"      iff  B = {i}
    i is "worse"             iff  i not in B and U_i < -tolerance

Why it holds. Let j* be the true best and E the event that lo(i, j*) < mu_i - mu_j* for every
i != j* (K - 1 one-sided bounds at level a each: P(not E) <= (K - 1) a = the look's share, and
the shares of all looks sum to alpha, whatever stops the racing). On E, hi(j*, i) =
-lo(i, j*) > mu_j* - mu_i >= 0 for every i, so j* is in B; hence for i != j*,
L_i <= lo(i, j*) < mu_i - mu*, and "within tolerance" is never said of a depth tolerance or
more below the best; B = {i} only if i = j*.
This is the intersection-union form of Hsu's MCB: a depth is within the tolerance of the best
only if it is shown within the tolerance of *every* depth that could be the best, which is why a
cheap depth that overtakes by noise is not accepted on its lead alone. "Worse" needs E (so that
j* is in B and i is not j*) and the mirror event F (hi(i, j*) > mu_i - mu_j* for i != j*, at
most alpha to fail): a wrong "worse" has probability at most 2 alpha, and so have all verdicts
of a group together. The guarantee is per group: a study answering G groups may err in up to
G alpha of them in expectation.

**Answer.** The cheapest depth within tolerance (a depth shown best is within tolerance); none
when no depth is. **Decided** when there is an answer and every cheaper depth is "worse".
**Racing** (``next_seeds``): while undecided, one more paired seed to every depth that can
change the answer: the possible bests B (the comparators, the current answer among them when
it leads) and every depth not shown worse that is cheaper than the answer (all such depths
when there is no answer yet), up to the ceiling. Stopping is free: the guarantee holds at
every look.

**When transfer pays** (``transfer_gain``). At one target size, every depth i of a group
against its scratch baseline z (same split, size and backbone), paired per seed:
g_i = mu_i - mu_z, each a two-sided interval [lo_i, hi_i] at level a per side,

    a = look_alpha(alpha, n) / (2 K S)     K depths, S sizes of the family (split x backbone
                                           x init); Bonferroni over the 2 K S one-sided bounds

so all intervals of the family cover together with probability >= 1 - alpha (at every look),
whichever depth is then reported (the Answer's, chosen on the same runs). Verdicts per size:
"transfer better" when some lo_i > 0; "scratch better" when every hi_i < 0; "not better"
when every hi_i < tolerance (no depth gains the tolerance); else "undecided". On the covering
event no verdict of the family is wrong, so P(any wrong verdict across the sizes) <= alpha.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Mapping, Optional

import numpy as np

PAIRED = "paired t"
WELCH = "welch"
NONE = "none"
# pairwise verdicts (``compare``): non-inferiority of a candidate against a reference
NONINFERIOR = "non-inferior"   # lo > -tolerance
INFERIOR = "inferior"          # hi < -tolerance
UNDECIDED = "undecided"
# group verdicts (``group_answer``): a depth against the unknown best
SHOWN_BEST = "best (shown)"    # the only depth that could be the best
WITHIN = "within tolerance"    # shown within tolerance of every depth that could be the best
WORSE = "worse"                # shown more than tolerance below the best
VERDICTS = (SHOWN_BEST, WITHIN, UNDECIDED, WORSE)


@dataclass(frozen=True)
class Comparison:
    """A candidate cell against a reference cell (``compare``); ``to_dict`` gives plain JSON
    (no NaN: unknown values are None).

    diff: mean difference candidate - reference (accuracy fraction; paired: over common seeds).
    lo, hi: one-sided (1 - alpha) lower / upper bounds of the difference (None for "none").
    se: standard error of diff (None for "none"); df: degrees of freedom of the t quantile.
    n_candidate, n_best: runs on each side; n_pairs: seeds both have.
    test: "paired t", "welch" or "none".
    verdict: "non-inferior" (lo > -tolerance), "inferior" (hi < -tolerance) or "undecided".
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
    tolerance: float
    alpha: float

    def to_dict(self) -> dict:
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
        return NONINFERIOR
    if hi < -tolerance:
        return INFERIOR
    return UNDECIDED


# ----------------------------------------------------------------------------- comparison

def compare(candidate: Mapping, best: Mapping, tolerance: float, alpha: float) -> Comparison:
    """One candidate cell against one reference cell (formulas in the module docstring).

    ``candidate``, ``best``: seed -> test accuracy (fraction); non-finite values are dropped.
    ``alpha``: the level of each one-sided bound, in (0, 0.5). Paired t on the common seeds when
    there are >= 2, else Welch when both sides have >= 2 runs, else "none" (undecided)."""
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

    if nc and c == b:  # the same runs (a cell with itself): exactly no difference
        return Comparison(diff=0.0, lo=0.0, hi=0.0, se=0.0,
                          df=float(npairs - 1) if npairs >= 2 else None,
                          test=PAIRED if npairs >= 2 else NONE, verdict=NONINFERIOR, **base)

    if npairs >= 2:
        diff, sd = _mean_sd([c[s] - b[s] for s in common])
        se, df, test = sd / math.sqrt(npairs), float(npairs - 1), PAIRED
    elif nc >= 2 and nb >= 2:
        mc, sc = _mean_sd(list(c.values()))
        mb, sb = _mean_sd(list(b.values()))
        diff = mc - mb
        vc, vb = sc ** 2 / nc, sb ** 2 / nb
        se, test = math.sqrt(vc + vb), WELCH
        df = (float((vc + vb) ** 2 / (vc ** 2 / (nc - 1) + vb ** 2 / (nb - 1)))
              if se > 0 else None)
    else:
        diff = (math.fsum(c.values()) / nc - math.fsum(b.values()) / nb) if nc and nb else None
        return Comparison(diff=diff, lo=None, hi=None, se=None, df=None, test=NONE,
                          verdict=UNDECIDED, **base)

    if se == 0:
        lo = hi = diff
    else:
        half = t_quantile(1 - alpha, df) * se
        lo, hi = diff - half, diff + half
    return Comparison(diff=float(diff), lo=float(lo), hi=float(hi), se=float(se), df=df,
                      test=test, verdict=_verdict(lo, hi, tolerance), **base)


# ----------------------------------------------------------------------------- levels

def looks(seeds: int, max_seeds: int) -> int:
    """How often a group is looked at while racing: once after the first ``seeds`` confirmation
    seeds, then once per added seed up to ``max_seeds``: max_seeds - seeds + 1."""
    if int(seeds) != seeds or int(max_seeds) != max_seeds or seeds < 0 or max_seeds < seeds:
        raise ValueError(f"need integers 0 <= seeds <= max_seeds, got seeds={seeds!r}, "
                         f"max_seeds={max_seeds!r}")
    return int(max_seeds) - int(seeds) + 1


def look_alpha(alpha: float, level: int, seeds: int, ceiling: int) -> float:
    """The share of ``alpha`` spent at the look where the group has ``level`` runs per cell,
    racing from ``seeds`` to ``ceiling`` runs (one look per level, ``looks(seeds, ceiling)``
    in all): alpha * level^2 / sum(m^2 for m = seeds .. ceiling). The shares sum to alpha, so
    the guarantee fails at some look with probability <= alpha however the racing stops
    (Bonferroni over the looks, weighted). Weights growing with n^2 spend little where a t bound
    on few runs is wide anyway (t(0.99, 1) = 31.8) and most at the ceiling, where a fixed
    design would spend all of it: on benchmarks/racing.py's grid that takes 543 runs per
    decided answer against 701 with equal shares (a fixed design at the ceiling: 352). ``level`` is clipped to [seeds, ceiling]."""
    looks(seeds, ceiling)  # checks the arguments
    level = min(max(int(level), int(seeds)), int(ceiling))
    total = sum(m * m for m in range(int(seeds), int(ceiling) + 1))
    return alpha * level * level / total if total else alpha


def alpha_per_bound(alpha: float, cells: int) -> float:
    """The level of each one-sided pairwise bound of a group of ``cells`` compared depths at one
    look (``alpha``: that look's share): alpha / (cells - 1), Bonferroni over the K - 1
    comparisons with the unknown best; alpha for a single cell (nothing to compare)."""
    return alpha / max(1, int(cells) - 1)


# ----------------------------------------------------------------------------- the group rule

def mcb(mean, lo, hi, ran, cheaper, tolerance: float) -> dict:
    """The group rule of the module docstring on arrays, for G groups of K cells at once
    (``group_answer`` calls it with G = 1; ``simulate_racing`` with thousands).

    mean: (G, K) mean accuracy (any value where not ``ran``); lo, hi: (G, K, K) pairwise bounds
    of mu_i - mu_j at the per-bound level (-inf / +inf where unknown; the diagonal is ignored);
    ran: (G, K) bool, the cells compared (a cell without runs takes no part); cheaper: (K, K)
    or (G, K, K) bool, cheaper[i, j] = cell i costs less than cell j (a strict order).

    Returns (G, K) bool arrays ``possible_best``, ``within``, ``shown_best``, ``worse``,
    ``live`` (gets a seed when racing), (G, K) floats ``lower`` (L_i) and ``upper`` (U_i),
    (G,) int ``answer`` (cell index, -1 for none) and (G,) bool ``decided``."""
    mean = np.asarray(mean, float)
    G, K = mean.shape
    ran = np.asarray(ran, bool)
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    cheaper = np.broadcast_to(np.asarray(cheaper, bool), (G, K, K))
    other = ~np.eye(K, dtype=bool)[None] & ran[:, None, :] & ran[:, :, None]  # pairs compared
    # B: no compared k is shown better than j (hi(j, k) > 0 for all k != j)
    B = ran & np.all(np.where(other, hi > 0, True), axis=2)
    # B cannot be empty on the event the guarantee rests on; if it is, every cell stays a rival
    B = np.where(B.any(axis=1, keepdims=True), B, ran)
    rival = other & B[:, None, :]  # rival[g, i, j]: j could be the best and j != i
    lower = np.where(rival, lo, np.inf).min(axis=2)
    upper = np.where(rival, hi, -np.inf).max(axis=2)
    within = ran & (lower > -tolerance)
    shown_best = B & (B.sum(axis=1, keepdims=True) == 1)
    worse = ran & ~B & (upper < -tolerance)
    # the answer: the cheapest cell within tolerance (cheaper is a strict order)
    beats = np.where(within[:, None, :], cheaper.transpose(0, 2, 1), False)  # j within, j < i
    is_answer = within & ~beats.any(axis=2)
    has = is_answer.any(axis=1)
    answer = np.where(has, is_answer.argmax(axis=1), -1)
    # cells cheaper than the answer (every compared cell when there is none)
    idx = np.clip(answer, 0, K - 1)
    below = np.where(has[:, None], cheaper[np.arange(G), :, idx], True) & ran
    decided = has & ~np.any(below & ~worse, axis=1)
    live = ~decided[:, None] & ran & (B | (below & ~worse))
    return dict(possible_best=B, lower=lower, upper=upper, within=within,
                shown_best=shown_best, worse=worse, answer=answer, decided=decided, live=live)


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
                 racing: Optional[tuple] = None) -> dict:
    """The Answer for one group of comparable cells (the depths of one split x backbone x init),
    by the rule of the module docstring.

    ``cells``: dicts with ``cell`` (id), ``depth``, ``flops`` (compute of one run; lower =
    cheaper; missing / non-finite = never cheaper) and ``accs`` (seed -> test accuracy of a run
    that took no part in choosing the cell's configuration). ``tolerance``: accuracy fraction;
    ``alpha``: the group's error rate; ``racing``: (seeds, ceiling) when the group was raced
    (the look's share ``look_alpha(alpha, n, seeds, ceiling)``, n the most runs a cell has),
    None for one look. Each bound's level: ``alpha_per_bound(share, K)``, K cells with runs.

    Returns a JSON-friendly dict:
      leader: the cell with the highest mean (an observation, not a verdict);
      best: the cell shown to be the best (None unless the group shows it);
      possible_best: the cells that could still be the best, cheapest first;
      answer: the cheapest cell within tolerance (None: no cell is shown within tolerance);
      decided: there is an answer and every cheaper cell is shown worse;
      open: the cells racing gives seeds to (they can still change the answer), cheapest first;
      comparisons: cell id -> cell, depth, flops, n, mean, verdict (``VERDICTS``), rival (the
        possible best with the highest mean other than the cell), diff (paired mean difference
        from the rival), lo (L_i), hi (U_i), test / n_pairs / df (of the rival comparison),
        possible_best, answer;
      compute_saved: 1 - flops(answer) / flops(leader) (None without an answer or flops);
      no_runs: cells without a run (not compared, never open); cells: K;
      tolerance, alpha, racing, alpha_look (this look's share of alpha), alpha_bound (the level
      of each one-sided bound)."""
    _check(tolerance, alpha)
    prepared = _prepare(cells)
    ran = [p for p in prepared if p["n"]]
    no_runs = [p["cell"] for p in prepared if not p["n"]]
    K = len(ran)
    level = max((p["n"] for p in ran), default=0)
    share = look_alpha(alpha, level, *racing) if racing else float(alpha)
    a = alpha_per_bound(share, K)
    out = dict(leader=None, best=None, possible_best=[], answer=None, decided=False, open=[],
               comparisons={}, compute_saved=None, no_runs=no_runs, cells=K,
               tolerance=float(tolerance), alpha=float(alpha),
               racing=list(racing) if racing else None, alpha_look=share, alpha_bound=a)
    if not ran:
        return out
    tol = float(tolerance)
    ran.sort(key=_cheapness)  # index order = cheapness order, so cheaper[i, j] = i < j
    lo = np.full((1, K, K), -np.inf)
    hi = np.full((1, K, K), np.inf)
    comps = {}
    for i in range(K):
        for j in range(i + 1, K):
            c = _compare(ran[i]["accs"], ran[j]["accs"], tol, a)
            comps[i, j] = c
            if c.lo is not None:
                lo[0, i, j], hi[0, i, j] = c.lo, c.hi
                lo[0, j, i], hi[0, j, i] = -c.hi, -c.lo
    mean = np.array([[p["mean"] for p in ran]])
    cheaper = np.triu(np.ones((K, K), bool), 1)
    r = mcb(mean, lo, hi, np.ones((1, K), bool), cheaper, tol)
    B = r["possible_best"][0]
    leader = max(range(K), key=lambda i: (ran[i]["mean"], -i))
    for i, p in enumerate(ran):
        verdict = (SHOWN_BEST if r["shown_best"][0, i] else WITHIN if r["within"][0, i]
                   else WORSE if r["worse"][0, i] else UNDECIDED)
        rivals = [j for j in range(K) if j != i and B[j]] or [j for j in range(K) if j != i]
        riv = max(rivals, key=lambda j: (ran[j]["mean"], -j)) if rivals else None
        entry = dict(cell=p["cell"], depth=p["depth"], flops=p["flops"], n=p["n"], mean=p["mean"],
                     verdict=verdict, possible_best=bool(B[i]), answer=False, rival=None,
                     diff=None, lo=None, hi=None, test=NONE, n_pairs=0, df=None)
        if riv is not None:
            c = comps[min(i, riv), max(i, riv)]
            flip = i > riv  # comps holds (cheaper, dearer): mirror for the dearer one
            lower, upper = r["lower"][0, i], r["upper"][0, i]
            if not any(B[j] for j in range(K) if j != i):  # the only possible best: its lead
                lower = min(lo[0, i, j] for j in range(K) if j != i)  # over every other cell
                upper = max(hi[0, i, j] for j in range(K) if j != i)
            entry.update(rival=ran[riv]["cell"], test=c.test, n_pairs=c.n_pairs, df=c.df,
                         diff=None if c.diff is None else (-c.diff if flip else c.diff),
                         lo=_finite_or_none(lower), hi=_finite_or_none(upper))
        entry["answer"] = bool(r["answer"][0] == i)
        out["comparisons"][p["cell"]] = entry
    ans = int(r["answer"][0])
    saved = None
    if ans >= 0:
        fa, fl = ran[ans]["_flops"], ran[leader]["_flops"]
        if math.isfinite(fa) and math.isfinite(fl) and fl > 0:
            saved = 1.0 - fa / fl
    shown = [ran[i]["cell"] for i in range(K) if r["shown_best"][0, i]]
    out.update(leader=ran[leader]["cell"], best=shown[0] if shown else None,
               possible_best=[ran[i]["cell"] for i in range(K) if B[i]],
               answer=ran[ans]["cell"] if ans >= 0 else None, decided=bool(r["decided"][0]),
               open=[ran[i]["cell"] for i in range(K) if r["live"][0, i]],
               compute_saved=saved)
    return out


GAIN_BETTER = "transfer better"   # some depth's lower bound of (depth - scratch) above 0
GAIN_SCRATCH = "scratch better"   # every depth's upper bound below 0
GAIN_NOT = "not better"           # every depth's upper bound below +tolerance
GAIN_VERDICTS = (GAIN_BETTER, GAIN_NOT, GAIN_SCRATCH, UNDECIDED)


def transfer_gain(cells: list, scratch: Mapping, tolerance: float, alpha: float, *,
                  sizes: int = 1, racing: Optional[tuple] = None) -> dict:
    """Transfer against scratch at one size (module docstring: *When transfer pays*).

    ``cells``: the group's depths as for ``group_answer`` (``cell``, ``depth``, ``accs``);
    ``scratch``: seed -> test accuracy of the baseline's runs; ``sizes``: S, the sizes the
    family's guarantee spans; ``racing``: (seeds, ceiling) when raced (the look's share of
    alpha at the most runs any of these cells has), None for one look.

    Returns {verdict (``GAIN_VERDICTS``), depths: cell -> {depth, diff, lo, hi, test, n_pairs},
    scratch_n, alpha_look, alpha_bound (each one-sided bound's level), decided}."""
    _check(tolerance, alpha)
    prepared = [p for p in _prepare(cells) if p["n"]]
    z = _values(scratch)
    K = max(1, len(prepared))
    level = max([p["n"] for p in prepared] + [len(z)], default=0)
    share = look_alpha(alpha, level, *racing) if racing else float(alpha)
    a = share / (2 * K * max(1, int(sizes)))
    depths = {}
    for p in prepared:
        c = _compare(p["accs"], z, float(tolerance), a)
        depths[p["cell"]] = dict(depth=p["depth"], diff=c.diff, lo=c.lo, hi=c.hi, test=c.test,
                                 n_pairs=c.n_pairs)
    his = [d["hi"] for d in depths.values()]
    bounded = bool(depths) and all(h is not None for h in his)
    if any(d["lo"] is not None and d["lo"] > 0 for d in depths.values()):
        verdict = GAIN_BETTER
    elif bounded and all(h < 0 for h in his):
        verdict = GAIN_SCRATCH
    elif bounded and all(h < tolerance for h in his):
        verdict = GAIN_NOT
    else:
        verdict = UNDECIDED
    return dict(verdict=verdict, depths=depths, scratch_n=len(z), alpha_look=share,
                alpha_bound=a, decided=verdict != UNDECIDED)


def _finite_or_none(x) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


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


def next_seeds(cells: list, tolerance: float, alpha: float, seeds: int, ceiling: int) -> list:
    """The racing rule, one look: the cells that get the group's next seed, in the order of
    ``cells``: the ``open`` cells of ``group_answer(cells, tolerance, alpha, racing=(seeds,
    ceiling))``. Empty when the group is decided or has reached ``ceiling`` runs per cell (its
    level, the most runs any cell has: one look per level). The caller gives each chosen cell
    every seed up to the group's next level it lacks (a cell that was not open for a while
    catches up, so its comparisons stay paired on all seeds)."""
    if int(ceiling) != ceiling or ceiling < 0:
        raise ValueError(f"ceiling must be an integer >= 0, got {ceiling!r}")
    prepared = _prepare(cells)
    if not prepared or max(p["n"] for p in prepared) >= int(ceiling):
        return []
    ans = group_answer(cells, tolerance, alpha, racing=(seeds, ceiling))
    if ans["decided"]:
        return []
    want = set(ans["open"])
    return [p["cell"] for p in prepared if p["cell"] in want]


# ----------------------------------------------------------------------------- simulation

def _pair_bounds(x, n, tq):
    """Paired-t bounds of mu_i - mu_j for every pair, vectorised over groups.

    x: (G, K, N) run values by seed index; n: (G, K) runs per cell (each cell has seeds
    0 .. n-1, so a pair shares the first min(n_i, n_j)); tq: (G, N) t(1 - a_g, df) of each
    group's level a_g for df = 0..N-1 (index df). Returns lo, hi of shape (G, K, K) (-inf /
    +inf where fewer than 2 pairs)."""
    G, K, N = x.shape
    lo = np.full((G, K, K), -np.inf)
    hi = np.full((G, K, K), np.inf)
    idx = np.arange(N)
    for i in range(K):
        for j in range(i + 1, K):
            m = np.minimum(n[:, i], n[:, j])  # (G,)
            mask = idx[None, :] < m[:, None]
            d = np.where(mask, x[:, i, :] - x[:, j, :], 0.0)
            mm = np.maximum(m, 1)
            diff = d.sum(axis=1) / mm
            ss = np.where(mask, (d - diff[:, None]) ** 2, 0.0).sum(axis=1)
            ok = m >= 2
            se = np.sqrt(ss / np.maximum(m - 1, 1) / mm)
            half = np.take_along_axis(tq, np.clip(m - 1, 0, N - 1)[:, None], 1)[:, 0] * se
            lo[:, i, j] = np.where(ok, diff - half, -np.inf)
            hi[:, i, j] = np.where(ok, diff + half, np.inf)
            lo[:, j, i] = -hi[:, i, j]
            hi[:, j, i] = -lo[:, i, j]
    return lo, hi


def simulate_racing(true_diffs: list, sd: float, seeds: int, max_seeds: int, tolerance: float,
                    alpha: float, rng, groups: int, *, sd_seed: Optional[float] = None,
                    base: float = 0.8, race: bool = True) -> dict:
    """Race ``groups`` synthetic groups at once with the product's rule (``mcb``); returns what
    the procedure concluded, per group.

    Cells 0 .. K-1 with true means base + true_diffs[j], listed from the dearest depth (index
    0) to the cheapest (index K-1). The run of cell j with seed s has test accuracy
    mu_j + u_s + e_{j,s}, u_s ~ N(0, sd_seed) shared by every cell run with seed s (common random
    numbers; default sd_seed = sd), e_{j,s} ~ N(0, sd) independent. ``rng``: a
    ``numpy.random.Generator``.

    Every cell starts with ``seeds`` runs (the confirmation seeds: the tuning run never
    measures). ``race``: look after them (each bound at alpha_per_bound(look_alpha(alpha, n,
    seeds, max_seeds), K), n the group's level) and bring every live cell to the next level,
    until decided or the level reaches ``max_seeds``; otherwise a fixed design: every cell
    ``max_seeds`` runs, one look at alpha / (K - 1).

    Returns arrays over groups: answer (cell index, -1: none), decided (bool), wrong (the
    answer's true mean is ``tolerance`` or more below the true best, decided or not),
    shown_best_wrong (a cell shown best that is not a true best) and runs (G, K)."""
    from scipy import stats as sps

    mu = base + np.asarray(true_diffs, float)
    K = len(mu)
    G = int(groups)
    N = int(max_seeds)
    sd_seed = sd if sd_seed is None else sd_seed
    x = (mu[None, :, None] + rng.normal(0.0, sd_seed, (G, 1, N))
         + rng.normal(0.0, sd, (G, K, N)))
    df = np.arange(1, N)
    tq = {m: np.concatenate([[np.inf], sps.t.ppf(1 - alpha_per_bound(
        look_alpha(alpha, m, seeds, N) if race else alpha, K), df)])
        for m in range(1, N + 1)}  # level -> t(1 - a, df), df = 0 .. N-1
    n = np.full((G, K), int(seeds) if race else N)
    ran = np.ones((G, K), bool)
    cheaper = np.tril(np.ones((K, K), bool), -1)  # index K-1 is the cheapest: i > j => i cheaper
    active = np.ones(G, bool)
    while True:
        level = n.max(axis=1)  # the group's seeds so far: one look per level
        lo, hi = _pair_bounds(x, n, np.stack([tq[m] for m in level]))
        means = np.where(np.arange(N)[None, None] < n[:, :, None], x, 0).sum(2) / n
        r = mcb(means, lo, hi, ran, cheaper, tolerance)
        if not race:
            break
        add = r["live"] & active[:, None] & (level < N)[:, None]
        active = add.any(axis=1)
        if not active.any():
            break
        n = np.where(add, (level + 1)[:, None], n)  # a lagging live cell catches up, paired
    best = mu.max()
    wrong_cell = mu <= best - tolerance + 1e-12
    ans = r["answer"]
    wrong = (ans >= 0) & wrong_cell[np.clip(ans, 0, K - 1)]
    sb_wrong = (r["shown_best"] & (mu[None, :] < best)).any(axis=1)
    return dict(answer=ans, decided=r["decided"], wrong=wrong, shown_best_wrong=sb_wrong,
                runs=n)
