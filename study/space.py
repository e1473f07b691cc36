"""The search space: split x backbone x init x frozen depth (per backbone) x learning rate.

Frozen depth is conditional: each backbone has its own range (``frozen_depth__<backbone>`` in
Optuna's parameter names, copied to ``frozen_depth`` in the trial config), and init ``scratch``
trains every stage (depth 0, not sampled). Init ``imagenet`` is only paired with backbones that
have ImageNet weights.
"""
from __future__ import annotations

import itertools
import pickle

from ray.tune.search import Searcher

from study.spec import Spec, load_spec_dict
from trainables import metrics as M
from trainables.backbones import REGISTRY


def valid_inits(spec: Spec, backbone: str) -> list[str]:
    return [i for i in spec.inits if i != "imagenet" or REGISTRY[backbone].imagenet_weights]


class DefineByRun:
    """Optuna define-by-run space (a picklable callable, so Tune can checkpoint the searcher)."""

    def __init__(self, spec_dict: dict):
        self.spec = load_spec_dict(spec_dict)  # validated once, not per sample

    def __call__(self, trial):
        spec = self.spec
        split = trial.suggest_categorical(M.SPLIT, [s.name for s in spec.splits])
        # Backbones with no valid init (scratch_cnn when inits is only 'imagenet') are not sampled.
        backbone = trial.suggest_categorical(
            M.BACKBONE, [b.name for b in spec.backbones if valid_inits(spec, b.name)])
        inits = valid_inits(spec, backbone)
        # One categorical per backbone: Optuna's distributions must not change between trials.
        init = trial.suggest_categorical(f"{M.INIT}__{backbone}", inits) if len(inits) > 1 else inits[0]
        if init == "scratch":
            depth = 0
        else:
            lo, hi = spec.backbone(backbone).frozen_depth
            depth = trial.suggest_int(f"{M.FROZEN_DEPTH}__{backbone}", lo, hi) if hi > lo else lo
        trial.suggest_float(M.LR, spec.lr.low, spec.lr.high, log=True)
        return {M.INIT: init, M.FROZEN_DEPTH: depth, M.SEED: spec.search.seed}


def grid_points(spec: Spec) -> list[dict]:
    """Every (split, backbone, init, depth, lr) combination, for search.algorithm 'grid'."""
    points = []
    for s, b in itertools.product(spec.splits, spec.backbones):
        for init in valid_inits(spec, b.name):
            depths = [0] if init == "scratch" else range(b.frozen_depth[0], b.frozen_depth[1] + 1)
            for d, lr in itertools.product(depths, spec.lr.grid):
                points.append({M.SPLIT: s.name, M.BACKBONE: b.name, M.INIT: init,
                               M.FROZEN_DEPTH: d, M.LR: lr})
    return points


class PointsSearcher(Searcher):
    """Hands out a fixed list of configs in order (grid search over a conditional space, which
    neither Tune's grid_search nor Optuna's GridSampler can express)."""

    def __init__(self, points: list[dict]):
        super().__init__(metric=M.OBJECTIVE, mode=M.MODE)
        self.points = [dict(p) for p in points]
        self.next_index = 0

    def suggest(self, trial_id: str):
        if self.next_index >= len(self.points):
            return Searcher.FINISHED
        self.next_index += 1
        return dict(self.points[self.next_index - 1])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.points, self.next_index), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.points, self.next_index = pickle.load(f)


def make_searcher(spec: Spec):
    """(search algorithm, num_samples) for the Tuner."""
    from ray.tune.search import Repeater

    if spec.search.algorithm == "grid":
        # repeats of a point get consecutive seeds
        points = [{**p, M.SEED: spec.search.seed + r}
                  for r in range(spec.search.repeats) for p in grid_points(spec)]
        return PointsSearcher(points), len(points)

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = (optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=min(
        10, max(2, spec.search.num_samples // 3))) if spec.search.algorithm == "tpe"
        else optuna.samplers.RandomSampler(seed=spec.search.seed))
    searcher = OptunaSearch(space=DefineByRun(spec.to_dict()), sampler=sampler,
                            metric=M.OBJECTIVE, mode=M.MODE)
    if spec.search.repeats > 1:
        # Repeater runs each sampled config `repeats` times (config[REPEAT] = 0..repeats-1; the
        # trainable's seed = search.seed + REPEAT) and reports their mean to the searcher.
        searcher = Repeater(searcher, repeat=spec.search.repeats, set_index=True)
    return searcher, spec.search.num_samples * spec.search.repeats
