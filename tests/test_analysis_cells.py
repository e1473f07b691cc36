"""Cell statistics on hand-made frames with hand-computed answers (no Ray, no I/O): which trials
count, t intervals, Welch tests, the depth answer, transfer gain, the cells' frontier."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import cells as C
from analysis.load import DEVICE_S, TOTAL_FLOPS
from study.core import metrics as M
from study.core.status import COMPLETED, ERRORED, RUNNING, STOPPED

T2 = 4.302652729911275  # t(0.975, df=2)
T4 = 2.7764451051977987  # t(0.975, df=4)


def _row(tid, init, depth, lr, status, val, test, phase=M.PHASE_TUNE, flops=100.0, src=0.0,
         split="x", backbone="r"):
    return {"trial_id": tid, "status": status, M.SPLIT: split, M.BACKBONE: backbone,
            M.INIT: init, M.FROZEN_DEPTH: depth, M.LR: lr, M.SEED: 0,
            M.CELL: f"{split}/{backbone}/{init}/d{depth}", M.PHASE: phase,
            M.VAL_ACC: val, M.TEST_ACC: test if status == COMPLETED else math.nan,
            M.TARGET_FLOPS: flops, TOTAL_FLOPS: flops + src, DEVICE_S: flops / 10}


CONF = M.PHASE_CONFIRM


def _frame():
    """split x, backbone r:
    d1 (source): tune lr .01 (chosen: best completed val), lr .1 (worse val, better test),
       lr .05 stopped with the best val; confirm lr .01: 3 completed, 1 errored
       -> runs test [.70, .72, .74] (the confirm runs: the tune run t1 selected, never measures)
    d3 (source): cheaper; runs test [.705, .71, .715]          -> within 1 point, not lower
    d2 (source): only a stopped trial                           -> no runs at all
    d4 (source): runs [.60, .61, .62]                           -> too low
    scratch d0: runs [.60, .62, .64]
    """
    r = [
        _row("t1", "source", 1, 0.01, COMPLETED, 0.80, 0.70, flops=400., src=300.),
        _row("t2", "source", 1, 0.1, COMPLETED, 0.60, 0.90, flops=400., src=300.),
        _row("t3", "source", 1, 0.05, STOPPED, 0.95, math.nan, flops=50., src=300.),
        _row("c0", "source", 1, 0.01, COMPLETED, 0.80, 0.70, CONF, flops=400., src=300.),
        _row("c1", "source", 1, 0.01, COMPLETED, 0.79, 0.72, CONF, flops=400., src=300.),
        _row("c2", "source", 1, 0.01, COMPLETED, 0.81, 0.74, CONF, flops=400., src=300.),
        _row("c3", "source", 1, 0.01, ERRORED, 0.30, math.nan, CONF, flops=10., src=300.),
        _row("t4", "source", 3, 0.02, COMPLETED, 0.70, 0.705, flops=100., src=300.),
        _row("t5", "source", 3, 0.2, STOPPED, 0.75, math.nan, flops=20., src=300.),
        _row("c4", "source", 3, 0.02, COMPLETED, 0.70, 0.71, CONF, flops=100., src=300.),
        _row("c5", "source", 3, 0.02, COMPLETED, 0.70, 0.715, CONF, flops=100., src=300.),
        _row("c8", "source", 3, 0.02, COMPLETED, 0.70, 0.705, CONF, flops=100., src=300.),
        _row("t6", "source", 2, 0.02, STOPPED, 0.99, math.nan, flops=30., src=300.),
        _row("t7", "source", 4, 0.02, COMPLETED, 0.6, 0.60, flops=50., src=300.),
        _row("c6", "source", 4, 0.02, COMPLETED, 0.6, 0.61, CONF, flops=50., src=300.),
        _row("c7", "source", 4, 0.02, COMPLETED, 0.6, 0.62, CONF, flops=50., src=300.),
        _row("c9", "source", 4, 0.02, COMPLETED, 0.6, 0.60, CONF, flops=50., src=300.),
        _row("s1", "scratch", 0, 0.1, COMPLETED, 0.5, 0.60, flops=500.),
        _row("s0", "scratch", 0, 0.1, COMPLETED, 0.5, 0.60, CONF, flops=500.),
        _row("s2", "scratch", 0, 0.1, COMPLETED, 0.5, 0.62, CONF, flops=500.),
        _row("s3", "scratch", 0, 0.1, COMPLETED, 0.5, 0.64, CONF, flops=500.),
        _row("s4", "scratch", 0, 0.3, RUNNING, 0.9, math.nan, flops=5.),
    ]
    return pd.DataFrame(r)


# ----------------------------------------------------------------------------- statistics

def test_t_interval_hand_computed():
    # [0.70, 0.72, 0.74]: mean 0.72, std 0.02 -> ± t(0.975, 2) * 0.02 / sqrt(3) = ± 0.0497
    assert stats.t.ppf(0.975, 2) == pytest.approx(T2)
    assert C.ci_halfwidth(0.02, 3) == pytest.approx(T2 * 0.02 / math.sqrt(3))
    assert C.ci_halfwidth(0.02, 3) == pytest.approx(0.0497, abs=5e-5)
    assert math.isnan(C.ci_halfwidth(math.nan, 1)) and math.isnan(C.ci_halfwidth(0.0, 1))


def test_welch_matches_hand_formula_and_scipy():
    a, b = [0.70, 0.72, 0.74], [0.60, 0.65]
    # by hand: m 0.72 / 0.625, s^2 0.0004 / 0.00125, va = 0.0004/3, vb = 0.00125/2
    va, vb = 0.0004 / 3, 0.00125 / 2
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)
    assert df == pytest.approx(1.43941, rel=1e-4)  # hand arithmetic: 5.7507e-7 / 3.99514e-7
    w = C.welch(np.mean(a), np.std(a, ddof=1), 3, np.mean(b), np.std(b, ddof=1), 2)
    assert w["diff"] == pytest.approx(0.095) and w["se"] == pytest.approx(se)
    assert w["df"] == pytest.approx(df) and w["t"] == pytest.approx(0.095 / se)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue) and w["t"] == pytest.approx(ref.statistic)
    less = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    assert w["p_less"] == pytest.approx(less.pvalue)
    half = stats.t.ppf(0.975, df) * se
    assert (w["lo"], w["hi"]) == pytest.approx((0.095 - half, 0.095 + half))


def test_welch_equal_sizes_equal_spread_has_df_2n_minus_2():
    # [.70 .72 .74] vs [.60 .62 .64]: se = sqrt(2 * .0004/3), df = 4, t = .1/se = 6.1237
    w = C.welch(0.72, 0.02, 3, 0.62, 0.02, 3)
    se = math.sqrt(2 * 0.0004 / 3)
    assert w["df"] == pytest.approx(4.0) and w["t"] == pytest.approx(6.12372, rel=1e-5)
    assert (w["lo"], w["hi"]) == pytest.approx((0.1 - T4 * se, 0.1 + T4 * se))
    assert w["hi"] - 0.1 == pytest.approx(0.04534, abs=1e-5)
    assert w["p"] == pytest.approx(2 * stats.t.sf(6.1237244, 4)) == pytest.approx(0.003602, rel=1e-3)


def test_welch_degenerate_cases():
    one = C.welch(0.8, math.nan, 1, 0.7, 0.01, 3)
    assert one["diff"] == pytest.approx(0.1) and all(
        math.isnan(one[k]) for k in ("lo", "hi", "p", "p_less", "df"))
    flat = C.welch(0.7, 0.0, 3, 0.8, 0.0, 2)  # no spread: certain, CI a point
    assert flat["lo"] == flat["hi"] == pytest.approx(-0.1) and flat["p_less"] == 0.0
    assert C.welch(0.7, 0.0, 3, 0.7, 0.0, 2)["p"] == 1.0


# ----------------------------------------------------------------------------- which runs count

def test_cell_runs_chosen_config_completed_only():
    runs = C.cell_runs(_frame())
    got = {c: g["trial_id"].tolist() for c, g in runs.groupby(M.CELL)}
    assert got == {"x/r/source/d1": ["c0", "c1", "c2"], "x/r/source/d3": ["c4", "c5", "c8"],
                   "x/r/source/d4": ["c6", "c7", "c9"], "x/r/scratch/d0": ["s0", "s2", "s3"]}
    assert set(runs["status"]) == {COMPLETED}
    # the tune trials that chose the learning rate never measure it
    assert not set(runs["trial_id"]) & {"t1", "t4", "t7", "s1"}
    assert runs.set_index("trial_id").loc["c1", C.ROLE] == M.PHASE_CONFIRM


def test_cell_runs_without_confirm_take_best_completed_tune_trial():
    t = _frame()
    t = t[t[M.PHASE] == M.PHASE_TUNE]
    runs = C.cell_runs(t).set_index(M.CELL)
    # d1: t3 (stopped) has the best val and t2 the best test; t1 has the best completed val
    assert runs.loc["x/r/source/d1", "trial_id"] == "t1"
    assert runs.loc["x/r/scratch/d0", "trial_id"] == "s1"  # s4 running never counts
    s = C.cell_summary(C.cell_runs(t))
    assert (s["n"] == 1).all() and s["ci"].isna().all() and s["std"].isna().all()


def test_old_frames_without_cell_and_phase_columns():
    t = _frame().drop(columns=[M.CELL, M.PHASE])
    t.loc[t["trial_id"] == "s1", M.FROZEN_DEPTH] = 2  # scratch: depth is 0 whatever the config
    runs = C.cell_runs(t)
    assert set(runs[M.PHASE]) == {M.PHASE_TUNE}
    assert "x/r/scratch/d0" in set(runs[M.CELL]) and "x/r/source/d1" in set(runs[M.CELL])
    # every trial counts as "tune": lr 0.01 has the best mean val (t1, c0, c1, c2: repeats of
    # one configuration, as search.repeats wrote them), so all four are the cell's runs
    d1 = runs[runs[M.CELL] == "x/r/source/d1"]
    assert d1["trial_id"].tolist() == ["c0", "c1", "c2", "t1"] and set(d1[C.ROLE]) == {"selected"}


def test_cell_summary_mean_std_ci_and_compute():
    s = C.cell_summary(C.cell_runs(_frame())).set_index(M.CELL)
    d1 = s.loc["x/r/source/d1"]
    assert d1["n"] == 3 and d1["mean"] == pytest.approx(0.72) and d1["std"] == pytest.approx(0.02)
    assert d1["ci"] == pytest.approx(T2 * 0.02 / math.sqrt(3))
    assert (d1["lo"], d1["hi"]) == pytest.approx((0.72 - d1["ci"], 0.72 + d1["ci"]))
    assert d1[M.LR] == 0.01 and d1[M.TARGET_FLOPS] == 400. and d1[TOTAL_FLOPS] == 700.
    assert d1[DEVICE_S] == 40. and d1["trial_ids"] == "c0,c1,c2" and d1["metric"] == M.TEST_ACC
    assert "x/r/source/d2" not in s.index  # only a stopped trial
    v = C.cell_summary(C.cell_runs(_frame()), metric=M.VAL_ACC).set_index(M.CELL)
    assert v.loc["x/r/source/d1", "mean"] == pytest.approx(0.8)


def test_stopped_trials_never_in_runs_curves_gains_but_in_scatter():
    t = _frame()
    stopped = set(t.loc[t["status"] != COMPLETED, "trial_id"])
    runs = C.cell_runs(t)
    s = C.cell_summary(runs)
    assert not stopped & set(runs["trial_id"])
    assert not stopped & {x for ids in s["trial_ids"] for x in ids.split(",")}  # depth curves
    assert 2 not in set(s[M.FROZEN_DEPTH])  # the stopped-only cell has no curve point
    a = C.depth_answer(runs)
    assert 2 not in {*a["best_depth"], *a["cheap_depth"]}
    g = C.transfer_gain_cells(s)  # no Answer given: the depth with the highest mean
    assert g.loc[0, "depth"] == 1 and g.loc[0, "mean_transfer"] == pytest.approx(0.72)
    sc = C.scatter_points(t, runs).set_index("trial_id")
    assert stopped <= set(sc.index) and not sc.loc[sorted(stopped), "cell_run"].any()
    assert sc.loc["t6", M.VAL_ACC] == 0.99 and sc.loc["c0", "cell_run"]
    assert not sc.loc["t1", "cell_run"]  # it selected the learning rate: it never measures


def test_cell_coverage_counts():
    cov = C.cell_coverage(_frame()).set_index(M.CELL)
    d1 = cov.loc["x/r/source/d1"]
    assert (d1["tune trials"], d1["tune completed"], d1["tune stopped"]) == (3, 2, 1)
    assert (d1["confirm trials"], d1["confirm completed"], d1["runs"]) == (4, 3, 3)
    d2 = cov.loc["x/r/source/d2"]
    assert (d2["tune trials"], d2["tune stopped"], d2["runs"]) == (1, 1, 0)
    assert math.isnan(d2[M.LR])
    assert cov.loc["x/r/scratch/d0", "tune running"] == 1


# ----------------------------------------------------------------------------- answers

def _runs(rows):
    """Runs per depth, seeds 0, 1, 2, ... in each cell: (depth, values, target flops)."""
    t = pd.DataFrame([{**_row(f"{d}-{i}", "source", d, 0.01, COMPLETED, 0.5, v,
                              M.PHASE_CONFIRM, flops=f), M.SEED: i}
                      for d, vals, f in rows for i, v in enumerate(vals)])
    return C.cell_runs(t)


def test_depth_answer_paired_decides_what_welch_cannot():
    """Per-seed differences vary far less than the accuracies: d2 is 0.5 points below d0 on
    every seed. Unpaired (Welch) that is not even significant; paired it is shown within a
    1-point tolerance and shown worse at a 0.2-point one."""
    d0, d2 = [0.70, 0.74, 0.78], [0.695, 0.735, 0.775]
    runs = _runs([(0, d0, 100.), (2, d2, 40.)])
    r = C.depth_answer(runs, tolerance=0.01).iloc[0]
    assert (r["best_depth"], r["cheap_depth"], r["decided"], r["test"]) == (0, 2, True, "paired t")
    assert r["delta"] == pytest.approx(-0.005) and r["saving_target"] == pytest.approx(0.6)
    # zero spread of the paired differences: the bounds collapse to the difference
    assert r["delta_lo"] == pytest.approx(-0.005) and r["best_shown"]
    assert stats.ttest_ind(d2, d0, equal_var=False, alternative="less").pvalue > 0.4
    r = C.depth_answer(runs, tolerance=0.002).iloc[0]
    assert r["cheap_depth"] == 0 and r["decided"] and r["verdicts"] == "d0 best (shown), d2 worse"


def test_paired_says_worse_where_welch_is_not_even_significant():
    """d2 is 3 points below d0 on every seed, give or take 0.4: the seeds move both cells alike
    (their accuracies spread over 8 points). Welch: not significant (p ~ 0.09) and undecided
    at a 1-point tolerance; paired: shown worse, and the answer is the best depth, decided."""
    d0 = [0.70, 0.74, 0.78, 0.72, 0.76]
    d2 = [a - 0.03 + e for a, e in zip(d0, [0.004, -0.003, 0.002, -0.004, 0.001])]
    assert stats.ttest_ind(d2, d0, equal_var=False, alternative="less").pvalue > 0.05
    runs = _runs([(0, d0, 100.), (2, d2, 40.)])
    r = C.depth_answer(runs, tolerance=0.01, alpha=0.05).iloc[0]
    assert r["verdicts"] == "d0 best (shown), d2 worse" and r["decided"] and r["cheap_depth"] == 0
    c = C.comparison_rows(C.depth_answer(runs, tolerance=0.01)).set_index("depth").loc[2]
    d = np.subtract(d2, d0)
    half = stats.t.ppf(0.95, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c["test"], c["n"]) == ("paired t", 5)
    assert (c["diff"], c["lo"], c["hi"]) == pytest.approx((-0.03, -0.03 - half, -0.03 + half))
    assert c["hi"] < -0.01
    # the same values with seeds that do not match (unpaired): Welch, undecided
    w = runs.copy()
    w.loc[w[M.CELL] == "x/r/source/d2", M.SEED] += 10
    c = C.comparison_rows(C.depth_answer(w, tolerance=0.01)).set_index("depth").loc[2]
    assert (c["test"], c["verdict"]) == ("welch", "undecided") and c["lo"] < -0.01 < c["hi"]
    from analysis.report import recommendation
    text = recommendation(C.depth_answer(runs, tolerance=0.01).iloc[0])
    assert text.startswith("freeze 0 stages") and "every cheaper depth shown worse" in text


def test_depth_answer_bounds_match_scipy_and_undecided_says_what_is_open():
    d0, d1 = [0.80, 0.82, 0.78, 0.81], [0.79, 0.80, 0.78, 0.79]
    runs = _runs([(0, d0, 100.), (1, d1, 50.)])
    r = C.depth_answer(runs, tolerance=0.005, alpha=0.05).iloc[0]
    diff = np.subtract(d1, d0)
    t = stats.ttest_rel(d1, d0)
    se = diff.std(ddof=1) / 2
    lo = diff.mean() - stats.t.ppf(0.95, 3) * se
    hi = diff.mean() + stats.t.ppf(0.95, 3) * se
    rows = C.comparison_rows(C.depth_answer(runs, tolerance=0.005)).set_index("depth")
    assert rows.loc[1, "diff"] == pytest.approx(diff.mean()) and t.statistic < 0
    assert (rows.loc[1, "lo"], rows.loc[1, "hi"]) == pytest.approx((lo, hi))
    assert lo < -0.005 < hi < 0  # neither within nor worse at this tolerance, but below d0
    assert rows.loc[1, "verdict"] == "undecided" and rows.loc[0, "verdict"] == "best (shown)"
    assert not r["decided"] and r["open"] == "d1,d0" and r["cheap_depth"] == 0
    from analysis.report import recommendation
    text = recommendation(r)
    assert text.startswith("UNDECIDED: d1") and "shown the most accurate depth" in text


def test_depth_answer_single_runs_decide_nothing_and_old_studies_fall_back_to_welch():
    runs = _runs([(0, [0.80], 100.), (2, [0.795], 10.), (3, [0.70], 5.)])
    r = C.depth_answer(runs, tolerance=0.01).iloc[0]
    assert r["single_run"] == "d0,d2,d3" and not r["decided"] and math.isnan(r["cheap_depth"])
    assert r["verdicts"] == "d0 undecided, d2 undecided, d3 undecided"
    assert r["possible_best"] == "d3,d2,d0"  # no bounds: any could be the best (cheapest first)
    from analysis.report import recommendation
    text = recommendation(r)
    assert text.startswith("UNDECIDED: no depth is shown within −1 points") and "d3,d2,d0" in text
    # seeds not recorded (all 0 in the frame): unpaired, Welch
    t = pd.DataFrame([_row(f"{d}-{i}", "source", d, 0.01, COMPLETED, 0.5, v,
                           M.PHASE_CONFIRM if i else M.PHASE_TUNE, flops=f)
                      for d, vals, f in [(0, [0.80, 0.82, 0.84], 100.), (2, [0.60, 0.61, 0.62], 10.)]
                      for i, v in enumerate(vals)])
    r = C.depth_answer(C.cell_runs(t)).iloc[0]
    assert r["verdicts"] == "d0 best (shown), d2 worse" and r["decided"]
    rows = C.comparison_rows(C.depth_answer(C.cell_runs(t))).set_index("depth")
    assert rows.loc[2, "test"] == "welch"


def test_paired_matches_scipy_on_the_shared_seeds():
    a = {0: 0.71, 1: 0.75, 2: 0.70, 3: 0.74, 9: 0.5}  # seed 9: b has none, left out
    b = {0: 0.61, 1: 0.66, 2: 0.62, 3: 0.63, 7: 0.9}
    p = C.paired(a, b)
    ref = stats.ttest_rel([0.71, 0.75, 0.70, 0.74], [0.61, 0.66, 0.62, 0.63])
    assert p["n_pairs"] == 4 and p["df"] == 3 and p["diff"] == pytest.approx(0.095)
    assert p["p"] == pytest.approx(ref.pvalue) and p["t"] == pytest.approx(ref.statistic)
    ci = ref.confidence_interval(0.95)
    assert (p["lo"], p["hi"]) == pytest.approx((ci.low, ci.high))
    assert math.isnan(C.paired({0: 0.7}, {0: 0.6})["lo"]) and C.paired({}, {})["n_pairs"] == 0


def test_transfer_gain_paired_per_seed_with_scratch():
    """Transfer and scratch runs with the same seed share data order and augmentations: the
    gain is the mean per-seed difference with a paired t interval (narrow: the seeds move both
    cells alike), where Welch's interval on the same values crosses 0."""
    src, scr = [0.70, 0.76, 0.66, 0.73], [0.68, 0.735, 0.645, 0.70]
    t = pd.DataFrame([{**_row(f"{init}-{i}", init, 0 if init == "scratch" else 1, 0.01, COMPLETED,
                              0.5, v, CONF), M.SEED: i}
                      for init, vals in (("source", src), ("scratch", scr))
                      for i, v in enumerate(vals)])
    r = C.transfer_gain_cells(C.cell_runs(t)).iloc[0]
    ref = stats.ttest_rel(src, scr)
    assert (r["test"], r["n_pairs"]) == ("paired t", 4)
    assert r["gain"] == pytest.approx(0.0225) and r["p"] == pytest.approx(ref.pvalue)
    assert r["lo"] > 0
    w = C.transfer_gain_cells(C.cell_summary(C.cell_runs(t))).iloc[0]  # summaries: Welch only
    assert w["test"] == "welch" and w["lo"] < 0 < w["hi"] and w["gain"] == pytest.approx(0.0225)


def test_transfer_gain_cells_welch_against_scratch_when_seeds_do_not_pair():
    t = _frame()  # every seed recorded as 0: not pairable, Welch
    g = C.transfer_gain_cells(C.cell_runs(t))  # runs or summary, the same answer
    assert g.equals(C.transfer_gain_cells(C.cell_summary(C.cell_runs(t))))
    r = g.iloc[0]
    assert r["test"] == "welch"
    assert (r[M.INIT], r["depth"], r["n_transfer"], r["n_scratch"]) == ("source", 1, 3, 3)
    assert r["gain"] == pytest.approx(0.10)
    ref = stats.ttest_ind([0.70, 0.72, 0.74], [0.60, 0.62, 0.64], equal_var=False)
    assert r["p"] == pytest.approx(ref.pvalue) and r["df"] == pytest.approx(4.0)
    se = math.sqrt(2 * 0.0004 / 3)
    assert (r["lo"], r["hi"]) == pytest.approx((0.1 - T4 * se, 0.1 + T4 * se))
    # no scratch cell for another backbone -> NaN gain, still listed
    t2 = pd.concat([t, pd.DataFrame([_row("z1", "imagenet", 2, 0.01, COMPLETED, 0.5, 0.8,
                                          backbone="q")])])
    g2 = C.transfer_gain_cells(C.cell_runs(t2)).set_index(M.BACKBONE)
    assert math.isnan(g2.loc["q", "gain"]) and g2.loc["q", "n_scratch"] == 0


def test_cell_frontier_uses_mean_accuracy_and_total_compute():
    s = C.cell_summary(C.cell_runs(_frame()))
    f = C.cell_frontier(s)
    # total compute: d4 350, d3 400, scratch 500, d1 700; mean: .61, .71, .62, .72
    assert f[M.CELL].tolist() == ["x/r/source/d4", "x/r/source/d3", "x/r/source/d1"]
    assert f[TOTAL_FLOPS].is_monotonic_increasing and f["mean"].is_monotonic_increasing
    assert C.cell_frontier(s.iloc[0:0]).empty
