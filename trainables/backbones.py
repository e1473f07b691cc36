"""Backbone registry: one name -> one builder -> a model with an ordered stage table.

Every backbone is a ``StagedModel``: ``stages`` (an ``nn.ModuleList``, applied in order) followed
by a ``head`` (global pool, dropout, linear). ``frozen_depth = d`` means the first ``d`` stages
are frozen, for every backbone alike: ``0`` fine-tunes everything, ``len(stages)`` trains only
the head (a linear probe).

Stems for 32x32 inputs (the ``stem`` argument):

* ``cifar``: the usual CIFAR adaptation. ResNet18's 7x7/2 conv + max-pool becomes a 3x3/1 conv
  with no pool (He et al.'s CIFAR ResNets, kuangliu/pytorch-cifar), so layer1 sees 32x32 and
  layer4 4x4. MobileNetV2's first conv and its first stride-2 block become stride 1 (overall
  reduction 8 instead of 32). Accurate, but ~15x (ResNet18) and ~10x (MobileNetV2) the FLOPs.
* ``imagenet``: torchvision's layers unchanged (reduction 32: a 32x32 image ends as 1x1). Needed
  to load ImageNet weights into ResNet18 (its 7x7 conv); cheap, which is why the CPU quick
  example uses it.

``scratch_cnn`` has one stem (it is already a CIFAR network).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import torch
from torch import nn

from study.core.catalog import CATALOG, STEMS  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    channels: int  # output channels (features for a flattened stage)
    reduction: int  # cumulative spatial stride at the stage's output (0 = flattened)


class GlobalPoolHead(nn.Module):
    """Global average pool (if the input is a feature map), dropout, linear classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class StagedModel(nn.Module):
    """Stages applied in order, then the head. Frozen stages run without autograd.

    ``frozen_depth`` and the per-stage ``requires_grad``/BatchNorm mode are set by ``freeze()``
    only. Running the frozen prefix under ``torch.no_grad()`` means the backward pass (and the
    activations it would keep) stops at the first trainable stage.
    """

    def __init__(self, name: str, stages: list[tuple[Stage, nn.Module]], head: nn.Module,
                 head_dropout: float):
        super().__init__()
        self.backbone = name
        self.stage_table = [s for s, _ in stages]
        self.stages = nn.ModuleList([m for _, m in stages])
        self.head = head
        self.head_dropout = head_dropout
        self.frozen_depth = 0

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def feature_dim(self) -> int:
        return self.stage_table[-1].channels

    def forward_features(self, x, start: int = 0, stop: int | None = None):
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def forward(self, x):
        d = self.frozen_depth
        if d:
            with torch.no_grad():
                x = self.forward_features(x, 0, d)
        return self.head(self.forward_features(x, d))

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen BatchNorm keeps its statistics: frozen stages always run in eval mode.
        for stage in self.stages[: self.frozen_depth]:
            stage.eval()
        return self

    def replace_head(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` classes (the transfer step)."""
        self.head = GlobalPoolHead(self.feature_dim, num_classes, self.head_dropout)

    def stage_of_parameter(self, name: str) -> int | None:
        """Stage index of a parameter/buffer name from ``state_dict``; None for the head."""
        if name.startswith("stages."):
            return int(name.split(".")[1])
        return None


def freeze(model: StagedModel, depth: int) -> None:
    """Freeze the first ``depth`` stages: the one place that sets ``requires_grad`` and BN mode.

    Frozen stages get ``requires_grad=False`` and BatchNorm in eval mode (running statistics kept,
    not updated); every other parameter, the head included, gets ``requires_grad=True``.
    """
    if not isinstance(depth, int) or not 0 <= depth <= model.num_stages:
        raise ValueError(f"frozen_depth={depth!r} is out of range for {model.backbone}: "
                         f"must be an integer in [0, {model.num_stages}]")
    for i, stage in enumerate(model.stages):
        for p in stage.parameters():
            p.requires_grad_(i >= depth)
    for p in model.head.parameters():
        p.requires_grad_(True)
    model.frozen_depth = depth
    model.train(model.training)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ----------------------------------------------------------------------------- builders

def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def build_scratch_cnn(num_classes: int, stem: str = "cifar") -> StagedModel:
    """The seed notebooks' small CNN (conv-conv-pool blocks, a dense layer), with BatchNorm.

    Stages: block1 (32 ch, /2), block2 (64 ch, /4), block3 (128 ch, /8), fc (256 features).
    Freezing 3 stages = "conv layers frozen, dense layers trained" as in the seeds.
    """
    stages = [
        (Stage("block1", 32, 2), nn.Sequential(*_conv_bn(3, 32), *_conv_bn(32, 32), nn.MaxPool2d(2))),
        (Stage("block2", 64, 4), nn.Sequential(*_conv_bn(32, 64), *_conv_bn(64, 64), nn.MaxPool2d(2))),
        (Stage("block3", 128, 8), nn.Sequential(*_conv_bn(64, 128), *_conv_bn(128, 128), nn.MaxPool2d(2))),
        (Stage("fc", 256, 0), nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                            nn.Linear(128 * 4, 256), nn.ReLU(inplace=True))),
    ]
    return StagedModel("scratch_cnn", stages, GlobalPoolHead(256, num_classes, 0.3), 0.3)


def build_resnet18(num_classes: int, stem: str = "cifar") -> StagedModel:
    """torchvision ResNet18; stages: stem, layer1..layer4 (64/64/128/256/512 channels)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        stem_mod, r = nn.Sequential(net.conv1, net.bn1, net.relu), 1
    else:
        stem_mod, r = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), 4
    stages = [
        (Stage("stem", 64, r), stem_mod),
        (Stage("layer1", 64, r), net.layer1),
        (Stage("layer2", 128, r * 2), net.layer2),
        (Stage("layer3", 256, r * 4), net.layer3),
        (Stage("layer4", 512, r * 8), net.layer4),
    ]
    return StagedModel("resnet18", stages, GlobalPoolHead(512, num_classes, 0.0), 0.0)


# torchvision mobilenet_v2.features indices grouped by resolution (t, c, n, s table of the paper).
_MBV2_GROUPS = [("stem", 0, 2, 16), ("stage2", 2, 4, 24), ("stage3", 4, 7, 32),
                ("stage4", 7, 11, 64), ("stage5", 11, 14, 96), ("stage6", 14, 17, 160),
                ("stage7", 17, 19, 1280)]


def build_mobilenet_v2(num_classes: int, stem: str = "cifar") -> StagedModel:
    """torchvision MobileNetV2; 7 stages by resolution; the last ends with the 1x1 conv to 1280."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    f = net.features
    strides = {0: 2, 2: 2, 4: 2, 7: 2, 14: 2}
    if stem == "cifar":
        f[0][0].stride = (1, 1)
        f[2].conv[1][0].stride = (1, 1)
        f[2].stride = 1
        strides[0] = strides[2] = 1
    stages, r = [], 1
    for name, lo, hi, ch in _MBV2_GROUPS:
        for i in range(lo, hi):
            r *= strides.get(i, 1)
        stages.append((Stage(name, ch, r), nn.Sequential(*f[lo:hi])))
    return StagedModel("mobilenet_v2", stages, GlobalPoolHead(1280, num_classes, 0.2), 0.2)


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    builder: Callable[..., StagedModel]
    num_stages: int
    stems: tuple[str, ...]
    imagenet_weights: str | None  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    imagenet_stem_required: bool  # ImageNet weights only fit the ImageNet stem


_BUILDERS = {"scratch_cnn": build_scratch_cnn, "mobilenet_v2": build_mobilenet_v2,
             "resnet18": build_resnet18}
# The facts (stage counts, stems, weights) live in study.core.catalog (torch-free, read by specs).
REGISTRY: dict[str, BackboneInfo] = {
    n: BackboneInfo(_BUILDERS[n], f.num_stages, f.stems, f.imagenet_weights,
                    f.imagenet_stem_required) for n, f in CATALOG.items()}


def backbone_info(name: str) -> BackboneInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; valid backbones: {', '.join(REGISTRY)}") from None


def build(name: str, num_classes: int, stem: str = "cifar") -> StagedModel:
    info = backbone_info(name)
    if stem not in info.stems:
        raise ValueError(f"backbone {name!r} has no stem {stem!r}; valid: {', '.join(info.stems)}")
    model = info.builder(num_classes, stem=stem)
    assert model.num_stages == info.num_stages
    return model


# ----------------------------------------------------------------------------- ImageNet weights

from study.core.errors import WeightsUnavailable  # noqa: E402,F401  (torch-free, for the CLI)


def imagenet_state_dict(name: str, weights_file: str | None = None) -> dict:
    """ImageNet weights for ``name``: a local file if given, else torchvision's (TORCH_HOME cache,
    downloading when absent). Raises ``WeightsUnavailable`` naming what was tried."""
    info = backbone_info(name)
    if info.imagenet_weights is None:
        raise WeightsUnavailable(f"backbone {name!r} has no ImageNet weights; use init "
                                 f"'source' or 'scratch'")
    if weights_file:
        if not os.path.isfile(weights_file):
            raise WeightsUnavailable(f"weights file for {name} not found: {weights_file}")
        sd = torch.load(weights_file, map_location="cpu", weights_only=True)
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    from torchvision.models import get_weight

    weights = get_weight(info.imagenet_weights)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # no network, no cache
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not in {cached} and could not be downloaded from "
            f"{weights.url} ({type(e).__name__}: {e}); set TORCH_HOME to a cache holding them or "
            f"name a local file in the spec's weights.{name}") from e


def load_imagenet(model: StagedModel, state_dict: dict) -> None:
    """Copy torchvision-layout ImageNet weights into a StagedModel (the classifier is dropped)."""
    from torchvision.models import mobilenet_v2, resnet18

    ref = resnet18(weights=None) if model.backbone == "resnet18" else mobilenet_v2(weights=None)
    ref.load_state_dict(state_dict)  # strict: fails loudly on a wrong file
    # Our stages hold the very module objects of a freshly built torchvision model, in the
    # same order, so parameters correspond one to one once the classifier is left out.
    src = [v for k, v in ref.state_dict().items() if not k.startswith(("fc.", "classifier."))]
    dst = [k for k in model.state_dict() if not k.startswith("head.")]
    if len(src) != len(dst):
        raise WeightsUnavailable(f"ImageNet weights do not fit {model.backbone}'s stage table")
    ours = model.state_dict()
    for k, v in zip(dst, src):
        if ours[k].shape != v.shape:
            raise WeightsUnavailable(f"ImageNet weights do not fit {model.backbone}: {k} has shape "
                                     f"{tuple(ours[k].shape)}, the file {tuple(v.shape)}")
        ours[k] = v
    model.load_state_dict(ours)
