"""The library versions this code was tested with: a newer Ray must fail here, loudly, before a
user finds out in `study resume` (which relies on Tune behaviour that is not a stable API)."""
import ray
import torch
import torchvision

from study.runner import TESTED_RAY, ray_version_warning


def test_ray_is_the_tested_minor_version():
    assert ray.__version__.split(".")[:2] == TESTED_RAY.split("."), (
        f"Ray {ray.__version__} is untested (tested: {TESTED_RAY}.x). Run the slow suite "
        f"(fault tolerance, resume mid-confirmation, ray up), then update TESTED_RAY in "
        f"study/runner.py and the pin in pyproject.toml.")
    assert ray_version_warning() is None


def test_torch_and_torchvision_are_a_matching_pair():
    # torchvision's C++ ops load only against the torch it was built for
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert nms(boxes, torch.tensor([1.0]), 0.5).tolist() == [0]
    assert torchvision.__version__
