"""Cells, the samples inside them, and the study searcher (tuning, then confirmation seeds),
driven by hand without Ray."""
import copy
import math
import pickle

import optuna
from ray.tune.search import Searcher

from study.core.design import StudyDesign, cell_id
from study.space import DefineByRun, StudySearcher
from study.core.spec import load_spec_dict
from study.core import metrics as M

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "name": "space",
    "splits": [{"name": "ab", "source": ["a", "b"], "target": ["c"]},
               {"name": "ba", "source": ["c"], "target": ["a", "b"]}],
    "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]},
                  "resnet18": {"depths": [1, 3]},
                  "mobilenet_v2": {"frozen_depth": [2, 2]}},
    "inits": ["source", "imagenet", "scratch"],
    "lr": {"low": 0.003, "high": 0.3, "grid": [0.003, 0.03, 0.3]},
    "target_epochs": 3,
    "search": {"trials_per_cell": 4, "seed": 3},
    "confirm": {"seeds": 2},
}


def spec_with(**changes):
    d = copy.deepcopy(SPACE)
    for k, v in changes.items():
        d[k] = {**d[k], **v} if k in ("search", "confirm") else v  # sections merge, rest replaced
    return load_spec_dict(d)


def test_cells_are_every_valid_combination():
    spec = spec_with()
    ids = [c.id for c in StudyDesign(spec).cells]
    # per split: scratch_cnn 5 source depths + scratch (no ImageNet weights); resnet18 2 source +
    # 2 imagenet depths + scratch; mobilenet_v2 1 + 1 + scratch
    assert len(ids) == 2 * ((5 + 1) + (2 + 2 + 1) + (1 + 1 + 1)) == len(set(ids))
    assert "ab/scratch_cnn/scratch/d0" in ids and "ab/scratch_cnn/imagenet/d0" not in ids
    assert "ba/resnet18/imagenet/d3" in ids and "ba/resnet18/source/d2" not in ids
    assert all(c.depth == 0 for c in StudyDesign(spec).cells if c.init == "scratch")
    stems = {(c.backbone, c.init): c.stem for c in StudyDesign(spec).cells}
    assert stems[("resnet18", "imagenet")] == "imagenet" and stems[("resnet18", "source")] == "cifar"


def test_qmc_samples_cover_the_log_range_deterministically():
    spec = spec_with()
    lrs = StudyDesign(spec).lr_samples("ab/resnet18/source/d1", 4)
    assert lrs == StudyDesign(spec_with()).lr_samples("ab/resnet18/source/d1", 4)  # seeded
    assert lrs != StudyDesign(spec).lr_samples("ab/resnet18/source/d3", 4)  # per cell
    u = sorted((math.log(x) - math.log(0.003)) / (math.log(0.3) - math.log(0.003)) for x in lrs)
    assert [int(x * 4) for x in u] == [0, 1, 2, 3]  # one sample in each quarter of the range
    assert StudyDesign(spec_with(search={"algorithm": "grid"})).lr_samples("x", 4) == [0.003, 0.03, 0.3]


def test_tuning_configs_interleave_cells_and_carry_cell_and_phase():
    spec = spec_with()
    cfgs = StudyDesign(spec).tuning_configs()
    n_cells = len(StudyDesign(spec).cells)
    assert len(cfgs) == 4 * n_cells
    assert len({c[M.CELL] for c in cfgs[:n_cells]}) == n_cells  # every cell once, then again
    for c in cfgs:
        assert c[M.PHASE] == M.PHASE_TUNE and c[M.SEED] == 3
        assert c[M.CELL] == cell_id(c[M.SPLIT], c[M.BACKBONE], c[M.INIT], c[M.FROZEN_DEPTH])
    assert StudyDesign(spec).trial_counts() == {
        "cells": n_cells, "groups": n_cells, "tuning": 4 * n_cells, "confirm": 2 * n_cells,
        "confirm_max": 2 * n_cells, "total": 6 * n_cells, "total_max": 6 * n_cells}


def _drive(searcher, score, order=None, stop_at=None, prefix="t"):
    """Run a searcher to the end: every suggested trial completes at once (or is 'stopped' at
    epoch 1 when stop_at(cfg)), scored by score(cfg). Returns the configs in suggestion order."""
    out, i = [], 0
    while True:
        tid = f"{prefix}{i}"
        cfg = searcher.suggest(tid)
        if cfg is Searcher.FINISHED:
            return out
        assert cfg is not None, "nothing live, yet the searcher waits"
        i += 1
        out.append(cfg)
        epochs = 1 if stop_at and stop_at(cfg) else 3
        searcher.on_trial_complete(tid, {M.EPOCH: epochs, M.VAL_ACC: score(cfg), "config": cfg})


def test_searcher_tunes_every_cell_then_confirms_its_best_lr():
    spec = spec_with(backbones={"scratch_cnn": {"depths": [0, 4]}}, inits=["source"],
                     splits=[SPACE["splits"][0]])
    s = StudySearcher(spec.to_dict())
    # the best lr of a cell is the one closest to 0.03; stopped trials never count
    score = lambda c: -abs(math.log(c[M.LR] / 0.03))  # noqa: E731
    cfgs = _drive(s, score, stop_at=lambda c: c[M.LR] > 0.2)
    tune = [c for c in cfgs if c[M.PHASE] == M.PHASE_TUNE]
    confirm = [c for c in cfgs if c[M.PHASE] == M.PHASE_CONFIRM]
    assert len(tune) == 8 and len(confirm) == 4
    for cell in ("ab/scratch_cnn/source/d0", "ab/scratch_cnn/source/d4"):
        completed = [c for c in tune if c[M.CELL] == cell and c[M.LR] <= 0.2]
        best = max(completed, key=score)
        got = [c for c in confirm if c[M.CELL] == cell]
        assert [c[M.SEED] for c in got] == [4, 5] and {c[M.LR] for c in got} == {best[M.LR]}


def test_searcher_waits_while_a_cell_is_still_tuning_and_resumes_from_its_state(tmp_path):
    spec = spec_with(backbones={"scratch_cnn": {"depths": [2]}}, inits=["source"],
                     splits=[SPACE["splits"][0]], search={"trials_per_cell": 2})
    s = StudySearcher(spec.to_dict())
    a, b = s.suggest("a"), s.suggest("b")
    assert a[M.PHASE] == b[M.PHASE] == M.PHASE_TUNE
    assert s.suggest("c") is None  # confirmation needs the cell's tuning to end
    s.on_trial_complete("a", {M.EPOCH: 3, M.VAL_ACC: 0.9})
    assert s.suggest("c") is None
    s.on_trial_complete("b", {M.EPOCH: 3, M.VAL_ACC: 0.5})
    s.save(str(tmp_path / "searcher.pkl"))
    resumed = StudySearcher(spec.to_dict())
    resumed.restore(str(tmp_path / "searcher.pkl"))
    for x in (s, resumed):
        c1 = x.suggest("c1")
        assert c1[M.PHASE] == M.PHASE_CONFIRM and c1[M.LR] == a[M.LR]
    assert pickle.loads(pickle.dumps(resumed)).confirm_queue == resumed.confirm_queue


def test_restored_searcher_reconciles_with_the_trials_tune_restores(tmp_path):
    """The searcher's file and Tune's experiment state can be one save apart on resume: a
    trial Tune lost is handed out again, one the searcher had not handed out is adopted."""
    spec = spec_with(backbones={"scratch_cnn": {"depths": [2]}}, inits=["source"],
                     splits=[SPACE["splits"][0]], search={"trials_per_cell": 3})
    s = StudySearcher(spec.to_dict())
    a, b = s.suggest("a"), s.suggest("b")
    s.save(str(tmp_path / "searcher.pkl"))
    c = s.suggest("c")  # after the save: the searcher's file does not know c
    # Tune's state knows a (ended) and c (running), not b (lost with the driver)
    known = {"a": {"config": a, "status": "TERMINATED", "last_result": {M.EPOCH: 3, M.VAL_ACC: 0.9}},
             "c": {"config": c, "status": "RUNNING", "last_result": {}}}
    r = StudySearcher(spec.to_dict())
    r.restore(str(tmp_path / "searcher.pkl"))
    requeued, adopted = r.reconcile(known)
    assert requeued == ["b"] and adopted == ["c"]  # a was handed out before the save: known
    assert r.suggest("b2") == b  # b's configuration again, first
    assert r.suggest("x") is None  # nothing else left: c is not handed out twice
    assert r.live == {"b2", "c"}  # a ended in Tune's state after the searcher's save
    r.on_trial_complete("c", {M.EPOCH: 3, M.VAL_ACC: 0.5})
    r.on_trial_complete("b2", {M.EPOCH: 3, M.VAL_ACC: 0.4})
    assert r.suggest("conf")[M.PHASE] == M.PHASE_CONFIRM  # the cell's tuning is complete


def test_searcher_holds_back_trials_whose_source_is_not_ready():
    spec = spec_with(backbones={"scratch_cnn": {"depths": [0]}}, splits=[SPACE["splits"][0]],
                     inits=["source", "scratch"], search={"trials_per_cell": 1})
    s = StudySearcher(spec.to_dict())
    s.ready = lambda cfg: cfg[M.INIT] != "source"
    assert s.suggest("x")[M.INIT] == "scratch"
    assert s.suggest("y") is None
    s.ready = lambda cfg: True
    assert s.suggest("y")[M.INIT] == "source"


def test_searcher_goes_round_by_round_slowest_measured_cells_first():
    spec = spec_with(backbones={"scratch_cnn": {"depths": [0, 2, 4]}}, inits=["source"],
                     splits=[SPACE["splits"][0]], search={"trials_per_cell": 2})
    s = StudySearcher(spec.to_dict())
    first = [s.suggest(f"a{i}") for i in range(3)]
    assert [c[M.CELL] for c in first] == [c.id for c in StudyDesign(spec).cells]  # round 1: queue order
    slow = {"ab/scratch_cnn/source/d0": 3.0, "ab/scratch_cnn/source/d2": 9.0,
            "ab/scratch_cnn/source/d4": 1.0}
    for i, c in enumerate(first):
        s.on_trial_result(f"a{i}", {M.EPOCH: 1, M.EPOCH_S: slow[c[M.CELL]]})
    second = [s.suggest(f"b{i}")[M.CELL] for i in range(3)]
    assert second == sorted(slow, key=slow.get, reverse=True)  # longest epochs first
    assert s.suggest("c") is None  # confirmations wait for each cell's tuning to end


def test_with_costs_the_longest_cells_go_first_and_a_time_budget_keeps_the_rounds():
    spec = spec_with(backbones={"scratch_cnn": {"depths": [0, 2, 4]}}, inits=["source"],
                     splits=[SPACE["splits"][0]], search={"trials_per_cell": 2})
    cells = [c.id for c in StudyDesign(spec).cells]
    costs = dict(zip(cells, (3.0, 9.0, 1.0)))  # d2 longest, then d0, then d4
    longest = sorted(cells, key=costs.get, reverse=True)
    s = StudySearcher(spec.to_dict(), costs=costs)
    got = [s.suggest(f"a{i}")[M.CELL] for i in range(6)]
    assert got == [c for c in longest for _ in range(2)]  # all of a cell's trials together
    for i, c in enumerate(got):  # every tuning trial completes: confirmations, longest first
        s.on_trial_complete(f"a{i}", {M.EPOCH: 3, M.VAL_ACC: 0.5 + i / 100,
                                      "config": s.configs[f"a{i}"]})
    confirm = [s.suggest(f"c{i}")[M.CELL] for i in range(6)]
    assert confirm == [c for c in longest for _ in range(2)]
    # the costs travel with the searcher (Tune saves it in every experiment checkpoint)
    assert pickle.loads(pickle.dumps(s.__getstate__()))["costs"] == costs

    budget = spec_with(backbones={"scratch_cnn": {"depths": [0, 2, 4]}}, inits=["source"],
                       splits=[SPACE["splits"][0]], search={"trials_per_cell": 2},
                       time_budget_s=60)
    s = StudySearcher(budget.to_dict(), costs=costs)
    assert [s.suggest(f"a{i}")[M.CELL] for i in range(3)] == cells  # round 1, then round 2


def test_confirmation_starts_beside_the_last_tuning_trial_once_it_is_the_only_possible_best():
    spec = spec_with(backbones={"scratch_cnn": {"depths": [0]}}, inits=["source"],
                     splits=[SPACE["splits"][0]], search={"trials_per_cell": 3},
                     confirm={"seeds": 2, "max_seeds": 3})
    s = StudySearcher(spec.to_dict())
    t = [s.suggest(f"a{i}") for i in range(3)]
    s.on_trial_complete("a0", {M.EPOCH: 1, M.VAL_ACC: 0.4, "config": t[0]})  # stopped early
    assert s.suggest("b") is None  # two still run: either may be the best
    s.on_trial_complete("a1", {M.EPOCH: 1, M.VAL_ACC: 0.3, "config": t[1]})  # stopped early
    confirm = [s.suggest(f"c{i}") for i in range(2)]  # a2 still runs: the only possible best
    assert [c[M.PHASE] for c in confirm] == [M.PHASE_CONFIRM] * 2
    assert {c[M.LR] for c in confirm} == {t[2][M.LR]}
    for i, c in enumerate(confirm):
        s.on_trial_complete(f"c{i}", {M.EPOCH: 3, M.TEST_ACC: 0.6, "config": c})
    cell = t[2][M.CELL]
    assert s.runs[cell] == {4: 0.6, 5: 0.6} and s.looks == {}  # racing waits for a2's own run
    s.on_trial_complete("a2", {M.EPOCH: 3, M.VAL_ACC: 0.7, M.TEST_ACC: 0.65,
                               M.TARGET_FLOPS: 1e9, "config": t[2]})
    # its own run selected the learning rate: it never joins the cell's runs, only its compute
    assert s.runs[cell] == {4: 0.6, 5: 0.6} and sum(s.looks.values()) == 1
    assert s.flops[cell] == 1e9


def test_source_models_are_ordered_by_the_chain_waiting_on_them():
    from study.plan import source_order
    from study.core.identity import job_id

    spec = spec_with(backbones={"scratch_cnn": {"depths": [0]}, "resnet18": {"depths": [0]}},
                     inits=["source"], splits=[SPACE["splits"][0]])
    design = StudyDesign(spec)
    jobs = design.source_jobs()  # tuning seed's first, then each confirmation seed's
    assert [j[3] for j in jobs] == [3, 3, 4, 4, 5, 5]
    cells = {c.backbone: c.id for c in design.cells}
    costs = {"cells": {cells["scratch_cnn"]: 1.0, cells["resnet18"]: 10.0},
             "sources": {job_id(j): (2.0 if j[1] == "resnet18" else 1.0) for j in jobs}}
    got = [(j[1], j[3]) for j in source_order(design, jobs, costs)]
    # resnet18's tuning-seed model waits on 2 x 10 after its 2; its confirmation seeds' on 10;
    # scratch_cnn's tuning seed: 1 + 2 x 1, confirmation seeds 1 + 1
    assert got == [("resnet18", 3), ("resnet18", 4), ("resnet18", 5),
                   ("scratch_cnn", 3), ("scratch_cnn", 4), ("scratch_cnn", 5)]
    assert sorted(source_order(design, jobs, costs)) == sorted(jobs)  # the same jobs, reordered


def test_mode_best_holds_a_proposal_until_its_source_is_ready_and_every_repeat_seed_is_known():
    from study.core.identity import source_job

    spec = spec_with(backbones={"scratch_cnn": {"depths": [0, 4]}}, splits=[SPACE["splits"][0]],
                     inits=["source", "scratch"], confirm={"seeds": 0},
                     search={"mode": "best", "algorithm": "random", "num_samples": 6,
                             "repeats": 2})
    s = StudySearcher(spec.to_dict())
    ready = {"source": False}
    s.ready = lambda cfg: ready["source"] or cfg[M.INIT] != "source"
    before, live = [], []
    while (c := s.suggest(f"t{len(before)}")) not in (None, Searcher.FINISHED):
        before.append(c)
        live.append(f"t{len(before) - 1}")
    assert all(c[M.INIT] == "scratch" for c in before)  # no trial holds a slot waiting
    ready["source"] = True
    for tid, c in zip(live, before):
        s.on_trial_complete(tid, {M.EPOCH: 3, M.VAL_ACC: 0.5, "config": c})
    after = _drive(s, lambda c: 0.5, prefix="u")
    every = before + after
    assert len([c for c in every if c[M.PHASE] == M.PHASE_TUNE]) == 6 * 2
    # every source model a trial asks for is one the runner trains up front (one per seed)
    jobs = {source_job(spec, c) for c in every} - {None}
    assert jobs and jobs <= set(StudyDesign(spec).source_jobs())
    assert sorted(j[3] for j in StudyDesign(spec).source_jobs()) == [3, 4]


def test_mode_best_searches_each_split_separately():
    spec = spec_with(search={"mode": "best", "algorithm": "tpe", "num_samples": 5},
                     confirm={"seeds": 1})
    s = StudySearcher(spec.to_dict())
    # split 'ba' scores far higher; 'ab' still gets its 5 samples and its own confirmation
    cfgs = _drive(s, lambda c: (0.9 if c[M.SPLIT] == "ba" else 0.2) + c[M.LR])
    tune = [c for c in cfgs if c[M.PHASE] == M.PHASE_TUNE]
    assert sorted(c[M.SPLIT] for c in tune) == ["ab"] * 5 + ["ba"] * 5
    confirm = [c for c in cfgs if c[M.PHASE] == M.PHASE_CONFIRM]
    assert sorted(c[M.SPLIT] for c in confirm) == ["ab", "ba"]
    for c in tune:
        assert c[M.CELL] == cell_id(c[M.SPLIT], c[M.BACKBONE], c[M.INIT], c[M.FROZEN_DEPTH])


def test_define_by_run_respects_each_backbones_depths():
    spec = spec_with(search={"mode": "best", "algorithm": "random"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = DefineByRun(spec.to_dict(), "ab")
    for _ in range(60):
        t = study.ask()
        fixed = space(t)
        b = t.params[M.BACKBONE]
        if fixed[M.INIT] != "scratch":
            assert fixed[M.FROZEN_DEPTH] in spec.backbone(b).depth_list()
        assert fixed[M.SPLIT] == "ab" and fixed[M.INIT] in StudyDesign(spec).valid_inits(b)
        study.tell(t, 0.0)
