"""A seed is shared across the cells of one split x backbone x init (common random numbers), so
the report may compare depths paired, per seed: the same source model, the same new head, the
same batches every epoch and the same augmentation draws, whether a cell trains on cached
frozen features or not; and the target-only data cap (the few-target-images regime). Real
models on the tiny image folder, no Ray."""

import numpy as np
import pytest
import torch

from study.core import metrics as M
from study.core.spec import SpecError, load_spec_dict, resolve_stem
from study.runner import prepare_data
from trainables import features as F
from trainables.trainable import (_device_split, build_target_model, ensure_source_model,
                                  trial_generators)

from test_study_integration import tiny_spec

CPU = torch.device("cpu")
SEED = 7


def _spec(tiny_folder, tmp_path, **data):
    raw = tiny_spec(tiny_folder, tmp_path / "studies", tmp_path / "cache")
    raw["data"].update(data)
    return load_spec_dict(raw)


def _cfg(depth: int, init: str = "source") -> dict:
    return {M.SPLIT: "ab_cd", M.BACKBONE: "scratch_cnn", M.INIT: init, M.FROZEN_DEPTH: depth,
            M.LR: 0.01, M.SEED: SEED}


def test_a_seeds_cells_share_source_model_and_head(tiny_folder, tmp_path):
    spec = _spec(tiny_folder, tmp_path)
    data = prepare_data(spec, log=lambda *a: None)
    sources = tmp_path / "sources"
    stem = resolve_stem(spec, "scratch_cnn", "source")
    for seed in (SEED, SEED + 1):
        ensure_source_model(spec, data, "ab_cd", "scratch_cnn", stem, seed, sources, "test",
                            log=lambda *a: None)
    models = {d: build_target_model(spec, data, _cfg(d), sources, f"t{d}")[0] for d in (0, 2, 4)}
    ref = models[0].state_dict()
    for d, m in models.items():
        st = m.state_dict()
        assert st.keys() == ref.keys()
        for k in ref:  # the source model's stages and the fresh head: equal for every depth
            assert torch.equal(st[k], ref[k]), (d, k)
        frozen = {k for k, p in m.named_parameters() if not p.requires_grad}
        assert bool(frozen) == (d > 0)
    # the head is seeded the same way for every init: scratch gets the same fresh head too
    scratch = build_target_model(spec, data, _cfg(0, "scratch"), sources, "ts")[0]
    head = [k for k in ref if models[0].stage_of_parameter(k) is None]
    assert head and all(torch.equal(scratch.state_dict()[k], ref[k]) for k in head)
    # another seed: another source model and head
    other = build_target_model(spec, data, {**_cfg(0), M.SEED: SEED + 1}, sources, "to")
    assert not all(torch.equal(other[0].state_dict()[k], ref[k]) for k in head)


def _orders(train, epochs: int, seed: int, split_generators: bool = True) -> list[list[int]]:
    """The labels (here: each image's index) of every batch of ``epochs`` epochs, as the
    trainable draws them."""
    gen, aug = trial_generators(seed)
    out = []
    for _ in range(epochs):
        out.append(torch.cat([yb for _, yb in train.batches(
            8, shuffle=True, augment=True, generator=gen, drop_last=True,
            aug_generator=aug if split_generators else None)]).tolist())
    return out


def test_batches_are_the_same_for_every_depth_cached_or_not(tiny_folder, tmp_path):
    """An uncached cell (crop + flip per batch) and a cached one (one view per image and epoch)
    draw different amounts of augmentation randomness; the order of the batches stays the same
    in every epoch because order and augmentation have generators of their own."""
    spec = _spec(tiny_folder, tmp_path)
    data = prepare_data(spec, log=lambda *a: None)
    _, tgt = data.splits["ab_cd"]
    images = _device_split(data, "target_train", tgt, CPU)
    images.y = torch.arange(len(images.y))  # label = position: the batches show the order
    from trainables.backbones import build, freeze
    model = build("scratch_cnn", len(tgt), "cifar")
    freeze(model, 4)
    fc = type(spec.feature_cache)(mode="on", views=2)
    cache = F.plan(fc, model, tuple(images.x.shape[1:]), n_train=len(images), n_val=4,
                   images_per_epoch=len(images), device=CPU)
    assert cache.use
    cached = F.FeatureData(images, model, cache, views=2, seed=SEED + 3)
    plain = _orders(images, 3, SEED)
    assert _orders(cached, 3, SEED) == plain
    assert len(set(map(tuple, plain))) == 3  # a new order every epoch
    assert _orders(images, 3, SEED + 1) != plain  # and another seed, another order
    # one generator for both (as before): the orders part after the first epoch
    one = _orders(images, 3, SEED, split_generators=False)
    assert _orders(cached, 3, SEED, split_generators=False)[1:] != one[1:]
    # the augmentation draws of two uncached cells are the same too: same batches, same pixels
    a, b = ([xb for xb, _ in images.batches(8, shuffle=True, augment=True, generator=g,
                                             drop_last=True, aug_generator=x)]
            for g, x in (trial_generators(SEED), trial_generators(SEED)))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_target_only_cap_leaves_source_data_validation_and_test_alone(tiny_folder, tmp_path):
    from trainables.trainable import target_indices

    full = prepare_data(_spec(tiny_folder, tmp_path), log=lambda *a: None)
    capped = prepare_data(_spec(tiny_folder, tmp_path, target_train_per_class=5),
                          log=lambda *a: None)
    assert np.array_equal(full.train_idx, capped.train_idx)
    assert np.array_equal(full.val_idx, capped.val_idx)
    assert np.array_equal(full.test_idx, capped.test_idx)
    idx = target_indices(capped, 5, SEED)
    assert set(idx) <= set(full.train_idx)
    _, counts = np.unique(capped.train_y[idx], return_counts=True)
    assert counts.tolist() == [5, 5, 5, 5]
    _, tgt = capped.splits["ab_cd"]
    assert len(_device_split(capped, "target_train", tgt, CPU, idx=idx)) == 10
    assert len(_device_split(capped, "train", tgt, CPU)) == len(_device_split(full, "train", tgt, CPU))


def test_target_cap_larger_than_what_the_data_leaves_is_refused(tiny_folder, tmp_path):
    raw = tiny_spec(tiny_folder, tmp_path / "s", tmp_path / "c")
    raw["data"].update(max_train_per_class=40, val_fraction=0.25, target_train_per_class=31)
    with pytest.raises(SpecError, match=r"data.target_train_per_class.*31.*\(30\)"):
        load_spec_dict(raw)
    raw["data"]["target_train_per_class"] = 30
    assert load_spec_dict(raw).data.target_train_per_class == (30,)
