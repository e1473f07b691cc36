"""Study specs: YAML -> validated, frozen dataclasses (plain data, serialisable back to YAML).

The schema is written once: every field is a dataclass field whose metadata holds its default,
its unit/meaning and its rule (``_f(default, rule, doc)``); the loader reads the rules from the
dataclasses, so a default or a valid range is never spelled twice. ``python -c "from study.core.spec
import describe; print(describe())"`` prints the whole schema.

Every error names the field (a dotted path), the value and the rule, e.g.::

    search.num_samples = -3: must be an integer in [1, 100000]

All problems of a spec are collected and reported together (``SpecError.problems``). This module
imports no torch and no Ray (backbone facts come from ``study.core.catalog``).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml

from study.core.catalog import CATALOG as REGISTRY

INITS = ("source", "imagenet", "scratch")
SEARCH_MODES = ("compare", "best")
SEARCH_ALGORITHMS = ("tpe", "random", "grid", "qmc")
SCHEDULERS = ("halving", "asha", "fifo")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("cosine", "constant")
STEMS = ("auto", "cifar", "imagenet")
FEATURE_CACHE_MODES = ("auto", "on", "off")
LOGGERS = ("tensorboard", "mlflow", "wandb")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")  # torchvision's CIFAR10.classes (data.root null)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: "$" would accept a trailing newline


class SpecError(ValueError):
    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        head = f"invalid study spec{f' {source}' if source else ''}"
        super().__init__(head + ":\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------- rules

def _range_rule(kind, lo, hi, lo_open=False):
    if lo is not None and hi is not None:
        return f"must be {kind} in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"must be {kind} {'>' if lo_open else '>='} {lo}"
    return f"must be {kind} <= {hi}"


@dataclasses.dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None
    optional: bool = False  # null allowed

    def check(self, v):
        """(value, None) or (None, rule text)."""
        if v is None and self.optional:
            return None, None
        if isinstance(v, bool) or not isinstance(v, int):
            return None, "must be an integer"
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            return None, _range_rule("an integer", self.lo, self.hi)
        return v, None

    def __str__(self):
        return ("null or " if self.optional else "") + _range_rule("an integer", self.lo, self.hi)[8:] \
            if (self.lo, self.hi) != (None, None) else "an integer"


@dataclasses.dataclass(frozen=True)
class Num:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    optional: bool = False

    def check(self, v):
        if v is None and self.optional:
            return None, None
        if isinstance(v, str):
            try:
                v = float(v)  # YAML 1.1 reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None, "must be a finite number"
        if ((self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo))
                or (self.hi is not None and v > self.hi)):
            return None, _range_rule("a number", self.lo, self.hi, self.lo_open)
        return float(v), None

    def __str__(self):
        return ("null or " if self.optional else "") + _range_rule(
            "a number", self.lo, self.hi, self.lo_open)[8:]


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def check(self, v):
        if isinstance(v, bool) and {"on", "off"} <= set(self.choices):
            v = "on" if v else "off"  # YAML 1.1 reads a bare on/off as true/false
        if v not in self.choices:
            return None, f"must be one of {', '.join(self.choices)}"
        return v, None

    def __str__(self):
        return "one of " + ", ".join(self.choices)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Target-set sizes (images per target class): null (every training image), one integer,
    or a strictly increasing list of integers >= 1. Read as a tuple (null: None)."""

    def check(self, v):
        if v is None:
            return None, None
        vals = [v] if not isinstance(v, list) else v
        if not vals or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in vals):
            return None, ("must be null, an integer >= 1 or a non-empty list of integers >= 1 "
                          "(images per target class)")
        if any(b <= a for a, b in zip(vals, vals[1:])):
            return None, "must list the sizes in strictly increasing order"
        return tuple(vals), None

    def __str__(self):
        return "null, an integer >= 1 or a strictly increasing list of integers >= 1"


@dataclasses.dataclass(frozen=True)
class Path_:
    optional: bool = True
    what: str = "a path or null"

    def check(self, v):
        if v is None and self.optional:
            return None, None
        if not isinstance(v, str) or not v:
            return None, f"must be {self.what}"
        return v, None

    def __str__(self):
        return self.what


def _f(default, rule=None, doc: str = ""):
    """A spec field: its default, its rule (None: checked by a section parser) and its meaning
    with units. Mutable defaults (nested sections) are built by ``default_factory``."""
    meta = {"rule": rule, "doc": doc}
    if dataclasses.is_dataclass(default) or isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: d, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(cls, name: str):
    f = next(x for x in dataclasses.fields(cls) if x.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# ----------------------------------------------------------------------------- the schema

@dataclasses.dataclass(frozen=True)
class DataSpec:
    root: str | None = _f(None, Path_(), "image folder / .tar[.gz|.xz] archive / "
                          "cifar-10-batches-py; null: torchvision downloads CIFAR-10")
    cache_dir: str | None = _f(None, Path_(), "decoded-array cache; null: $STUDY_CACHE_DIR or "
                               "~/.cache/tl-study")
    image_size: int = _f(32, Int(8, 512), "pixels (square); image-folder data is resized to it")
    val_fraction: float = _f(0.1, Num(0, 0.5, lo_open=True), "share of each class's training "
                             "images held out for validation (stratified, seeded)")
    max_train_per_class: int | None = _f(None, Int(2, optional=True), "cap on training + "
                                         "validation images per class (null: all)")
    max_test_per_class: int | None = _f(None, Int(1, optional=True), "cap on test images per "
                                        "class (null: all)")
    target_train_per_class: tuple[int, ...] | None = _f(
        None, Sizes(), "target-set sizes compared, images per target class after the "
        "validation split: one size, or a list (each size a condition like a split: cells are "
        "split x size x backbone x init x depth). Seed s orders each class's training images "
        "once; a size takes the first n, so the subsets are nested across sizes and shared by "
        "every depth and init of a seed. Validation and test never change; source models train "
        "on all max_train_per_class allows, once for every size (null: every training image)")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    name: str
    source: tuple  # class names or indices
    target: tuple


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    frozen_depth: tuple[int, int]  # inclusive range of compared depths (init 'scratch': 0)
    stem: str = "auto"  # auto: 'imagenet' for ImageNet weights, else 'cifar'
    depths: tuple[int, ...] = ()  # an explicit subset of depths, e.g. (0, 2, 4); (): the range

    def depth_list(self) -> list[int]:
        return list(self.depths) or list(range(self.frozen_depth[0], self.frozen_depth[1] + 1))


@dataclasses.dataclass(frozen=True)
class LRSpec:
    low: float  # log-uniform lower bound (per-step peak learning rate of the target stage)
    high: float
    grid: tuple[float, ...] = ()  # values used by search.algorithm 'grid'


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    epochs: int = _f(10, Int(1, 1000), "source-stage epochs (init 'source')")
    lr: float = _f(0.05, Num(0, 10, lo_open=True), "source-stage peak learning rate")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = _f("sgd", Choice(OPTIMIZERS), "optimiser of both stages")
    momentum: float = _f(0.9, Num(0, 0.999), "SGD (Nesterov) momentum; Adam's beta1")
    weight_decay: float = _f(5e-4, Num(0, 1), "L2 on trainable parameters (decoupled for adamw)")
    schedule: str = _f("cosine", Choice(LR_SCHEDULES), "per step: cosine decay to 0 over the "
                       "stage's maximum epochs, after warm-up; or constant")
    warmup_epochs: float = _f(0.5, Num(0, 100), "linear warm-up from 0, in epochs")
    label_smoothing: float = _f(0.0, Num(0, 0.5), "cross-entropy label smoothing")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    algorithm: str = _f("qmc", Choice(SEARCH_ALGORITHMS), "how learning rates are drawn: qmc "
                        "(stratified log-uniform inside each cell), random, grid (lr.grid), tpe "
                        "(Optuna TPE; mode best only)")
    num_samples: int = _f(20, Int(1, 100_000), "mode best: configurations sampled per split")
    max_concurrent: int = _f(2, Int(1, 10_000), "trials running at once")
    repeats: int = _f(1, Int(1, 100), "mode best: seeds per sampled configuration")
    seed: int = _f(0, Int(0, 2**31 - 1), "study seed: sampling, validation split, tuning trials")
    mode: str = _f("compare", Choice(SEARCH_MODES), "compare: every cell (split x backbone x "
                   "init x depth) gets trials_per_cell tuning trials; best: one search per split")
    trials_per_cell: int = _f(4, Int(1, 1000), "mode compare: learning rates tried per cell "
                              "(grid: one per lr.grid value)")


@dataclasses.dataclass(frozen=True)
class ConfirmSpec:
    seeds: int = _f(3, Int(0, 100), "fresh seeds for each cell's best configuration (mode best: "
                    "each split's), trained to target_epochs: the k runs per cell the Answer "
                    "measures (the tuning run that chose the configuration never measures it)")
    max_seeds: int | None = _f(None, Int(0, 100, optional=True), "racing ceiling: after the first "
                               "`seeds`, cells that can still change the Answer get one more seed "
                               "at a time up to this many runs (null: no racing, = seeds)")

    @property
    def ceiling(self) -> int:
        """Confirmation seeds a cell can get at most (``max_seeds``, or ``seeds`` without racing;
        whether the study races: ``study.core.design.race_levels``)."""
        return self.seeds if self.max_seeds is None else self.max_seeds


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    type: str = _f("halving", Choice(SCHEDULERS), "early stopping inside a cell (mode best: a "
                   "split): halving (successive halving, decided as results arrive), asha "
                   "(asynchronous), fifo (none)")
    grace_period: int = _f(1, Int(1), "epochs every trial runs before it can be stopped")
    reduction_factor: float = _f(3, Num(1, 100, lo_open=True), "keep the top 1/reduction_factor "
                                 "at each rung")


@dataclasses.dataclass(frozen=True)
class ResourcesSpec:
    cpus: float = _f(1, Num(0, 1024, lo_open=True), "CPUs per trial (and per source training)")
    gpu: float = _f(0, Num(0, 64), "GPUs per trial; fractions pack several trials on one GPU")


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
    mode: str = _f("auto", Choice(FEATURE_CACHE_MODES), "auto, on or off")
    views: int = _f(2, Int(1, 64), "fixed views per training image: identity, mirror, then "
                    "seeded crop+flip")
    max_gib: float = _f(1.0, Num(0, 1024, lo_open=True), "memory budget of one trial's cache "
                        "(train views + validation), GiB")


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    tolerance: float = _f(1.0, Num(0, 100), "Answer: a depth is within tolerance of the best "
                          "when the simultaneous lower bounds of its paired accuracy difference "
                          "from every depth that could be the best lie above -tolerance "
                          "(accuracy points; non-inferiority, fixed before the study runs)")
    alpha: float = _f(0.05, Num(0, 0.5, lo_open=True), "per group: the chance that a decided "
                      "Answer is tolerance or more below the true best, for any truth "
                      "(multiple comparisons with the best; racing spends it over its looks)")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    data: DataSpec
    splits: tuple[SplitSpec, ...]
    backbones: tuple[BackboneSpec, ...]
    inits: tuple[str, ...]
    lr: LRSpec
    batch_size: int = _f(128, Int(1, 65536), "images per step, both stages")
    target_epochs: int = _f(10, Int(1, 1000), "epochs of the target stage (every completed run; "
                            "an epoch is the unit of reports, early stopping and checkpoints)")
    target_steps: int | None = _f(None, Int(1, 10_000_000, optional=True), "training budget: the "
                                  "fewest optimizer steps of a completed target run at any size. "
                                  "A size whose target_epochs passes over its images give fewer "
                                  "steps makes each epoch ceil(target_steps / (target_epochs x "
                                  "steps per pass)) passes (study.core.design.passes_per_epoch). "
                                  "null: the steps the largest size takes in target_epochs "
                                  "epochs, so every size trains at least as long (no floor "
                                  "without data.target_train_per_class)")
    source: SourceSpec = _f(SourceSpec())
    optimizer: OptimizerSpec = _f(OptimizerSpec())
    search: SearchSpec = _f(SearchSpec())
    scheduler: SchedulerSpec = _f(SchedulerSpec())
    resources: ResourcesSpec = _f(ResourcesSpec())
    weights: tuple[tuple[str, str], ...] = ()  # (backbone, local ImageNet weights file)
    storage: str = _f("./studies", Path_(False, "a directory path or a URI such as "
                                           "s3://bucket/dir"), "where results go")
    max_failures: int = _f(2, Int(0, 100), "retries of a failing trial before it is errored")
    checkpoint_every: int = _f(1, Int(1, 1000), "target epochs between a trial's checkpoints "
                               "(and its last epoch); Tune saves the whole experiment state at "
                               "each checkpoint, so large studies with short epochs use more")
    time_budget_s: float | None = _f(None, Num(0, None, lo_open=True, optional=True),
                                     "stop starting new trials after this many seconds")
    feature_cache: FeatureCacheSpec = _f(FeatureCacheSpec())
    confirm: ConfirmSpec = _f(ConfirmSpec())
    report: ReportSpec = _f(ReportSpec())
    loggers: tuple[str, ...] = ()  # experiment trackers: tensorboard, mlflow, wandb

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
        d["backbones"] = {b.name: {**({"depths": list(b.depths)} if b.depths else
                                      {"frozen_depth": list(b.frozen_depth)}), "stem": b.stem}
                          for b in self.backbones}
        d["inits"] = list(self.inits)
        d["lr"] = {"low": self.lr.low, "high": self.lr.high, "grid": list(self.lr.grid)}
        d["weights"] = dict(self.weights)
        d["loggers"] = list(self.loggers)
        sizes = self.data.target_train_per_class
        d["data"]["target_train_per_class"] = None if sizes is None else _sizes_value(sizes)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def describe() -> str:
    """Every scalar field of the schema: dotted name, default, rule, meaning."""
    lines = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            elif f.metadata.get("rule") is not None:
                lines.append(f"{prefix}{f.name}: default {default!r}; {f.metadata['rule']}; "
                             f"{f.metadata['doc']}")
    walk(DataSpec, "data.")
    walk(Spec, "")
    lines += [f"{key}: {default}; {rule}; {doc}" for key, default, rule, doc in PARSED_KEYS]
    return "\n".join(lines)


# The keys with a parser of their own (lists and mappings whose items are checked together);
# their rules as the parsers below apply them, listed by ``describe()`` with the others.
PARSED_KEYS = (
    ("name", "required", "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit",
     "the study's name: its directory under storage"),
    ("splits", "required", "a non-empty list of {name, source, target}; names unique",
     "class splits: a source task (init 'source' trains on it) and a target task"),
    ("splits[].source / .target", "required", "non-empty lists of class names or indices, "
     "disjoint", "the classes of each task"),
    ("backbones", "required", "a mapping of registered backbone names (scratch_cnn, "
     "mobilenet_v2, resnet18) to {frozen_depth | depths, stem}", "the backbones compared"),
    ("backbones.NAME.frozen_depth", "[0, n_stages]", "an integer or [lo, hi] within the "
     "backbone's stage table", "range of frozen depths compared (stages frozen from the input)"),
    ("backbones.NAME.depths", "[]", "a list of distinct depths within the stage table "
     "(instead of frozen_depth)", "an explicit subset of depths"),
    ("backbones.NAME.stem", "'auto'", "auto, cifar or imagenet", "first-layer layout; auto: "
     "imagenet for ImageNet weights, else cifar"),
    ("inits", "['source']", "a non-empty list of distinct values in source, imagenet, scratch",
     "where the backbone's weights come from; scratch is the no-transfer baseline (depth 0)"),
    ("lr.low / lr.high", "required", "numbers with 0 < low <= high", "target-stage peak "
     "learning rate per step, sampled log-uniformly"),
    ("lr.grid", "[]", "a list of positive numbers", "learning rates of search.algorithm grid"),
    ("weights", "{}", "a mapping of backbone name to an existing local file",
     "ImageNet weights read instead of downloading them"),
    ("loggers", "[]", "a list of distinct values in tensorboard, mlflow, wandb",
     "experiment trackers each trial reports to"),
)


def default_of(key: str):
    """The schema's default of a dotted scalar key (``default_of("report.tolerance")``): the one
    place a reader of results without a spec (the analysis) takes a default from."""
    cls, *path, last = [Spec] + key.split(".")
    for name in path:
        cls = DataSpec if (cls, name) == (Spec, "data") else type(_default(cls, name))
    return _default(cls, last)


# ----------------------------------------------------------------------------- validation

class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def bad(self, field: str, value: Any, rule: str):
        self.problems.append(f"{field} = {value!r}: {rule}")

    def mapping(self, raw: Any, field: str, allowed) -> dict:
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

    def fields(self, cls, raw: dict, prefix: str) -> dict:
        """Every field of ``cls`` that has a rule: the raw value (or the field's default) checked
        against its rule; a bad value is reported and replaced by the default."""
        out = {}
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            if rule is None:
                continue
            default = _default(cls, f.name)
            v = raw.get(f.name, default)
            value, err = rule.check(v)
            if err:
                self.bad(f"{prefix}{f.name}", v, err)
                value = default
            out[f.name] = value
        return out

    def section(self, cls, raw: Any, field: str):
        """A nested section (all of its fields have rules) as its dataclass."""
        d = self.mapping(raw, field, [f.name for f in dataclasses.fields(cls)])
        return cls(**self.fields(cls, d, f"{field}."))


_TOP = [f.name for f in dataclasses.fields(Spec)]


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
    c.mapping(raw, "", _TOP)

    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        c.bad("name", name, "must be 1-64 letters, digits, '_', '-' or '.', starting with a "
                            "letter or digit")
        name = "invalid"
    data = c.section(DataSpec, raw.get("data"), "data")
    splits = _splits(c, raw.get("splits"))
    backbones = _backbones(c, raw.get("backbones"))
    inits = _inits(c, raw.get("inits", ["source"]))
    lr = _lr(c, raw)
    search = c.section(SearchSpec, raw.get("search"), "search")
    scheduler = c.section(SchedulerSpec, raw.get("scheduler"), "scheduler")
    top = c.fields(Spec, raw, "")
    spec = Spec(
        name=name, data=data, splits=splits, backbones=backbones, inits=inits, lr=lr,
        source=c.section(SourceSpec, raw.get("source"), "source"),
        optimizer=c.section(OptimizerSpec, raw.get("optimizer"), "optimizer"),
        search=search, scheduler=scheduler,
        resources=c.section(ResourcesSpec, raw.get("resources"), "resources"),
        weights=_weights(c, raw.get("weights")),
        feature_cache=_feature_cache(c, raw.get("feature_cache")),
        confirm=c.section(ConfirmSpec, raw.get("confirm"), "confirm"),
        report=c.section(ReportSpec, raw.get("report"), "report"),
        loggers=_loggers(c, raw.get("loggers")),
        **top,
    )
    _cross_checks(c, spec)
    if c.problems:
        raise SpecError(c.problems, source)
    return spec


def _inits(c: _Checker, inits) -> tuple[str, ...]:
    if not isinstance(inits, list) or not inits:
        c.bad("inits", inits, f"must be a non-empty list of {', '.join(INITS)}")
        return ("source",)
    for i, v in enumerate(inits):
        if v not in INITS:
            c.bad(f"inits[{i}]", v, f"must be one of {', '.join(INITS)}")
    if len(set(map(str, inits))) != len(inits):
        c.bad("inits", inits, "must not repeat a value")
    return tuple(v for v in inits if v in INITS) or ("source",)


def _lr(c: _Checker, raw: dict) -> LRSpec:
    lr_raw = c.mapping(raw.get("lr"), "lr", ["low", "high", "grid"])
    if "lr" not in raw:
        c.bad("lr", None, "is required: {low: L, high: H} (log-uniform bounds)")
    rule = Num(0, 10, lo_open=True)
    bounds = []
    for k, fallback in (("low", 1e-3), ("high", 1e-1)):
        v, err = rule.check(lr_raw.get(k, fallback))
        if err:
            c.bad(f"lr.{k}", lr_raw.get(k), err)
            v = fallback
        bounds.append(v)
    lo, hi = bounds
    if lo > hi:
        c.bad("lr", {"low": lo, "high": hi}, "low must be <= high")
    grid = lr_raw.get("grid")
    grid = [] if grid is None else grid
    if not isinstance(grid, list):
        c.bad("lr.grid", grid, "must be a list of positive numbers")
        grid = []
    gvals = []
    for i, g in enumerate(grid):
        v, err = rule.check(g)
        if err:
            c.bad(f"lr.grid[{i}]", g, err)
        else:
            gvals.append(v)
    return LRSpec(lo, hi, tuple(gvals))


def _weights(c: _Checker, w) -> tuple[tuple[str, str], ...]:
    w = {} if w is None else w
    if not isinstance(w, dict):
        c.bad("weights", w, "must map a backbone name to a local ImageNet weights file")
        return ()
    for k, v in w.items():
        if k not in REGISTRY or REGISTRY[k].imagenet_weights is None:
            valid = [n for n, i in REGISTRY.items() if i.imagenet_weights]
            c.bad(f"weights.{k}", v, f"unknown key: ImageNet weights exist for {', '.join(valid)}")
        elif not isinstance(v, str):
            c.bad(f"weights.{k}", v, "must be a file path")
    return tuple(sorted((k, v) for k, v in w.items() if isinstance(v, str) and k in REGISTRY))


def _loggers(c: _Checker, raw) -> tuple[str, ...]:
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        c.bad("loggers", raw, f"must be a list of {', '.join(LOGGERS)}")
        return ()
    out = []
    for i, v in enumerate(raw):
        if v not in LOGGERS:
            c.bad(f"loggers[{i}]", v, f"must be one of {', '.join(LOGGERS)}")
        elif v in out:
            c.bad("loggers", raw, "must not repeat a value")
        else:
            out.append(v)
    return tuple(out)


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
        c.mapping(s, f, ["name", "source", "target"])
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


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _backbones(c: _Checker, raw) -> tuple[BackboneSpec, ...]:
    if isinstance(raw, list):  # shorthand: [resnet18, scratch_cnn] = every depth, auto stem
        raw = {b: {} for b in raw} if all(isinstance(b, str) for b in raw) else raw
    if not isinstance(raw, dict) or not raw:
        c.bad("backbones", raw, f"must map backbone names ({', '.join(REGISTRY)}) to "
                                f"{{frozen_depth: [lo, hi], stem: auto|cifar|imagenet, "
                                f"depths: [d, ...]}}")
        return ()
    out = []
    for name, opts in raw.items():
        f = f"backbones.{name}"
        if name not in REGISTRY:
            c.bad("backbones", name, f"unknown backbone; valid backbones: {', '.join(REGISTRY)}")
            continue
        opts = c.mapping(opts or {}, f, ["frozen_depth", "stem", "depths"])
        n = REGISTRY[name].num_stages
        fd = opts.get("frozen_depth", [0, n])
        if _is_int(fd):
            fd = [fd, fd]
        if not isinstance(fd, list) or len(fd) != 2 or not all(map(_is_int, fd)):
            c.bad(f"{f}.frozen_depth", fd, f"must be [lo, hi] integers within [0, {n}]")
            fd = [0, n]
        elif not 0 <= fd[0] <= fd[1] <= n:
            c.bad(f"{f}.frozen_depth", fd,
                  f"must satisfy 0 <= lo <= hi <= {n} ({name} has {n} stages)")
            fd = [0, n]
        depths = opts.get("depths")
        if depths is not None:
            if "frozen_depth" in opts:
                c.bad(f"{f}.depths", depths, "must not be given together with frozen_depth "
                                             "(depths lists the depths, frozen_depth a range)")
            if (not isinstance(depths, list) or not depths or not all(map(_is_int, depths))
                    or not all(0 <= d <= n for d in depths) or len(set(depths)) != len(depths)):
                c.bad(f"{f}.depths", depths, f"must be a non-empty list of distinct integers "
                                             f"within [0, {n}] ({name} has {n} stages)")
                depths = None
        stem_v, err = Choice(STEMS).check(opts.get("stem", "auto"))
        if err:
            c.bad(f"{f}.stem", opts.get("stem"), err)
            stem_v = "auto"
        if stem_v != "auto" and stem_v not in REGISTRY[name].stems:
            c.bad(f"{f}.stem", stem_v, f"must be auto or one of {', '.join(REGISTRY[name].stems)}")
            stem_v = "auto"
        if depths:
            ds = tuple(sorted(depths))
            out.append(BackboneSpec(name, (ds[0], ds[-1]), stem_v, ds))
        else:
            out.append(BackboneSpec(name, (fd[0], fd[1]), stem_v))
    return tuple(out)


def _feature_cache(c: _Checker, raw) -> FeatureCacheSpec:
    """``feature_cache``: a mapping {mode, views, max_gib}, or just the mode. YAML 1.1 reads a
    bare on/off (also yes/no) as a boolean, so true/false mean on/off."""
    if raw is None:
        return FeatureCacheSpec()
    if isinstance(raw, (str, bool)):
        mode, err = Choice(FEATURE_CACHE_MODES).check(raw)
        if err:
            c.bad("feature_cache", raw, err)
            return FeatureCacheSpec()
        return FeatureCacheSpec(mode=mode)
    if not isinstance(raw, dict):
        c.bad("feature_cache", raw, f"must be {', '.join(FEATURE_CACHE_MODES)} or a mapping "
                                    f"{{mode, views, max_gib}}")
        return FeatureCacheSpec()
    return c.section(FeatureCacheSpec, raw, "feature_cache")


def _cross_checks(c: _Checker, spec: Spec) -> None:
    s = spec.search
    mode_ok = not any(p.startswith("search.mode ") for p in c.problems)  # no cascade
    if s.algorithm == "grid" and not spec.lr.grid:
        c.bad("lr.grid", list(spec.lr.grid),
              "must list the learning rates when search.algorithm is 'grid'")
    if mode_ok and s.mode == "compare" and s.algorithm == "tpe":
        c.bad("search.algorithm", "tpe", "must be qmc, random or grid when search.mode is "
              "'compare' (a cell's few trials are below TPE's random start-up; use mode best)")
    cf = spec.confirm
    if cf.max_seeds is not None and cf.max_seeds < cf.seeds:
        c.bad("confirm.max_seeds", cf.max_seeds, f"must be >= confirm.seeds ({cf.seeds}) or null")
    d = spec.data
    if d.target_train_per_class and d.max_train_per_class:
        left = d.max_train_per_class - max(1, round(d.max_train_per_class * d.val_fraction))
        if d.target_train_per_class[-1] > left:
            c.bad("data.target_train_per_class", _sizes_value(d.target_train_per_class),
                  f"must be <= the training images per class that data.max_train_per_class "
                  f"({d.max_train_per_class}) leaves after the validation split ({left}), or null")
    if mode_ok and s.mode == "best" and d.target_train_per_class and len(d.target_train_per_class) > 1:
        c.bad("data.target_train_per_class", list(d.target_train_per_class),
              "must be one size when search.mode is 'best' (a size is a condition: mode compare "
              "tunes and compares every size)")
    if mode_ok and s.mode == "compare" and s.repeats != 1:
        c.bad("search.repeats", s.repeats, "must be 1 when search.mode is 'compare' (confirm.seeds "
              "retrains each cell's best configuration with more seeds)")
    if spec.scheduler.type != "fifo" and spec.scheduler.grace_period > spec.target_epochs:
        c.bad("scheduler.grace_period", spec.scheduler.grace_period,
              f"must be <= target_epochs ({spec.target_epochs})")
    if "imagenet" in spec.inits:
        for b in spec.backbones:
            info = REGISTRY[b.name]
            if info.imagenet_weights is None:
                continue  # such cells simply do not exist (see study.cells)
            if info.imagenet_stem_required and b.stem == "cifar":
                c.bad(f"backbones.{b.name}.stem", b.stem,
                      "must be 'auto' or 'imagenet' when inits has 'imagenet' (ImageNet weights "
                      "fit only the ImageNet stem)")
        if not any(REGISTRY[b.name].imagenet_weights for b in spec.backbones):
            c.bad("inits", list(spec.inits), "has 'imagenet' but no listed backbone has ImageNet "
                                              "weights (scratch_cnn has none)")


def _sizes_value(sizes):
    """The sizes as the user wrote them (one integer, or a list)."""
    return sizes[0] if len(sizes) == 1 else list(sizes)


def check_sizes(spec: Spec, per_class_left: dict) -> None:
    """The data-dependent rule of ``data.target_train_per_class``: every target class of every
    split must have at least the largest size of training images after the validation split.
    ``per_class_left``: class name -> training images it has left. Raises SpecError naming the
    field, the value, the rule and the classes too small."""
    sizes = spec.data.target_train_per_class
    if not sizes:
        return
    short = {}
    for sp in spec.splits:
        for cls in sp.target:
            left = per_class_left.get(cls, per_class_left.get(str(cls)))
            if left is not None and left < sizes[-1]:
                short[f"{sp.name}:{cls}"] = left
    if short:
        raise SpecError([f"data.target_train_per_class = {_sizes_value(sizes)!r}: the largest "
                         f"size must be <= the training images every target class has after the "
                         f"validation split; too small: " + ", ".join(
                             f"{k} ({v})" for k, v in sorted(short.items()))])


def resolve_stem(spec: Spec, backbone: str, init: str) -> str:
    stem = spec.backbone(backbone).stem
    if stem == "auto":
        return "imagenet" if init == "imagenet" else "cifar"
    return "cifar" if backbone == "scratch_cnn" else stem


def resolve_classes(spec: Spec, classes) -> dict[str, tuple[list[int], list[int]]]:
    """Split name -> (source indices, target indices) against the data's class names
    (``CIFAR10_CLASSES`` when data.root is null: the download's classes are known).
    Raises SpecError naming the split field, the value and the valid classes."""
    classes = list(classes)
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
