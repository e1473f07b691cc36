"""Study specs: YAML -> validated, frozen dataclasses (plain data, serialisable back to YAML).

Every error names the field (a dotted path), the value and the rule, e.g.::

    search.num_samples = -3: must be an integer in [1, 100000]

All problems of a spec are collected and reported together (``SpecError.problems``).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml

from trainables.backbones import REGISTRY

INITS = ("source", "imagenet", "scratch")
SEARCH_ALGORITHMS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "fifo")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("cosine", "constant")
STEMS = ("auto", "cifar", "imagenet")
FEATURE_CACHE_MODES = ("auto", "on", "off")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: "$" would accept a trailing newline


class SpecError(ValueError):
    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        head = f"invalid study spec{f' {source}' if source else ''}"
        super().__init__(head + ":\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------- dataclasses

@dataclasses.dataclass(frozen=True)
class DataSpec:
    root: str | None = None  # image folder / archive / cifar-10-batches-py; None: download CIFAR-10
    cache_dir: str | None = None  # decoded-array cache; None: $STUDY_CACHE_DIR or ~/.cache/tl-study
    image_size: int = 32  # pixels (square); image-folder data is resized to it
    val_fraction: float = 0.1  # share of each class's training images held out for validation
    max_train_per_class: int | None = None  # cap on training+validation images per class
    max_test_per_class: int | None = None  # cap on test images per class


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    name: str
    source: tuple  # class names or indices
    target: tuple


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    frozen_depth: tuple[int, int]  # inclusive range searched (init 'scratch' always uses 0)
    stem: str = "auto"  # auto: 'imagenet' for ImageNet weights, else 'cifar'


@dataclasses.dataclass(frozen=True)
class LRSpec:
    low: float  # log-uniform lower bound (per-step learning rate of the target stage)
    high: float
    grid: tuple[float, ...] = ()  # values used by search.algorithm 'grid'


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    epochs: int = 10  # source-stage epochs (init 'source')
    lr: float = 0.05  # source-stage peak learning rate


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"
    momentum: float = 0.9  # SGD (Nesterov) momentum; Adam's beta1
    weight_decay: float = 5e-4  # L2 on trainable parameters (decoupled for adamw)
    schedule: str = "cosine"  # per-step: cosine decay to 0 over max_epochs, after warmup
    warmup_epochs: float = 0.5  # linear warm-up from 0, in epochs
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    algorithm: str = "tpe"
    num_samples: int = 20  # configurations sampled (each run `repeats` times)
    max_concurrent: int = 2  # trials running at once
    repeats: int = 1  # seeds per configuration (seed, seed+1, ...)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    type: str = "asha"
    grace_period: int = 1  # epochs every trial runs before it can be stopped
    reduction_factor: float = 3  # keep the top 1/reduction_factor at each rung


@dataclasses.dataclass(frozen=True)
class ResourcesSpec:
    cpus: float = 1  # CPU per trial
    gpu: float = 0  # GPU per trial; fractions pack several trials on one GPU


@dataclasses.dataclass(frozen=True)
class FeatureCacheSpec:
    """Frozen-feature cache (``trainables/features.py``): the frozen prefix runs once per
    (training image, view), the remaining stages train on its stored outputs.

    ``auto`` caches when the trial has a frozen prefix, the cache fits ``max_gib`` and the
    prefix is at least 2/3 of a training step's FLOPs (a steady-state epoch >= 3x cheaper:
    linear probes and similar); ``on`` caches whenever there is a frozen prefix (a trial whose
    cache exceeds ``max_gib`` fails, naming the size); ``off`` never. YAML reads a bare
    ``on``/``off`` as true/false; both are accepted. ``feature_cache: off`` (a bare mode) is
    shorthand for ``{mode: off}``."""
    mode: str = "auto"
    views: int = 2  # fixed views per training image: identity, mirror, then seeded crop+flip
    max_gib: float = 1.0  # memory budget of one trial's cache (train views + validation), GiB


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    data: DataSpec
    splits: tuple[SplitSpec, ...]
    backbones: tuple[BackboneSpec, ...]
    inits: tuple[str, ...]
    lr: LRSpec
    batch_size: int = 128  # images per step, both stages
    target_epochs: int = 10  # max_epochs of the target stage (ASHA's max_t)
    source: SourceSpec = SourceSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    weights: tuple[tuple[str, str], ...] = ()  # (backbone, local ImageNet weights file)
    storage: str = "./studies"  # local directory or URI (s3://, gs://, file://)
    max_failures: int = 2  # retries of a failing trial before it is marked errored
    time_budget_s: float | None = None  # stop sampling new trials after this many seconds
    feature_cache: FeatureCacheSpec = FeatureCacheSpec()  # train on cached frozen-prefix outputs

    def backbone(self, name: str) -> BackboneSpec:
        return next(b for b in self.backbones if b.name == name)

    def split(self, name: str) -> SplitSpec:
        return next(s for s in self.splits if s.name == name)

    def weights_file(self, backbone: str) -> str | None:
        return dict(self.weights).get(backbone)

    def to_dict(self) -> dict:
        """Plain data (the YAML form): ``load_spec_dict(spec.to_dict()) == spec``."""
        d = dataclasses.asdict(self)
        d["splits"] = [{"name": s.name, "source": list(s.source), "target": list(s.target)}
                       for s in self.splits]
        d["backbones"] = {b.name: {"frozen_depth": list(b.frozen_depth), "stem": b.stem}
                          for b in self.backbones}
        d["inits"] = list(self.inits)
        d["lr"] = {"low": self.lr.low, "high": self.lr.high, "grid": list(self.lr.grid)}
        d["weights"] = dict(self.weights)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- validation

class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def bad(self, field: str, value: Any, rule: str):
        self.problems.append(f"{field} = {value!r}: {rule}")

    def section(self, raw: Any, field: str, allowed: dict[str, Any]) -> dict:
        """A mapping with only known keys; returns {} (after reporting) if it is not one."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.bad(field, raw, "must be a mapping")
            return {}
        for k in raw:
            if k not in allowed:
                self.bad(f"{field}.{k}" if field else str(k), raw[k],
                         f"unknown key; valid keys: {', '.join(allowed)}")
        return raw

    def integer(self, raw: dict, key: str, field: str, default, lo=None, hi=None, optional=False):
        v = raw.get(key, default)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(field, v, "must be an integer")
            return default
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.bad(field, v, _range_rule("an integer", lo, hi))
            return default
        return v

    def number(self, raw: dict, key: str, field: str, default, lo=None, hi=None, *,
               lo_open=False, optional=False):
        v = raw.get(key, default)
        if v is None and optional:
            return None
        if isinstance(v, str):
            try:
                v = float(v)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.bad(field, v, "must be a finite number")
            return default
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            self.bad(field, v, _range_rule("a number", lo, hi, lo_open))
            return default
        return float(v)

    def choice(self, raw: dict, key: str, field: str, default, choices):
        v = raw.get(key, default)
        if v not in choices:
            self.bad(field, v, f"must be one of {', '.join(choices)}")
            return default
        return v


def _range_rule(kind, lo, hi, lo_open=False):
    if lo is not None and hi is not None:
        return f"must be {kind} in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"must be {kind} {'>' if lo_open else '>='} {lo}"
    return f"must be {kind} <= {hi}"


_TOP = {f.name: None for f in dataclasses.fields(Spec)}


def load_spec(path: str | Path, overrides: dict | None = None) -> Spec:
    """Read and validate a YAML spec. ``overrides`` (e.g. {"data": {"root": ...}}) are merged in."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"spec file {str(p)!r}: does not exist or is not a file"])
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError([f"spec file {str(p)!r}: not valid YAML ({e})"]) from e
    if not isinstance(raw, dict):
        raise SpecError([f"spec file {str(p)!r}: top level must be a mapping, got {type(raw).__name__}"])
    return load_spec_dict(_merge(raw, overrides or {}), source=str(p))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_spec_dict(raw: dict, source: str | None = None) -> Spec:
    c = _Checker()
    if not isinstance(raw, dict):
        raise SpecError([f"spec = {raw!r}: top level must be a mapping"], source)
    c.section(raw, "", _TOP)

    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        c.bad("name", name, "must be 1-64 letters, digits, '_', '-' or '.', starting with a "
                            "letter or digit")
        name = "invalid"

    d = c.section(raw.get("data"), "data", {f.name: None for f in dataclasses.fields(DataSpec)})
    root = d.get("root")
    if root is not None and not isinstance(root, str):
        c.bad("data.root", root, "must be a path or null (null: download CIFAR-10)")
    cache_dir = d.get("cache_dir")
    if cache_dir is not None and not isinstance(cache_dir, str):
        c.bad("data.cache_dir", cache_dir, "must be a path or null")
    data = DataSpec(
        root=root if isinstance(root, str) else None,
        cache_dir=cache_dir if isinstance(cache_dir, str) else None,
        image_size=c.integer(d, "image_size", "data.image_size", 32, 8, 512),
        val_fraction=c.number(d, "val_fraction", "data.val_fraction", 0.1, 0, 0.5, lo_open=True),
        max_train_per_class=c.integer(d, "max_train_per_class", "data.max_train_per_class",
                                      None, 2, optional=True),
        max_test_per_class=c.integer(d, "max_test_per_class", "data.max_test_per_class",
                                     None, 1, optional=True),
    )

    splits = _splits(c, raw.get("splits"))
    backbones = _backbones(c, raw.get("backbones"))

    inits = raw.get("inits", ["source"])
    if not isinstance(inits, list) or not inits:
        c.bad("inits", inits, f"must be a non-empty list of {', '.join(INITS)}")
        inits = ["source"]
    for i, v in enumerate(inits):
        if v not in INITS:
            c.bad(f"inits[{i}]", v, f"must be one of {', '.join(INITS)}")
    if len(set(map(str, inits))) != len(inits):
        c.bad("inits", inits, "must not repeat a value")
    inits = tuple(v for v in inits if v in INITS) or ("source",)

    lr_raw = c.section(raw.get("lr"), "lr", {"low": None, "high": None, "grid": None})
    if "lr" not in raw:
        c.bad("lr", None, "is required: {low: L, high: H} (log-uniform bounds)")
    lo = c.number(lr_raw, "low", "lr.low", 1e-3, 0, 10, lo_open=True)
    hi = c.number(lr_raw, "high", "lr.high", 1e-1, 0, 10, lo_open=True)
    if lo > hi:
        c.bad("lr", {"low": lo, "high": hi}, "low must be <= high")
    grid = lr_raw.get("grid")
    grid = [] if grid is None else grid
    if not isinstance(grid, list):
        c.bad("lr.grid", grid, "must be a list of positive numbers")
        grid = []
    gvals = []
    for i, _ in enumerate(grid):
        gvals.append(c.number({"v": grid[i]}, "v", f"lr.grid[{i}]", 1e-2, 0, 10, lo_open=True))
    lr = LRSpec(lo, hi, tuple(gvals))

    src = c.section(raw.get("source"), "source", {"epochs": None, "lr": None})
    source_spec = SourceSpec(epochs=c.integer(src, "epochs", "source.epochs", 10, 1, 1000),
                             lr=c.number(src, "lr", "source.lr", 0.05, 0, 10, lo_open=True))

    o = c.section(raw.get("optimizer"), "optimizer",
                  {f.name: None for f in dataclasses.fields(OptimizerSpec)})
    optimizer = OptimizerSpec(
        name=c.choice(o, "name", "optimizer.name", "sgd", OPTIMIZERS),
        momentum=c.number(o, "momentum", "optimizer.momentum", 0.9, 0, 0.999),
        weight_decay=c.number(o, "weight_decay", "optimizer.weight_decay", 5e-4, 0, 1),
        schedule=c.choice(o, "schedule", "optimizer.schedule", "cosine", LR_SCHEDULES),
        warmup_epochs=c.number(o, "warmup_epochs", "optimizer.warmup_epochs", 0.5, 0, 100),
        label_smoothing=c.number(o, "label_smoothing", "optimizer.label_smoothing", 0.0, 0, 0.5),
    )

    s = c.section(raw.get("search"), "search", {f.name: None for f in dataclasses.fields(SearchSpec)})
    search = SearchSpec(
        algorithm=c.choice(s, "algorithm", "search.algorithm", "tpe", SEARCH_ALGORITHMS),
        num_samples=c.integer(s, "num_samples", "search.num_samples", 20, 1, 100_000),
        max_concurrent=c.integer(s, "max_concurrent", "search.max_concurrent", 2, 1, 10_000),
        repeats=c.integer(s, "repeats", "search.repeats", 1, 1, 100),
        seed=c.integer(s, "seed", "search.seed", 0, 0, 2**31 - 1),
    )
    if search.algorithm == "grid" and not lr.grid:
        c.bad("lr.grid", list(lr.grid), "must list the learning rates when search.algorithm is 'grid'")

    target_epochs = c.integer(raw, "target_epochs", "target_epochs", 10, 1, 1000)
    sc = c.section(raw.get("scheduler"), "scheduler",
                   {f.name: None for f in dataclasses.fields(SchedulerSpec)})
    scheduler = SchedulerSpec(
        type=c.choice(sc, "type", "scheduler.type", "asha", SCHEDULERS),
        grace_period=c.integer(sc, "grace_period", "scheduler.grace_period", 1, 1),
        reduction_factor=c.number(sc, "reduction_factor", "scheduler.reduction_factor", 3, 1,
                                  100, lo_open=True),
    )
    if scheduler.type == "asha" and scheduler.grace_period > target_epochs:
        c.bad("scheduler.grace_period", scheduler.grace_period,
              f"must be <= target_epochs ({target_epochs})")

    r = c.section(raw.get("resources"), "resources", {"cpus": None, "gpu": None})
    resources = ResourcesSpec(cpus=c.number(r, "cpus", "resources.cpus", 1, 0, 1024, lo_open=True),
                              gpu=c.number(r, "gpu", "resources.gpu", 0, 0, 64))

    w = raw.get("weights")
    w = {} if w is None else w
    if not isinstance(w, dict):
        c.bad("weights", w, "must map a backbone name to a local ImageNet weights file")
        w = {}
    for k, v in w.items():
        if k not in REGISTRY or REGISTRY[k].imagenet_weights is None:
            valid = [n for n, i in REGISTRY.items() if i.imagenet_weights]
            c.bad(f"weights.{k}", v, f"unknown key: ImageNet weights exist for {', '.join(valid)}")
        elif not isinstance(v, str):
            c.bad(f"weights.{k}", v, "must be a file path")

    feature_cache = _feature_cache(c, raw.get("feature_cache"))

    storage = raw.get("storage", "./studies")
    if not isinstance(storage, str) or not storage:
        c.bad("storage", storage, "must be a directory path or a URI such as s3://bucket/dir")
        storage = "./studies"

    spec = Spec(
        name=name, data=data, splits=splits, backbones=backbones, inits=inits, lr=lr,
        batch_size=c.integer(raw, "batch_size", "batch_size", 128, 1, 65536),
        target_epochs=target_epochs, source=source_spec, optimizer=optimizer, search=search,
        scheduler=scheduler, resources=resources,
        weights=tuple(sorted((k, v) for k, v in w.items() if isinstance(v, str))),
        storage=storage,
        max_failures=c.integer(raw, "max_failures", "max_failures", 2, 0, 100),
        time_budget_s=c.number(raw, "time_budget_s", "time_budget_s", None, 0, None,
                               lo_open=True, optional=True),
        feature_cache=feature_cache,
    )
    _cross_checks(c, spec)
    if c.problems:
        raise SpecError(c.problems, source)
    return spec


def _splits(c: _Checker, raw) -> tuple[SplitSpec, ...]:
    if not isinstance(raw, list) or not raw:
        c.bad("splits", raw, "must be a non-empty list of {name, source, target}")
        return ()
    out, names = [], set()
    for i, s in enumerate(raw):
        f = f"splits[{i}]"
        if not isinstance(s, dict):
            c.bad(f, s, "must be a mapping with name, source and target")
            continue
        c.section(s, f, {"name": None, "source": None, "target": None})
        name = s.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            c.bad(f"{f}.name", name, "must be a name of letters, digits, '_', '-', '.'")
        elif name in names:
            c.bad(f"{f}.name", name, "must be unique among splits")
        names.add(name)
        ok = True
        for side in ("source", "target"):
            v = s.get(side)
            if not isinstance(v, list) or not v:
                c.bad(f"{f}.{side}", v, "must be a non-empty list of class names or indices")
                ok = False
                continue
            side_ok = True
            for j, x in enumerate(v):
                if isinstance(x, bool) or not isinstance(x, (str, int)) or (isinstance(x, int) and x < 0):
                    c.bad(f"{f}.{side}[{j}]", x, "must be a class name or a non-negative index")
                    ok = side_ok = False
            if side_ok and len(set(v)) != len(v):  # set() needs hashable (valid) entries
                c.bad(f"{f}.{side}", v, "must not repeat a class")
        if ok:
            both = set(s["source"]) & set(s["target"])
            if both:
                c.bad(f"{f}", {"source": s["source"], "target": s["target"]},
                      f"source and target must be disjoint; both contain {sorted(map(str, both))}")
            out.append(SplitSpec(str(name), tuple(s["source"]), tuple(s["target"])))
    return tuple(out)


def _backbones(c: _Checker, raw) -> tuple[BackboneSpec, ...]:
    if isinstance(raw, list):  # shorthand: [resnet18, scratch_cnn] = every depth, auto stem
        raw = {b: {} for b in raw} if all(isinstance(b, str) for b in raw) else raw
    if not isinstance(raw, dict) or not raw:
        c.bad("backbones", raw, f"must map backbone names ({', '.join(REGISTRY)}) to "
                                f"{{frozen_depth: [lo, hi], stem: auto|cifar|imagenet}}")
        return ()
    out = []
    for name, opts in raw.items():
        f = f"backbones.{name}"
        if name not in REGISTRY:
            c.bad("backbones", name, f"unknown backbone; valid backbones: {', '.join(REGISTRY)}")
            continue
        opts = c.section(opts or {}, f, {"frozen_depth": None, "stem": None})
        n = REGISTRY[name].num_stages
        fd = opts.get("frozen_depth", [0, n])
        if isinstance(fd, int) and not isinstance(fd, bool):
            fd = [fd, fd]
        if (not isinstance(fd, list) or len(fd) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in fd)):
            c.bad(f"{f}.frozen_depth", fd, f"must be [lo, hi] integers within [0, {n}]")
            fd = [0, n]
        elif not 0 <= fd[0] <= fd[1] <= n:
            c.bad(f"{f}.frozen_depth", fd,
                  f"must satisfy 0 <= lo <= hi <= {n} ({name} has {n} stages)")
            fd = [0, n]
        stem = c.choice(opts, "stem", f"{f}.stem", "auto", STEMS)
        if stem != "auto" and stem not in REGISTRY[name].stems:
            c.bad(f"{f}.stem", stem, f"must be auto or one of {', '.join(REGISTRY[name].stems)}")
            stem = "auto"
        out.append(BackboneSpec(name, (fd[0], fd[1]), stem))
    return tuple(out)


def _feature_cache(c: _Checker, raw) -> FeatureCacheSpec:
    """``feature_cache``: a mapping {mode, views, max_gib}, or just the mode. YAML 1.1 reads a
    bare on/off (also yes/no) as a boolean, so true/false mean on/off."""
    def mode_of(v):
        return ("on" if v else "off") if isinstance(v, bool) else v

    if raw is None:
        return FeatureCacheSpec()
    if isinstance(raw, (str, bool)):
        return FeatureCacheSpec(mode=c.choice({"mode": mode_of(raw)}, "mode", "feature_cache",
                                              "auto", FEATURE_CACHE_MODES))
    if not isinstance(raw, dict):
        c.bad("feature_cache", raw, f"must be {', '.join(FEATURE_CACHE_MODES)} or a mapping "
                                    f"{{mode, views, max_gib}}")
        return FeatureCacheSpec()
    f = c.section(raw, "feature_cache", {fl.name: None for fl in dataclasses.fields(FeatureCacheSpec)})
    return FeatureCacheSpec(
        mode=c.choice({"mode": mode_of(f.get("mode", "auto"))}, "mode", "feature_cache.mode",
                      "auto", FEATURE_CACHE_MODES),
        views=c.integer(f, "views", "feature_cache.views", 2, 1, 64),
        max_gib=c.number(f, "max_gib", "feature_cache.max_gib", 1.0, 0, 1024, lo_open=True),
    )


def _cross_checks(c: _Checker, spec: Spec) -> None:
    if "imagenet" in spec.inits:
        for b in spec.backbones:
            info = REGISTRY[b.name]
            if info.imagenet_weights is None:
                continue  # such trials are simply not sampled (see study.space)
            if info.imagenet_stem_required and b.stem == "cifar":
                c.bad(f"backbones.{b.name}.stem", b.stem,
                      "must be 'auto' or 'imagenet' when inits has 'imagenet' (ImageNet weights "
                      "fit only the ImageNet stem)")
        if not any(REGISTRY[b.name].imagenet_weights for b in spec.backbones):
            c.bad("inits", list(spec.inits), "has 'imagenet' but no listed backbone has ImageNet "
                                              "weights (scratch_cnn has none)")


def resolve_stem(spec: Spec, backbone: str, init: str) -> str:
    stem = spec.backbone(backbone).stem
    if stem == "auto":
        return "imagenet" if init == "imagenet" else "cifar"
    return "cifar" if backbone == "scratch_cnn" else stem


def resolve_classes(spec: Spec, classes: list[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Split name -> (source indices, target indices) against the data's class names.
    Raises SpecError naming the split field, the value and the valid classes."""
    c = _Checker()
    out = {}
    for i, s in enumerate(spec.splits):
        sides = []
        for side in ("source", "target"):
            idx = []
            for j, x in enumerate(getattr(s, side)):
                if isinstance(x, int):
                    if x >= len(classes):
                        c.bad(f"splits[{i}].{side}[{j}]", x,
                              f"class index out of range: the data has {len(classes)} classes")
                    else:
                        idx.append(x)
                elif x in classes:
                    idx.append(classes.index(x))
                else:
                    c.bad(f"splits[{i}].{side}[{j}]", x,
                          f"unknown class; the data's classes are {', '.join(classes)}")
            sides.append(idx)
        if set(sides[0]) & set(sides[1]):
            c.bad(f"splits[{i}]", s.name, "source and target must be disjoint (same class named "
                                          "by name and by index)")
        out[s.name] = (sides[0], sides[1])
    if c.problems:
        raise SpecError(c.problems)
    return out
