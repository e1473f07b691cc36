"""The Ray Tune trainable: (shared source model ->) transfer to the target classes.

A trial's config holds only what the searcher sampled (``metrics.CONFIG_KEYS``); everything else
comes from the study (``StudyContext``: the resolved spec plus the decoded data, placed once in
Ray's object store by ``tune.with_parameters``).
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from trainables import features
from study.core import identity
from study.core import metrics as M
from study.core.design import design_of, steps_per_pass
from study.core.spec import load_spec_dict, resolve_stem
from study.core.layout import write_atomic
from trainables import remote
from trainables.resume import restore, write_meta
from trainables.backbones import (build, count_params, freeze, imagenet_state_dict,
                                  load_imagenet)
from trainables.data import DeviceData, class_subset, nested_subset, stratified_split, subsample
from trainables.train import (classification_report, epoch_flops, evaluate, make_optimizer,
                              make_schedule, pick_device, prepare_model, step_flops,
                              train_one_epoch)


@dataclasses.dataclass
class StudyData:
    """What every trial shares: decoded arrays, the validation split, class maps. Built once per
    study by ``build_study_data``; identical for every trial."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_idx: np.ndarray  # indices into train_* used for training (source models)
    val_idx: np.ndarray  # indices into train_* held out for validation (stratified, seeded)
    test_idx: np.ndarray
    classes: list[str]
    splits: dict  # split name -> (source class indices, target class indices)
    mean: tuple
    std: tuple
    fingerprint: str
    origin: str = ""  # where the data came from (provenance)


def target_indices(data: StudyData, size: int | None, seed: int) -> np.ndarray:
    """Indices into train_* of a target run's training images: the first ``size`` of each
    class in the order seed ``seed`` draws (``data.nested_subset``: nested across sizes, the
    same for every depth and init of a seed); None: every training image. Validation and test
    never depend on the size or the seed."""
    if size is None:
        return data.train_idx
    return data.train_idx[nested_subset(data.train_y[data.train_idx], int(size), seed)]


def check_target_sizes(spec, ds, train_idx: np.ndarray | None = None) -> None:
    """SpecError (field, value, rule, the classes too small) when a target class of the data
    ``ds`` has fewer training images after the validation split than the largest size of
    ``data.target_train_per_class`` (``study.core.spec.check_sizes``)."""
    from study.core.spec import check_sizes

    if not spec.data.target_train_per_class:
        return
    if train_idx is None:
        d = spec.data
        train_idx, _ = stratified_split(ds.train_y, d.val_fraction, spec.search.seed,
                                        d.max_train_per_class)
    left = np.bincount(ds.train_y[train_idx], minlength=len(ds.classes))
    check_sizes(spec, {**{c: int(left[i]) for i, c in enumerate(ds.classes)},
                       **{i: int(left[i]) for i in range(len(ds.classes))}})


def build_study_data(ds, spec, splits: dict) -> StudyData:
    """The study's shared data; raises SpecError when a target class has fewer training images
    (after the validation split) than the largest target size."""
    d = spec.data
    train_idx, val_idx = stratified_split(ds.train_y, d.val_fraction, spec.search.seed,
                                          d.max_train_per_class)
    check_target_sizes(spec, ds, train_idx)
    test_idx = subsample(ds.test_y, d.max_test_per_class, spec.search.seed)
    mean, std = ds.channel_stats()
    return StudyData(ds.train_x, ds.train_y, ds.test_x, ds.test_y, train_idx, val_idx, test_idx,
                     list(ds.classes), splits, mean, std, ds.fingerprint, ds.origin)


_DEVICE_DATA: OrderedDict = OrderedDict()  # per worker process, least recently used last
_DEVICE_DATA_MAX = 4


def _device_split(data: StudyData, which: str, classes: list[int], device,
                  idx: np.ndarray | None = None) -> DeviceData:
    """The images of ``classes`` in one split, on the device. Cached per worker process (a
    reused Tune actor places each split's classes on the device once); trials only read it.
    ``which``: train / val / test, or target_train with ``idx`` (``target_indices``)."""
    x, y = (data.test_x, data.test_y) if which == "test" else (data.train_x, data.train_y)
    if idx is None:
        idx = {"train": data.train_idx, "target_train": data.train_idx, "val": data.val_idx,
               "test": data.test_idx}[which]
    key = (data.fingerprint, which, tuple(classes), hashlib.sha1(idx.tobytes()).hexdigest(),
           str(device), tuple(data.mean), tuple(data.std))
    if key in _DEVICE_DATA:
        _DEVICE_DATA.move_to_end(key)
        return _DEVICE_DATA[key]
    xs, ys = class_subset(x, y, idx, classes)
    dd = DeviceData(xs, ys, data.mean, data.std, device)
    _DEVICE_DATA[key] = dd
    while len(_DEVICE_DATA) > _DEVICE_DATA_MAX:
        _DEVICE_DATA.popitem(last=False)
    return dd


_GC_FROZEN = False
try:  # glibc's malloc_trim: hand freed heap pages back to the OS (Linux; absent elsewhere)
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _MALLOC_TRIM = None


def _collect_garbage() -> None:
    """Free what a previous trial in this (reused) worker left behind, cheaply.

    A full ``gc.collect()`` walks every object the process holds: with torch, torchvision and
    Ray imported that is ~0.2 s per trial on a 2-core CPU (measured). So the first trial in a
    process collects once and then ``gc.freeze()``s what exists (modules, the study data): later
    collections walk only the objects made since, i.e. the previous trial's (~1 ms).

    Then ``malloc_trim(0)``: glibc keeps the freed heap of each trial's tensors mapped, and a
    reused worker's resident memory crept up ~2.5 MiB per trial (Python objects flat, measured);
    trimmed, what is left is ~0.5 MiB per trial, the same as Tune's own per-trial bookkeeping
    with a checkpoint per report in a trivial trainable."""
    global _GC_FROZEN
    gc.collect()
    if not _GC_FROZEN:
        gc.freeze()
        _GC_FROZEN = True
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def worker_rss_mib() -> float:
    """This process's resident memory now (Linux /proc), MiB; NaN elsewhere."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    g = torch.Generator(device=pick_device())
    g.manual_seed(seed)
    return g


def trial_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """(order, augmentation) generators of a target trial with seed ``seed``, on the device.

    Common random numbers: runs with one seed in the cells of one split x backbone x init (any
    frozen depth) share the source model (trained with ``seed``), the new head's initialisation
    (``seed + 1``, ``build_target_model``), the batch order (``seed + 2``) and the augmentation
    draws (``seed + 4``; cells with cached features draw their views from it, ``seed + 3``
    seeds those views' crops). Order and augmentation have generators of their own so that what
    one draws cannot shift the other: a cached cell draws one view per image and epoch, an
    uncached one crops and flips per batch, and both still see the same batches every epoch
    (tests/test_pairing.py). So the difference between two depths per seed is not blurred by
    noise they do not share, and the report compares them paired."""
    gen = _seed_everything(seed + 2)
    aug = torch.Generator(device=gen.device)
    aug.manual_seed(seed + 4)
    return gen, aug


# ----------------------------------------------------------------------------- source models

def source_key(spec, data: StudyData, split: str, backbone: str, stem: str, seed: int) -> str:
    """The source model's key (``study.core.identity.source_key``) for this study's data."""
    return identity.source_key(spec, data.fingerprint, data.splits[split][0], split, backbone,
                               stem, seed)


class SourceFailed(RuntimeError):
    """A source model could not be trained; every trial of its cells fails with this message."""


ERROR_FILE = "error.txt"


def ensure_source_model(spec, data: StudyData, split: str, backbone: str, stem: str, seed: int,
                        sources_dir: Path, trained_by: str, log=print,
                        sources_uri: str | None = None, retry_failed: bool = False,
                        may_train: bool = True) -> tuple[str, dict, bool]:
    """Make sure the source model of this key exists (local ``sources_dir``, or the study's
    shared copy under ``sources_uri``): trained here, under a file lock, if nobody has and
    ``may_train`` (the source task); a trial (``may_train=False``) only loads it. A failed
    training leaves ``error.txt`` (its last line is what trials report) and raises
    ``SourceFailed``. Returns (key, info, whether it was trained by this call)."""
    key = source_key(spec, data, split, backbone, stem, seed)
    d = sources_dir / key
    d.mkdir(parents=True, exist_ok=True)
    trained = False
    with FileLock(str(d / ".lock")):
        model_file, info_file, err_file = d / "model.pt", d / "info.json", d / ERROR_FILE
        if err_file.exists():
            if not retry_failed:
                raise SourceFailed(f"source model {key} failed to train: "
                                   f"{err_file.read_text().strip().splitlines()[-1]}")
            err_file.unlink()
        remote_dir = f"{sources_uri.rstrip('/')}/{key}" if sources_uri else None
        if not (model_file.exists() and info_file.exists()) and not (
                remote_dir and remote.fetch(remote_dir, d)):
            if not may_train:  # the runner trains every key before a trial that needs it runs
                raise SourceFailed(f"source model {key} is not trained (its source task has not "
                                   f"finished)")
            log(f"[{trained_by}] training source model {key}")
            try:
                state, info = _train_source(spec, data, split, backbone, stem, seed,
                                            log=lambda m: log(f"[{trained_by}] {key}: {m}"))
            except Exception as e:  # noqa: BLE001 - recorded for the cells' trials, then raised
                _atomic_write(err_file, f"{type(e).__name__}: {e}\n")
                raise SourceFailed(f"source model {key} failed to train: "
                                   f"{type(e).__name__}: {e}") from e
            info["trained_by"] = trained_by
            trained = True
            _atomic_torch_save(state, model_file)
            _atomic_write(info_file, json.dumps(info, indent=1))
            if remote_dir:  # another node may have published the key meanwhile: its copy wins
                if remote.exists(remote_dir):
                    remote.fetch(remote_dir, d)
                else:
                    remote.publish(d, remote_dir)
        info = json.loads(info_file.read_text())
    return key, info, trained


def obtain_source_model(spec, data: StudyData, split: str, backbone: str, stem: str, seed: int,
                        sources_dir: Path, trial_id: str, log=print,
                        sources_uri: str | None = None) -> tuple[dict, dict]:
    """(state_dict, info) of the source model for this key, for a trial. The runner trains every
    key as its own Ray task (``train_source_task``) before it hands out a trial that needs it, so
    a trial only loads it (local copy, or fetched from the study's shared storage).

    info: {"flops", "val_acc", "train_s", "shared_by", "key"}; ``shared_by`` counts distinct
    trials that have used the model so far."""
    key, _, _ = ensure_source_model(spec, data, split, backbone, stem, seed, sources_dir,
                                    trial_id, log, sources_uri, may_train=False)
    d = sources_dir / key
    with FileLock(str(d / ".lock")):
        remote_dir = f"{sources_uri.rstrip('/')}/{key}" if sources_uri else None
        if remote_dir:
            remote.add_user(remote_dir, trial_id)
        users_file = d / "users.txt"
        users = users_file.read_text().split() if users_file.exists() else []
        if trial_id not in users:
            users.append(trial_id)
            _atomic_write(users_file, "\n".join(users) + "\n")
        info = json.loads((d / "info.json").read_text())
        state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
    info["shared_by"] = len(users)
    info["key"] = key
    return state, info


def train_source_task(spec_dict: dict, data: StudyData, split: str, backbone: str, stem: str,
                      seed: int, sources_dir: str, sources_uri: str | None = None,
                      retry_failed: bool = True) -> dict:
    """One source model as its own unit of work (a Ray task with the trial's resources, run by
    ``study.runner`` before the target trials): trains it unless it exists. Returns a plain
    status dict (a failure is returned, not raised, so the study goes on)."""
    spec = load_spec_dict(spec_dict)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    started_at = time.time()  # wall clock, comparable with the driver's (benchmarks' accounting)
    t0 = time.perf_counter()
    try:
        key, info, trained = ensure_source_model(
            spec, data, split, backbone, stem, seed, Path(sources_dir), "source-task",
            sources_uri=sources_uri, retry_failed=retry_failed)
    except SourceFailed as e:
        return {"key": source_key(spec, data, split, backbone, stem, seed), "ok": False,
                "error": str(e), "held_s": time.perf_counter() - t0,
                "started_at": started_at, "ended_at": time.time()}
    return {"key": key, "ok": True, "trained": trained,
            "train_s": info.get("train_s", 0.0) if trained else 0.0,
            "val_acc": info.get("val_acc"), "held_s": time.perf_counter() - t0,
            "started_at": started_at, "ended_at": time.time()}


def _train_source(spec, data: StudyData, split: str, backbone: str, stem: str, seed: int,
                  log=print):
    device = pick_device()
    gen = _seed_everything(seed)
    src, _ = data.splits[split]
    train, val = (_device_split(data, w, src, device) for w in ("train", "val"))
    model = prepare_model(build(backbone, len(src), stem), device)
    freeze(model, 0)
    train_fpi, _ = step_flops(model, tuple(train.x.shape[1:]), len(src), device)
    opt = make_optimizer(model, spec.optimizer, spec.source.lr)
    steps = len(train) // spec.batch_size or 1
    sched = make_schedule(opt, spec.optimizer, steps, spec.source.epochs)
    t0 = time.perf_counter()
    for epoch in range(1, spec.source.epochs + 1):
        loss = train_one_epoch(model, train, opt, sched, batch_size=spec.batch_size, generator=gen,
                               label_smoothing=spec.optimizer.label_smoothing)
        log(f"source epoch {epoch}/{spec.source.epochs}: train_loss {loss:.3f} "
            f"({time.perf_counter() - t0:.0f}s)")
    val_acc, _, _ = evaluate(model, val)
    # Reported, never used for selection: the seed notebooks quote source test accuracy.
    test_acc, _, _ = evaluate(model, _device_split(data, "test", src, device))
    images = steps * spec.batch_size * spec.source.epochs
    info = {"flops": epoch_flops(images, train_fpi), "val_acc": val_acc, "test_acc": test_acc,
            "train_s": time.perf_counter() - t0, "epochs": spec.source.epochs,
            "classes": [data.classes[i] for i in src]}
    return {k: v.cpu() for k, v in model.state_dict().items()}, info


def _atomic_write(path: Path, text: str) -> None:
    write_atomic(path, text)


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------- the trial

def build_target_model(spec, data: StudyData, cfg: dict, sources_dir: Path, trial_id: str, log=print,
                       sources_uri: str | None = None):
    """The target model before any target training, frozen per the config.
    Deterministic for a config, so a resumed trial rebuilds the same frozen part."""
    split, backbone, init = cfg[M.SPLIT], cfg[M.BACKBONE], cfg[M.INIT]
    src, tgt = data.splits[split]
    stem = resolve_stem(spec, backbone, init)
    source_info = {"flops": 0.0, "shared_by": 0, "val_acc": float("nan"), "key": ""}
    torch.manual_seed(cfg[M.SEED])
    if init == "source":
        state, source_info = obtain_source_model(spec, data, split, backbone, stem, cfg[M.SEED],
                                                 sources_dir, trial_id, log, sources_uri)
        model = build(backbone, len(src), stem)
        model.load_state_dict(state)
    else:
        model = build(backbone, len(tgt), stem)
        if init == "imagenet":
            load_imagenet(model, imagenet_state_dict(backbone, spec.weights_file(backbone)))
    torch.manual_seed(cfg[M.SEED] + 1)
    model.replace_head(len(tgt))  # a fresh head, seeded the same way for every init
    freeze(model, cfg[M.FROZEN_DEPTH])  # the design's depth (scratch cells are d0)
    return model, source_info


def load_trainable_state(model, state: dict) -> None:
    """Load a checkpoint's trainable part: only the frozen stages may be missing (they are
    rebuilt from the source model or ImageNet weights, identically); an unexpected key, or a
    missing key of a trainable stage or the head, means the checkpoint is of another model."""
    res = model.load_state_dict(state, strict=False)
    d = model.frozen_depth
    missing = [k for k in res.missing_keys
               if (i := model.stage_of_parameter(k)) is None or i >= d]
    if missing or res.unexpected_keys:
        raise RuntimeError(f"checkpoint does not fit this trial's model ({model.backbone}, "
                           f"frozen_depth {d}): missing {missing[:5]}, unexpected "
                           f"{list(res.unexpected_keys)[:5]}")


def _trainable_state(model) -> dict:
    """Only what training changes: the stages from frozen_depth on, and the head."""
    d = model.frozen_depth
    return {k: v for k, v in model.state_dict().items()
            if (i := model.stage_of_parameter(k)) is None or i >= d}


def transfer_trainable(config: dict, *, spec_dict: dict, data: StudyData, sources_dir: str,
                       sources_uri: str | None = None):
    """Ray Tune function trainable: one transfer trial, reporting every target epoch.

    With the frozen-feature cache (``features.plan`` decides from the spec's ``feature_cache``)
    the epochs train ``features.Suffix`` (the trainable stages + head, the same parameters) on
    the frozen prefix's outputs for fixed views of the training images and for the validation
    images, each computed the first time it is drawn and kept; the test split runs through the
    whole model."""
    from ray import tune

    spec = load_spec_dict(spec_dict)
    _collect_garbage()
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id() if ctx else "local"
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    device = pick_device()
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per checkpoint
    cfg = dict(config)
    cfg[M.SEED] = identity.trial_seed(cfg, spec.search.seed)

    model, source_info = build_target_model(spec, data, cfg, Path(sources_dir), trial_id,
                                            sources_uri=sources_uri)
    model = prepare_model(model, device)
    _, tgt = data.splits[cfg[M.SPLIT]]
    train = _device_split(data, "target_train", tgt, device,
                          idx=target_indices(data, cfg.get(M.SIZE), cfg[M.SEED]))
    val = _device_split(data, "val", tgt, device)
    gen, aug = trial_generators(cfg[M.SEED])
    train_fpi, _ = step_flops(model, tuple(train.x.shape[1:]), len(tgt), device)
    trainable, total = count_params(model)
    opt = make_optimizer(model, spec.optimizer, cfg[M.LR])
    # the training budget (study.core.design.passes_per_epoch): an epoch is `passes` passes
    passes = design_of(spec).passes(cfg[M.SPLIT], len(train))
    steps = steps_per_pass(len(train), spec.batch_size) * passes  # optimizer steps per epoch
    cache = features.plan(spec.feature_cache, model, tuple(train.x.shape[1:]), n_train=len(train),
                          n_val=len(val), images_per_epoch=steps * spec.batch_size, device=device)
    net = model
    if cache.use:  # train on the prefix's outputs, computed as first drawn (trainables/features.py)
        net, train, val = features.prepare(model, train, val, cache, seed=cfg[M.SEED] + 3)
        train_fpi = cache.suffix_train_flops
    gen_start, aug_start = gen.get_state(), aug.get_state()
    sched = make_schedule(opt, spec.optimizer, steps, spec.target_epochs)
    start_epoch, flops, wall = 0, 0.0, 0.0

    history: list[dict] = []  # every result so far, carried in each checkpoint (resume.py)
    ckpt = tune.get_checkpoint()
    if ckpt:  # from the newest checkpoint on storage, missed results reported again (resume.py)
        st, history = restore(ckpt, lambda d: torch.load(d / "state.pt", map_location="cpu",
                                                         weights_only=False))
        load_trainable_state(model, st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["schedule"])
        gen.set_state(st["generator"])
        aug.set_state(st["aug_generator"])
        torch.set_rng_state(st["torch_rng"])  # dropout draws from the global generator
        if "cuda_rng" in st and device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"])
        start_epoch, flops, wall = st["epoch"], st["target_flops"], st["wall_s"]
        if cache.use:  # the features computed before, identically; their FLOPs are counted
            t0 = time.perf_counter()
            features.replay(net, train, val, generator_state=gen_start, epochs=start_epoch * passes,
                            batch_size=spec.batch_size, aug_generator_state=aug_start)
            wall += time.perf_counter() - t0

    for epoch in range(start_epoch + 1, spec.target_epochs + 1):
        t0 = time.perf_counter()
        computed = train.computed if cache.use else 0
        losses = [train_one_epoch(net, train, opt, sched, batch_size=spec.batch_size,
                                  generator=gen, aug_generator=aug,
                                  label_smoothing=spec.optimizer.label_smoothing)
                  for _ in range(passes)]
        train_loss = float(np.mean(losses))
        val_acc, val_loss, _ = evaluate(net, val)
        epoch_s = time.perf_counter() - t0
        wall += epoch_s
        flops += epoch_flops(steps * spec.batch_size, train_fpi)
        if cache.use:  # prefix forwards of the (image, view) pairs first drawn in this epoch
            flops += (train.computed - computed) * cache.prefix_flops
        result = {
            M.EPOCH: epoch, M.VAL_ACC: val_acc, M.VAL_LOSS: val_loss, M.TRAIN_LOSS: train_loss,
            M.TARGET_FLOPS: flops, M.SOURCE_FLOPS: source_info["flops"],
            M.SOURCE_KEY: source_info["key"],
            M.SOURCE_SHARED_BY: source_info["shared_by"], M.SOURCE_VAL_ACC: source_info["val_acc"],
            M.WALL_S: wall, M.EPOCH_S: epoch_s, M.TRAINABLE_PARAMS: trainable,
            M.TOTAL_PARAMS: total, M.DONE: epoch == spec.target_epochs, M.SEED: cfg[M.SEED],
            M.WORKER_RSS_MIB: worker_rss_mib(),
            M.FEATURE_CACHE: cache.use, M.FEATURE_CACHE_VIEWS: cache.views if cache.use else 0,
            M.FEATURE_CACHE_S: train.compute_s + val.compute_s if cache.use else 0.0,
            M.PASSES: passes,
        }
        if epoch == spec.target_epochs:  # the test split: once, when the trial finishes
            t_test = time.perf_counter()
            test = _device_split(data, "test", tgt, device)
            _, _, pred = evaluate(model, test)
            rep = classification_report(pred, test.y, [data.classes[i] for i in tgt])
            result.update({M.TEST_ACC: rep["acc"], M.TEST_PRECISION: rep["precision_macro"],
                           M.TEST_RECALL: rep["recall_macro"], M.TEST_F1: rep["f1_macro"],
                           M.TEST_CONFUSION: rep["confusion"], M.TEST_PER_CLASS: rep["per_class"],
                           M.TEST_S: time.perf_counter() - t_test})
        history.append(result)
        if epoch % spec.checkpoint_every and epoch != spec.target_epochs:
            tune.report(result)  # no checkpoint this epoch (spec checkpoint_every)
            continue
        with tempfile.TemporaryDirectory() as cd:
            write_meta(cd, epoch, history)
            torch.save({"model": _trainable_state(model), "optimizer": opt.state_dict(),
                        "schedule": sched.state_dict(), "generator": gen.get_state(),
                        "aug_generator": aug.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        **({"cuda_rng": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
                        "epoch": epoch, "target_flops": flops, "wall_s": wall, "result": result},
                       Path(cd) / "state.pt")
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(cd))
