"""Frozen-feature cache: a trial's frozen prefix runs once per (image, view); the rest of the
network trains on the stored outputs.

**Why it is exact.** Stages ``[0, d)`` of a frozen ``StagedModel`` are a fixed function during
target training: no parameter changes, BatchNorm uses its running statistics (``freeze`` keeps
frozen stages in eval mode) and there is no dropout before the head. Without the cache every
epoch recomputes that function for every image; for a linear probe it is >99.9% of a step's
FLOPs (``resnet18``/cifar: 1.1 GFLOP of prefix forward vs 10 kFLOP for the head). With the
cache, ``Suffix`` (stages ``[d, n)`` + head, the model's own modules) trains on stored prefix
outputs (``FeatureData``: ``DeviceData``'s ``batches()`` interface, so ``train_one_epoch`` and
``evaluate`` are shared).

**Augmentation: fixed views.** The uncached path draws a fresh pad-4 random crop and horizontal
flip per image per epoch *before* the prefix, which stored features cannot reproduce. The cache
instead has ``V = feature_cache.views`` fixed views of every training image:

* view 0: the image itself; view 1: its mirror image;
* views 2..V-1: a pad-4 crop + flip each (the uncached path's distribution), their offsets
  drawn once, per (view, image), from a generator seeded by the trial's seed.

Every epoch each image is shown as one of its ``V`` views, drawn uniformly with the trial's
generator (checkpointed). Validation (and test, which runs the whole model once) stays
unaugmented, as uncached. A cached run thus sees at most ``V`` variants of an image instead of a
fresh one per epoch: weaker augmentation, which matters little when only the head or a small
last stage trains, and is why ``auto`` caches only where the prefix is most of the compute.
``views: 1`` is the un-augmented path the tests prove numerically equal to the whole model.

**Computed when first drawn (memoised).** A (image, view) pair's features are computed in the
first epoch that draws it, and kept: at the start of an epoch, the pairs it draws that are
still missing are computed in batch order, ``batch_size`` at a time. So epoch 1 runs the prefix
over exactly the images the uncached epoch 1 runs it over, in the same batches (epoch 1 costs
what it costs uncached: nothing is lost on a trial early stopping ends at its first rung), and later
epochs only over views not drawn before: with ``V`` views an image's prefix runs on average
``V * (1 - (1 - 1/V)**E)`` times in ``E`` epochs instead of ``E`` times (V=2: fewer than 2
passes however long the trial). The cache is thus never more expensive than no cache at any
epoch; more views buy augmentation with memory and a slower approach to the steady state, not
with extra compute.

**Storage.** Preallocated on the trial's device (no host round-trips per step): fp32 on CPU
(bit-for-bit what the uncached forward feeds the suffix), bf16 on CUDA (what the prefix produces
under the trials' bf16 autocast anyway; half the memory). For a linear probe
(``d = num_stages``) the features are stored globally average-pooled: the head's first operation
is exactly that pooling (``resnet18``/cifar: 512x4x4 -> 512). Memory:
``(V * N_train + N_val) * feature elements * bytes``.

**When** (``plan``, mode from the spec's ``feature_cache.mode``):

* ``off``: never. ``frozen_depth = 0`` (and init ``scratch``): never, nothing is frozen.
* ``on``: whenever ``frozen_depth >= 1``; a cache larger than ``feature_cache.max_gib`` fails
  the trial with a message naming the size and the remedies.
* ``auto``: ``frozen_depth >= 1``, the cache fits ``max_gib``, and the predicted steady-state
  epoch is at least ``AUTO_MIN_SPEEDUP`` (3) times cheaper in FLOPs::

      speed-up = (I * (P + S) + M * (P + S_eval)) / (I * S + M * S_eval)

  with P the prefix's forward FLOPs per image, S / S_eval the suffix's training / inference
  FLOPs per image, I the images trained per epoch and M the validation images. 3x means the
  frozen prefix is at least 2/3 of a step's compute: linear probes (10^2-10^5x) and a frozen
  prefix followed by one cheap stage (``scratch_cnn`` depth 3, ~150x; ``mobilenet_v2`` depth 6,
  ~3.2x). Depths where a large part of the network still trains (``resnet18``/cifar depth 4:
  2.1x, ``mobilenet_v2`` depth 5: 1.9x) stay uncached: the saving would be small while a large trainable part would lose its
  fresh crops. As the cache never costs more (above), the rule needs no epoch count.
  It uses only the spec, the model and the data sizes (not free memory), so a resumed trial
  takes the same path. FLOPs count convolutions and matmuls (``train.step_flops``); wall-clock
  gains differ (``benchmarks/feature_cache.py`` measures them).

**Compute accounting** (``target_flops``): per epoch ``C_e * P + I * S``, with ``C_e`` the
(image, view) pairs first computed in epoch ``e`` (``FeatureData.computed``; ``C_1 = I``) and S
counted by ``step_flops`` on the ``Suffix`` (forward and backward of the trainable part).
Uncached an epoch costs ``I * (P + S)``, ``P + S`` being exactly the whole model's
``step_flops``. Validation is never counted (as before).

**Resume.** Features are not checkpointed (they can be large). A resumed trial replays the
epochs already done (``replay``: the same shuffles and view draws from the trial generator's
initial state, without training), recomputing exactly the pairs computed before in exactly the
same batches, so the cache is bit-identical (the prefix's output for an image can differ in the
last bit with the batch it is computed in) and training continues as if never interrupted.
``target_flops`` counts each pair once (the uninterrupted trial's compute); the recomputation's
seconds show in ``wall_s`` and ``feature_cache_s``.

Scope: one cache per trial, on its device; trials with the same (source model, depth, views)
each compute their own (sharing one through ``sources/`` would need a file of up to
``max_gib`` per key, written under a lock).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainables.backbones import StagedModel
from trainables.data import DeviceData
from trainables.train import autocast, evaluate, step_flops, structure_key

AUTO_MIN_SPEEDUP = 3.0  # `auto`: the frozen prefix must be >= 2/3 of a training step's FLOPs
PAD = 4  # crop padding of views 2.., as the uncached augmentation (data.augment_batch)


class FeatureTooLarge(ValueError):
    """``feature_cache: on`` and the cache exceeds ``feature_cache.max_gib``."""


class Suffix(nn.Module):
    """The trainable part of a frozen ``StagedModel`` (stages ``[d, n)`` + head) as a module that
    takes the frozen prefix's output. Holds the model itself (no copy): training the suffix
    trains the model, and ``train()``/``eval()`` reach ``StagedModel.train``."""

    def __init__(self, model: StagedModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        return m.head(m.forward_features(x, m.frozen_depth))


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """Whether a trial trains on cached features, and the numbers behind the decision."""
    use: bool
    reason: str  # why (not), in words
    views: int
    feature_shape: tuple[int, ...]  # one image's stored features (pooled for a linear probe)
    pooled: bool
    dtype: torch.dtype
    bytes: int  # the whole cache: V training views + validation
    prefix_flops: float  # P: forward FLOPs per image through the frozen stages
    suffix_train_flops: float  # S: training FLOPs per image of stages [d, n) + head
    suffix_eval_flops: float  # S_eval
    epoch_speedup: float  # predicted (FLOPs) steady-state uncached / cached epoch, train + val


def cache_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def prefix_flops(model: StagedModel, input_shape: tuple[int, ...], device: torch.device) -> float:
    """Forward FLOPs per image of the frozen stages ``[0, d)`` (FlopCounterMode, as step_flops;
    cached per process like it, and drawing nothing from the caller's random streams)."""
    key = ("prefix", structure_key(model, tuple(input_shape), device.type))
    if key not in _PREFIX_CACHE:
        probe = copy.deepcopy(model).to(device).eval()
        b = 2
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            probe.forward_features(torch.zeros(b, *input_shape, device=device), 0,
                                   probe.frozen_depth)
        _PREFIX_CACHE[key] = counter.get_total_flops() / b
    return _PREFIX_CACHE[key]


_PREFIX_CACHE: dict = {}


def _prefix(model: StagedModel, xb: torch.Tensor, pooled: bool) -> torch.Tensor:
    """The frozen stages' output for a normalised batch (pooled like the head for a probe).
    Frozen stages are always in eval mode (``StagedModel.train``), whatever the model's mode."""
    if xb.device.type == "cuda":
        xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(xb.device):
        f = model.forward_features(xb, 0, model.frozen_depth)
        if pooled and f.dim() == 4:
            f = f.mean(dim=(2, 3))  # exactly GlobalPoolHead's pooling
    return f


def plan(fc, model: StagedModel, image_shape: tuple[int, ...], *, n_train: int, n_val: int,
         images_per_epoch: int, device: torch.device) -> CachePlan:
    """Decide (see the module docstring) for a model already frozen at its trial's depth.
    ``fc`` is the spec's ``FeatureCacheSpec`` (mode, views, max_gib)."""
    d, views = model.frozen_depth, fc.views
    pooled = d == model.num_stages
    none = dict(views=views, feature_shape=(), pooled=pooled, dtype=cache_dtype(device), bytes=0,
                prefix_flops=0.0, suffix_train_flops=0.0, suffix_eval_flops=0.0, epoch_speedup=1.0)
    if fc.mode == "off":
        return CachePlan(False, "feature_cache.mode is off", **none)
    if d == 0:
        return CachePlan(False, "frozen_depth 0: nothing is frozen", **none)

    shape = tuple(_prefix(model, torch.zeros(1, *image_shape, device=device), pooled).shape[1:])
    dtype = cache_dtype(device)
    nbytes = (views * n_train + n_val) * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    p = prefix_flops(model, image_shape, device)
    s_train, s_eval = step_flops(Suffix(model), shape, 0, device)
    speedup = ((images_per_epoch * (p + s_train) + n_val * (p + s_eval))
               / max(images_per_epoch * s_train + n_val * s_eval, 1e-9))
    numbers = dict(views=views, feature_shape=shape, pooled=pooled, dtype=dtype, bytes=nbytes,
                   prefix_flops=p, suffix_train_flops=s_train, suffix_eval_flops=s_eval,
                   epoch_speedup=speedup)
    amount = f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
    size = (f"{amount} ({views} views x {n_train} training + {n_val} validation images x "
            f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')})")
    if nbytes > fc.max_gib * 2**30:
        if fc.mode == "on":
            raise FeatureTooLarge(
                f"feature_cache: on needs {size} for {model.backbone} at frozen_depth {d}, more "
                f"than feature_cache.max_gib = {fc.max_gib}; raise max_gib, lower "
                f"feature_cache.views, or use mode auto (caches only where it fits)")
        return CachePlan(False, f"cache of {size} exceeds max_gib {fc.max_gib}", **numbers)
    if fc.mode == "auto" and speedup < AUTO_MIN_SPEEDUP:
        return CachePlan(False, f"predicted speed-up {speedup:.2f}x per epoch is below "
                                f"{AUTO_MIN_SPEEDUP}x", **numbers)
    return CachePlan(True, f"{size}; predicted {speedup:.1f}x per epoch", **numbers)


class FeatureData:
    """One split's frozen-prefix outputs, ``views`` fixed views per image, computed when first
    drawn. ``batches()`` has ``DeviceData``'s interface and random stream: ``shuffle`` permutes
    with ``generator``; then, if ``augment`` and ``views > 1``, one view per image is drawn with
    the same generator (nothing else; with one view the shuffles equal ``DeviceData``'s).

    ``x`` (views, N, *feature shape) holds the features, ``done`` (views, N) which are computed;
    ``computed`` counts the pairs computed so far (prefix forwards), ``compute_s`` their seconds.
    Each ``batches()`` call first computes the pairs it will need (one host sync per call)."""

    def __init__(self, images: DeviceData, model: StagedModel, cache: CachePlan, *, views: int,
                 seed: int = 0):
        dev, n = images.device, len(images)
        self.images, self.model, self.pooled = images, model, cache.pooled
        self.y, self.device = images.y, dev
        self.x = torch.empty((views, n, *cache.feature_shape), dtype=cache.dtype, device=dev)
        self.done = torch.zeros((views, n), dtype=torch.bool, device=dev)
        self.computed, self.compute_s = 0, 0.0
        # Per (view, image): crop offsets in [0, 2*PAD] and a flip. View 0 is the image (offset
        # PAD, no flip), view 1 its mirror; views 2.. are drawn once from a seeded generator.
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        self.dy = torch.randint(0, 2 * PAD + 1, (views, n), device=dev, generator=g)
        self.dx = torch.randint(0, 2 * PAD + 1, (views, n), device=dev, generator=g)
        self.flip = torch.rand((views, n), device=dev, generator=g) < 0.5
        self.dy[:2] = PAD
        self.dx[:2] = PAD
        self.flip[:1] = False  # view 0: the image
        self.flip[1:2] = True  # view 1: its mirror

    @property
    def views(self) -> int:
        return self.x.shape[0]

    def __len__(self):
        return len(self.y)

    def _view_images(self, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW images ``idx`` in views ``v``: one gather (pad, crop, flip)."""
        x = self.images.x[idx]
        b, c, h, w = x.shape
        dev = x.device
        xp = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
        rows = (self.dy[v, idx][:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = self.dx[v, idx][:, None] + torch.arange(w, device=dev)
        cols = torch.where(self.flip[v, idx][:, None], cols.flip(1), cols)[:, None, None, :]
        return xp[torch.arange(b, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None], rows, cols]

    def _fill(self, idx: torch.Tensor, v: torch.Tensor) -> None:
        t0 = time.perf_counter()
        feats = _prefix(self.model, self.images.normalize(self._view_images(idx, v)), self.pooled)
        self.x[v, idx] = feats.to(self.x.dtype)
        self.done[v, idx] = True
        self.computed += len(idx)
        self.compute_s += time.perf_counter() - t0

    def precompute(self, batch_size: int = 256) -> None:
        """Compute every missing pair now, view by view in chunks of images: the eager
        alternative to computing pairs as they are drawn (tests and measurements use it)."""
        for v in range(self.views):
            for i in range(0, len(self), batch_size):
                idx = torch.arange(i, min(i + batch_size, len(self)), device=self.device)
                idx = idx[~self.done[v, idx]]
                if len(idx):
                    self._fill(idx, torch.full_like(idx, v))

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool,
                generator: torch.Generator | None = None, drop_last: bool = False,
                aug_generator: torch.Generator | None = None):
        """As ``DeviceData.batches``: ``generator`` draws the order (the same as uncached),
        ``aug_generator`` (default ``generator``) each image's view."""
        n = len(self)
        order = torch.randperm(n, device=self.device, generator=generator) if shuffle else \
            torch.arange(n, device=self.device)
        view = torch.zeros(n, dtype=torch.long, device=self.device)
        if augment and self.views > 1:
            view = torch.randint(0, self.views, (n,), device=self.device,
                                 generator=generator if aug_generator is None else aug_generator)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        # First the pairs this epoch draws that are still missing, in batch order, in chunks of
        # batch_size (epoch 1: exactly the epoch's batches; later: a few full chunks, not a few
        # images per step). The order depends only on the draws, so ``replay`` repeats it.
        todo = order[:stop]
        todo_v = view[todo]
        missing = ~self.done[todo_v, todo]
        todo, todo_v = todo[missing], todo_v[missing]
        for i in range(0, len(todo), batch_size):
            self._fill(todo[i:i + batch_size], todo_v[i:i + batch_size])
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            v = view[idx]
            yield self.x[v, idx], self.y[idx]


def prepare(model: StagedModel, train: DeviceData, val: DeviceData, cache: CachePlan,
            seed: int) -> tuple[Suffix, FeatureData, FeatureData]:
    """What a trial trains and validates on when ``cache.use``: (the suffix, the training images'
    ``cache.views`` views, the validation images unaugmented), to be filled as they are drawn.
    ``seed`` seeds the crops of views 2 and up (the trainable passes its trial seed + 3)."""
    return (Suffix(model), FeatureData(train, model, cache, views=cache.views, seed=seed),
            FeatureData(val, model, cache, views=1))


def replay(net: Suffix, train: FeatureData, val: FeatureData, *, generator_state: torch.Tensor,
           epochs: int, batch_size: int, aug_generator_state: torch.Tensor | None = None) -> None:
    """Recompute, in the same batches, the features an uninterrupted trial had computed after
    ``epochs`` epochs: the training batches of those epochs drawn again from the trial
    generators' initial states (order: ``generator_state``; views: ``aug_generator_state``, or
    the order generator when None; ``train_one_epoch`` draws nothing else from them), and the
    validation features by one ``evaluate`` (its batches). Nothing is trained."""
    if epochs < 1:
        return
    g = torch.Generator(device=train.device)
    g.set_state(generator_state)
    a = None
    if aug_generator_state is not None:
        a = torch.Generator(device=train.device)
        a.set_state(aug_generator_state)
    for _ in range(epochs):
        for _ in train.batches(batch_size, shuffle=True, augment=True, generator=g, drop_last=True,
                               aug_generator=a):
            pass
    evaluate(net, val)
