"""Backbone facts as plain data (no torch import): what a spec may name and how deep it can freeze.

``trainables.backbones.REGISTRY`` attaches a builder to each entry and checks, when a model is
built, that the builder's stage table has ``num_stages`` stages. Specs, plans and reports read
this module only, so validating a spec never imports torch.
"""
from __future__ import annotations

import dataclasses

STEMS = ("cifar", "imagenet")


@dataclasses.dataclass(frozen=True)
class BackboneFacts:
    name: str
    num_stages: int  # frozen depth runs 0 .. num_stages (num_stages: linear probe)
    stems: tuple[str, ...]
    imagenet_weights: str | None  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    imagenet_stem_required: bool  # ImageNet weights only fit the ImageNet stem


CATALOG: dict[str, BackboneFacts] = {
    "scratch_cnn": BackboneFacts("scratch_cnn", 4, ("cifar",), None, False),
    "mobilenet_v2": BackboneFacts("mobilenet_v2", 7, STEMS, "MobileNet_V2_Weights.IMAGENET1K_V1",
                                  False),
    "resnet18": BackboneFacts("resnet18", 5, STEMS, "ResNet18_Weights.IMAGENET1K_V1", True),
}


def facts(name: str) -> BackboneFacts:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; valid backbones: {', '.join(CATALOG)}") from None
