"""Target-set size as a compared condition (data.target_train_per_class as a list): the spec's
rules, nested and paired subsets, the design's cells and budget, the plan's prices, the gain
statistics and the racing that serves them. No Ray: pure functions and the CLI's checks."""
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.cli import EXIT_BAD_INPUT, main
from study.core import metrics as M
from study.core import stats as ST
from study.core.decide import racing_seeds
from study.core.design import StudyDesign, cell_id, passes_per_epoch, steps_per_pass
from study.core.spec import SpecError, load_spec_dict
from trainables.data import nested_subset

from conftest import REPO, make_image_folder


def _spec(**over) -> dict:
    d = {"name": "sizes", "data": {"root": None, "val_fraction": 0.1, "max_train_per_class": 500,
                                   "target_train_per_class": [10, 30, 100]},
         "splits": [{"name": "s", "source": ["airplane", "automobile"],
                     "target": ["dog", "frog", "horse", "ship", "truck"]}],
         "backbones": {"scratch_cnn": {"depths": [0, 2, 4]}}, "inits": ["source", "scratch"],
         "lr": {"low": 0.01, "high": 0.1}, "batch_size": 32, "target_epochs": 6,
         "search": {"trials_per_cell": 2, "seed": 3}, "confirm": {"seeds": 2, "max_seeds": 4}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d


# ----------------------------------------------------------------------------- the spec

@pytest.mark.parametrize("value, rule", [
    (0, "integer >= 1"), ([10, 0], "integer >= 1"), ([30, 10], "strictly increasing"),
    ([10, 10], "strictly increasing"), ([], "non-empty list"), ("ten", "integer >= 1"),
    ([10, 460], r"leaves after the validation split \(450\)")])
def test_bad_sizes_name_the_field_the_value_and_the_rule(value, rule):
    with pytest.raises(SpecError) as e:
        load_spec_dict(_spec(data={"target_train_per_class": value}))
    msg = str(e.value)
    assert "data.target_train_per_class = " in msg and repr(value) in msg, msg
    assert pytest.importorskip("re").search(rule, msg), msg


def test_one_size_or_a_list_round_trips():
    one = load_spec_dict(_spec(data={"target_train_per_class": 30}))
    assert one.data.target_train_per_class == (30,)
    assert load_spec_dict(one.to_dict()) == one and one.to_dict()["data"]["target_train_per_class"] == 30
    many = load_spec_dict(_spec())
    assert many.data.target_train_per_class == (10, 30, 100)
    assert load_spec_dict(yaml.safe_load(many.to_yaml())) == many


def test_mode_best_takes_one_size():
    with pytest.raises(SpecError, match=r"data.target_train_per_class = \[10, 30, 100\]: must be "
                                        r"one size when search.mode is 'best'"):
        load_spec_dict(_spec(search={"mode": "best", "algorithm": "random"},
                             confirm={"seeds": 1, "max_seeds": None}))


def _bad_spec_file(tmp_path: Path, **data) -> Path:
    d = _spec(data={"root": str(tmp_path / "folder"), "cache_dir": str(tmp_path / "cache"),
                    "max_train_per_class": None, "image_size": 16, **data},
              splits=[{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]}],
              storage=str(tmp_path / "storage"))
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("sizes, says", [
    (0, "data.target_train_per_class = 0: must be null, an integer >= 1"),
    ([10, 5], "data.target_train_per_class = [10, 5]: must list the sizes in strictly increasing"),
    ([4, 20], "data.target_train_per_class = [4, 20]: the largest size must be <= the training "
              "images every target class has after the validation split; too small: ab_cd:c (18)"),
])
def test_cli_exits_2_and_writes_nothing(tmp_path, capsys, sizes, says):
    """A size of 0, sizes not increasing, a class too small for the largest size (known only
    from the data: class c has 24 training images, 18 after the 25 % validation split): exit 2
    naming the field, the value and the rule; no study directory is made."""
    make_image_folder(tmp_path / "folder", n_train=24)
    (tmp_path / "folder" / "train" / "c")  # 24 images: 18 left after val_fraction 0.25
    spec = _bad_spec_file(tmp_path, target_train_per_class=sizes, val_fraction=0.25)
    for cmd in (["validate", str(spec)], ["run", str(spec)]):
        assert main(cmd) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert says in err, err
    assert not (tmp_path / "storage").exists()


# ----------------------------------------------------------------------------- subsets

def test_subsets_are_nested_across_sizes_paired_within_a_seed_and_differ_across_seeds():
    labels = np.repeat(np.arange(4), 50)
    np.random.default_rng(0).shuffle(labels)
    for seed in (1, 2):
        small, large = nested_subset(labels, 10, seed), nested_subset(labels, 30, seed)
        assert set(small) <= set(large)
        assert np.bincount(labels[small]).tolist() == [10] * 4
        assert np.bincount(labels[large]).tolist() == [30] * 4
        assert np.array_equal(small, nested_subset(labels, 10, seed))  # every depth and init
    assert set(nested_subset(labels, 10, 1)) != set(nested_subset(labels, 10, 2))
    assert np.array_equal(nested_subset(labels, None, 1), np.arange(len(labels)))
    # a class's order does not depend on the other classes present
    only = np.flatnonzero(labels == 2)
    mine = nested_subset(labels[only], 10, 1)
    assert set(only[mine]) == {i for i in nested_subset(labels, 10, 1) if labels[i] == 2}


def test_target_indices_leave_validation_and_test_alone(tiny_folder):
    from trainables.data import load_dataset
    from trainables.trainable import build_study_data, target_indices
    from study.core.spec import resolve_classes

    d = _spec(data={"root": str(tiny_folder), "max_train_per_class": None, "image_size": 16,
                    "val_fraction": 0.25, "target_train_per_class": [3, 9]},
              splits=[{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]}])
    spec = load_spec_dict(d)
    ds = load_dataset(spec.data.root, image_size=16, progress=lambda *a: None)
    data = build_study_data(ds, spec, resolve_classes(spec, ds.classes))
    one = load_spec_dict({**d, "data": {**d["data"], "target_train_per_class": None}})
    other = build_study_data(ds, one, resolve_classes(one, ds.classes))
    assert np.array_equal(data.val_idx, other.val_idx) and np.array_equal(data.test_idx, other.test_idx)
    assert np.array_equal(data.train_idx, other.train_idx)  # source models: every image
    a3, a9 = target_indices(data, 3, 8), target_indices(data, 9, 8)
    assert set(a3) <= set(a9) <= set(data.train_idx) and not set(a9) & set(data.val_idx)
    assert np.bincount(ds.train_y[a9], minlength=4).tolist() == [9, 9, 9, 9]
    assert set(target_indices(data, 3, 9)) != set(a3)
    assert np.array_equal(target_indices(data, None, 8), data.train_idx)


# ----------------------------------------------------------------------------- the design

def test_cells_groups_baselines_and_sources_per_size():
    d = StudyDesign(load_spec_dict(_spec()))
    assert d.sizes == (10, 30, 100) and len(d.cells) == 3 * 4
    assert cell_id("s", "scratch_cnn", "source", 2, 30) == "s/n30/scratch_cnn/source/d2"
    assert set(d.answer_groups) == {f"s/n{n}/scratch_cnn/source" for n in (10, 30, 100)}
    assert d.answer_groups["s/n30/scratch_cnn/source"] == [f"s/n30/scratch_cnn/source/d{k}"
                                                           for k in (0, 2, 4)]
    c = d.cell("s/n30/scratch_cnn/source/d2")
    assert d.baseline(c).id == "s/n30/scratch_cnn/scratch/d0"
    assert d.race_cells["s/n30/scratch_cnn/source"][-1] == "s/n30/scratch_cnn/scratch/d0"
    assert d.race_groups_of("s/n30/scratch_cnn/scratch/d0") == ["s/n30/scratch_cnn/source"]
    assert d.seeds_at_most(d.cell("s/n30/scratch_cnn/scratch/d0")) == d.ceiling_seeds
    cfg = d.tuning_configs()[0]
    assert cfg[M.SIZE] in (10, 30, 100) and d.cell_of(cfg).id == cfg[M.CELL]
    # one source model per split x backbone x seed serves every size
    assert len(d.source_jobs()) == 1 + len(d.ceiling_seeds)
    assert len(d.source_users[d.source_jobs()[0]]) == 3 * 3
    # without a size the ids stay as they were
    plain = StudyDesign(load_spec_dict(_spec(data={"target_train_per_class": None})))
    assert plain.sizes == (None,) and plain.cells[0].id == "s/scratch_cnn/source/d0"
    assert plain.min_steps("s") is None and plain.passes("s", 50) == 1


def test_the_budget_rule_trains_every_size_at_least_the_largest_sizes_steps():
    d = StudyDesign(load_spec_dict(_spec()))
    # 100 per class x 5 classes = 500 images = 15 steps of 32 per pass; 6 epochs: 90 steps
    assert d.min_steps("s") == 6 * 15 == 90
    for n, passes in ((10, 15), (30, 4), (100, 1)):
        images = 5 * n
        assert d.passes("s", images) == passes
        assert 6 * passes * steps_per_pass(images, 32) >= 90
    assert passes_per_epoch(50, 32, 6, None) == 1
    assert passes_per_epoch(500, 32, 6, 200) == math.ceil(200 / 90)
    fixed = StudyDesign(load_spec_dict(_spec(target_steps=300)))
    assert fixed.min_steps("s") == 300 and fixed.passes("s", 500) == 4


def test_the_plan_prices_each_size_with_its_passes():
    from study.plan import make_plan

    spec = load_spec_dict(_spec())
    plan = make_plan(spec, flops_per_s=1e9, per_class=500, test_per_class=100, log=lambda *a: None)
    rows = {r["cell"]: r for r in plan["cells"]}
    f = {n: rows[f"s/n{n}/scratch_cnn/scratch/d0"]["epoch_flops"] for n in (10, 30, 100)}
    # images per epoch: 10/class 1 step x 15 passes, 30/class 4 x 4, 100/class 15 x 1 (x 32)
    assert f[10] / f[100] == pytest.approx(15 / 15) and f[30] / f[100] == pytest.approx(16 / 15)
    assert plan["counts"]["cells"] == 12


# ----------------------------------------------------------------------------- the gain

def _cells(*depth_accs):
    return [{"cell": f"d{d}", "depth": d, "accs": dict(enumerate(a))} for d, a in depth_accs]


def test_transfer_gain_verdicts():
    z = {0: 0.50, 1: 0.52, 2: 0.51, 3: 0.49}
    better = ST.transfer_gain(_cells((0, [0.60, 0.63, 0.61, 0.60]), (2, [0.50, 0.52, 0.52, 0.49])),
                              z, 0.01, 0.05, sizes=3)
    assert better["verdict"] == ST.GAIN_BETTER and better["depths"]["d0"]["lo"] > 0
    same = ST.transfer_gain(_cells((0, [0.501, 0.521, 0.509, 0.489])), z, 0.01, 0.05, sizes=3)
    assert same["verdict"] == ST.GAIN_NOT  # every upper bound below +1 point
    worse = ST.transfer_gain(_cells((0, [0.40, 0.425, 0.41, 0.385])), z, 0.01, 0.05)
    assert worse["verdict"] == ST.GAIN_SCRATCH
    noisy = ST.transfer_gain(_cells((0, [0.60, 0.45, 0.58, 0.47])), z, 0.01, 0.05, sizes=3)
    assert noisy["verdict"] == ST.UNDECIDED and not noisy["decided"]
    # family-wise: each bound at alpha / (2 x depths x sizes)
    assert better["alpha_bound"] == pytest.approx(0.05 / (2 * 2 * 3))
    one = ST.transfer_gain(_cells((0, [0.60, 0.63, 0.61, 0.60])), z, 0.01, 0.05, sizes=1)
    wide = ST.transfer_gain(_cells((0, [0.60, 0.63, 0.61, 0.60])), z, 0.01, 0.05, sizes=5)
    assert wide["depths"]["d0"]["lo"] < one["depths"]["d0"]["lo"]


def test_transfer_gain_family_error_rate_at_the_least_favourable_truth():
    """Every depth exactly as good as scratch (gain 0: 'transfer better' is wrong at any size,
    and so is 'scratch better'), 3 sizes x 3 depths, 4 paired seeds: the family's verdicts
    together are wrong in at most alpha of the families (Monte Carlo, 2000 families)."""
    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(2000):
        bad = False
        for _size in range(3):
            u = rng.normal(0, 0.02, 4)  # the seed's shared effect
            z = dict(enumerate(0.5 + u + rng.normal(0, 0.01, 4)))
            cells = [{"cell": f"d{d}", "depth": d,
                      "accs": dict(enumerate(0.5 + u + rng.normal(0, 0.01, 4)))} for d in range(3)]
            v = ST.transfer_gain(cells, z, 0.0, 0.05, sizes=3)["verdict"]
            bad = bad or v in (ST.GAIN_BETTER, ST.GAIN_SCRATCH)
        wrong += bad
    assert wrong / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_racing_gives_the_scratch_baseline_seeds_while_the_gain_is_undecided():
    d = StudyDesign(load_spec_dict(_spec(report={"tolerance": 1.0})))
    g = "s/n10/scratch_cnn/source"
    cells = d.race_cells[g]
    base = cells[-1]
    seeds = d.confirm_seeds
    # the depths are decided (d4 far below, d0 and d2 tied: d0 shown... ) but the gain is noisy
    runs = {cells[0]: dict(zip(seeds, (0.60, 0.60))), cells[1]: dict(zip(seeds, (0.60, 0.60))),
            cells[2]: dict(zip(seeds, (0.20, 0.21))), base: dict(zip(seeds, (0.45, 0.70)))}
    asked = {c: set(seeds) for c in cells}
    out = racing_seeds(d, g, set(cells), runs, {c: 1.0 for c in cells}, asked)
    assert base in out and out[base] == [d.ceiling_seeds[len(seeds)]]
    # a decided gain adds nothing for the baseline
    runs[base] = dict(zip(seeds, (0.30, 0.30)))
    out = racing_seeds(d, g, set(cells), runs, {c: 1.0 for c in cells}, asked)
    assert base not in out
