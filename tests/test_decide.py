"""study.core.decide: the searcher's decisions as pure functions on plain data (no Tune)."""
import copy

from study.core import decide
from study.core import metrics as M
from study.core.design import design_of
from study.core.spec import load_spec_dict

from test_design_rules import SPEC


def _cfg(cell, i=0):
    return {M.CELL: cell, "i": i}


def test_pick_orders_the_work():
    q = [_cfg("a", 0), _cfg("b", 0), _cfg("a", 1), _cfg("b", 1), _cfg("c", 0)]
    every = lambda cfg: True  # noqa: E731
    # critical path first: the dearest cell's trials together
    costs = {"a": 1.0, "b": 3.0, "c": 2.0}
    assert decide.pick(q, every, kind="tune", mode="compare", costs=costs, round_robin=False,
                       epoch_s={}) == 1
    # round robin: the cells with the most trials left, then the longest epochs measured
    assert decide.pick(q, every, kind="tune", mode="compare", costs=None, round_robin=True,
                       epoch_s={"a": 1.0, "b": 2.0}) == 1
    # a config whose source model is not ready waits; confirmations longest cell first
    assert decide.pick(q, lambda c: c[M.CELL] != "b", kind="confirm", mode="compare",
                       costs=costs, round_robin=False, epoch_s={}) == 4
    assert decide.pick(q, lambda c: False, kind="tune", mode="compare", costs=costs,
                       round_robin=False, epoch_s={}) is None
    assert decide.pick(q, every, kind="other", mode="best", costs=costs, round_robin=False,
                       epoch_s={}) == 0


def test_confirmation_waits_for_the_best_or_starts_beside_the_only_possible_one():
    cfg = {M.LR: 0.1}
    done = {"t1": ((0.7, 0.6, 5.0), {M.LR: 0.1}), "t2": ((0.8, 0.5, 6.0), {M.LR: 0.2})}
    assert decide.confirmation(done, [], 2) == ("best", {M.LR: 0.2}, 6.0)  # by validation
    assert decide.confirmation({"t1": done["t1"]}, ["t2"], 2) is None  # t1 completed: wait
    stopped = {"t1": (None, cfg), "t2": (None, cfg)}
    assert decide.confirmation(stopped, ["t3"], 3) == ("early", "t3")
    assert decide.confirmation(stopped, [], 2) == ("none",)


def test_racing_seeds_bring_every_open_cell_to_the_next_level():
    spec = load_spec_dict({**copy.deepcopy(SPEC), "confirm": {"seeds": 2, "max_seeds": 4}})
    d = design_of(spec)
    (group, cells), = d.answer_groups.items()
    flops = {c: 10.0 - i for i, c in enumerate(cells)}
    asked = {c: {7, 8, 9} for c in cells}
    # level 2: no bounds yet worth a decision at these spreads: every depth gets seed 10
    runs = {c: {8: 0.70 + 0.01 * i, 9: 0.60 + 0.02 * i} for i, c in enumerate(cells)}
    assert decide.racing_seeds(d, group, set(cells), runs, flops, asked) == {c: [10] for c in cells}
    # a cell that skipped a level catches up: it gets every seed it lacks up to the next one
    asked[cells[0]] |= {10}
    asked[cells[1]] |= {10}
    runs[cells[0]][10], runs[cells[1]][10] = 0.66, 0.67
    add = decide.racing_seeds(d, group, set(cells), runs, flops, asked)
    assert add[cells[2]] == [10, 11] and add[cells[0]] == [11]
    # at the ceiling (4 runs): nothing more
    full = {c: {7, 8, 9, 10, 11} for c in cells}
    assert decide.racing_seeds(d, group, set(cells), {c: {8: .7, 9: .6, 10: .65, 11: .6}
                                                      for c in cells}, flops, full) == {}
