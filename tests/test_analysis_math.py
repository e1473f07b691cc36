"""Aggregation math of the report on hand-made frames with known answers (no Ray, no I/O)."""
import math

import pandas as pd
import pytest

from analysis import frontier as F
from analysis.load import EPOCHS, SOURCE_KEY
from study.core.status import COMPLETED, ERRORED, STOPPED
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


def test_early_stopping_accounting_counts_source_once_and_estimates_fifo():
    t = _t(trial_id=list("abcd"), status=[COMPLETED, STOPPED, STOPPED, ERRORED],
           epochs=[3, 1, 2, 0], target_flops=[300., 50., 40., 0.],
           source_flops=[1000., 1000., 0., 0.], source_key=["k1", "k1", None, None])
    a = F.early_stopping_accounting(t, target_epochs=3)
    assert a["spent"] == {COMPLETED: 300., STOPPED: 90., ERRORED: 0., "running": 0.}
    assert a["source"] == 1000. and a["sources"] == 1
    assert a["total"] == 1390.
    assert a["fifo_target"] == 100 * 3 + 50 * 3 + 20 * 3  # per-epoch cost x target_epochs; d adds 0
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
