"""Cells: the conditions a study compares, and the trials that answer for each one.

A **cell** is one (split, backbone, init, frozen depth): a split is a different task, and
backbone, init and depth are what the reports compare. What is tuned *inside* a cell (the
learning rate) is the cell's search space. Plain data and pure functions (no torch, no Ray):
``study plan``, the searcher, the scheduler and the tests all read the same lists.

* Every valid combination is a cell: each backbone's depths (``frozen_depth: [lo, hi]`` or an
  explicit ``depths: [0, 2, 4]``), init ``scratch`` only at depth 0 (it trains every stage),
  ``imagenet`` only for backbones with ImageNet weights.
* Mode ``compare``: each cell gets ``trials_per_cell`` tuning trials (one per ``lr.grid`` value
  for grid search); the cell's best completed one is then retrained with ``confirm.seeds`` more
  seeds. Mode ``best``: one search per split over (backbone, init, depth, lr), then the split's
  best configuration is retrained with ``confirm.seeds`` more seeds.
* Learning rates inside a cell (``search.algorithm: qmc``, the default) are stratified on the
  log scale: the range is cut into n equal log-intervals and one point is drawn uniformly in each
  (a 1-D Latin hypercube), so n samples never leave a gap wider than two intervals; ``random``
  draws them i.i.d. log-uniform. Both are seeded by (study seed, cell id) and shuffled, so the
  arrival order inside a cell carries no lr trend.
"""
from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from study.core.spec import Spec, resolve_stem
from study.core import metrics as M
from study.core.catalog import CATALOG


@dataclasses.dataclass(frozen=True)
class Cell:
    split: str
    backbone: str
    init: str
    depth: int
    stem: str

    @property
    def id(self) -> str:
        return cell_id(self.split, self.backbone, self.init, self.depth)

    @property
    def needs_source(self) -> bool:
        return self.init == "source"


def cell_id(split, backbone, init, depth) -> str:
    return f"{split}/{backbone}/{init}/d{depth}"


def valid_inits(spec: Spec, backbone: str) -> list[str]:
    return [i for i in spec.inits if i != "imagenet" or CATALOG[backbone].imagenet_weights]


def cells(spec: Spec, split: str | None = None) -> list[Cell]:
    """Every cell of the spec, in spec order (split, backbone, init, depth)."""
    out = []
    for s in spec.splits:
        if split is not None and s.name != split:
            continue
        for b in spec.backbones:
            for init in valid_inits(spec, b.name):
                depths = [0] if init == "scratch" else b.depth_list()
                for d in depths:
                    out.append(Cell(s.name, b.name, init, d, resolve_stem(spec, b.name, init)))
    return out


def cell_of(spec: Spec, cfg: dict) -> Cell:
    init = cfg[M.INIT]
    depth = 0 if init == "scratch" else int(cfg[M.FROZEN_DEPTH])
    return Cell(cfg[M.SPLIT], cfg[M.BACKBONE], init, depth, resolve_stem(spec, cfg[M.BACKBONE], init))


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def lr_samples(spec: Spec, key: str, n: int) -> list[float]:
    """n learning rates for one cell (see the module docstring), deterministic in
    (search.seed, key)."""
    if spec.search.algorithm == "grid":
        return list(spec.lr.grid)
    lo, hi = math.log(spec.lr.low), math.log(spec.lr.high)
    rng = _rng(spec.search.seed, key)
    if spec.search.algorithm == "random":
        u = rng.random(n)
    else:  # qmc: one point per equal log-interval
        u = (np.arange(n) + rng.random(n)) / n
        rng.shuffle(u)
    return [float(math.exp(lo + x * (hi - lo))) for x in u]


def trials_per_cell(spec: Spec) -> int:
    return len(spec.lr.grid) if spec.search.algorithm == "grid" else spec.search.trials_per_cell


def config(cell: Cell, lr: float, seed: int, phase: str) -> dict:
    """A trial's config: what the trainable needs to know about its cell, lr, seed and phase."""
    return {M.SPLIT: cell.split, M.BACKBONE: cell.backbone, M.INIT: cell.init,
            M.FROZEN_DEPTH: cell.depth, M.LR: lr, M.SEED: seed, M.CELL: cell.id, M.PHASE: phase}


def tuning_configs(spec: Spec) -> list[dict]:
    """Mode compare: every cell's tuning trials, interleaved round-robin across cells (each
    cell's first sample, then each cell's second, ...), so every cell gets its first completed
    run early and a time budget cuts all cells alike. All use the study seed (one source model
    per split x backbone x stem)."""
    per_cell = [[config(c, lr, spec.search.seed, M.PHASE_TUNE)
                 for lr in lr_samples(spec, c.id, trials_per_cell(spec))] for c in cells(spec)]
    out = []
    for i in range(max((len(p) for p in per_cell), default=0)):
        out.extend(p[i] for p in per_cell if i < len(p))
    return out


def confirm_configs(spec: Spec, best: dict) -> list[dict]:
    """The best configuration of a cell (mode best: of a split) again, with seeds study seed +
    1 .. + confirm.seeds. A seed changes the source model (it is trained with that seed), the
    new head's initialisation, the data order and the augmentation draws."""
    c = cell_of(spec, best)
    return [config(c, float(best[M.LR]), spec.search.seed + i, M.PHASE_CONFIRM)
            for i in range(1, spec.confirm.seeds + 1)]


def group_of(spec: Spec, cfg: dict) -> str:
    """What a trial is compared with when stopping early and when choosing the best: its cell
    (mode compare) or its split (mode best). Never across splits."""
    return cfg[M.CELL] if spec.search.mode == "compare" else cfg[M.SPLIT]


def group_sizes(spec: Spec) -> dict[str, int]:
    """Tuning trials per group (successive halving needs to know how many will arrive)."""
    if spec.search.mode == "compare":
        return {c.id: trials_per_cell(spec) for c in cells(spec)}
    n = (len(best_grid(spec)) if spec.search.algorithm == "grid" else spec.search.num_samples)
    return {s.name: n * spec.search.repeats if spec.search.algorithm != "grid"
            else len([p for p in best_grid(spec) if p[M.SPLIT] == s.name]) * spec.search.repeats
            for s in spec.splits}


def best_grid(spec: Spec) -> list[dict]:
    """Mode best, grid search: every (cell, lr.grid value)."""
    return [config(c, lr, spec.search.seed, M.PHASE_TUNE) for c in cells(spec)
            for lr in spec.lr.grid]


def trial_counts(spec: Spec) -> dict:
    """Trials a study will run: tuning + confirmation (the latter once per cell / split)."""
    groups = group_sizes(spec)
    tuning = sum(groups.values())
    confirm = len(groups) * spec.confirm.seeds
    return {"cells": len(cells(spec)), "groups": len(groups), "tuning": tuning,
            "confirm": confirm, "total": tuning + confirm}
