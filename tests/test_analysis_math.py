"""Aggregation math of the report on hand-made frames with known answers (no Ray, no I/O)."""
import math

import pandas as pd
import pytest

from analysis import frontier as F
from analysis.load import COMPLETED, EPOCHS, ERRORED, SOURCE_KEY, STOPPED
from study.core import metrics as M


def test_pareto_front_minimises_x_maximises_y():
    df = pd.DataFrame({"id": list("abcdefg"),
                       "x": [1, 2, 2, 3, 4, math.nan, 1],
                       "y": [0.5, 0.4, 0.7, 0.7, 0.9, 1.0, 0.5]})
    f = F.pareto_front(df, "x", "y")
    assert f["id"].tolist() == ["a", "c", "e"]  # b, d dominated; f NaN; g duplicate of a
    assert f["x"].is_monotonic_increasing and f["y"].is_monotonic_increasing
    assert F.pareto_front(df.iloc[0:0], "x", "y").empty


def test_pareto_front_single_best_point_dominates_all():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.9, 0.5, 0.1]})
    assert F.pareto_front(df, "x", "y")["x"].tolist() == [1.0]


def _t(**cols):
    return pd.DataFrame(cols)


def test_aggregate_repeats_mean_std_over_seeds():
    t = _t(trial_id=["a", "b", "c"], split=["s"] * 3, backbone=["r"] * 3, init=["source"] * 3,
           frozen_depth=[1, 1, 2], lr=[0.1, 0.1, 0.1], seed=[0, 1, 0],
           val_acc=[0.6, 0.8, 0.5], test_acc=[0.55, math.nan, 0.4], total_flops=[10., 30., 5.],
           target_flops=[1., 3., 5.])
    a = F.aggregate_repeats(t).set_index(M.FROZEN_DEPTH)
    assert a.loc[1, "n"] == 2 and a.loc[1, "val_acc_mean"] == pytest.approx(0.7)
    assert a.loc[1, "val_acc_std"] == pytest.approx(math.sqrt(0.02))
    assert a.loc[1, "test_acc_mean"] == pytest.approx(0.55) and math.isnan(a.loc[1, "test_acc_std"])
    assert a.loc[1, "total_flops_mean"] == 20.0 and a.loc[1, "trial_ids"] == "a,b"
    assert a.loc[2, "n"] == 1 and math.isnan(a.loc[2, "val_acc_std"])


def test_best_per_group_with_overall_row():
    t = _t(split=["s", "s", "s", "u"], backbone=["a", "a", "b", "a"],
           v=[0.5, 0.7, 0.9, 0.3], tag=[1, 2, 3, 4])
    b = F.best_per_group(t, ["split", "backbone"], "v")
    got = {(r.split, r.backbone): r.tag for r in b.itertuples()}
    assert got == {("s", "a"): 2, ("s", "b"): 3, ("s", F.ALL): 3, ("u", "a"): 4, ("u", F.ALL): 4}
    assert len(F.best_per_group(t.assign(v=math.nan), ["split"], "v")) == 0


def _gain_frame():
    return _t(trial_id=list("abcde"), status=[COMPLETED, STOPPED, COMPLETED, COMPLETED, STOPPED],
              split=["s"] * 5, backbone=["b1", "b1", "b1", "b2", "b2"],
              init=["source", "imagenet", "scratch", "source", "source"],
              val_acc=[0.8, 0.82, 0.6, 0.85, 0.2], total_flops=[10., 2., 5., 20., 1.])


def test_transfer_gain_per_backbone_and_overall():
    g = F.transfer_gain(_gain_frame()).set_index(M.BACKBONE)
    assert g.loc["b1", "gain"] == pytest.approx(0.82 - 0.6)
    assert g.loc["b1", "best_transfer_init"] == "imagenet"
    assert math.isnan(g.loc["b2", "gain"])  # no scratch baseline for b2
    assert g.loc[F.ALL, "gain"] == pytest.approx(0.85 - 0.6)
    c = F.transfer_gain(_gain_frame(), statuses=[COMPLETED]).set_index(M.BACKBONE)
    assert c.loc["b1", "gain"] == pytest.approx(0.8 - 0.6)


def test_gain_at_equal_budgets():
    g = F.gain_at_budgets(_gain_frame(), [1.5, 5, 100]).set_index([M.BACKBONE, "budget"])
    assert math.isnan(g.loc[("b1", 1.5), "gain"])  # nothing of b1 fits
    assert g.loc[("b1", 5.0), "best_transfer"] == 0.82 and g.loc[("b1", 5.0), "best_scratch"] == 0.6
    assert g.loc[("b1", 100.0), "gain"] == pytest.approx(0.22)
    assert g.loc[("b2", 1.5), "best_transfer"] == 0.2 and math.isnan(g.loc[("b2", 1.5), "gain"])


def test_budget_grid_log_spaced():
    assert F.budget_grid([10, 1000, math.nan, 0], n=3) == pytest.approx([10, 100, 1000])
    assert F.budget_grid([]) == [] and F.budget_grid([5, 5]) == [5.0]


def test_depth_curves_best_per_depth():
    t = _t(split=["s"] * 4, backbone=["b"] * 4, init=["source"] * 3 + ["scratch"],
           frozen_depth=[0, 0, 2, 0], val_acc=[0.5, 0.6, 0.7, 0.4])
    d = F.depth_curves(t).set_index([M.INIT, M.FROZEN_DEPTH])
    assert d.loc[("source", 0), M.VAL_ACC] == 0.6 and d.loc[("source", 0), "n"] == 2
    assert d.loc[("source", 2), M.VAL_ACC] == 0.7 and d.loc[("scratch", 0), M.VAL_ACC] == 0.4


def test_asha_accounting_counts_source_once_and_estimates_fifo():
    t = _t(trial_id=list("abcd"), status=[COMPLETED, STOPPED, STOPPED, ERRORED],
           epochs=[3, 1, 2, 0], target_flops=[300., 50., 40., 0.],
           source_flops=[1000., 1000., 0., 0.], source_key=["k1", "k1", None, None])
    a = F.asha_accounting(t, target_epochs=3)
    assert a["spent"] == {COMPLETED: 300., STOPPED: 90., ERRORED: 0., "running": 0.}
    assert a["source"] == 1000. and a["sources"] == 1
    assert a["total"] == 1390.
    assert a["fifo_target"] == 100 * 3 + 50 * 3 + 20 * 3  # per-epoch cost x max_t; d adds 0
    assert a["fifo"] == 1510. and a["savings"] == pytest.approx(1510 / 1390)
    assert a["epochs_run"] == 6 and a["epochs_fifo"] == 12
    assert a["trials"][STOPPED] == 2


def test_finalists_prefer_completed_then_longest():
    t = _t(trial_id=list("abcd"), split=["s", "s", "u", "u"],
           status=[COMPLETED, STOPPED, STOPPED, STOPPED], epochs=[3, 1, 2, 1],
           val_acc=[0.1, 0.9, 0.3, 0.8])
    assert F.finalists(t)["trial_id"].tolist() == ["a", "c"]


def test_frames_need_only_named_columns():
    # the functions name columns through study.core.metrics; a sanity check of the constants
    assert (M.VAL_ACC, EPOCHS, SOURCE_KEY) == ("val_acc", "epochs", "source_key")
