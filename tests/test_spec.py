"""Study specs: loading, validation messages (field, value, rule), round-trip, class and stem
resolution, and the `study validate` command."""
import copy
import dataclasses
import subprocess
import sys

import pytest
import yaml

from study.cli import EXIT_BAD_INPUT, EXIT_OK, main
from study.core.spec import (INITS, FeatureCacheSpec, SpecError, load_spec, load_spec_dict,
                        resolve_classes, resolve_stem)
from trainables.backbones import REGISTRY

from conftest import REPO

QUICK = REPO / "examples" / "quick.yaml"

MINIMAL = {
    "name": "minimal",
    "splits": [{"name": "s", "source": [0, 1], "target": [2]}],
    "backbones": ["resnet18"],
    "lr": {"low": 0.01, "high": 0.1},
}

# A valid spec that sets nearly every field; each malformed row below mutates one thing.
BASE = {
    "name": "base",
    "data": {"root": None, "val_fraction": 0.1, "max_train_per_class": 50},
    "splits": [{"name": "ab", "source": ["a", "b"], "target": ["c", 3]}],
    "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]},
                  "resnet18": {"frozen_depth": [1, 3], "stem": "auto"}},
    "inits": ["source", "scratch"],
    "lr": {"low": 0.01, "high": 0.1, "grid": [0.01, 0.1]},
    "batch_size": 32,
    "target_epochs": 4,
    "source": {"epochs": 2, "lr": 0.05},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "search": {"algorithm": "tpe", "num_samples": 5, "max_concurrent": 2, "repeats": 1, "seed": 0,
               "mode": "best"},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"cpus": 1, "gpu": 0},
    "storage": "./studies",
    "max_failures": 1,
    "feature_cache": {"mode": "auto", "views": 2, "max_gib": 1.0},
}


def _path(key: str):
    return [int(k) if k.isdigit() else k for k in key.split(".")]


def put(key: str, value):
    """Mutation: set BASE[key] (dotted path, digits index lists) to value."""
    def mutate(d):
        *parents, last = _path(key)
        for k in parents:
            d = d[k]
        d[last] = value
    mutate.__name__ = f"{key}={value!r}"
    return mutate


def drop(key: str):
    def mutate(d):
        *parents, last = _path(key)
        for k in parents:
            d = d[k]
        del d[last]
    mutate.__name__ = f"del {key}"
    return mutate


def both(*mutations):
    def mutate(d):
        for m in mutations:
            m(d)
    mutate.__name__ = " & ".join(m.__name__ for m in mutations)
    return mutate


def mutated(*mutations) -> dict:
    d = copy.deepcopy(BASE)
    for m in mutations:
        m(d)
    return d


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_spec_dict(raw)
    return e.value.problems


# ----------------------------------------------------------------------------- valid specs

def test_minimal_spec_gets_defaults():
    spec = load_spec_dict(copy.deepcopy(MINIMAL))
    assert spec.name == "minimal"
    assert spec.inits == ("source",)
    # list shorthand: every frozen depth, automatic stem
    assert spec.backbones[0].name == "resnet18"
    assert spec.backbones[0].frozen_depth == (0, REGISTRY["resnet18"].num_stages)
    assert spec.backbones[0].stem == "auto"
    assert spec.splits[0].source == (0, 1) and spec.splits[0].target == (2,)
    assert (spec.lr.low, spec.lr.high, spec.lr.grid) == (0.01, 0.1, ())
    assert spec.search.algorithm == "qmc" and spec.scheduler.type == "halving"
    assert spec.search.mode == "compare" and spec.confirm.seeds == 3
    assert spec.data.root is None and spec.time_budget_s is None
    assert spec.weights == () and spec.weights_file("resnet18") is None


def test_feature_cache_defaults_shorthand_and_yaml_booleans(tmp_path):
    assert load_spec_dict(copy.deepcopy(MINIMAL)).feature_cache == FeatureCacheSpec("auto", 2, 1.0)
    for text, mode in [("feature_cache: off", "off"), ("feature_cache: on", "on"),
                       ("feature_cache: auto", "auto"), ("feature_cache: {mode: on}", "on"),
                       ("feature_cache: {mode: 'off', views: 8}", "off")]:
        p = tmp_path / "s.yaml"  # YAML 1.1 reads bare on/off as true/false
        p.write_text(yaml.safe_dump(MINIMAL) + text + "\n")
        fc = load_spec(p).feature_cache
        assert fc.mode == mode, text
        assert fc.views == (8 if "views" in text else 2) and fc.max_gib == 1.0


def test_base_spec_is_valid():
    spec = load_spec_dict(copy.deepcopy(BASE))
    assert spec.backbone("resnet18").frozen_depth == (1, 3)
    assert spec.split("ab").target == ("c", 3)
    assert spec.lr.grid == (0.01, 0.1)


def test_quick_example_loads():
    spec = load_spec(QUICK)
    assert spec.name == "quick"
    assert [s.name for s in spec.splits] == ["5to5"]
    assert spec.split("5to5").source == ("airplane", "automobile", "bird", "cat", "deer")
    assert {b.name: (b.depth_list(), b.stem) for b in spec.backbones} == {
        "scratch_cnn": ([0, 2, 4], "auto")}
    assert spec.inits == ("source", "scratch")
    assert (spec.lr.low, spec.lr.high) == (0.005, 0.2)
    assert spec.data.root is None and spec.data.max_train_per_class == 500
    assert spec.data.target_train_per_class == (10, 30, 100)
    assert spec.target_epochs == 6 and spec.max_failures == 1 and spec.target_steps is None
    assert (spec.confirm.seeds, spec.confirm.max_seeds, spec.confirm.ceiling) == (3, 5, 5)
    # --smoke shrinks the data below the target cap: the cap goes with it
    from study.cli import SMOKE
    smoke = load_spec(QUICK, {k: dict(v) if isinstance(v, dict) else v for k, v in SMOKE.items()})
    assert smoke.data.max_train_per_class == 40 and smoke.data.target_train_per_class is None


def test_load_spec_overrides_merge_into_sections():
    spec = load_spec(QUICK, {"data": {"root": "/some/where"}, "search": {"num_samples": 3}})
    assert spec.data.root == "/some/where"
    assert spec.data.max_train_per_class == 500  # the rest of the section is kept
    assert spec.search.num_samples == 3 and spec.search.max_concurrent == 2
    assert spec.search.trials_per_cell == 3  # the rest of the section is kept


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; the spec accepts it as the number it means
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(MINIMAL).replace("low: 0.01", "low: 1e-3"))
    assert "1e-3" in p.read_text()
    assert load_spec(p).lr.low == pytest.approx(1e-3)


@pytest.mark.parametrize("make", [lambda: load_spec_dict(copy.deepcopy(MINIMAL)),
                                  lambda: load_spec_dict(copy.deepcopy(BASE)),
                                  lambda: load_spec(QUICK),
                                  lambda: load_spec_dict(mutated(
                                      put("inits", ["source", "imagenet", "scratch"]),
                                      put("weights", {"resnet18": "/w/r18.pt"}),
                                      put("time_budget_s", 60),
                                      put("search.algorithm", "grid"))),
                                  lambda: load_spec_dict(mutated(
                                      put("feature_cache", {"mode": "on", "views": 8,
                                                            "max_gib": 0.5}))),
                                  lambda: load_spec_dict(mutated(put("feature_cache", False)))],
                         ids=["minimal", "base", "quick", "imagenet-weights-grid", "feature-cache-on",
                              "feature-cache-off"])
def test_round_trip(make):
    spec = make()
    assert load_spec_dict(spec.to_dict()) == spec
    assert load_spec_dict(yaml.safe_load(spec.to_yaml())) == spec


def test_dataclasses_are_frozen():
    spec = load_spec(QUICK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.search.num_samples = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.backbones[0].frozen_depth = (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lr.low = 1.0
    assert isinstance(spec.splits, tuple) and isinstance(spec.inits, tuple)


# ----------------------------------------------------------------------------- malformed specs

MALFORMED = [
    # unknown keys, top level and nested
    (put("rooot", "/x"), "rooot = '/x': unknown key; valid keys: name, data, splits"),
    (put("data.rooot", "/x"), "data.rooot = '/x': unknown key; valid keys: root, cache_dir"),
    (put("search.algo", "tpe"), "search.algo = 'tpe': unknown key; valid keys: algorithm, "
                                "num_samples"),
    (put("backbones.resnet18.depth", 2),
     "backbones.resnet18.depth = 2: unknown key; valid keys: frozen_depth, stem, depths"),
    (put("backbones.scratch_cnn", {"depths": [0, 5]}),
     "backbones.scratch_cnn.depths = [0, 5]: must be a non-empty list of distinct integers within "
     "[0, 4]"),
    (put("backbones.scratch_cnn", {"depths": [1, 1]}), "backbones.scratch_cnn.depths = [1, 1]: "
                                                        "must be a non-empty list of distinct"),
    (put("backbones.scratch_cnn.depths", [0, 2]),
     "backbones.scratch_cnn.depths = [0, 2]: must not be given together with frozen_depth"),
    (put("splits.0.sources", ["a"]), "splits[0].sources = ['a']: unknown key"),
    (put("data", "cifar"), "data = 'cifar': must be a mapping"),
    # name
    (put("name", "has space"), "name = 'has space': must be 1-64 letters, digits"),
    (put("name", "quick\n"), "name = 'quick\\n': must be 1-64 letters"),
    (put("name", "-lead"), "name = '-lead': must be 1-64"),
    (put("name", "x" * 65), "must be 1-64 letters"),
    (drop("name"), "name = None: must be 1-64"),
    # splits
    (put("splits", []), "splits = []: must be a non-empty list of {name, source, target}"),
    (put("splits", "ab"), "splits = 'ab': must be a non-empty list"),
    (put("splits.0.target", ["b", "c"]),
     "splits[0] = {'source': ['a', 'b'], 'target': ['b', 'c']}: source and target must be "
     "disjoint; both contain ['b']"),
    (put("splits.0.target", []), "splits[0].target = []: must be a non-empty list of class names "
                                 "or indices"),
    (drop("splits.0.source"), "splits[0].source = None: must be a non-empty list"),
    (put("splits", [{"name": "ab", "source": [0], "target": [1]},
                    {"name": "ab", "source": [2], "target": [3]}]),
     "splits[1].name = 'ab': must be unique among splits"),
    (put("splits.0.name", "a b"), "splits[0].name = 'a b': must be a name of letters"),
    (put("splits.0.source", ["a", 1.5]),
     "splits[0].source[1] = 1.5: must be a class name or a non-negative index"),
    (put("splits.0.source", [[0, 1]]),  # unhashable entry: reported, not a TypeError
     "splits[0].source[0] = [0, 1]: must be a class name or a non-negative index"),
    (put("splits.0.source", ["a", True]), "splits[0].source[1] = True: must be a class name"),
    (put("splits.0.target", ["c", -1]),
     "splits[0].target[1] = -1: must be a class name or a non-negative index"),
    (put("splits.0.source", ["a", "a"]), "splits[0].source = ['a', 'a']: must not repeat a class"),
    (put("splits.0", "ab"), "splits[0] = 'ab': must be a mapping with name, source and target"),
    # backbones
    (put("backbones.resnet50", {}),
     "backbones = 'resnet50': unknown backbone; valid backbones: scratch_cnn, mobilenet_v2, "
     "resnet18"),
    (put("backbones", {}), "backbones = {}: must map backbone names (scratch_cnn, mobilenet_v2, "
                           "resnet18)"),
    (put("backbones.resnet18.frozen_depth", [0, 6]),
     "backbones.resnet18.frozen_depth = [0, 6]: must satisfy 0 <= lo <= hi <= 5 "
     "(resnet18 has 5 stages)"),
    (put("backbones.resnet18.frozen_depth", [3, 1]),
     "backbones.resnet18.frozen_depth = [3, 1]: must satisfy 0 <= lo <= hi <= 5"),
    (put("backbones.scratch_cnn.frozen_depth", -1),
     "backbones.scratch_cnn.frozen_depth = [-1, -1]: must satisfy 0 <= lo <= hi <= 4"),
    (put("backbones.resnet18.frozen_depth", [1, 2, 3]),
     "backbones.resnet18.frozen_depth = [1, 2, 3]: must be [lo, hi] integers within [0, 5]"),
    (put("backbones.resnet18.frozen_depth", "deep"),
     "backbones.resnet18.frozen_depth = 'deep': must be [lo, hi] integers within [0, 5]"),
    (put("backbones.resnet18.frozen_depth", [0, 2.5]),
     "backbones.resnet18.frozen_depth = [0, 2.5]: must be [lo, hi] integers"),
    (put("backbones.scratch_cnn.stem", "imagenet"),
     "backbones.scratch_cnn.stem = 'imagenet': must be auto or one of cifar"),
    (put("backbones.resnet18.stem", "big"),
     "backbones.resnet18.stem = 'big': must be one of auto, cifar, imagenet"),
    (put("backbones.resnet18", [0, 3]), "backbones.resnet18 = [0, 3]: must be a mapping"),
    # inits
    (put("inits", ["source", "random"]), "inits[1] = 'random': must be one of source, imagenet, "
                                         "scratch"),
    (put("inits", []), "inits = []: must be a non-empty list of source, imagenet, scratch"),
    (put("inits", "source"), "inits = 'source': must be a non-empty list"),
    (put("inits", ["source", "source"]), "inits = ['source', 'source']: must not repeat a value"),
    (both(put("inits", ["imagenet"]), put("backbones.resnet18.stem", "cifar")),
     "backbones.resnet18.stem = 'cifar': must be 'auto' or 'imagenet' when inits has 'imagenet'"),
    (both(put("inits", ["source", "imagenet"]), drop("backbones.resnet18")),
     "inits = ['source', 'imagenet']: has 'imagenet' but no listed backbone has ImageNet weights"),
    # learning rate
    (drop("lr"), "lr = None: is required: {low: L, high: H}"),
    (put("lr", {"low": 0.5, "high": 0.1}), "lr = {'low': 0.5, 'high': 0.1}: low must be <= high"),
    (put("lr.low", -0.01), "lr.low = -0.01: must be a number in (0, 10]"),
    (put("lr.low", 0), "lr.low = 0: must be a number in (0, 10]"),
    (put("lr.high", "fast"), "lr.high = 'fast': must be a finite number"),
    (put("lr.high", float("nan")), "lr.high = nan: must be a finite number"),
    (put("lr", 0.1), "lr = 0.1: must be a mapping"),
    (both(put("search.algorithm", "grid"), drop("lr.grid")),
     "lr.grid = []: must list the learning rates when search.algorithm is 'grid'"),
    (put("lr.grid", 0), "lr.grid = 0: must be a list of positive numbers"),
    (put("lr.grid", [0.01, -1]), "lr.grid[1] = -1: must be a number in (0, 10]"),
    # integers and numbers
    (put("batch_size", 0), "batch_size = 0: must be an integer in [1, 65536]"),
    (put("batch_size", 32.5), "batch_size = 32.5: must be an integer"),
    (put("target_epochs", 0), "target_epochs = 0: must be an integer in [1, 1000]"),
    (put("scheduler.grace_period", 5), "scheduler.grace_period = 5: must be <= target_epochs (4)"),
    (put("scheduler.reduction_factor", 1), "scheduler.reduction_factor = 1: must be a number in "
                                           "(1, 100]"),
    (put("scheduler.type", "hyperband"), "scheduler.type = 'hyperband': must be one of halving, "
                                         "asha, fifo"),
    (put("search.mode", "all"), "search.mode = 'all': must be one of compare, best"),
    (put("search.mode", "compare"), "search.algorithm = 'tpe': must be qmc, random or grid when "
                                    "search.mode is 'compare'"),
    (both(put("search.mode", "compare"), put("search.algorithm", "qmc"), put("search.repeats", 2)),
     "search.repeats = 2: must be 1 when search.mode is 'compare'"),
    (put("search.trials_per_cell", 0), "search.trials_per_cell = 0: must be an integer in [1, 1000]"),
    (put("confirm", {"seeds": -1}), "confirm.seeds = -1: must be an integer in [0, 100]"),
    (put("confirm", {"seed": 1}), "confirm.seed = 1: unknown key; valid keys: seeds"),
    (put("report", {"tolerance": -1}), "report.tolerance = -1: must be a number in [0, 100]"),
    (put("loggers", ["tensorboard", "neptune"]), "loggers[1] = 'neptune': must be one of "
                                                 "tensorboard, mlflow, wandb"),
    (put("loggers", "mlflow"), "loggers = 'mlflow': must be a list of tensorboard, mlflow, wandb"),
    (put("search.algorithm", "bohb"), "search.algorithm = 'bohb': must be one of tpe, random, grid"),
    (put("search.num_samples", -3), "search.num_samples = -3: must be an integer in [1, 100000]"),
    (put("search.repeats", 0), "search.repeats = 0: must be an integer in [1, 100]"),
    (put("search.seed", True), "search.seed = True: must be an integer"),
    (put("search.max_concurrent", 0), "search.max_concurrent = 0: must be an integer in [1, 10000]"),
    (put("resources.cpus", 0), "resources.cpus = 0: must be a number in (0, 1024]"),
    (put("resources.gpu", -1), "resources.gpu = -1: must be a number in [0, 64]"),
    (put("data.val_fraction", 0.7), "data.val_fraction = 0.7: must be a number in (0, 0.5]"),
    (put("data.max_train_per_class", 1), "data.max_train_per_class = 1: must be an integer >= 2"),
    (put("data.image_size", 4), "data.image_size = 4: must be an integer in [8, 512]"),
    (put("data.root", 5), "data.root = 5: must be a path or null"),
    (put("max_failures", -1), "max_failures = -1: must be an integer in [0, 100]"),
    (put("source.epochs", 0), "source.epochs = 0: must be an integer in [1, 1000]"),
    (put("optimizer.name", "lbfgs"), "optimizer.name = 'lbfgs': must be one of sgd, adam, adamw"),
    (put("optimizer.schedule", "step"), "optimizer.schedule = 'step': must be one of cosine, "
                                        "constant"),
    (put("optimizer.momentum", 1.5), "optimizer.momentum = 1.5: must be a number in [0, 0.999]"),
    # weights, storage, time budget
    (put("weights", {"scratch_cnn": "w.pt"}),
     "weights.scratch_cnn = 'w.pt': unknown key: ImageNet weights exist for mobilenet_v2, "
     "resnet18"),
    (put("weights", {"resnet18": 3}), "weights.resnet18 = 3: must be a file path"),
    (put("weights", ["w.pt"]), "weights = ['w.pt']: must map a backbone name to a local ImageNet "
                               "weights file"),
    (put("storage", ""), "storage = '': must be a directory path or a URI"),
    (put("storage", None), "storage = None: must be a directory path or a URI"),
    (put("time_budget_s", -5), "time_budget_s = -5: must be a number > 0"),
    (put("time_budget_s", 0), "time_budget_s = 0: must be a number > 0"),
    # frozen-feature cache
    (put("feature_cache.mode", "always"),
     "feature_cache.mode = 'always': must be one of auto, on, off"),
    (put("feature_cache", "always"), "feature_cache = 'always': must be one of auto, on, off"),
    (put("feature_cache", 3), "feature_cache = 3: must be auto, on, off or a mapping "
                              "{mode, views, max_gib}"),
    (put("feature_cache.views", 0), "feature_cache.views = 0: must be an integer in [1, 64]"),
    (put("feature_cache.views", 2.5), "feature_cache.views = 2.5: must be an integer"),
    (put("feature_cache.max_gib", 0), "feature_cache.max_gib = 0: must be a number in (0, 1024]"),
    (put("feature_cache.max_gib", "lots"), "feature_cache.max_gib = 'lots': must be a finite number"),
    (put("feature_cache.view", 4), "feature_cache.view = 4: unknown key; valid keys: mode, views, "
                                   "max_gib"),
]


@pytest.mark.parametrize("mutation, expected", MALFORMED,
                         ids=[m.__name__[:60] for m, _ in MALFORMED])
def test_malformed_spec_names_field_value_and_rule(mutation, expected):
    with pytest.raises(SpecError) as e:
        load_spec_dict(mutated(mutation))
    problems = e.value.problems
    assert any(expected in p for p in problems), problems
    assert expected in str(e.value)
    assert len(problems) == 1, problems  # one mistake, one problem: no cascade


def test_malformed_table_is_large_enough():
    assert len(MALFORMED) >= 25


def test_several_problems_reported_together():
    problems = problems_of(mutated(put("search.num_samples", -3), put("batch_size", 0),
                                   put("name", "bad name"), put("data.rooot", 1)))
    assert len(problems) == 4
    joined = "\n".join(problems)
    for field in ("search.num_samples = -3", "batch_size = 0", "name = 'bad name'",
                  "data.rooot = 1"):
        assert field in joined
    with pytest.raises(SpecError) as e:
        load_spec_dict(mutated(put("lr.low", -1), put("resources.cpus", 0)), source="x.yaml")
    assert len(e.value.problems) >= 2
    msg = str(e.value)
    assert msg.startswith("invalid study spec x.yaml:")
    assert "lr.low = -1" in msg and "resources.cpus = 0" in msg


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_load_spec_dict_on_non_mapping():
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec_dict(["name", "x"])


# ----------------------------------------------------------------------------- spec files

def test_load_spec_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value) and "does not exist" in str(e.value)


def test_load_spec_directory_is_not_a_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist or is not a file"):
        load_spec(tmp_path)


def test_load_spec_invalid_yaml(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nsplits: [unclosed\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value) and "not valid YAML" in str(e.value)


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str"),
                                        ("", "NoneType")])
def test_load_spec_top_level_not_a_mapping(tmp_path, text, kind):
    p = tmp_path / "top.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value)
    assert f"top level must be a mapping, got {kind}" in str(e.value)


def test_load_spec_problem_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(mutated(put("search.repeats", 0))))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert f"invalid study spec {p}" in str(e.value)
    assert e.value.problems == ["search.repeats = 0: must be an integer in [1, 100]"]


# ----------------------------------------------------------------------------- class resolution

CLASSES = ["a", "b", "c", "d", "e"]


def _split_spec(*splits):
    return load_spec_dict(mutated(put("splits", [dict(name=n, source=s, target=t)
                                                 for n, s, t in splits])))


def test_resolve_classes_by_name_and_index():
    spec = _split_spec(("ab", ["a", 1], ["c", 4]), ("rev", ["e"], [0, "b", "d"]))
    assert resolve_classes(spec, CLASSES) == {"ab": ([0, 1], [2, 4]), "rev": ([4], [0, 1, 3])}


def test_resolve_classes_unknown_name_lists_the_classes():
    spec = _split_spec(("ab", ["a"], ["c"]), ("z", ["a"], ["b", "zebra"]))
    with pytest.raises(SpecError) as e:
        resolve_classes(spec, CLASSES)
    assert e.value.problems == ["splits[1].target[1] = 'zebra': unknown class; the data's classes "
                                "are a, b, c, d, e"]


def test_resolve_classes_index_out_of_range():
    spec = _split_spec(("ab", [0, 5], [1]))
    with pytest.raises(SpecError) as e:
        resolve_classes(spec, CLASSES)
    assert e.value.problems == ["splits[0].source[1] = 5: class index out of range: the data has "
                                "5 classes"]
    assert resolve_classes(_split_spec(("ab", [0, 4], [1])), CLASSES)["ab"] == ([0, 4], [1])


def test_resolve_classes_same_class_by_name_and_index():
    spec = _split_spec(("ab", ["a", "b"], [0, "c"]))  # 'a' is class 0: on both sides
    with pytest.raises(SpecError) as e:
        resolve_classes(spec, CLASSES)
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith("splits[0] = 'ab': source and target must be disjoint")


def test_resolve_classes_reports_all_problems():
    spec = _split_spec(("ab", ["x"], [9]))
    with pytest.raises(SpecError) as e:
        resolve_classes(spec, CLASSES)
    assert len(e.value.problems) == 2


def test_quick_example_classes_resolve_against_cifar10():
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    r = resolve_classes(load_spec(QUICK), cifar)
    assert r == {"5to5": ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])}


# ----------------------------------------------------------------------------- stems

def _stem_spec(inits, **stems):
    return load_spec_dict(mutated(put("inits", inits), put("backbones", {
        "scratch_cnn": {}, "mobilenet_v2": {"stem": stems.get("mobilenet_v2", "auto")},
        "resnet18": {"stem": stems.get("resnet18", "auto")}})))


def test_resolve_stem_auto_follows_init():
    spec = _stem_spec(["source", "imagenet", "scratch"])
    for b in ("mobilenet_v2", "resnet18"):
        assert resolve_stem(spec, b, "imagenet") == "imagenet"
        assert resolve_stem(spec, b, "source") == "cifar"
        assert resolve_stem(spec, b, "scratch") == "cifar"
    assert resolve_stem(spec, "scratch_cnn", "source") == "cifar"
    assert resolve_stem(spec, "scratch_cnn", "scratch") == "cifar"


def test_resolve_stem_explicit_stem_wins():
    spec = _stem_spec(["source", "imagenet", "scratch"], mobilenet_v2="cifar",
                      resnet18="imagenet")
    assert resolve_stem(spec, "resnet18", "source") == "imagenet"
    assert resolve_stem(spec, "resnet18", "scratch") == "imagenet"
    # mobilenet_v2's ImageNet weights do not require the ImageNet stem
    assert resolve_stem(spec, "mobilenet_v2", "imagenet") == "cifar"
    spec = _stem_spec(["source"], resnet18="cifar")
    assert resolve_stem(spec, "resnet18", "source") == "cifar"


@pytest.mark.parametrize("stem", ["auto", "cifar", "imagenet"])
def test_resolved_stem_is_always_buildable(stem):
    inits = list(INITS) if stem != "cifar" else ["source", "scratch"]
    spec = load_spec_dict(mutated(put("inits", inits), put("backbones", {
        name: {"stem": stem if stem in info.stems else "auto"}
        for name, info in REGISTRY.items()})))
    for b in spec.backbones:
        info = REGISTRY[b.name]
        for init in spec.inits:
            if init == "imagenet" and info.imagenet_weights is None:
                continue
            got = resolve_stem(spec, b.name, init)
            assert got in info.stems, (b, init, got)
            if init == "imagenet" and info.imagenet_stem_required:
                assert got == "imagenet"


# ----------------------------------------------------------------------------- CLI

def test_cli_validate_quick(capsys):
    assert main(["validate", str(QUICK)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "valid study 'quick'" in out
    assert ("1 split(s), 1 backbone(s), inits source, scratch, 12 cells, 72 trials (36 tuning + 36 "
            "confirmation, racing up to 96; mode compare, qmc, halving)") in out


def test_cli_validate_grid_counts_points(tmp_path, capsys):
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(mutated(put("search.algorithm", "grid"), put("search.repeats", 2),
                                        put("splits.0", {"name": "ab", "source": ["cat", "dog"],
                                                         "target": ["ship", 9]}))))
    assert main(["validate", str(p)]) == EXIT_OK
    # mode best: 1 split x (scratch_cnn: 5 depths + scratch, resnet18: 3 depths + scratch) x 2 lrs
    # x 2 repeats = 40 tuning trials, + 3 confirmation seeds of the split's best
    assert "43 trials (40 tuning + 3 confirmation; mode best, grid, asha)" in capsys.readouterr().out


def test_cli_validate_checks_cifar10_classes_without_data(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(QUICK.read_text().replace("[dog, frog,", "[dogs, frog,"))
    assert main(["validate", str(p)]) == EXIT_BAD_INPUT
    assert ("splits[0].target[0] = 'dogs': unknown class; the data's classes are airplane, "
            "automobile") in capsys.readouterr().err


def test_validate_imports_neither_torch_nor_ray():
    code = ("import sys; from study.cli import main; main(['validate', %r]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))" % str(QUICK))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_schema_defaults_written_once():
    from study.core.spec import SearchSpec, describe
    assert SearchSpec().trials_per_cell == 4 and "search.trials_per_cell: default 4" in describe()
    assert load_spec_dict(copy.deepcopy(MINIMAL)).search == SearchSpec()


def test_cli_validate_bad_spec(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(mutated(put("search.num_samples", -3), put("lr.low", 0))))
    assert main(["validate", str(p)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "search.num_samples = -3: must be an integer in [1, 100000]" in err
    assert "lr.low = 0: must be a number in (0, 10]" in err
    assert str(p) in err


def test_cli_validate_missing_file(tmp_path, capsys):
    p = tmp_path / "missing.yaml"
    assert main(["validate", str(p)]) == EXIT_BAD_INPUT
    assert str(p) in capsys.readouterr().err


def test_cli_console_script_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutated(put("backbones.resnet18.frozen_depth", [0, 9]))))
    r = subprocess.run([sys.executable, "-m", "study.cli", "validate", str(bad)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "backbones.resnet18.frozen_depth = [0, 9]" in r.stderr


# ----------------------------------------------------------------------------- racing and the Answer's keys

def test_racing_ceiling_and_answer_keys():
    from study.core.spec import default_of, describe

    from study.core.design import design_of

    spec = load_spec_dict(copy.deepcopy(MINIMAL))
    assert (spec.confirm.max_seeds, spec.confirm.ceiling, design_of(spec).racing) == (None, 3, False)
    assert (spec.report.tolerance, spec.report.alpha) == (1.0, 0.05)
    raced = load_spec_dict({**copy.deepcopy(MINIMAL), "confirm": {"seeds": 1, "max_seeds": 5}})
    assert (raced.confirm.ceiling, design_of(raced).racing) == (5, True)
    assert problems_of({**copy.deepcopy(MINIMAL), "confirm": {"seeds": 3, "max_seeds": 2}}) == [
        "confirm.max_seeds = 2: must be >= confirm.seeds (3) or null"]
    for bad in (0, 0.6, "x"):
        (p,) = problems_of({**copy.deepcopy(MINIMAL), "report": {"alpha": bad}})
        assert p.startswith(f"report.alpha = {bad!r}: must be"), p
    # one default per key, read by the analysis through default_of
    assert default_of("report.tolerance") == 1.0 and default_of("confirm.seeds") == 3
    assert default_of("confirm.max_seeds") is None and default_of("data.val_fraction") == 0.1
    # every key, the hand-parsed ones too
    keys = {line.split(":")[0] for line in describe().splitlines()}
    for k in ("splits", "backbones", "inits", "lr.low / lr.high", "weights", "loggers",
              "confirm.max_seeds", "report.alpha", "search.seed"):
        assert k in keys, k
