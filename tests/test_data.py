"""trainables.data: sources, decoding, the .npz cache, bad data, splits and device batching.

Every dataset here is generated in tmp_path (tiny PNG/JPEG images, fake CIFAR pickles); the real
CIFAR-10 is never touched and no test needs the network.
"""
from __future__ import annotations

import pickle
import shutil
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import data as D
from trainables.data import (DataError, DeviceData, augment_batch, class_subset, load_dataset,
                             resolve_source, stratified_split, subsample)

# created in this (unsorted) order; the loader must sort them
CLASSES = ("zebra", "ant", "moth")
SIZE = 8


# ----------------------------------------------------------------------------- generators

def _pixels(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_folder(root: Path, classes=CLASSES, n_train=3, n_test=2, size=SIZE, seed=0,
                ext=".png", sizes=None) -> dict:
    """train/<class>/NN<ext> and test/<class>/NN<ext>; returns the pixel arrays written,
    expected[split][class] = [HxWx3 uint8, ...] in file-name order (exact for PNG)."""
    rng = np.random.default_rng(seed)
    expected: dict = {}
    for split, n in (("train", n_train), ("test", n_test)):
        expected[split] = {}
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            imgs = []
            for i in range(n):
                s = sizes[(ci + i) % len(sizes)] if sizes else size
                img = _pixels(rng, s, s)
                Image.fromarray(img).save(d / f"{i:02d}{ext}")
                imgs.append(img)
            expected[split][c] = imgs
    return expected


def expected_arrays(expected: dict):
    classes = sorted(expected["train"])
    out = []
    for split in ("train", "test"):
        out.append(np.stack([im for c in classes for im in expected[split][c]]))
        out.append(np.array([i for i, c in enumerate(classes) for _ in expected[split][c]],
                            dtype=np.int64))
    return (*out, classes)


def make_tar(src: Path, out: Path, top: str | None = "top") -> Path:
    """An archive of the tree ``src`` (train/ and test/), under one top-level folder ``top``
    (``None``: train/ and test/ at the archive root; ``"."``: members named ./train/...)."""
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else \
        "w:xz" if out.name.endswith((".xz", ".txz")) else "w"
    with tarfile.open(out, mode) as tar:
        if top is None:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
        else:
            tar.add(src, arcname=top)
    return out


def make_cifar_batches(d: Path, label_names=("plane", "car", "bird"), n_per_batch=2, n_test=3,
                       seed=0) -> dict:
    """A cifar-10-batches-py folder in the real on-disk format (rows of 1024 R, 1024 G, 1024 B
    values); returns the HWC images and labels written."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    k = len(label_names)

    def batch(name, n):
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, n)]
        rows = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels,
                         "filenames": [f"{i}.png" for i in range(n)]}, f, protocol=2)
        return imgs, np.array(labels, dtype=np.int64)

    parts = [batch(f"data_batch_{i}", n_per_batch) for i in range(1, 6)]
    test_x, test_y = batch("test_batch", n_test)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(label_names), "num_cases_per_batch": n_per_batch,
                     "num_vis": 3072}, f, protocol=2)
    return {"train_x": np.concatenate([p[0] for p in parts]),
            "train_y": np.concatenate([p[1] for p in parts]),
            "test_x": test_x, "test_y": test_y, "classes": list(label_names)}


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


class Recorder:
    def __init__(self):
        self.messages: list[str] = []

    def __call__(self, msg):
        self.messages.append(str(msg))

    def decoded(self) -> bool:
        return any("decoding" in m for m in self.messages)


def assert_same(a: D.Dataset, b: D.Dataset):
    for f in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.classes == b.classes
    assert a.fingerprint == b.fingerprint


def names(msg: str, path: Path) -> bool:
    return str(path) in msg or str(path.resolve()) in msg


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """One image-folder tree (PNG, 3 classes) and its expected arrays, shared read-only."""
    root = tmp_path_factory.mktemp("tree") / "data"
    return root, make_folder(root)


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- resolve_source

def test_resolve_none_is_torchvision():
    assert resolve_source(None) == ("torchvision", None)


def test_resolve_image_folder(tree):
    root, _ = tree
    assert resolve_source(root) == ("image_folder", root.resolve())
    assert resolve_source(str(root)) == ("image_folder", root.resolve())


def test_resolve_image_folder_one_level_below(tree, tmp_path):
    outer = tmp_path / "outer"
    shutil.copytree(tree[0], outer / "inner")
    assert resolve_source(outer) == ("image_folder", (outer / "inner").resolve())


def test_resolve_two_candidate_subfolders_is_an_error(tree, tmp_path):
    outer = tmp_path / "outer"
    shutil.copytree(tree[0], outer / "one")
    shutil.copytree(tree[0], outer / "two")
    with pytest.raises(DataError, match="neither") as e:
        resolve_source(outer)
    assert names(str(e.value), outer)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.xz"])
def test_resolve_archive(tree, tmp_path, suffix):
    arc = make_tar(tree[0], tmp_path / f"data{suffix}")
    assert resolve_source(arc) == ("archive", arc.resolve())


def test_resolve_cifar_batches_and_parent(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(batches)
    assert resolve_source(batches) == ("cifar_batches", batches.resolve())
    assert resolve_source(tmp_path) == ("cifar_batches", batches.resolve())


# ----------------------------------------------------------------------------- load_dataset

def test_load_image_folder_arrays(tree, cache):
    root, expected = tree
    ds = load_dataset(root, cache_dir=cache, image_size=SIZE, progress=Recorder())
    train_x, train_y, test_x, test_y, classes = expected_arrays(expected)
    assert ds.classes == sorted(CLASSES) == classes
    assert ds.train_x.shape == (9, SIZE, SIZE, 3) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (6, SIZE, SIZE, 3) and ds.test_x.dtype == np.uint8
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_x, train_x)  # PNG is lossless: exact pixels
    np.testing.assert_array_equal(ds.train_y, train_y)
    np.testing.assert_array_equal(ds.test_x, test_x)
    np.testing.assert_array_equal(ds.test_y, test_y)
    assert ds.origin == str(root.resolve())
    assert len(ds.fingerprint) == 64
    assert ds.fingerprint == D.fingerprint(train_x, train_y, test_x, test_y, classes)


def test_load_image_folder_one_level_below(tree, tmp_path, cache):
    outer = tmp_path / "outer"
    shutil.copytree(tree[0], outer / "inner")
    a = load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=Recorder())
    b = load_dataset(outer, cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert_same(a, b)


def test_load_resizes_to_image_size(tmp_path, cache):
    root = tmp_path / "mixed"
    make_folder(root, n_train=3, n_test=2, sizes=(6, 12, 9), ext=".jpg")
    # plus a grayscale and an RGBA image: converted to RGB
    Image.fromarray(np.full((5, 7), 100, np.uint8)).save(root / "train" / "ant" / "gray.png")
    Image.fromarray(np.full((10, 4, 4), 200, np.uint8)).save(root / "test" / "moth" / "rgba.png")
    ds = load_dataset(root, cache_dir=cache, image_size=12, progress=Recorder())
    assert ds.train_x.shape == (10, 12, 12, 3) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (7, 12, 12, 3) and ds.test_x.dtype == np.uint8
    assert np.bincount(ds.train_y).tolist() == [4, 3, 3]
    assert np.bincount(ds.test_y).tolist() == [2, 3, 2]
    ds16 = load_dataset(root, cache_dir=cache, image_size=16, progress=Recorder())
    assert ds16.train_x.shape == (10, 16, 16, 3)
    assert len([f for f in cache_files(cache) if f.endswith(".npz")]) == 2  # one per image size


def test_non_image_files_are_ignored(tmp_path, cache):
    root = tmp_path / "d"
    make_folder(root)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "README").write_text("a file beside the class folders")
    ds = load_dataset(root, cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert len(ds.train_x) == 9 and ds.classes == sorted(CLASSES)


@pytest.mark.parametrize("suffix,top", [(".tar", "top"), (".tar.gz", "top"), (".tgz", "top"),
                                        (".tar.xz", "top"), (".tar", None), (".tar.gz", ".")])
def test_archive_equals_directory(tree, tmp_path, cache, suffix, top):
    root, _ = tree
    arc = make_tar(root, tmp_path / f"data{suffix}", top=top)
    a = load_dataset(root, cache_dir=cache, image_size=SIZE, progress=Recorder())
    b = load_dataset(arc, cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert_same(a, b)
    assert b.origin == str(arc.resolve())
    assert b.train_x.flags.c_contiguous


def test_fingerprint_changes_with_one_pixel(tree, tmp_path, cache):
    root, expected = tree
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    a = load_dataset(copy, cache_dir=cache, image_size=SIZE, progress=Recorder())
    img = expected["test"]["moth"][1].copy()
    img[3, 4, 1] ^= 1
    Image.fromarray(img).save(copy / "test" / "moth" / "01.png")
    b = load_dataset(copy, cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert a.fingerprint != b.fingerprint
    assert (a.test_x != b.test_x).sum() == 1
    # the same pixels under another path give the same fingerprint
    c = load_dataset(root, cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert c.fingerprint == a.fingerprint


def test_load_cifar_batches(tmp_path, cache):
    batches = tmp_path / "cifar-10-batches-py"
    exp = make_cifar_batches(batches)
    for source in (batches, tmp_path):
        ds = load_dataset(source, cache_dir=cache, image_size=SIZE, progress=Recorder())
        assert ds.classes == ["plane", "car", "bird"]  # from batches.meta, in its order
        assert ds.train_x.shape == (10, 32, 32, 3) and ds.train_x.dtype == np.uint8
        assert ds.test_x.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(ds.train_x, exp["train_x"])
        np.testing.assert_array_equal(ds.train_y, exp["train_y"])
        np.testing.assert_array_equal(ds.test_x, exp["test_x"])
        np.testing.assert_array_equal(ds.test_y, exp["test_y"])
        assert ds.train_y.dtype == np.int64
        assert ds.origin == str(batches.resolve())


def test_channel_stats(tree, cache):
    ds = load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=Recorder())
    mean, std = ds.channel_stats()
    flat = ds.train_x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-6)


# ----------------------------------------------------------------------------- the cache

@pytest.mark.parametrize("kind", ["image_folder", "archive", "cifar_batches"])
def test_second_load_reads_the_cache(tree, tmp_path, cache, kind):
    if kind == "image_folder":
        source = tree[0]
    elif kind == "archive":
        source = make_tar(tree[0], tmp_path / "data.tar.gz")
    else:
        source = tmp_path / "cifar-10-batches-py"
        make_cifar_batches(source)
    first = Recorder()
    a = load_dataset(source, cache_dir=cache, image_size=SIZE, progress=first)
    assert first.decoded()
    files = cache_files(cache)
    assert len(files) == 1 and files[0].startswith(kind + "-") and files[0].endswith(".npz")
    second = Recorder()
    b = load_dataset(source, cache_dir=cache, image_size=SIZE, progress=second)
    assert not second.decoded(), second.messages
    assert_same(a, b)
    assert b.origin == a.origin
    assert cache_files(cache) == files


def test_cache_not_reused_after_the_source_changes(tmp_path, cache):
    root = tmp_path / "d"
    make_folder(root)
    load_dataset(root, cache_dir=cache, image_size=SIZE, progress=Recorder())
    make_folder(root, n_train=4, seed=1)  # rewrites the images and adds one per class
    rec = Recorder()
    ds = load_dataset(root, cache_dir=cache, image_size=SIZE, progress=rec)
    assert rec.decoded() and len(ds.train_x) == 12


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupted_cache_is_rebuilt(tree, cache, damage):
    a = load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=Recorder())
    (name,) = cache_files(cache)
    f = cache / name
    good = f.read_bytes()
    f.write_bytes({"garbage": b"not a zip file at all" * 10, "truncated": good[:len(good) // 2],
                   "empty": b""}[damage])
    rec = Recorder()
    b = load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=rec)
    assert rec.decoded()
    assert_same(a, b)
    assert cache_files(cache) == [name]
    rec = Recorder()
    assert_same(a, load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=rec))
    assert not rec.decoded()  # the rebuilt file is good


def test_cache_dir_from_environment(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "envcache"))
    load_dataset(tree[0], image_size=SIZE, progress=Recorder())
    assert [f for f in cache_files(tmp_path / "envcache") if f.endswith(".npz")]


# ----------------------------------------------------------------------------- bad data

def _garbage_png(path: Path):
    path.write_bytes(b"\x00garbage, not a PNG\xff" * 4)


def bad_missing(tmp):
    return tmp / "does-not-exist", "does not exist"


def bad_plain_file(tmp):
    p = tmp / "data.zip"
    p.write_bytes(b"PK\x03\x04 whatever")
    return p, "not a .tar"


def bad_corrupt_archive(tmp):
    p = tmp / "data.tar.gz"
    p.write_bytes(b"this is not gzip data" * 20)
    return p, "cannot read archive"


def bad_dir_without_splits(tmp):
    p = tmp / "d"
    (p / "images" / "cat").mkdir(parents=True)
    return p, "neither"


def bad_archive_without_test(tmp):
    make_folder(tmp / "src")
    shutil.rmtree(tmp / "src" / "test")
    return make_tar(tmp / "src", tmp / "data.tar"), "no test/"


def bad_archive_without_splits(tmp):
    (tmp / "src" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "src" / "images" / "a.png")
    return make_tar(tmp / "src", tmp / "data.tar.gz"), "no train/"


def bad_empty_class_dir(tmp):
    make_folder(tmp / "d")
    (tmp / "d" / "train" / "empty").mkdir()
    (tmp / "d" / "test" / "empty").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "d" / "test" / "empty" / "a.png")
    return tmp / "d", "train/empty has no images"


def bad_class_with_only_non_images(tmp):
    make_folder(tmp / "d")
    (tmp / "d" / "test" / "ant" / "01.png").unlink()
    (tmp / "d" / "test" / "ant" / "00.png").unlink()
    (tmp / "d" / "test" / "ant" / "notes.txt").write_text("x")
    return tmp / "d", "test/ant has no images"


def bad_empty_class_archive(tmp):
    make_folder(tmp / "src")
    (tmp / "src" / "test" / "void").mkdir()
    (tmp / "src" / "train" / "void").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "src" / "train" / "void" / "a.png")
    return make_tar(tmp / "src", tmp / "data.tar.xz"), "test/void has no images"


def bad_empty_class_archive_dot(tmp):
    make_folder(tmp / "src")
    (tmp / "src" / "train" / "void").mkdir()
    (tmp / "src" / "test" / "void").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "src" / "test" / "void" / "a.png")
    return make_tar(tmp / "src", tmp / "data.tar", top="."), "train/void has no images"


def bad_unreadable_image_dir(tmp):
    make_folder(tmp / "d")
    _garbage_png(tmp / "d" / "train" / "moth" / "x.png")
    return tmp / "d", "x.png"


def bad_unreadable_image_archive(tmp):
    make_folder(tmp / "src")
    _garbage_png(tmp / "src" / "test" / "ant" / "x.png")
    return make_tar(tmp / "src", tmp / "data.tgz"), "top/test/ant/x.png"


def bad_one_class_dir(tmp):
    make_folder(tmp / "d", classes=("only",))
    return tmp / "d", "need at least 2"


def bad_one_class_archive(tmp):
    make_folder(tmp / "src", classes=("only",))
    return make_tar(tmp / "src", tmp / "data.tar"), "need at least 2"


def bad_one_class_cifar(tmp):
    make_cifar_batches(tmp / "cifar-10-batches-py", label_names=("lonely",))
    return tmp / "cifar-10-batches-py", "need at least 2"


def bad_cifar_incomplete(tmp):
    make_cifar_batches(tmp / "cifar-10-batches-py")
    (tmp / "cifar-10-batches-py" / "test_batch").unlink()
    return tmp / "cifar-10-batches-py", "missing test_batch"


def bad_class_sets_differ_dir(tmp):
    make_folder(tmp / "d")
    shutil.rmtree(tmp / "d" / "test" / "moth")
    return tmp / "d", "differ"


def bad_class_sets_differ_archive(tmp):
    make_folder(tmp / "src")
    (tmp / "src" / "test" / "zebra").rename(tmp / "src" / "test" / "horse")
    return make_tar(tmp / "src", tmp / "data.tar.gz"), "differ"


def bad_two_top_folders_archive(tmp):
    make_folder(tmp / "a")
    make_folder(tmp / "b")
    out = tmp / "data.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(tmp / "a", arcname="one")
        tar.add(tmp / "b", arcname="two")
    return out, "more than one top-level folder"


BAD = [bad_missing, bad_plain_file, bad_corrupt_archive, bad_dir_without_splits,
       bad_archive_without_test, bad_archive_without_splits, bad_empty_class_dir,
       bad_class_with_only_non_images, bad_empty_class_archive, bad_empty_class_archive_dot,
       bad_unreadable_image_dir, bad_unreadable_image_archive, bad_one_class_dir,
       bad_one_class_archive, bad_one_class_cifar, bad_cifar_incomplete,
       bad_class_sets_differ_dir, bad_class_sets_differ_archive, bad_two_top_folders_archive]


@pytest.mark.parametrize("make_bad", BAD, ids=[f.__name__[4:] for f in BAD])
def test_bad_data_raises_and_leaves_no_cache(tmp_path, make_bad):
    src = tmp_path / "src-area"
    src.mkdir()
    path, fragment = make_bad(src)
    cache = tmp_path / "cache"
    cache.mkdir()  # exists beforehand, so a stray temp file would be visible
    with pytest.raises(DataError) as e:
        load_dataset(path, cache_dir=cache, image_size=SIZE, progress=Recorder())
    msg = str(e.value)
    assert fragment in msg, msg
    assert names(msg, path), msg
    assert cache_files(cache) == []  # no .npz, no half-written temp file


def test_unreadable_image_names_the_file(tmp_path, cache):
    make_folder(tmp_path / "d")
    bad = tmp_path / "d" / "train" / "moth" / "x.png"
    _garbage_png(bad)
    with pytest.raises(DataError, match="unreadable image") as e:
        load_dataset(tmp_path / "d", cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert names(str(e.value), bad)


def test_failed_cache_write_leaves_no_temp_file(tree, cache, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(D.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        load_dataset(tree[0], cache_dir=cache, image_size=SIZE, progress=Recorder())
    assert cache_files(cache) == []


# ----------------------------------------------------------------------------- torchvision

@pytest.fixture()
def offline(monkeypatch):
    """No internet, deterministically and at once (the real sandbox fails DNS the same way, in
    about 1.5 s; on a connected machine this keeps the test from downloading 170 MB)."""
    def no_dns(*a, **k):
        raise socket.gaierror(-2, "Name or service not known (offline test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


def test_torchvision_download_fails_offline(tmp_path, offline):
    cache = tmp_path / "cache"
    dl = tmp_path / "dl"
    with pytest.raises(DataError, match="could not download") as e:
        load_dataset(None, cache_dir=cache, download_dir=dl, progress=Recorder())
    assert str(dl) in str(e.value)
    assert not [f for f in cache_files(cache) if f.endswith(".npz")]


def test_torchvision_uses_existing_batches_without_download(tmp_path, offline, monkeypatch):
    import torchvision.datasets

    def no_download(*a, **k):
        raise AssertionError("CIFAR10 download attempted")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_download)
    cache = tmp_path / "cache"
    dl = tmp_path / "dl"
    exp = make_cifar_batches(dl / "cifar-10-batches-py")
    rec = Recorder()
    ds = load_dataset(None, cache_dir=cache, download_dir=dl, progress=rec)
    assert rec.decoded()
    assert ds.classes == exp["classes"]
    np.testing.assert_array_equal(ds.train_x, exp["train_x"])
    np.testing.assert_array_equal(ds.test_y, exp["test_y"])
    assert ds.origin == str(dl / "cifar-10-batches-py")
    rec = Recorder()
    assert_same(ds, load_dataset(None, cache_dir=cache, download_dir=dl, progress=rec))
    assert not rec.decoded()


def test_torchvision_default_download_dir_is_in_cache(tmp_path, offline):
    cache = tmp_path / "cache"
    exp = make_cifar_batches(cache / "torchvision" / "cifar-10-batches-py")
    ds = load_dataset(None, cache_dir=cache, progress=Recorder())
    np.testing.assert_array_equal(ds.test_x, exp["test_x"])


# ----------------------------------------------------------------------------- splits

def _labels(counts=(10, 7, 3, 1, 13), seed=0):
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def test_stratified_split_deterministic_and_seeded():
    y = _labels()
    a = stratified_split(y, 0.2, seed=3)
    b = stratified_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = stratified_split(y, 0.2, seed=4)
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_stratified_split_per_class_counts_disjoint_covering(fraction):
    y = _labels()
    train, val = stratified_split(y, fraction, seed=0)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, unique
    assert not set(train.tolist()) & set(val.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    for c, n in enumerate((10, 7, 3, 1, 13)):
        assert (y[val] == c).sum() == max(1, round(n * fraction))
        assert (y[train] == c).sum() == n - max(1, round(n * fraction))


def test_stratified_split_max_per_class():
    y = _labels()
    train, val = stratified_split(y, 0.2, seed=1, max_per_class=5)
    assert not set(train.tolist()) & set(val.tolist())
    for c, n in enumerate((10, 7, 3, 1, 13)):
        used = min(n, 5)
        assert (y[val] == c).sum() == max(1, round(used * 0.2))
        assert (y[train] == c).sum() + (y[val] == c).sum() == used
    again = stratified_split(y, 0.2, seed=1, max_per_class=5)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(val, again[1])


def test_stratified_split_zero_fraction():
    y = _labels()
    train, val = stratified_split(y, 0.0, seed=0)
    assert len(val) == 0
    np.testing.assert_array_equal(train, np.arange(len(y)))


def test_subsample():
    y = _labels()
    idx = subsample(y, 4, seed=2)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [4, 4, 3, 1, 4]
    np.testing.assert_array_equal(idx, subsample(y, 4, seed=2))
    assert not np.array_equal(idx, subsample(y, 4, seed=5))
    np.testing.assert_array_equal(subsample(y, None, seed=0), np.arange(len(y)))


def test_class_subset_remaps_in_given_order():
    y = np.array([0, 1, 2, 3, 4, 3, 1, 0, 4, 3])
    x = np.arange(len(y)) * 10
    idx = np.array([9, 0, 1, 3, 5, 6, 8])
    xs, ys = class_subset(x, y, idx, [3, 1])
    # keeps idx order, drops other classes, class 3 -> 0 and class 1 -> 1
    np.testing.assert_array_equal(xs, [90, 10, 30, 50, 60])
    np.testing.assert_array_equal(ys, [0, 1, 0, 0, 1])
    assert ys.dtype == np.int64
    xs, ys = class_subset(x, y, np.arange(len(y)), [4, 0, 2])
    np.testing.assert_array_equal(xs, [0, 20, 40, 70, 80])
    np.testing.assert_array_equal(ys, [1, 2, 0, 1, 0])


# ----------------------------------------------------------------------------- device batches

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


@pytest.fixture()
def dev_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    y = np.arange(10, dtype=np.int64) * 7
    return x, y, DeviceData(x, y, MEAN, STD, torch.device("cpu"))


def _normalized(x_nhwc: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).float()
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1) * 255) / (torch.tensor(STD).view(1, 3, 1, 1) * 255)


def test_device_data_layout(dev_data):
    x, y, dd = dev_data
    assert len(dd) == 10
    assert dd.x.shape == (10, 3, 5, 6) and dd.x.dtype == torch.uint8
    assert torch.equal(dd.x, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_batches_in_order_cover_all_and_normalize(dev_data):
    x, y, dd = dev_data
    out = list(dd.batches(3, shuffle=False, augment=False))
    assert [len(b[1]) for b in out] == [3, 3, 3, 1]
    xb = torch.cat([b[0] for b in out])
    yb = torch.cat([b[1] for b in out])
    assert xb.dtype == torch.float32 and xb.shape == (10, 3, 5, 6)
    assert torch.equal(yb, torch.from_numpy(y))
    torch.testing.assert_close(xb, _normalized(x))


def test_batches_shuffled_cover_all_once(dev_data):
    x, y, dd = dev_data
    g = torch.Generator().manual_seed(0)
    out = list(dd.batches(4, shuffle=True, augment=False, generator=g))
    yb = torch.cat([b[1] for b in out]).numpy()
    assert sorted(yb.tolist()) == y.tolist()
    assert yb.tolist() != y.tolist()
    xb = torch.cat([b[0] for b in out])
    torch.testing.assert_close(xb, _normalized(x[yb // 7]))  # images stay with their labels


def test_batches_drop_last(dev_data):
    _, _, dd = dev_data
    assert [len(b[1]) for b in dd.batches(3, shuffle=False, augment=False, drop_last=True)] == [3, 3, 3]
    assert [len(b[1]) for b in dd.batches(5, shuffle=True, augment=False, drop_last=True)] == [5, 5]


def test_batches_with_augment(dev_data):
    x, y, dd = dev_data
    g = torch.Generator().manual_seed(1)
    out = list(dd.batches(4, shuffle=True, augment=True, generator=g))
    yb = torch.cat([b[1] for b in out])
    assert sorted(yb.tolist()) == y.tolist()
    assert all(b[0].shape[1:] == (3, 5, 6) and b[0].dtype == torch.float32 for b in out)
    g2 = torch.Generator().manual_seed(1)
    out2 = list(dd.batches(4, shuffle=True, augment=True, generator=g2))
    for (a, ay), (b, by) in zip(out, out2):
        assert torch.equal(a, b) and torch.equal(ay, by)


def _batch(n=32, c=3, h=5, w=7, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # 1..255 so no pixel is 0 and padding is recognisable
    return torch.randint(1, 256, (n, c, h, w), generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_flip_only(dtype):
    x = _batch(dtype=dtype)
    out = augment_batch(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(s or f for s, f in zip(same, flipped))
    assert any(same) and any(flipped)  # 32 coin tosses: both occur


def test_augment_nothing_is_identity():
    x = _batch()
    assert torch.equal(augment_batch(x, pad=0, flip=False), x)


def _crops(xi: torch.Tensor, pad: int, flip: bool):
    """Every shifted crop of the zero-padded image (and its mirror if ``flip``)."""
    _, h, w = xi.shape
    xp = torch.nn.functional.pad(xi, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = xp[:, dy:dy + h, dx:dx + w]
            yield (dy, dx, False), crop
            if flip:
                yield (dy, dx, True), crop.flip(-1)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_pad_is_a_shifted_crop(flip, dtype):
    pad = 2
    x = _batch(n=24, dtype=dtype)
    out = augment_batch(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype
    used = set()
    for i in range(len(x)):
        hits = [k for k, crop in _crops(x[i], pad, flip) if torch.equal(out[i], crop)]
        assert hits, f"image {i} is no shifted crop of the padded input"
        used.add(hits[0])
    assert len({k[:2] for k in used}) > 3  # several different shifts
    if flip:
        assert {k[2] for k in used} == {False, True}


def test_augment_deterministic_given_generator():
    x = _batch()
    a = augment_batch(x, generator=torch.Generator().manual_seed(7))
    b = augment_batch(x, generator=torch.Generator().manual_seed(7))
    c = augment_batch(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
