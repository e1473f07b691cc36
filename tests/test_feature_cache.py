"""The frozen-feature cache (trainables/features.py): the cached path computes what the full
model computes, the views and their computation when first drawn, the `auto` rule, FLOP
accounting, a real Ray study with the cache on, and a killed cached trial resuming to the
identical result. Real small models, CPU."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from study.runner import run_study
from study.core.spec import FeatureCacheSpec, OptimizerSpec, load_spec_dict
from trainables import features as F
from study.core import metrics as M
from trainables.backbones import build, freeze
from trainables.data import DeviceData
from trainables.train import (evaluate, make_optimizer, make_schedule, step_flops,
                              train_one_epoch)

from test_study_integration import tiny_spec
from test_trial_resume import KillWorkerAtEpoch

CPU = torch.device("cpu")
# (backbone, stem, frozen depth): a middle depth, a flattened stage, linear probes (pooled)
CASES = [("scratch_cnn", "cifar", 2), ("scratch_cnn", "cifar", 4), ("resnet18", "imagenet", 3),
         ("resnet18", "imagenet", 5), ("mobilenet_v2", "imagenet", 7)]


def _images(n=40, classes=3, seed=0) -> DeviceData:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, classes, n)
    return DeviceData(x, y, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), CPU)


def _model(backbone, stem, depth, classes=3):
    torch.manual_seed(0)
    m = build(backbone, classes, stem)
    freeze(m, depth)
    return m.train()


def _plan(model, data, mode="on", views=1, **kw):
    return F.plan(FeatureCacheSpec(mode=mode, views=views, **kw), model, (3, 32, 32),
                  n_train=len(data), n_val=0, images_per_epoch=len(data), device=CPU)


class Unaugmented:
    """A DeviceData whose training batches are not augmented: the regime of a 1-view cache."""

    def __init__(self, data: DeviceData):
        self.data, self.y, self.device = data, data.y, data.device

    def __len__(self):
        return len(self.data)

    def batches(self, batch_size, *, shuffle, augment, generator=None, drop_last=False,
                aug_generator=None):
        return self.data.batches(batch_size, shuffle=shuffle, augment=False, generator=generator,
                                 drop_last=drop_last)


# ----------------------------------------------------------------------------- equivalence

@pytest.mark.parametrize("backbone,stem,depth", CASES)
def test_cached_step_matches_full_model_logits_and_gradients(backbone, stem, depth):
    data = _images(16)
    full = _model(backbone, stem, depth)
    cached = copy.deepcopy(full)
    feats = F.FeatureData(data, cached, _plan(cached, data), views=1)
    ((xb, yb),) = feats.batches(16, shuffle=False, augment=False)  # computed as first drawn
    assert feats.x.shape[:2] == (1, 16) and feats.computed == 16 and torch.equal(yb, data.y)

    torch.manual_seed(1)  # the same dropout mask in both
    ref = full(data.normalize(data.x))
    torch.manual_seed(1)
    out = F.Suffix(cached)(xb)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ref.square().sum().backward()
    out.square().sum().backward()
    grads = dict(cached.named_parameters())
    trainable = [(k, p) for k, p in full.named_parameters() if p.requires_grad]
    assert trainable
    for k, p in full.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[k].grad, p.grad, rtol=1e-4, atol=1e-6, msg=k)
        else:
            assert p.grad is None and grads[k].grad is None
    # trainable BatchNorm layers updated their statistics identically
    for (k, a), b in zip(full.state_dict().items(), cached.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("backbone,stem,depth", [CASES[0], CASES[3]])
def test_epoch_on_one_view_cache_equals_unaugmented_full_model_epoch(backbone, stem, depth):
    """train_one_epoch + evaluate, the trainable's own loops, on both paths: same shuffles (the
    1-view cache draws no view), same dropout, so the same trained weights and metrics."""
    data, val = _images(32), _images(20, seed=1)
    results = []
    for use_cache in (False, True):
        model = _model(backbone, stem, depth)
        opt = make_optimizer(model, OptimizerSpec(), 0.05)
        sched = make_schedule(opt, OptimizerSpec(), 3, 2)
        net, tr, va = model, Unaugmented(data), val
        if use_cache:
            net, tr, va = F.prepare(model, data, val, _plan(model, data), seed=0)
        gen = torch.Generator().manual_seed(7)
        torch.manual_seed(3)
        losses = [train_one_epoch(net, tr, opt, sched, batch_size=16, generator=gen)
                  for _ in range(2)]
        acc, loss, pred = evaluate(net, va)
        results.append((losses, acc, loss, pred, model.state_dict()))
    (l0, a0, v0, p0, s0), (l1, a1, v1, p1, s1) = results
    assert l0 == pytest.approx(l1, rel=1e-5) and v0 == pytest.approx(v1, rel=1e-5)
    assert a0 == a1 and torch.equal(p0, p1)
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], rtol=1e-4, atol=1e-6, msg=k)


# ----------------------------------------------------------------------------- views

def _cache(model, data, plan, views, seed=0):
    f = F.FeatureData(data, model, plan, views=views, seed=seed)
    f.precompute(batch_size=5)
    return f


def test_views_are_identity_mirror_and_seeded_crops_and_drawn_per_epoch():
    data = _images(12)
    model = _model("scratch_cnn", "cifar", 3)
    plan = _plan(model, data, views=4)
    feats = _cache(model, data, plan, 4, seed=5)
    assert feats.x.shape == (4, 12, 128, 4, 4) and feats.x.dtype == torch.float32
    assert feats.computed == 48 and bool(feats.done.all())
    with torch.no_grad():
        plain = model.forward_features(data.normalize(data.x), 0, 3)
        mirrored = model.forward_features(data.normalize(data.x.flip(3)), 0, 3)
    torch.testing.assert_close(feats.x[0], plain)
    torch.testing.assert_close(feats.x[1], mirrored)
    assert not torch.allclose(feats.x[2], feats.x[0]) and not torch.allclose(feats.x[2], feats.x[3])
    # deterministic for a seed (a resumed trial recomputes the same views), different for another
    assert torch.equal(_cache(model, data, plan, 4, seed=5).x, feats.x)
    assert not torch.equal(_cache(model, data, plan, 4, seed=6).x[2:], feats.x[2:])

    gen = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(3):
        seen = {}
        for xb, yb in feats.batches(5, shuffle=True, augment=True, generator=gen):
            for row in xb:
                i, v = next((i, v) for v in range(4) for i in range(12) if torch.equal(row, feats.x[v, i]))
                seen[i] = v
        assert sorted(seen) == list(range(12))  # every image once per epoch, in one of its views
        epochs.append(tuple(seen[i] for i in range(12)))
    assert len(set(epochs)) > 1 and len({v for e in epochs for v in e}) > 1
    unaug = torch.cat([xb for xb, _ in feats.batches(5, shuffle=False, augment=False)])
    assert torch.equal(unaug, feats.x[0])


def test_pairs_are_computed_when_first_drawn_never_more_than_an_uncached_epoch():
    data = _images(40)
    model = _model("scratch_cnn", "cifar", 4)
    feats = F.FeatureData(data, model, _plan(model, data, views=2), views=2)
    gen = torch.Generator().manual_seed(0)
    new = []
    for _ in range(6):
        before = feats.computed
        for _ in feats.batches(16, shuffle=True, augment=True, generator=gen, drop_last=True):
            pass
        new.append(feats.computed - before)
    assert new[0] == 32  # epoch 1: every trained image (2 full batches), like an uncached epoch
    assert all(0 <= k <= 32 for k in new) and sum(new) <= 2 * 40 and new[-1] < new[0]
    assert int(feats.done.sum()) == feats.computed
    eager = _cache(model, data, _plan(model, data, views=2), 2)  # the same values, computed at once
    torch.testing.assert_close(feats.x[feats.done], eager.x[feats.done])


# ----------------------------------------------------------------------------- FLOPs, auto rule

@pytest.mark.parametrize("backbone,stem,depth", CASES)
def test_prefix_plus_suffix_flops_equal_the_full_models(backbone, stem, depth):
    m = _model(backbone, stem, depth)
    train_full, eval_full = step_flops(m, (3, 32, 32), 3, CPU)
    p = _plan(m, _images(8))
    assert p.prefix_flops > 0 and p.suffix_train_flops > 0
    assert p.prefix_flops + p.suffix_train_flops == train_full
    assert p.prefix_flops + p.suffix_eval_flops == eval_full


def _decide(backbone, stem, depth, mode="auto", views=2, max_gib=1.0, n_train=900):
    m = _model(backbone, stem, depth, classes=5)
    return F.plan(FeatureCacheSpec(mode, views, max_gib), m, (3, 32, 32), n_train=n_train,
                  n_val=100, images_per_epoch=n_train - n_train % 64, device=CPU)


def test_auto_caches_linear_probes_not_depth_zero_nor_shallow_depths():
    for backbone, stem, n in [("scratch_cnn", "cifar", 4), ("resnet18", "imagenet", 5),
                              ("mobilenet_v2", "imagenet", 7)]:
        probe = _decide(backbone, stem, n)
        assert probe.use and probe.pooled and probe.epoch_speedup > 100, probe
        zero = _decide(backbone, stem, 0)
        assert not zero.use and zero.reason == "frozen_depth 0: nothing is frozen"
    assert _decide("scratch_cnn", "cifar", 3).use  # only the 0.5 MFLOP fc stage trains
    # mobilenet_v2 depth 6: only stage7 (a 1x1 conv, 160 -> 1280) trains; with its depthwise
    # convs' backward counted per group the prefix is >= 2/3 of a step, so it is cached
    assert _decide("mobilenet_v2", "imagenet", 6).use
    for backbone, stem, depth in [("scratch_cnn", "cifar", 1), ("scratch_cnn", "cifar", 2),
                                  ("resnet18", "imagenet", 4), ("mobilenet_v2", "imagenet", 5)]:
        mid = _decide(backbone, stem, depth)  # much of the network still trains
        assert not mid.use and "per epoch is below 3.0x" in mid.reason and mid.epoch_speedup < 3
    assert _decide("scratch_cnn", "cifar", 4, views=8).use  # views cost memory, not compute
    off = _decide("scratch_cnn", "cifar", 4, mode="off")
    assert not off.use and off.reason == "feature_cache.mode is off"
    assert _decide("scratch_cnn", "cifar", 1, mode="on").use  # on: any frozen prefix


def test_memory_budget_auto_falls_back_on_fails_with_the_size():
    # scratch_cnn depth 1: 32x16x16 fp32 = 32 KiB per image-view
    small = _decide("scratch_cnn", "cifar", 1, mode="on", views=2, n_train=900)
    assert small.bytes == (2 * 900 + 100) * 32 * 16 * 16 * 4
    auto = _decide("scratch_cnn", "cifar", 3, views=2, max_gib=0.001)
    assert not auto.use and "exceeds max_gib 0.001" in auto.reason
    with pytest.raises(F.FeatureTooLarge) as e:
        _decide("scratch_cnn", "cifar", 1, mode="on", views=4, max_gib=0.05)
    assert str(e.value) == (
        "feature_cache: on needs 115.6 MiB (4 views x 900 training + 100 validation images x "
        "32x16x16 float32) for scratch_cnn at frozen_depth 1, more than feature_cache.max_gib = "
        "0.05; raise max_gib, lower feature_cache.views, or use mode auto (caches only where it "
        "fits)")


# ----------------------------------------------------------------------------- real Ray studies

def _rows(study_dir: Path) -> list[list[dict]]:
    return [[json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            for f in sorted(study_dir.glob("*/result.json"))]


def test_study_with_feature_cache_on_reports_it(tiny_folder, tmp_path, ray_local):
    spec = load_spec_dict(tiny_spec(
        tiny_folder, tmp_path / "s", tmp_path / "c", name="cached",
        feature_cache={"mode": "on", "views": 3}, inits=["source", "scratch"],
        backbones={"scratch_cnn": {"frozen_depth": [3, 4]}},
        lr={"low": 0.05, "high": 0.05, "grid": [0.05]}, target_epochs=3,
        search={"algorithm": "grid", "max_concurrent": 2, "seed": 1}, scheduler={"type": "fifo"}))
    summary = run_study(spec)
    assert summary["trials"] == 3 and summary["completed"] == 3 and summary["errored"] == 0
    by_depth = {rows[0]["config"][M.FROZEN_DEPTH]: rows for rows in _rows(Path(summary["results"]))}
    assert sorted(by_depth) == [0, 3, 4]  # scratch (nothing frozen), source at depths 3 and 4
    for depth, rows in by_depth.items():
        assert [r[M.EPOCH] for r in rows] == [1, 2, 3]
        for r in rows:
            assert r[M.FEATURE_CACHE] is (depth > 0)
            assert r[M.FEATURE_CACHE_VIEWS] == (3 if depth else 0)
            assert (r[M.FEATURE_CACHE_S] > 0) is (depth > 0) and r[M.WALL_S] >= r[M.FEATURE_CACHE_S]
        assert 0 <= rows[-1][M.TEST_ACC] <= 1 and rows[-1][M.DONE] is True
        flops = [r[M.TARGET_FLOPS] for r in rows]
        inc = [b - a for a, b in zip([0.0] + flops, flops)]
        if depth:  # epoch 1 computes every trained image's prefix, later epochs only new views
            assert inc[0] > inc[1] > 0 and inc[0] > inc[2] > 0, inc
        else:
            assert inc == pytest.approx([inc[0]] * 3)
    # epoch 1 costs what it costs uncached: deeper is cheaper, as for uncached trials
    first = {d: rows[0][M.TARGET_FLOPS] for d, rows in by_depth.items()}
    assert first[0] > first[3] > first[4]
    last = {d: rows[-1][M.TARGET_FLOPS] - rows[-2][M.TARGET_FLOPS] for d, rows in by_depth.items()}
    assert last[4] < first[4] and last[3] < first[3]


def test_killed_cached_trial_resumes_to_the_identical_result(tiny_folder, tmp_path, ray_local):
    def spec(name):
        return load_spec_dict(tiny_spec(
            tiny_folder, tmp_path / name, tmp_path / "cache", name=name,
            backbones={"scratch_cnn": {"frozen_depth": 3}}, feature_cache={"mode": "on", "views": 3},
            lr={"low": 0.05, "high": 0.05, "grid": [0.05]},
            search={"algorithm": "grid", "max_concurrent": 1, "seed": 3},
            scheduler={"type": "fifo"}, max_failures=2))

    calm = run_study(spec("calm"))
    hit = run_study(spec("hit"), callbacks=[KillWorkerAtEpoch(2)])
    assert calm["completed"] == hit["completed"] == 1 and hit["errored"] == 0
    (a,), (b,) = _rows(Path(calm["results"])), _rows(Path(hit["results"]))
    epochs = [r[M.EPOCH] for r in b]
    assert epochs[:2] == [1, 2] and epochs[-1] == 4 and 1 not in epochs[2:], epochs  # no restart
    assert a[-1][M.FEATURE_CACHE] is b[-1][M.FEATURE_CACHE] is True
    for key in (M.VAL_ACC, M.VAL_LOSS, M.TRAIN_LOSS, M.TEST_ACC, M.TARGET_FLOPS):
        assert a[-1][key] == b[-1][key], key
