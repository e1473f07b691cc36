"""ASHA's rung records survive a save/restore (study.asha), tested on the scheduler alone."""
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.asha import load_rung_state, rung_state


def _asha():
    return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=8,
                         grace_period=1, reduction_factor=2)


def _feed(s, trial_id, epoch, acc):
    t = SimpleNamespace(trial_id=trial_id)  # ASHA reads only a trial's id
    if trial_id not in s._trial_info:
        s.on_trial_add(None, t)
    return s.on_trial_result(None, t, {"epoch": epoch, "val_acc": acc})


def test_restored_rungs_drive_later_decisions():
    before = _asha()
    for i, acc in enumerate([0.9, 0.8, 0.85, 0.95]):
        _feed(before, f"t{i}", 1, acc)
    state = rung_state(before)
    assert [len(rec) for _, rec in state["brackets"][0] if rec] == [4]

    resumed = _asha()
    load_rung_state(resumed, state)
    assert rung_state(resumed) == state
    # a weak newcomer at rung 1 is stopped only because the earlier records came back
    assert _feed(resumed, "late", 1, 0.5) == TrialScheduler.STOP
    assert _feed(_asha(), "late", 1, 0.5) == TrialScheduler.CONTINUE
    # trials that were running before the restart keep their bracket
    assert _feed(resumed, "t3", 2, 0.96) == TrialScheduler.CONTINUE


def test_mismatched_milestones_are_refused():
    state = rung_state(_asha())
    other = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=8,
                          grace_period=2, reduction_factor=2)
    with pytest.raises(ValueError, match="milestones"):
        load_rung_state(other, state)
