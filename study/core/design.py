"""The study's design: one pure value built once from the spec (no torch, no Ray).

``StudyDesign(spec)`` answers every question about *what* a study runs, so the runner, the
searcher, the scheduler, ``study plan``, the progress lines and the analysis read it instead of
re-deriving it from the spec:

* **Cells** (the conditions compared): one per (split, target size, backbone, init, frozen
  depth) the spec allows: each size of ``data.target_train_per_class`` (images per target
  class; one size None when unset: every training image), each backbone's depths
  (``frozen_depth: [lo, hi]`` or ``depths: [0, 2, 4]``), init ``scratch`` only at depth 0 (it
  trains every stage), ``imagenet`` only for backbones with ImageNet weights. A cell's id is
  ``<split>/n<size>/<backbone>/<init>/d<depth>`` (``<split>/<backbone>/<init>/d<depth>`` when
  the study sets no size).
* **The training budget**: every size trains at least ``min_steps`` optimizer steps
  (``passes_per_epoch``: small sizes make each epoch several passes over their images).
* **Groups**: what early stopping and the choice of a best configuration compare within: the
  cell (mode ``compare``) or the split (mode ``best``). Never across splits.
* **Answer groups**: what the Answer compares: the depths of one (split, size, backbone,
  init) with init ``source`` or ``imagenet`` (``scratch`` is the baseline the transfer gain is
  measured against: ``baseline``). With racing and a scratch baseline, a group's racing also
  serves the transfer gain at its size (``race_cells``: the depths and their baseline).
* **Trials and their roles**: ``tune`` trials (mode compare: ``trials_per_cell`` learning
  rates per cell, stratified on the log scale, interleaved across cells; mode best: one search
  per split), then ``confirm`` trials: the group's best configuration again with each
  confirmation seed. With racing (``confirm.max_seeds`` > ``confirm.seeds``), cells whose
  comparison is still undecided get further seeds, one round at a time, up to the ceiling.
* **Seeds per role**, written once: tuning trials use the study seed ``s``; confirmation seed
  ``i`` (1-based) is ``s + i``; mode best's repeat ``r`` is ``s + r``. A seed changes the
  source model (each seed trains its own), the new head's initialisation, the data order and
  the augmentation draws, and it is the same in every cell of a split x backbone x init, so
  runs with equal seeds are paired (common random numbers).
* **Source jobs**: (split, backbone, stem, seed) of every source model the study may need.

Learning rates inside a cell (``search.algorithm: qmc``, the default) are stratified: the log
range is cut into n equal intervals and one point drawn uniformly in each (a 1-D Latin
hypercube), seeded by (study seed, cell id) and shuffled, so arrival order carries no lr trend;
``random`` draws them i.i.d. log-uniform.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from functools import cached_property

import numpy as np

from study.core import metrics as M
from study.core.catalog import CATALOG
from study.core.identity import source_job, trial_seed
from study.core.spec import Spec, resolve_stem

ROLE_TUNE, ROLE_CONFIRM = M.PHASE_TUNE, M.PHASE_CONFIRM
SCRATCH = "scratch"  # the baseline init: trains every stage, so its one depth is 0


def depth_of(init: str, depth):
    """A cell's frozen depth, the one place that says so: 0 for ``scratch`` (nothing is frozen:
    it trains every stage), else ``depth`` as given."""
    return 0 if init == SCRATCH else depth


def _task(split: str, size) -> str:
    """``<split>/n<size>``, or ``<split>`` when the study sets no size (every image)."""
    return split if size is None else f"{split}/n{int(size)}"


@dataclasses.dataclass(frozen=True)
class Cell:
    split: str
    backbone: str
    init: str
    depth: int
    stem: str
    size: int | None = None  # images per target class (None: every training image)

    @property
    def id(self) -> str:
        return cell_id(self.split, self.backbone, self.init, self.depth, self.size)

    @property
    def answer_group(self) -> str | None:
        """``<split>[/n<size>]/<backbone>/<init>``: the depths the Answer compares (None:
        scratch)."""
        return None if self.init == SCRATCH else answer_group(self.split, self.size,
                                                              self.backbone, self.init)


def answer_group(split, size, backbone, init) -> str:
    return f"{_task(split, size)}/{backbone}/{init}"


def cell_id(split, backbone, init, depth, size=None) -> str:
    """``<split>[/n<size>]/<backbone>/<init>/d<depth>``; scratch trains every stage, so its
    depth is 0 whatever a config says."""
    return f"{_task(split, size)}/{backbone}/{init}/d{int(depth_of(init, depth))}"


def steps_per_pass(images: int, batch_size: int) -> int:
    """Optimizer steps of one pass over ``images`` (the last partial batch is dropped; at least
    one step)."""
    return max(1, int(images) // int(batch_size))


def passes_per_epoch(images: int, batch_size: int, epochs: int, min_steps: int | None) -> int:
    """The training budget's rule: passes over the target images per reported epoch, so that
    ``epochs`` epochs take at least ``min_steps`` optimizer steps:
    ``max(1, ceil(min_steps / (epochs x steps_per_pass)))``. At 10 images per class an epoch is
    one or two steps, and a run of ``target_epochs`` such epochs would compare an untrained
    scratch baseline; equal steps instead (He, Girshick, Dollar 2019 trained small sets for as
    many iterations as large ones) keep early stopping, checkpoints and reports in epochs."""
    if not min_steps:
        return 1
    return max(1, math.ceil(int(min_steps) / (int(epochs) * steps_per_pass(images, batch_size))))


def race_levels(mode: str, seeds: int, max_seeds: int | None) -> tuple[int, int] | None:
    """When a study races, the one rule: mode compare (mode best confirms one configuration per
    split), at least one confirmation seed before the first look, and a ceiling (``max_seeds``)
    above it. Returns (seeds, ceiling), what ``stats.group_answer`` spends alpha over, or None
    (one look)."""
    ceiling = seeds if max_seeds is None else int(max_seeds)
    return (int(seeds), ceiling) if mode == "compare" and seeds >= 1 and ceiling > seeds else None


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


class StudyDesign:
    """What a study runs (see the module docstring). Build it once per spec; it is cheap and
    pure, so a Tune searcher or scheduler may rebuild it from the spec dict after a restore."""

    def __init__(self, spec: Spec):
        self.spec = spec
        s = spec.search
        self.mode = s.mode
        self.target_epochs = spec.target_epochs
        self.group_key = M.CELL if self.mode == "compare" else M.SPLIT
        self.tune_seed = s.seed
        k = spec.confirm.seeds
        ceiling = spec.confirm.ceiling
        self.confirm_seeds = tuple(s.seed + i for i in range(1, k + 1))  # the first round(s)
        self.ceiling_seeds = tuple(s.seed + i for i in range(1, ceiling + 1))  # racing's ceiling
        # mode best: repeat r of a sampled configuration (identity.trial_seed, the one rule)
        self.repeat_seeds = tuple(trial_seed({M.SEED: s.seed, M.REPEAT: r}, s.seed)
                                  for r in range(s.repeats))
        # what the Answer spends alpha over (stats.group_answer's ``racing``): None = one look
        self.race_levels = race_levels(self.mode, k, spec.confirm.max_seeds)
        self.racing = self.race_levels is not None
        self.sizes = tuple(spec.data.target_train_per_class or (None,))
        self.cells = tuple(self._cells())
        self._by_id = {c.id: c for c in self.cells}

    # ------------------------------------------------------------------ cells and groups
    def valid_inits(self, backbone: str) -> list[str]:
        return [i for i in self.spec.inits if i != "imagenet" or CATALOG[backbone].imagenet_weights]

    def _cells(self):
        spec = self.spec
        for sp in spec.splits:
            for n in self.sizes:
                for b in spec.backbones:
                    for init in self.valid_inits(b.name):
                        for d in self.depths(b.name, init):
                            yield Cell(sp.name, b.name, init, d,
                                       resolve_stem(spec, b.name, init), n)

    def depths(self, backbone: str, init: str) -> list[int]:
        """The frozen depths that become cells of ``backbone`` with ``init`` (scratch: 0)."""
        given = self.spec.backbone(backbone).depth_list()
        return list(dict.fromkeys(depth_of(init, d) for d in given))  # the spec's order

    def cell(self, cid: str) -> Cell:
        return self._by_id[cid]

    def cell_of(self, cfg: dict) -> Cell:
        """The cell of a trial config (scratch: depth 0)."""
        return self._by_id[cell_id(cfg[M.SPLIT], cfg[M.BACKBONE], cfg[M.INIT],
                                   cfg[M.FROZEN_DEPTH], cfg.get(M.SIZE))]

    def cells_of_split(self, split: str) -> list[Cell]:
        return [c for c in self.cells if c.split == split]

    def group_of(self, cfg: dict) -> str:
        """What a trial is compared with when stopping early and choosing the best: its cell
        (mode compare) or its split (mode best)."""
        return str(cfg[self.group_key])

    @cached_property
    def answer_groups(self) -> dict[str, list[str]]:
        """``<split>/<backbone>/<init>`` -> its cells' ids in depth order."""
        out: dict[str, list[str]] = {}
        for c in self.cells:
            if c.answer_group:
                out.setdefault(c.answer_group, []).append(c.id)
        return out

    def baseline(self, cell: Cell) -> Cell | None:
        """The scratch cell a transferred cell's gain is measured against (same split, size
        and backbone), None when the study has none (or ``cell`` is scratch)."""
        if cell.init == SCRATCH:
            return None
        return self._by_id.get(cell_id(cell.split, cell.backbone, SCRATCH, 0, cell.size))

    @cached_property
    def gain_races(self) -> bool:
        """Whether racing also serves the transfer gain: the study races and has a scratch
        baseline, so a look whose gain is undecided gives the group and its baseline a seed."""
        return self.racing and SCRATCH in self.spec.inits

    @cached_property
    def race_cells(self) -> dict[str, list[str]]:
        """Answer group -> the cells one racing look is over: its depths, and its scratch
        baseline when ``gain_races``."""
        out = {}
        for g, cells in self.answer_groups.items():
            b = self.baseline(self.cell(cells[0])) if self.gain_races else None
            out[g] = list(cells) + ([b.id] if b is not None else [])
        return out

    def race_groups_of(self, cid: str) -> list[str]:
        """The answer groups whose racing looks at cell ``cid`` (a scratch baseline is looked at
        by every transferred group of its split, size and backbone)."""
        return self._race_groups.get(cid, [])

    @cached_property
    def _race_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g, cells in self.race_cells.items():
            for c in cells:
                out.setdefault(c, []).append(g)
        return out

    def min_steps(self, split: str) -> int | None:
        """The fewest optimizer steps of a completed target run of ``split``
        (``target_steps``; null: what the largest size takes in target_epochs epochs; None:
        no floor, the study sets no size)."""
        spec = self.spec
        if spec.target_steps:
            return spec.target_steps
        if self.sizes == (None,):
            return None
        n_t = len(spec.split(split).target)
        return spec.target_epochs * steps_per_pass(self.sizes[-1] * n_t, spec.batch_size)

    def passes(self, split: str, images: int) -> int:
        """Passes per epoch of a target run of ``split`` over ``images`` training images."""
        return passes_per_epoch(images, self.spec.batch_size, self.target_epochs,
                                self.min_steps(split))

    # ------------------------------------------------------------------ trials
    @property
    def trials_per_cell(self) -> int:
        s = self.spec.search
        return len(self.spec.lr.grid) if s.algorithm == "grid" else s.trials_per_cell

    def lr_samples(self, key: str, n: int) -> list[float]:
        """n learning rates for one cell, deterministic in (search.seed, key)."""
        spec = self.spec
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

    @staticmethod
    def config(cell: Cell, lr: float, seed: int, role: str) -> dict:
        """A trial's config: its cell, lr, seed and role (``phase``)."""
        return {M.SPLIT: cell.split, M.SIZE: cell.size, M.BACKBONE: cell.backbone,
                M.INIT: cell.init, M.FROZEN_DEPTH: cell.depth, M.LR: lr, M.SEED: seed,
                M.CELL: cell.id, M.PHASE: role}

    def tuning_configs(self) -> list[dict]:
        """Mode compare: every cell's tuning trials, round-robin across cells (each cell's first
        sample, then each cell's second, ...), so every cell gets a completed run early and a
        time budget cuts all cells alike. All use the tuning seed."""
        per_cell = [[self.config(c, lr, self.tune_seed, ROLE_TUNE)
                     for lr in self.lr_samples(c.id, self.trials_per_cell)] for c in self.cells]
        out = []
        for i in range(max((len(p) for p in per_cell), default=0)):
            out.extend(p[i] for p in per_cell if i < len(p))
        return out

    def best_grid(self) -> list[dict]:
        """Mode best, grid search: every (cell, lr.grid value)."""
        return [self.config(c, lr, self.tune_seed, ROLE_TUNE) for c in self.cells
                for lr in self.spec.lr.grid]

    def seeds_at_most(self, cell: Cell) -> tuple[int, ...]:
        """The confirmation seeds a cell can get: up to racing's ceiling for the depths the
        Answer compares (and their scratch baselines when ``gain_races``), the first round for
        the rest."""
        races = cell.answer_group or (self.gain_races and self.race_groups_of(cell.id))
        return self.ceiling_seeds if self.racing and races else self.confirm_seeds

    def confirm_configs(self, best: dict, seeds=None) -> list[dict]:
        """The best configuration of a group again with ``seeds`` (default: the first
        confirmation round, ``confirm_seeds``)."""
        c = self.cell_of(best)
        return [self.config(c, float(best[M.LR]), sd, ROLE_CONFIRM)
                for sd in (self.confirm_seeds if seeds is None else seeds)]

    @cached_property
    def group_sizes(self) -> dict[str, int]:
        """Tuning trials per group (successive halving needs to know how many will arrive)."""
        spec = self.spec
        if self.mode == "compare":
            return {c.id: self.trials_per_cell for c in self.cells}
        reps = spec.search.repeats
        if spec.search.algorithm == "grid":
            grid = self.best_grid()
            return {s.name: sum(p[M.SPLIT] == s.name for p in grid) * reps for s in spec.splits}
        return {s.name: spec.search.num_samples * reps for s in spec.splits}

    def trial_counts(self) -> dict:
        """Trials the study runs: tuning + confirmation (once per group; with racing, between
        the first round and the ceiling)."""
        tuning = sum(self.group_sizes.values())
        groups = len(self.group_sizes)
        confirm = groups * len(self.confirm_seeds)
        confirm_max = (sum(len(self.seeds_at_most(self.cell(g))) for g in self.group_sizes)
                       if self.mode == "compare" else confirm)
        return {"cells": len(self.cells), "groups": groups, "tuning": tuning,
                "confirm": confirm, "confirm_max": confirm_max, "total": tuning + confirm,
                "total_max": tuning + confirm_max}

    # ------------------------------------------------------------------ seeds and sources
    def run_seeds(self) -> tuple[int, ...]:
        """Every seed a trial of this study may run with (tuning first)."""
        if self.mode == "compare":
            return (self.tune_seed, *self.ceiling_seeds)
        return (*self.repeat_seeds, *(sd for sd in self.confirm_seeds if sd not in self.repeat_seeds))

    def source_jobs(self) -> list[tuple[str, str, str, int]]:
        """(split, backbone, stem, seed) of every source model a trial may need, known up front
        (with racing: up to the ceiling; mode best: the confirmation seeds of every backbone the
        best configuration may use), tuning seed first so those are ready first. All are
        submitted at the start (``study.sources``). The trainable asks for the same job
        (``identity.source_job``)."""
        return list(self.source_users)

    @cached_property
    def source_users(self) -> dict[tuple, list[Cell]]:
        """(split, backbone, stem, seed) -> the cells whose trials use that source model (the
        order of ``source_jobs``); the plan orders the source models by what waits on them."""
        out: dict[tuple, list[Cell]] = {}
        for sd in self.run_seeds():
            for c in self.cells:
                job = source_job(self.spec, self.config(c, 0.0, sd, ROLE_TUNE))
                if job is not None:
                    out.setdefault(job, []).append(c)
        return out


@functools.lru_cache(maxsize=16)
def design_of(spec: Spec) -> StudyDesign:
    """The study's design, derived once per process per spec (specs are frozen, hashable
    values): the runner, the searcher (also after Tune restores it), the scheduler, the
    sources, ``study plan``, the CLI and the analysis all ask here, so they read one value."""
    return StudyDesign(spec)
