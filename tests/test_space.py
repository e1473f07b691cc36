"""The search space: grid points, the Optuna define-by-run space, and make_searcher."""
import copy
import itertools
import pickle
from collections import Counter

import optuna
import pytest

from study.space import DefineByRun, PointsSearcher, grid_points, make_searcher, valid_inits
from study.spec import load_spec_dict
from trainables import metrics as M

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR_GRID = [0.003, 0.03, 0.3]
SPACE = {
    "name": "space",
    "splits": [{"name": "ab", "source": ["a", "b"], "target": ["c"]},
               {"name": "ba", "source": ["c"], "target": ["a", "b"]}],
    "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]},
                  "resnet18": {"frozen_depth": [1, 3]},
                  "mobilenet_v2": {"frozen_depth": [2, 2]}},
    "inits": ["source", "imagenet", "scratch"],
    "lr": {"low": 0.003, "high": 0.3, "grid": LR_GRID},
    "search": {"algorithm": "tpe", "num_samples": 7, "seed": 3},
}


def spec_with(**changes):
    d = copy.deepcopy(SPACE)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return load_spec_dict(d)


# ----------------------------------------------------------------------------- grid points

def test_valid_inits_drop_imagenet_without_weights():
    spec = spec_with()
    assert valid_inits(spec, "scratch_cnn") == ["source", "scratch"]
    assert valid_inits(spec, "resnet18") == ["source", "imagenet", "scratch"]


def test_grid_point_count_is_the_product():
    points = grid_points(spec_with())
    # per split: scratch_cnn (5 source depths + 1 scratch; no ImageNet weights)
    #          + resnet18 (3 source + 3 imagenet depths + 1 scratch)
    #          + mobilenet_v2 (1 source + 1 imagenet + 1 scratch)
    per_split = (5 + 1) + (3 + 3 + 1) + (1 + 1 + 1)
    assert len(points) == 2 * per_split * len(LR_GRID) == 96
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)  # no duplicates


def test_grid_point_count_without_scratch_or_imagenet():
    points = grid_points(spec_with(inits=["source"]))
    assert len(points) == 2 * (5 + 3 + 1) * len(LR_GRID)
    assert {p[M.INIT] for p in points} == {"source"}


def test_grid_points_respect_the_space():
    spec = spec_with()
    points = grid_points(spec)
    assert all(set(p) == {M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR} for p in points)
    for p in points:
        lo, hi = spec.backbone(p[M.BACKBONE]).frozen_depth
        if p[M.INIT] == "scratch":
            assert p[M.FROZEN_DEPTH] == 0
        else:
            assert lo <= p[M.FROZEN_DEPTH] <= hi
    assert not any(p[M.BACKBONE] == "scratch_cnn" and p[M.INIT] == "imagenet" for p in points)
    assert Counter(p[M.LR] for p in points) == {lr: 32 for lr in LR_GRID}
    assert {p[M.SPLIT] for p in points} == {"ab", "ba"}
    r18 = {(p[M.INIT], p[M.FROZEN_DEPTH]) for p in points if p[M.BACKBONE] == "resnet18"}
    assert r18 == {("source", 1), ("source", 2), ("source", 3), ("imagenet", 1),
                   ("imagenet", 2), ("imagenet", 3), ("scratch", 0)}


def test_grid_points_empty_without_lr_grid():
    assert grid_points(spec_with(lr={"grid": []})) == []


# ----------------------------------------------------------------------------- define-by-run

def sample(space: DefineByRun, n: int, sampler) -> list[tuple[dict, dict]]:
    """(trial params, returned constants) for n trials of a real Optuna study."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        consts = space(trial)
        out.append((dict(trial.params), consts))
        study.tell(trial, (i % 7) / 7)
    return out


@pytest.fixture(scope="module")
def random_samples():
    spec = spec_with()
    return spec, sample(DefineByRun(spec.to_dict()), 200, optuna.samplers.RandomSampler(seed=0))


def test_define_by_run_samples_stay_in_the_space(random_samples):
    spec, samples = random_samples
    for params, consts in samples:
        assert set(consts) == {M.INIT, M.FROZEN_DEPTH, M.SEED}
        assert consts[M.SEED] == spec.search.seed == 3
        backbone, init, depth = params[M.BACKBONE], consts[M.INIT], consts[M.FROZEN_DEPTH]
        assert init in valid_inits(spec, backbone)
        if init == "scratch":
            assert depth == 0
        else:
            lo, hi = spec.backbone(backbone).frozen_depth
            assert lo <= depth <= hi
            if hi > lo:  # sampled under the backbone's own name, copied to frozen_depth
                assert params[f"{M.FROZEN_DEPTH}__{backbone}"] == depth
        assert spec.lr.low <= params[M.LR] <= spec.lr.high
        # only this backbone's conditional parameters are in the trial
        others = [b.name for b in spec.backbones if b.name != backbone]
        assert not any(k.endswith(f"__{o}") for k in params for o in others)


def test_define_by_run_covers_the_space(random_samples):
    spec, samples = random_samples
    assert {p[M.SPLIT] for p, _ in samples} == {"ab", "ba"}
    assert {p[M.BACKBONE] for p, _ in samples} == {"scratch_cnn", "resnet18", "mobilenet_v2"}
    combos = {(p[M.BACKBONE], c[M.INIT]) for p, c in samples}
    assert combos == {("scratch_cnn", "source"), ("scratch_cnn", "scratch"),
                      ("resnet18", "source"), ("resnet18", "imagenet"), ("resnet18", "scratch"),
                      ("mobilenet_v2", "source"), ("mobilenet_v2", "imagenet"),
                      ("mobilenet_v2", "scratch")}
    depths = {(p[M.BACKBONE], c[M.FROZEN_DEPTH]) for p, c in samples if c[M.INIT] != "scratch"}
    assert {d for b, d in depths if b == "scratch_cnn"} == {0, 1, 2, 3, 4}
    assert {d for b, d in depths if b == "resnet18"} == {1, 2, 3}
    assert {d for b, d in depths if b == "mobilenet_v2"} == {2}
    # mobilenet_v2's single depth is a constant, not a parameter
    assert not any(f"{M.FROZEN_DEPTH}__mobilenet_v2" in p for p, _ in samples)
    lrs = [p[M.LR] for p, _ in samples]
    assert min(lrs) < 0.01 and max(lrs) > 0.1  # log-uniform reaches both decades


def test_define_by_run_with_tpe():
    # TPE models each parameter's distribution across trials: the conditional space must keep
    # them fixed (one categorical/int per backbone) or Optuna raises.
    spec = spec_with()
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    samples = sample(DefineByRun(spec.to_dict()), 40, sampler)
    for params, consts in samples:
        assert consts[M.INIT] in valid_inits(spec, params[M.BACKBONE])
        if consts[M.INIT] == "scratch":
            assert consts[M.FROZEN_DEPTH] == 0


def test_define_by_run_never_picks_a_backbone_without_valid_inits():
    # inits only 'imagenet': scratch_cnn (no ImageNet weights) must not be sampled at all
    spec = spec_with(inits=["imagenet"])
    assert valid_inits(spec, "scratch_cnn") == []
    samples = sample(DefineByRun(spec.to_dict()), 60, optuna.samplers.RandomSampler(seed=1))
    assert {p[M.BACKBONE] for p, _ in samples} == {"resnet18", "mobilenet_v2"}
    assert {c[M.INIT] for _, c in samples} == {"imagenet"}
    assert not any(p[M.BACKBONE] == "scratch_cnn" for p in grid_points(spec))


def test_define_by_run_pickles():
    spec = spec_with()
    space = DefineByRun(spec.to_dict())
    clone = pickle.loads(pickle.dumps(space))
    assert clone.spec == space.spec
    a = sample(space, 15, optuna.samplers.RandomSampler(seed=5))
    b = sample(clone, 15, optuna.samplers.RandomSampler(seed=5))
    assert a == b


# ----------------------------------------------------------------------------- make_searcher

def test_make_searcher_tpe():
    from ray.tune.search.optuna import OptunaSearch

    searcher, n = make_searcher(spec_with())
    assert isinstance(searcher, OptunaSearch)
    assert n == 7
    assert searcher.metric == M.OBJECTIVE and searcher.mode == M.MODE
    cfg = searcher.suggest("t0")
    assert cfg[M.SPLIT] in ("ab", "ba") and cfg[M.SEED] == 3
    assert cfg[M.INIT] in valid_inits(spec_with(), cfg[M.BACKBONE])


def test_make_searcher_random_with_repeats():
    from ray.tune.search import Repeater

    searcher, n = make_searcher(spec_with(search={"algorithm": "random", "repeats": 3}))
    assert isinstance(searcher, Repeater)
    assert n == 7 * 3
    cfgs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [c[M.REPEAT] for c in cfgs] == [0, 1, 2, 0, 1, 2]
    strip = [{k: v for k, v in c.items() if k != M.REPEAT} for c in cfgs]
    assert strip[0] == strip[1] == strip[2]  # one sampled config, three repeats
    assert strip[3] == strip[4] == strip[5]


def test_make_searcher_tpe_repeats_multiplies_num_samples():
    searcher, n = make_searcher(spec_with(search={"num_samples": 4, "repeats": 5}))
    assert n == 20


@pytest.mark.parametrize("repeats", [1, 3])
def test_make_searcher_grid_seeds_consecutive_per_repeat(repeats):
    spec = spec_with(search={"algorithm": "grid", "repeats": repeats, "seed": 7})
    searcher, n = make_searcher(spec)
    assert isinstance(searcher, PointsSearcher)
    base = grid_points(spec)
    assert n == len(base) * repeats == 96 * repeats
    assert len(searcher.points) == n
    for r in range(repeats):
        block = searcher.points[r * len(base):(r + 1) * len(base)]
        assert {p[M.SEED] for p in block} == {7 + r}
        assert [{k: v for k, v in p.items() if k != M.SEED} for p in block] == base


def test_points_searcher_hands_out_points_then_finishes(tmp_path):
    from ray.tune.search import Searcher

    spec = spec_with(inits=["source"], lr={"grid": [0.01]},
                     search={"algorithm": "grid", "repeats": 2})
    searcher, n = make_searcher(spec)
    assert n == 2 * (5 + 3 + 1) * 2
    got = [searcher.suggest(f"t{i}") for i in range(3)]
    assert got == searcher.points[:3]
    got[0][M.LR] = 99  # callers own their copy
    assert searcher.points[0][M.LR] == 0.01

    ckpt = tmp_path / "searcher.pkl"
    searcher.save(str(ckpt))
    restored, _ = make_searcher(spec)
    restored.restore(str(ckpt))
    rest = list(itertools.takewhile(lambda c: c != Searcher.FINISHED,
                                    (restored.suggest(f"r{i}") for i in range(n + 5))))
    assert rest == searcher.points[3:]
    assert restored.suggest("again") == Searcher.FINISHED
