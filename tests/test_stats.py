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
    assert (r.test, r.verdict, r.lo, r.hi, r.seeds_to_decide) == (S.NONE, S.UNDECIDED, None,
                                                                   None, None)
    assert r.diff == pytest.approx(0.8 - 0.905)
    e = S.compare({}, {0: 0.9}, TOL, ALPHA)
    assert e.diff is None and e.verdict == S.UNDECIDED and e.n_candidate == 0


# ----------------------------------------------------------------------------- verdicts

def test_three_verdicts_on_hand_made_data():
    eq = S.compare(*_pair([-0.002, -0.001, -0.003, -0.002]), TOL, ALPHA)
    assert eq.verdict == S.EQUIVALENT and eq.lo > -TOL and eq.seeds_to_decide is None
    worse = S.compare(*_pair([-0.03, -0.031, -0.029, -0.03]), TOL, ALPHA)
    assert worse.verdict == S.WORSE and worse.hi < -TOL and worse.seeds_to_decide is None
    und = S.compare(*_pair([0.01, -0.03, 0.005, -0.02]), TOL, ALPHA)
    assert und.verdict == S.UNDECIDED and und.lo <= -TOL <= und.hi
    # seeds_to_decide: the smallest n with t(1-alpha, n-1) * sd / sqrt(n) < |diff + tol|
    sd, gap = und.se * math.sqrt(4), abs(und.diff + TOL)
    n = next(n for n in range(2, 10 ** 6) if sps.t.ppf(1 - ALPHA, n - 1) * sd / math.sqrt(n) < gap)
    assert und.seeds_to_decide == n > 4
    # undecided on the worse side: hi must come down
    und2 = S.compare(*_pair([-0.01, -0.03, -0.005, -0.02]), TOL, ALPHA)
    assert und2.verdict == S.UNDECIDED and und2.diff < -TOL and und2.seeds_to_decide > 4
    json.dumps(und.to_dict(), allow_nan=False)


def test_zero_spread_is_decided_by_the_mean():
    b = {0: 0.5, 1: 0.75, 2: 0.625}  # exactly representable, so the differences are identical
    for d, tol, verdict in ((2 ** -7, 0.01, S.EQUIVALENT), (-(2 ** -7), 0.01, S.EQUIVALENT),
                            (-(2 ** -6), 0.01, S.WORSE), (-(2 ** -6), 2 ** -6, S.UNDECIDED)):
        r = S.compare({s: v + d for s, v in b.items()}, b, tol, ALPHA)
        assert r.se == 0 and r.lo == r.hi == r.diff == d and r.verdict == verdict, (d, tol)
        assert r.seeds_to_decide is None  # decided, or exactly at the margin
    # Welch with no spread on either side
    w = S.compare({0: 0.5, 1: 0.5}, {5: 0.75, 6: 0.75}, 0.01, ALPHA)
    assert w.test == S.WELCH and w.lo == w.hi == -0.25 and w.verdict == S.WORSE


@pytest.mark.parametrize("tol", [0.0, 0.01])
def test_self_comparison_is_equivalent(tol):
    b = {0: 0.81, 1: 0.79, 2: 0.83}
    for accs in (b, {0: 0.8}):
        r = S.compare(accs, dict(accs), tol, ALPHA)
        assert r.verdict == S.EQUIVALENT and r.diff == r.lo == r.hi == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        S.compare({0: 0.8}, {0: 0.8}, -0.01, ALPHA)
    with pytest.raises(ValueError):
        S.compare({0: 0.8}, {0: 0.8}, 0.01, 0.7)
    with pytest.raises(ValueError):
        S.looks(3, 2)
    with pytest.raises(ValueError):
        S.alpha_per_look(0.05, 0)


def test_seeds_needed_matches_brute_force_and_the_large_n_expansion():
    for sd, gap, alpha in ((0.02, 0.01, 0.05), (0.014, 0.003, 0.01), (1.0, 0.5, 0.2)):
        n = S.seeds_needed(sd, gap, alpha)
        f = [sps.t.ppf(1 - alpha, m - 1) * sd / math.sqrt(m) for m in (n - 1, n)]
        assert f[1] < gap and (n == 2 or f[0] >= gap)
    n = S.seeds_needed(1.0, 0.02, 0.05)  # beyond the exact table (n > 4097)
    assert n > 4097
    assert sps.t.ppf(0.95, n - 1) / math.sqrt(n) < 0.02 <= sps.t.ppf(0.95, n - 2) / math.sqrt(n - 1)
    assert S.seeds_needed(0.01, 0.0, 0.05) is None and S.seeds_needed(0.0, 0.01, 0.05) is None
    assert S.seeds_needed(0.01, 0.1, 0.05, at_least=5) == 5


def test_looks_and_alpha_per_look():
    assert S.looks(2, 6) == 5 and S.looks(4, 4) == 1
    assert S.alpha_per_look(0.05, S.looks(2, 6)) == pytest.approx(0.01)


# ----------------------------------------------------------------------------- group answer

def _cell(cid, depth, flops, diffs, base=None):
    base = base or {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81}
    return dict(cell=cid, depth=depth, flops=flops,
                accs={s: base[s] + d for s, d in zip(sorted(base), diffs)})


def _group(d2=(0.01, -0.03, 0.005, -0.02)):
    return [_cell("d0", 0, 10.0, [0, 0, 0, 0]),
            _cell("d1", 1, 8.0, [-0.002, -0.001, -0.003, -0.002]),
            _cell("d2", 2, 6.0, d2),
            _cell("d3", 3, 4.0, [-0.03, -0.031, -0.029, -0.03])]


def test_group_answer_picks_the_cheapest_equivalent_and_names_what_is_open():
    a = S.group_answer(_group(), TOL, ALPHA)
    assert a["best"] == "d0" and a["answer"] == "d1" and a["cheapest_equivalent"] == "d1"
    assert {k: v["verdict"] for k, v in a["comparisons"].items()} == {
        "d0": S.EQUIVALENT, "d1": S.EQUIVALENT, "d2": S.UNDECIDED, "d3": S.WORSE}
    assert a["open"] == ["d2"] and a["decided"] is False
    assert a["compute_saved"] == pytest.approx(0.2)
    c = a["comparisons"]["d0"]
    assert c["role"] == "best" and c["diff"] == 0 and c["n"] == 4 and c["flops"] == 10.0
    assert a["comparisons"]["d2"]["mean"] == pytest.approx(0.805 + (0.01 - 0.03 + 0.005 - 0.02) / 4)
    json.dumps(a, allow_nan=False)

    # d2 shown worse: nothing cheaper than d1 is left undecided
    b = S.group_answer(_group(d2=(-0.03, -0.032, -0.029, -0.031)), TOL, ALPHA)
    assert b["answer"] == "d1" and b["open"] == [] and b["decided"] is True

    # d2 shown equivalent: it becomes the answer, d3 (worse) is not open
    c = S.group_answer(_group(d2=(0.0, -0.001, -0.001, 0.0)), TOL, ALPHA)
    assert c["answer"] == c["cheapest_equivalent"] == "d2" and c["decided"] is True
    assert c["compute_saved"] == pytest.approx(0.4)


def test_group_answer_best_itself_and_ties_and_missing_runs():
    g = _group()
    g[1]["accs"] = {s: v - 0.05 for s, v in g[1]["accs"].items()}  # d1 now worse
    a = S.group_answer(g + [dict(cell="d4", depth=4, flops=2.0, accs={})], TOL, ALPHA)
    assert a["answer"] == "d0" and a["cheapest_equivalent"] is None
    assert a["open"] == ["d2"] and a["compute_saved"] == 0.0 and a["no_runs"] == ["d4"]
    assert "d4" not in a["comparisons"]
    # an undecided cell dearer than the answer is not open
    g = _group()
    g[2]["flops"] = 9.0
    assert S.group_answer(g, TOL, ALPHA)["open"] == [] and S.group_answer(g, TOL, ALPHA)["decided"]
    # equal means: the cheaper cell is the best
    t = S.group_answer([_cell("x", 0, 5.0, [0] * 4), _cell("y", 1, 3.0, [0] * 4)], TOL, ALPHA)
    assert t["best"] == "y" and t["answer"] == "y"
    assert S.group_answer([dict(cell="z", depth=0, flops=1.0, accs={})], TOL, ALPHA)["answer"] is None


# ----------------------------------------------------------------------------- racing

def test_next_seeds_adds_the_best_when_it_lacks_the_seed_and_stops_at_the_ceiling():
    g = _group()  # d2 open, every cell has seeds 0..3
    assert S.next_seeds(g, TOL, ALPHA, max_seeds=6) == ["d0", "d2"]
    g[0]["accs"][4] = 0.8  # the best already has seed 4: only d2 runs it
    assert S.next_seeds(g, TOL, ALPHA, max_seeds=6) == ["d2"]
    assert S.next_seed(g[2]["accs"]) == 4
    assert S.next_seeds(_group(), TOL, ALPHA, max_seeds=3) == []  # 4 runs = ceiling
    # best at the ceiling without the open cell's next seed: no pair possible, nothing runs
    g = _group()
    g[0]["accs"] = {**{s: v for s, v in g[0]["accs"].items() if s != 2}, 9: 0.9}
    assert S.next_seeds(g, TOL, ALPHA, max_seeds=3) == []
    decided = _group(d2=(-0.03, -0.032, -0.029, -0.031))
    assert S.next_seeds(decided, TOL, ALPHA, max_seeds=6) == []


def test_simulate_racing_without_room_to_race():
    r = S.simulate_racing([0.0, -0.04], 0.01, 3, 3, 0.02, 0.05, np.random.default_rng(0))
    assert r["rounds"] == 0 and r["seeds_used"] == r["seeds_ceiling"] == 9
    assert set(r["verdicts"]) == {"ref", "c0", "c1"} and list(r["verdicts"].values()).count("best") == 1


def test_racing_monte_carlo_error_rates_and_savings():
    tol, sd, seeds, max_seeds, groups = 0.02, 0.015, 2, 6, 2000
    diffs = [0.0, -0.5 * tol, -tol, -2 * tol, -3 * tol]
    rng = np.random.default_rng(12345)
    eq_margin = acc_margin = worse_far = used = ceiling = 0
    for _ in range(groups):
        r = S.simulate_racing(diffs, sd, seeds, max_seeds, tol, 0.05, rng)
        v = r["verdicts"]
        eq_margin += v["c2"] == S.EQUIVALENT  # true difference exactly -tolerance
        acc_margin += v["c2"] in (S.EQUIVALENT, "best")  # incl. picked as the best
        worse_far += v["c4"] == S.WORSE  # 3 tolerances worse
        used += r["seeds_used"]
        ceiling += r["seeds_ceiling"]
        assert max(r["runs"].values()) <= max_seeds + 1
    slack = 3 * math.sqrt(0.05 * 0.95 / groups)  # 3 Monte Carlo standard errors
    assert eq_margin / groups <= 0.05 + slack
    assert acc_margin / groups <= 0.05 + slack
    assert worse_far / groups >= 0.90
    assert used < ceiling


def test_check_best_keeps_a_cheap_best_open_until_it_is_shown_no_worse():
    base = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81}
    dear = _cell("d0", 0, 10.0, [0, 0, 0, 0], base)
    noisy = _cell("d3", 3, 4.0, [0.03, -0.02, 0.025, -0.01], base)  # highest mean, wide spread
    a = S.group_answer([dear, noisy], TOL, ALPHA)
    assert a["best"] == a["answer"] == "d3" and a["decided"] and a["open"] == []
    assert a["comparisons"]["d0"]["best_check"] is None
    c = S.group_answer([dear, noisy], TOL, ALPHA, check_best=True)
    assert c["answer"] == "d3" and c["open"] == ["d0"] and not c["decided"]
    assert c["comparisons"]["d0"]["best_check"] == S.UNDECIDED
    assert S.next_seeds([dear, noisy], TOL, ALPHA, 6, check_best=True) == ["d0", "d3"]
    tight = _cell("d3", 3, 4.0, [0.001, 0.002, 0.0, 0.001], base)
    t = S.group_answer([dear, tight], TOL, ALPHA, check_best=True)
    assert t["answer"] == "d3" and t["decided"] and t["comparisons"]["d0"]["best_check"] == S.EQUIVALENT
