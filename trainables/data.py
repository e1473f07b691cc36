"""Datasets: decoded once into a uint8 cache, shared by every trial, augmented on the device.

Sources (``resolve_source``):
  * ``None``: torchvision's CIFAR-10, downloaded into the data directory when absent;
  * a ``cifar-10-batches-py`` directory (or its parent);
  * an image-folder tree ``train/<class>/*`` and ``test/<class>/*``, as a directory or as a
    ``.tar``/``.tar.gz``/``.tgz``/``.tar.xz`` archive of one (one top-level folder allowed).

The decoded arrays are cached as one ``.npz`` per (source identity, image size); the cache file is
written to a temporary name and renamed, so a crash never leaves a half-written cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import torch

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
CACHE_VERSION = 1


from study.core.layout import write_atomic  # noqa: E402
from study.core.errors import DataError  # noqa: E402,F401  (torch-free, for the CLI)


@dataclasses.dataclass
class Dataset:
    train_x: np.ndarray  # (N, H, W, 3) uint8
    train_y: np.ndarray  # (N,) int64, index into classes
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    fingerprint: str  # sha256 of the decoded arrays and class names
    origin: str  # where it came from, for provenance

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        s1 = np.zeros(3)
        s2 = np.zeros(3)
        flat = self.train_x.reshape(-1, 3)
        for i in range(0, len(flat), 1 << 22):  # chunks keep the float64 copy small
            chunk = flat[i:i + (1 << 22)].astype(np.float64)
            s1 += chunk.sum(0)
            s2 += (chunk ** 2).sum(0)
        n = len(flat)
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))
        return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# ----------------------------------------------------------------------------- sources

def resolve_source(root: str | os.PathLike | None) -> tuple[str, Path | None]:
    """(kind, path) with kind in {'torchvision', 'cifar_batches', 'image_folder', 'archive'}."""
    if root is None:
        return "torchvision", None
    p = Path(root).expanduser()
    if not p.exists():
        raise DataError(f"data path does not exist: {p}")
    if p.is_file():
        if p.name.endswith(ARCHIVE_SUFFIXES):
            return "archive", p.resolve()
        raise DataError(f"data path {p} is a file but not a .tar/.tar.gz/.tgz/.tar.xz archive")
    if (p / "data_batch_1").exists():
        return "cifar_batches", p.resolve()
    if (p / "cifar-10-batches-py" / "data_batch_1").exists():
        return "cifar_batches", (p / "cifar-10-batches-py").resolve()
    if _find_split_root(p) is not None:
        return "image_folder", _find_split_root(p).resolve()
    raise DataError(f"data path {p} has neither train/ and test/ class folders nor "
                    f"cifar-10-batches-py")


def _find_split_root(p: Path) -> Path | None:
    if (p / "train").is_dir() and (p / "test").is_dir():
        return p
    subdirs = [d for d in p.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / "train").is_dir() and (subdirs[0] / "test").is_dir():
        return subdirs[0]
    return None


def _identity(kind: str, path: Path | None, image_size: int) -> str:
    """A cheap key for the cache: what the source is, without decoding it."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{kind}:{image_size}:{path}".encode())
    if path is not None:
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDY_CACHE_DIR", Path.home() / ".cache" / "tl-study"))


def load_dataset(root: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
                 image_size: int = 32, download_dir: str | os.PathLike | None = None,
                 progress=print) -> Dataset:
    """Decode the source once into the cache (or read the cache), return the arrays."""
    kind, path = resolve_source(root)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if kind == "torchvision":
        download_dir = Path(download_dir) if download_dir else cache / "torchvision"
        path = _torchvision_cifar10(download_dir)
        kind = "cifar_batches"
    key = _identity(kind, path, image_size)
    cache_file = cache / f"{kind}-{key}.npz"
    if cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                return Dataset(z["train_x"], z["train_y"], z["test_x"], z["test_y"],
                               [str(c) for c in z["classes"]], str(z["fingerprint"]), str(path))
        except Exception:  # a damaged cache is rebuilt, not trusted
            cache_file.unlink(missing_ok=True)
    progress(f"decoding {kind} data from {path} (once; cached in {cache_file})")
    if kind == "cifar_batches":
        arrays = _read_cifar_batches(path)
    elif kind == "archive":
        arrays = _read_archive(path, image_size)
    else:
        arrays = _read_image_folder(path, image_size)
    train_x, train_y, test_x, test_y, classes = arrays
    if len(classes) < 2:
        raise DataError(f"{path}: found {len(classes)} class(es) {classes}; need at least 2")
    fp = fingerprint(train_x, train_y, test_x, test_y, classes)
    cache.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
             classes=np.array(classes), fingerprint=np.array(fp))
    write_atomic(cache_file, buf.getvalue())
    return Dataset(train_x, train_y, test_x, test_y, classes, fp, str(path))


def fingerprint(train_x, train_y, test_x, test_y, classes) -> str:
    h = hashlib.sha256()
    for a in (train_x, train_y, test_x, test_y):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    h.update("\0".join(classes).encode())
    return h.hexdigest()


def _torchvision_cifar10(download_dir: Path) -> Path:
    """torchvision's CIFAR-10 download (for users with internet); returns the batches folder."""
    batches = download_dir / "cifar-10-batches-py"
    if not (batches / "data_batch_1").exists():
        from torchvision.datasets import CIFAR10
        try:
            CIFAR10(str(download_dir), train=True, download=True)
        except Exception as e:
            raise DataError(f"could not download CIFAR-10 into {download_dir} ({e}); pass "
                            f"--data-root with a local copy (image folder, archive or "
                            f"cifar-10-batches-py)") from e
    return batches


def _read_cifar_batches(path: Path):
    def load(name):
        f = path / name
        if not f.exists():
            raise DataError(f"{path}: missing {name} (not a complete cifar-10-batches-py folder)")
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d["labels"], dtype=np.int64)

    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = load("test_batch")
    meta = path / "batches.meta"
    with open(meta, "rb") as fh:
        classes = list(pickle.load(fh, encoding="latin1")["label_names"])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            test_x, test_y, classes)


def _decode(data: bytes, where: str, image_size: int) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise DataError(f"unreadable image {where}: {e}") from e


def _assemble(items: dict[str, dict[str, list[np.ndarray]]], where: str):
    """items[split][class] -> images; classes must agree between train and test."""
    for split in ("train", "test"):
        if not items.get(split):
            raise DataError(f"{where}: no {split}/<class>/ image folders found")
        for c, imgs in items[split].items():
            if not imgs:
                raise DataError(f"{where}: class folder {split}/{c} has no images")
    classes = sorted(items["train"])
    if sorted(items["test"]) != classes:
        raise DataError(f"{where}: train classes {classes} differ from test classes "
                        f"{sorted(items['test'])}")
    out = []
    for split in ("train", "test"):
        xs = [np.stack(items[split][c]) for c in classes]
        ys = [np.full(len(x), i, dtype=np.int64) for i, x in enumerate(xs)]
        out += [np.concatenate(xs), np.concatenate(ys)]
    return (*out, classes)


def _read_image_folder(root: Path, image_size: int):
    items: dict[str, dict[str, list]] = {}
    for split in ("train", "test"):
        items[split] = {}
        for cdir in sorted(d for d in (root / split).iterdir() if d.is_dir()):
            files = sorted(f for f in cdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            items[split][cdir.name] = [_decode(f.read_bytes(), str(f), image_size) for f in files]
    return _assemble(items, str(root))


_MEMBER = re.compile(r"^(?:\./)?(?:([^/]+)/)?(train|test)/([^/]+)/([^/]+)$")


def _read_archive(path: Path, image_size: int):
    items: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    prefixes = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isdir():
                    parts = m.name.strip("/").split("/")
                    if parts[0] == ".":  # `tar -C dir -cf x.tar .` names members ./train/...
                        parts = parts[1:]
                    # class folders count even when empty, so an empty one is reported
                    if len(parts) >= 2 and parts[-2] in ("train", "test") and len(parts) <= 3:
                        prefixes.add(parts[0] if len(parts) == 3 else "")
                        items[parts[-2]].setdefault(parts[-1], [])
                    continue
                g = _MEMBER.match(m.name)
                if not m.isfile() or not g or not g.group(4).lower().endswith(IMAGE_SUFFIXES):
                    continue
                prefixes.add(g.group(1) or "")
                data = tar.extractfile(m).read()
                items[g.group(2)].setdefault(g.group(3), []).append(
                    _decode(data, f"{path}:{m.name}", image_size))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot read archive {path}: {e}") from e
    if len(prefixes) > 1:
        raise DataError(f"{path}: more than one top-level folder holds train/test ({sorted(prefixes)})")
    return _assemble(items, str(path))


# ----------------------------------------------------------------------------- splits

def stratified_split(labels: np.ndarray, val_fraction: float, seed: int,
                     max_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): per class, a seeded permutation; the first ``val_fraction`` of it
    (at least one image) is validation. ``max_per_class`` caps the images used per class before
    the split (a deterministic subsample for quick studies). Identical for equal arguments."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if max_per_class:
            idx = idx[:max_per_class]
        n_val = max(1, int(round(len(idx) * val_fraction))) if val_fraction > 0 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def subsample(labels: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``max_per_class`` images of each class (seeded, sorted)."""
    return stratified_split(labels, 0.0, seed, max_per_class)[0]


def nested_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Positions (into ``labels``) of the first ``per_class`` images of each class in an order
    drawn by ``seed``, sorted; None: every position.

    The order of class c is ``default_rng([seed, c])``'s permutation of that class's positions,
    so it does not depend on the size asked or on the other classes: for one seed the subset of
    a smaller size lies inside the subset of a larger one (the learning-curve convention,
    Hoiem et al. 2021), every depth and init of that seed trains on the same images, and
    another seed draws other images. A class with fewer images gives all of them (the study
    checks sizes against the data first: ``study.core.spec.check_sizes``)."""
    if per_class is None:
        return np.arange(len(labels))
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(idx[np.random.default_rng([int(seed), int(c)]).permutation(len(idx))][:per_class])
    return np.sort(np.concatenate(out)) if out else np.arange(0)


def class_subset(x: np.ndarray, y: np.ndarray, idx: np.ndarray, classes: list[int]):
    """Images of ``idx`` whose label is in ``classes``, labels remapped to 0..len(classes)-1."""
    sel = idx[np.isin(y[idx], classes)]
    remap = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return x[sel], remap[y[sel]]


# ----------------------------------------------------------------------------- device tensors

class DeviceData:
    """A split's images as uint8 NHWC->NCHW tensors resident on the device, with batching,
    normalisation and augmentation done on whole batches there (no host round-trips per step)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, device: torch.device):
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).contiguous()
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.device = device

    def __len__(self):
        return len(self.y)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        return (xb.float() - self.mean) / self.std

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool,
                generator: torch.Generator | None = None, drop_last: bool = False,
                aug_generator: torch.Generator | None = None):
        """Batches of (normalised images, labels). ``generator`` draws the order,
        ``aug_generator`` (default: ``generator``) the augmentations: kept apart, the order of
        a seed is the same whatever else draws augmentations (runs of one seed at different
        frozen depths see the same batches, cached features or not)."""
        n = len(self)
        order = torch.randperm(n, device=self.device, generator=generator) if shuffle else \
            torch.arange(n, device=self.device)
        aug_generator = generator if aug_generator is None else aug_generator
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            xb = self.x[idx]
            if augment:
                xb = augment_batch(xb, generator=aug_generator)
            yield self.normalize(xb), self.y[idx]


def augment_batch(x: torch.Tensor, pad: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with ``pad`` pixels of zero padding and random horizontal flip, for a whole
    NCHW batch at once (one gather; no per-image Python loop)."""
    b, c, h, w = x.shape
    dev = x.device
    if pad:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))
        if flip:
            flips = torch.rand(b, device=dev, generator=generator) < 0.5
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        cols = cols[:, None, None, :]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        return xp[bi, ci, rows, cols]
    if flip:
        flips = torch.rand(b, device=dev, generator=generator) < 0.5
        return torch.where(flips[:, None, None, None], x.flip(3), x)
    return x
