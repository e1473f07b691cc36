"""study.core.stats: bounds against scipy, verdicts on hand-made data, the group answer, the
racing rule, and a seeded Monte Carlo check of the racing error rates (no Ray, a few seconds)."""
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from study.core import stats as S

TOL, ALPHA = 0.01, 0.05


def _pair(diffs, start=0.8):
    """best and candidate per seed, candidate - best = diffs[i] (up to float rounding)."""
    rng = np.random.default_rng(1)
    b = {s: float(start + 0.02 * rng.standard_normal()) for s in range(len(diffs))}
    return {s: b[s] + d for s, d in enumerate(diffs)}, b


# ----------------------------------------------------------------------------- bounds

@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_paired_bounds_match_scipy_ttest_rel(alpha):
    c, b = _pair([0.01, -0.02, 0.005, -0.004, 0.012])
    r = S.compare(c, b, TOL, alpha)
    seeds = sorted(b)
    ci = sps.ttest_rel([c[s] for s in seeds], [b[s] for s in seeds]).confidence_interval(
        confidence_level=1 - 2 * alpha)
    assert r.test == S.PAIRED and r.n_pairs == 5 and r.df == 4
    assert r.diff == pytest.approx(np.mean([c[s] - b[s] for s in seeds]), abs=1e-15)
    assert (r.lo, r.hi) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    # by hand: diff -+ t(1 - alpha, n - 1) * sd / sqrt(n)
    d = np.array([c[s] - b[s] for s in seeds])
    half = sps.t.ppf(1 - alpha, 4) * d.std(ddof=1) / math.sqrt(5)
    assert r.lo == pytest.approx(d.mean() - half, abs=1e-12)
    assert r.se == pytest.approx(d.std(ddof=1) / math.sqrt(5))


def test_paired_uses_only_common_seeds():
    c, b = _pair([0.01, -0.02, 0.005])
    c[7], b[9] = 0.1, 0.99  # unpaired runs are left out of the paired test
    r = S.compare(c, b, TOL, ALPHA)
    ref = S.compare({s: c[s] for s in range(3)}, {s: b[s] for s in range(3)}, TOL, ALPHA)
    assert r.test == S.PAIRED and (r.n_candidate, r.n_best, r.n_pairs) == (4, 4, 3)
    assert (r.diff, r.lo, r.hi) == (ref.diff, ref.lo, ref.hi)


@pytest.mark.parametrize("shared", [0, 1])
def test_welch_bounds_match_scipy_ttest_ind(shared):
    c = {0: 0.81, 1: 0.79, 2: 0.805}
    b = {10: 0.82, 11: 0.8, 12: 0.835, 13: 0.815}
    if shared:  # one common seed is not enough for pairing
        b[0] = b.pop(13)
    r = S.compare(c, b, TOL, ALPHA)
    t = sps.ttest_ind(list(c.values()), list(b.values()), equal_var=False)
    ci = t.confidence_interval(confidence_level=1 - 2 * ALPHA)
    assert r.test == S.WELCH and (r.n_candidate, r.n_best, r.n_pairs) == (3, 4, shared)
    assert r.diff == pytest.approx(np.mean(list(c.values())) - np.mean(list(b.values())))
    assert r.lo == pytest.approx(ci.low, abs=1e-12) and r.hi == pytest.approx(ci.high, abs=1e-12)
    assert r.df == pytest.approx(t.df)


def test_single_runs_give_no_test():
    r = S.compare({0: 0.8}, {0: 0.9, 1: 0.91}, TOL, ALPHA)
    assert (r.test, r.verdict, r.lo, r.hi) == (S.NONE, S.UNDECIDED, None, None)
    assert r.diff == pytest.approx(0.8 - 0.905)
    e = S.compare({}, {0: 0.9}, TOL, ALPHA)
    assert e.diff is None and e.verdict == S.UNDECIDED and e.n_candidate == 0


# ----------------------------------------------------------------------------- verdicts

def test_three_verdicts_on_hand_made_data():
    eq = S.compare(*_pair([-0.002, -0.001, -0.003, -0.002]), TOL, ALPHA)
    assert eq.verdict == S.NONINFERIOR and eq.lo > -TOL
    worse = S.compare(*_pair([-0.03, -0.031, -0.029, -0.03]), TOL, ALPHA)
    assert worse.verdict == S.INFERIOR and worse.hi < -TOL
    und = S.compare(*_pair([0.01, -0.03, 0.005, -0.02]), TOL, ALPHA)
    assert und.verdict == S.UNDECIDED and und.lo <= -TOL <= und.hi
    und2 = S.compare(*_pair([-0.01, -0.03, -0.005, -0.02]), TOL, ALPHA)
    assert und2.verdict == S.UNDECIDED and und2.diff < -TOL
    json.dumps(und.to_dict(), allow_nan=False)


def test_zero_spread_is_decided_by_the_mean():
    b = {0: 0.5, 1: 0.75, 2: 0.625}  # exactly representable, so the differences are identical
    for d, tol, verdict in ((2 ** -7, 0.01, S.NONINFERIOR), (-(2 ** -7), 0.01, S.NONINFERIOR),
                            (-(2 ** -6), 0.01, S.INFERIOR), (-(2 ** -6), 2 ** -6, S.UNDECIDED)):
        r = S.compare({s: v + d for s, v in b.items()}, b, tol, ALPHA)
        assert r.se == 0 and r.lo == r.hi == r.diff == d and r.verdict == verdict, (d, tol)
    # Welch with no spread on either side
    w = S.compare({0: 0.5, 1: 0.5}, {5: 0.75, 6: 0.75}, 0.01, ALPHA)
    assert w.test == S.WELCH and w.lo == w.hi == -0.25 and w.verdict == S.INFERIOR


@pytest.mark.parametrize("tol", [0.0, 0.01])
def test_self_comparison_is_noninferior(tol):
    b = {0: 0.81, 1: 0.79, 2: 0.83}
    for accs in (b, {0: 0.8}):
        r = S.compare(accs, dict(accs), tol, ALPHA)
        assert r.verdict == S.NONINFERIOR and r.diff == r.lo == r.hi == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        S.compare({0: 0.8}, {0: 0.8}, -0.01, ALPHA)
    with pytest.raises(ValueError):
        S.compare({0: 0.8}, {0: 0.8}, 0.01, 0.7)
    with pytest.raises(ValueError):
        S.looks(3, 2)
    with pytest.raises(ValueError):
        S.look_alpha(0.05, 3, 4, 3)


def test_looks_and_levels():
    assert S.looks(2, 6) == 5 and S.looks(4, 4) == 1
    # alpha spent over the looks in proportion to n^2: 4 + 9 + 16 + 25 + 36 = 90
    shares = [S.look_alpha(0.05, n, 2, 6) for n in range(2, 7)]
    assert shares[0] == pytest.approx(0.05 * 4 / 90) and shares[-1] == pytest.approx(0.05 * 36 / 90)
    assert sum(shares) == pytest.approx(0.05)
    assert S.look_alpha(0.05, 9, 2, 6) == shares[-1] and S.look_alpha(0.05, 4, 4, 4) == 0.05
    # Bonferroni over the K - 1 comparisons with the unknown best
    assert S.alpha_per_bound(0.05, 4) == pytest.approx(0.05 / 3)
    assert S.alpha_per_bound(0.05, 2) == 0.05 and S.alpha_per_bound(0.05, 1) == 0.05


# ----------------------------------------------------------------------------- group answer

BASE = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81}


def _cell(cid, depth, flops, diffs, base=None):
    base = base or BASE
    return dict(cell=cid, depth=depth, flops=flops,
                accs={s: base[s] + d for s, d in zip(sorted(base), diffs)})


def _group(d2=(0.01, -0.03, 0.005, -0.02)):
    return [_cell("d0", 0, 10.0, [0, 0, 0, 0]),
            _cell("d1", 1, 8.0, [-0.002, -0.001, -0.003, -0.002]),
            _cell("d2", 2, 6.0, d2),
            _cell("d3", 3, 4.0, [-0.03, -0.031, -0.029, -0.03])]


def _lo_hi(c, b, a):
    """Paired one-sided (1 - a) bounds of c - b from scipy (the hand computation)."""
    s = sorted(b)
    ci = sps.ttest_rel([c[k] for k in s], [b[k] for k in s]).confidence_interval(1 - 2 * a)
    return ci.low, ci.high


def test_a_cheap_depth_that_overtakes_by_noise_is_not_decided_on_its_lead():
    dear = _cell("d0", 0, 10.0, [0, 0, 0, 0])
    noisy = _cell("d3", 3, 4.0, [0.03, -0.02, 0.025, -0.01])  # highest mean, wide spread
    a = S.group_answer([dear, noisy], TOL, ALPHA)
    # by hand: d3 - d0 = (.03, -.02, .025, -.01), mean .00625, one-sided 95 % lower bound
    # .00625 - t(.95, 3) * .02496 / 2 = -0.0231 < -tolerance: not shown within tolerance of d0
    lo, hi = _lo_hi(noisy["accs"], dear["accs"], ALPHA)
    assert lo == pytest.approx(-0.02312, abs=1e-4) and hi > 0
    assert a["leader"] == "d3" and a["best"] is None and a["answer"] is None
    assert a["possible_best"] == ["d3", "d0"] and not a["decided"]
    assert a["open"] == ["d3", "d0"]  # both: the leader's lead is not shown, d0 is a rival
    v = a["comparisons"]
    assert v["d3"]["verdict"] == v["d0"]["verdict"] == S.UNDECIDED
    assert v["d3"]["lo"] == pytest.approx(lo) and v["d0"]["lo"] == pytest.approx(-hi)
    assert S.next_seeds([dear, noisy], TOL, ALPHA, 2, 6) == ["d0", "d3"]
    # the same lead with a tight spread is shown: d3 is the best, and the decided answer
    tight = _cell("d3", 3, 4.0, [0.006, 0.007, 0.005, 0.006])
    t = S.group_answer([dear, tight], TOL, ALPHA)
    assert t["best"] == t["answer"] == "d3" and t["decided"] and t["open"] == []
    assert t["comparisons"]["d3"]["verdict"] == S.SHOWN_BEST
    json.dumps(a, allow_nan=False)


def test_group_rule_by_hand_multiple_comparisons_with_the_best():
    g = _group()
    a = S.group_answer(g, TOL, ALPHA)
    A = ALPHA / 3  # 4 depths: 3 comparisons with the unknown best
    assert a["alpha_bound"] == pytest.approx(A) and a["cells"] == 4
    accs = {c["cell"]: c["accs"] for c in g}
    # possible bests: no other depth shown better (upper bound of j - k above 0 for every k)
    B = [j for j in accs if all(_lo_hi(accs[j], accs[k], A)[1] > 0 for k in accs if k != j)]
    assert sorted(a["possible_best"]) == sorted(B) == ["d0", "d2"]  # d1 is shown below d0
    for i in accs:  # L_i: the smallest lower bound against a possible best
        L = min(_lo_hi(accs[i], accs[j], A)[0] for j in B if j != i)
        assert a["comparisons"][i]["lo"] == pytest.approx(L, abs=1e-12)
    # d1 is within a point of d0 but not shown within a point of d2, which is noisy and could
    # still be the best by up to 2.7 points: the intersection-union rule asks for every rival,
    # so nothing is shown within tolerance yet, and d3 is not shown worse than d2 either
    assert _lo_hi(accs["d1"], accs["d0"], A)[0] > -TOL > _lo_hi(accs["d1"], accs["d2"], A)[0]
    assert {k: c["verdict"] for k, c in a["comparisons"].items()} == {
        "d0": S.UNDECIDED, "d1": S.UNDECIDED, "d2": S.UNDECIDED, "d3": S.UNDECIDED}
    assert a["answer"] is None and a["best"] is None and a["leader"] == "d0"
    assert a["open"] == ["d3", "d2", "d1", "d0"] and not a["decided"]
    # d2 tight and 3 points below: d0 is the only possible best (shown), d1 within a point of
    # it and the answer, every cheaper depth shown worse: decided
    b = S.group_answer(_group(d2=(-0.03, -0.032, -0.029, -0.031)), TOL, ALPHA)
    assert b["best"] == "d0" and b["possible_best"] == ["d0"] and b["answer"] == "d1"
    assert {k: c["verdict"] for k, c in b["comparisons"].items()} == {
        "d0": S.SHOWN_BEST, "d1": S.WITHIN, "d2": S.WORSE, "d3": S.WORSE}
    assert b["decided"] and b["open"] == [] and b["compute_saved"] == pytest.approx(0.2)
    # d2 close and tight: it is the answer, d3 (worse) is not open
    c = S.group_answer(_group(d2=(0.0, -0.001, -0.001, 0.0)), TOL, ALPHA)
    assert c["answer"] == "d2" and c["decided"] and c["compute_saved"] == pytest.approx(0.4)
    # looks tighten every bound
    d = S.group_answer(_group(d2=(-0.03, -0.032, -0.029, -0.031)), TOL, ALPHA, racing=(2, 6))
    assert d["alpha_look"] == pytest.approx(ALPHA * 16 / 90)  # 4 runs: the third of 5 looks
    assert d["alpha_bound"] == pytest.approx(ALPHA * 16 / 90 / 3)
    assert d["comparisons"]["d1"]["lo"] < b["comparisons"]["d1"]["lo"]


def test_group_answer_missing_runs_and_a_single_cell():
    g = _group() + [dict(cell="d4", depth=4, flops=2.0, accs={})]
    a = S.group_answer(g, TOL, ALPHA)
    assert a["no_runs"] == ["d4"] and "d4" not in a["comparisons"] and a["cells"] == 4
    one = S.group_answer([_cell("x", 0, 5.0, [0] * 4)], TOL, ALPHA)
    assert one["answer"] == one["best"] == "x" and one["decided"]
    assert S.group_answer([dict(cell="z", depth=0, flops=1.0, accs={})], TOL, ALPHA)["answer"] is None


# ----------------------------------------------------------------------------- racing

def test_next_seeds_goes_to_every_cell_that_can_change_the_answer_and_stops_at_the_ceiling():
    g = _group()  # 4 runs each, nothing decided: every depth can still change the answer
    assert S.next_seeds(g, TOL, ALPHA, 2, 6) == ["d0", "d1", "d2", "d3"]
    # d3 far below everything: shown worse, no more seeds for it
    g[3]["accs"] = {s: v - 0.1 for s, v in g[3]["accs"].items()}
    assert S.next_seeds(g, TOL, ALPHA, 2, 6) == ["d0", "d1", "d2"]
    assert S.next_seeds(g, TOL, ALPHA, 2, 4) == []  # the group is at the ceiling
    decided = _group(d2=(-0.03, -0.032, -0.029, -0.031))
    assert S.next_seeds(decided, TOL, ALPHA, 2, 6) == []
    assert S.next_seed(g[2]["accs"]) == 4


def _matches_scalar(x, truth):
    """group_answer on one simulated group, for comparison with the vectorised rule."""
    cells = [dict(cell=f"c{j}", depth=j, flops=float(len(truth) - j),
                  accs={s: float(v) for s, v in enumerate(x[j])}) for j in range(len(truth))]
    return S.group_answer(cells, TOL, ALPHA)


def test_vectorised_rule_is_the_scalar_rule():
    """simulate_racing (what benchmarks/racing.py measures) decides with ``mcb``, as
    ``group_answer`` does: the same answer and decision on random groups."""
    rng = np.random.default_rng(3)
    K, n, G = 4, 5, 300
    mu = np.array([0.0, -0.005, -0.01, -0.02]) + 0.8
    x = mu[None, :, None] + rng.normal(0, 0.01, (G, K, n))
    t_tab = np.concatenate([[np.inf], sps.t.ppf(1 - ALPHA / (K - 1), np.arange(1, n))])
    lo, hi = S._pair_bounds(x, np.full((G, K), n), np.tile(t_tab, (G, 1)))
    r = S.mcb(x.mean(2), lo, hi, np.ones((G, K), bool), np.tril(np.ones((K, K), bool), -1), TOL)
    for g in range(G):
        a = _matches_scalar(x[g], mu)
        want = -1 if a["answer"] is None else int(a["answer"][1:])
        assert (r["answer"][g], bool(r["decided"][g])) == (want, a["decided"]), g
        assert [f"c{j}" for j in range(K) if r["possible_best"][g, j]] == \
            sorted(a["possible_best"])


@pytest.mark.parametrize("truth,race", [([0, -1], False), ([0, -1], True),
                                        ([0, -1, -1], True), ([0, 0, -1], True)])
def test_least_favourable_groups_err_at_most_alpha(truth, race):
    """The cheap depth exactly one tolerance below the dearest, the true best: a decided wrong
    answer in at most alpha of the groups (up to 3 Monte Carlo standard errors)."""
    groups = 4000
    r = S.simulate_racing(np.array(truth) * TOL, 1.5 * TOL, 2, 6, TOL, ALPHA,
                          np.random.default_rng(7), groups, race=race)
    rate = float((r["wrong"] & r["decided"]).mean())
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / groups)
    assert r["runs"].max() <= 6 and (r["runs"] >= 2).all()


def test_racing_spends_fewer_seeds_than_the_ceiling_where_the_answer_is_clear():
    r = S.simulate_racing(np.array([0.0, -3.0]) * TOL, 0.3 * TOL, 3, 6, TOL, ALPHA,
                          np.random.default_rng(1), 2000)
    assert r["decided"].mean() > 0.9 and r["runs"].sum(1).mean() < 2 * 6
