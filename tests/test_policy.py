"""Early-stopping policy without Ray (study.policy, replayed on known curves by the cell
scheduling benchmark's ``simulate``) and the Tune scheduler that applies it (study.scheduler, fed
by hand): a trial is only ever compared with trials of its own cell."""
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from study import policy
from study.scheduler import CellScheduler
from study.core import metrics as M
from test_cell_scheduling_bench import load_bench

simulate = load_bench().simulate  # benchmarks/cell_scheduling.py (benchmarks/ is not a package)

CONT, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def test_milestones_and_keep_counts():
    assert policy.milestones(1, 3, 5) == [1, 3]
    assert policy.milestones(1, 3, 10) == [1, 3, 9]
    assert policy.milestones(2, 2, 16) == [2, 4, 8]
    assert policy.keep_counts(4, 3, 2) == [1, 1]
    assert policy.keep_counts(9, 3, 2) == [3, 1]
    assert policy.keep_counts(8, 2, 3) == [4, 2, 1]


def test_halving_stops_only_when_enough_trials_are_better():
    ms, keep = [1, 3], [2, 1]  # 6 trials, rf 3 (keep 2 at rung 1)
    rungs = {}
    for t, s in [("a", 0.5), ("b", 0.7)]:
        policy.record(rungs, t, 1, s, ms)
    assert not policy.halving_stops(rungs, "a", keep, ms, 6)  # only 1 better so far
    policy.record(rungs, "c", 1, 0.6, ms)
    assert policy.halving_stops(rungs, "a", keep, ms, 6)  # b and c are better: a can't be kept
    assert not policy.halving_stops(rungs, "b", keep, ms, 6)
    assert not policy.halving_stops(rungs, "c", keep, ms, 6)
    # ties are not "better": equal trials survive together
    tied = {}
    for t in "xyz":
        policy.record(tied, t, 1, 0.5, ms)
    assert not any(policy.halving_stops(tied, t, [1, 1], ms, 3) for t in "xyz")


def test_halving_never_stops_synchronous_halvings_winner_when_curves_cross():
    # X leads at epoch 3 but is cut at epoch 1 by Y; X's epoch-3 score must not rule out Y
    curves = {"X": [.50, .60, .90, .91, .92, .93, .94, .95, .96],
              "W": [.50, .55, .80, .81, .82, .83, .84, .85, .86],
              "Y": [.60, .65, .70, .75, .80, .85, .86, .87, .88]}
    import itertools
    for order in itertools.permutations(curves):
        ep = simulate(curves, list(order), rule="halving", grace=1, rf=3, max_t=9,
                             concurrency=2)
        assert ep["Y"] == 9, (order, ep)


def test_asha_promotes_the_first_arrival():
    assert not policy.asha_stops({}, 0.1, 3)
    assert policy.asha_stops({"a": 0.9}, 0.5, 3)
    assert not policy.asha_stops({"a": 0.4}, 0.5, 3)


def test_halving_always_completes_the_trial_that_leads_every_rung():
    rng = np.random.default_rng(0)
    curves = {i: list(np.cumsum(rng.random(9)) / 9 + rng.random() * 0.1) for i in range(9)}
    curves[4] = [c + 1.0 for c in curves[4]]  # trial 4 leads at every epoch
    for seed in range(20):
        order = [int(x) for x in np.random.default_rng(seed).permutation(9)]
        ep = simulate(curves, order, rule="halving", grace=1, rf=3, max_t=9, concurrency=2)
        assert ep[4] == 9, order
        fifo = simulate(curves, order, rule="fifo", grace=1, rf=3, max_t=9, concurrency=2)
        assert sum(ep.values()) < sum(fifo.values()) == 81


def test_every_group_completes_a_run_whatever_the_other_group_scores():
    # cell "hard" scores 0.2-0.3, cell "easy" 0.8-0.9: grouped per cell, hard still completes
    curves = {f"h{i}": [0.2 + 0.01 * i] * 4 for i in range(3)}
    curves.update({f"e{i}": [0.8 + 0.01 * i] * 4 for i in range(3)})
    groups = {t: t[0] for t in curves}
    order = [t for pair in zip(sorted(c for c in curves if c[0] == "e"),
                               sorted(c for c in curves if c[0] == "h")) for t in pair]
    for rule in ("halving", "asha"):
        ep = simulate(curves, order, rule=rule, grace=1, rf=3, max_t=4, concurrency=2,
                             groups=groups)
        assert any(ep[t] == 4 for t in curves if t[0] == "h"), rule
        assert any(ep[t] == 4 for t in curves if t[0] == "e"), rule
    one = simulate(curves, order, rule="asha", grace=1, rf=3, max_t=4, concurrency=2)
    assert not any(one[t] == 4 for t in curves if t[0] == "h")  # one group: hard starves


# ----------------------------------------------------------------------------- the Tune scheduler

def _trial(tid, cell, phase=M.PHASE_TUNE):
    return SimpleNamespace(trial_id=tid, config={M.CELL: cell, M.PHASE: phase})


def _sched(rule="halving", sizes=None):
    return CellScheduler(rule=rule, group_key=M.CELL, group_sizes=sizes or {"A": 3, "B": 3},
                         grace=1, rf=3, max_t=4)


@pytest.mark.parametrize("rule", ["halving", "asha"])
def test_weak_trial_in_cell_a_is_not_stopped_by_strong_trials_in_cell_b(rule):
    s = _sched(rule)
    for i, acc in enumerate([0.95, 0.96, 0.97]):
        s.on_trial_result(None, _trial(f"b{i}", "B"), {M.EPOCH: 1, M.VAL_ACC: acc})
    assert s.on_trial_result(None, _trial("a0", "A"), {M.EPOCH: 1, M.VAL_ACC: 0.2}) == CONT
    assert s.on_trial_result(None, _trial("a0", "A"), {M.EPOCH: 3, M.VAL_ACC: 0.25}) == CONT
    # the same weak score in cell B (behind 3 trials there) is stopped
    assert s.on_trial_result(None, _trial("b3", "B"), {M.EPOCH: 1, M.VAL_ACC: 0.2}) == STOP


def test_halving_in_a_cell_and_confirm_trials_never_stop():
    s = _sched("halving")
    assert s.on_trial_result(None, _trial("a0", "A"), {M.EPOCH: 1, M.VAL_ACC: 0.5}) == CONT
    assert s.on_trial_result(None, _trial("a1", "A"), {M.EPOCH: 1, M.VAL_ACC: 0.6}) == CONT
    # a0 is now behind 1 trial, keep[0] = 1: it stops at its next result
    assert s.on_trial_result(None, _trial("a0", "A"), {M.EPOCH: 2, M.VAL_ACC: 0.55}) == STOP
    assert s.on_trial_result(None, _trial("c0", "A", M.PHASE_CONFIRM),
                             {M.EPOCH: 1, M.VAL_ACC: 0.0}) == CONT


def test_rung_state_round_trip_and_mismatch():
    s = _sched("halving")
    s.on_trial_result(None, _trial("a0", "A"), {M.EPOCH: 1, M.VAL_ACC: 0.9})
    state = s.state()
    resumed = _sched("halving")
    resumed.load_state(state)
    assert resumed.state() == state
    # a weak newcomer is stopped only because the restored records came back
    assert resumed.on_trial_result(None, _trial("a1", "A"), {M.EPOCH: 1, M.VAL_ACC: 0.1}) == STOP
    assert _sched("halving").on_trial_result(None, _trial("a1", "A"),
                                             {M.EPOCH: 1, M.VAL_ACC: 0.1}) == CONT
    with pytest.raises(ValueError, match="do not match"):
        _sched("asha").load_state(state)
