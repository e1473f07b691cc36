"""Shared test setup. Ray must stay on loopback: these variables are set before `import ray`."""
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind Ray to 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # token auth is tested on purpose, not by accident
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CIFAR_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"


def make_image_folder(root: Path, classes=("a", "b", "c", "d"), n_train=24, n_test=8, size=16,
                      seed=0) -> Path:
    """A tiny learnable image-folder dataset: each class has its own colour and stripe pattern."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3))
                img[:, :, ci % 3] += 120
                if ci >= 3:  # beyond three colours, classes differ by horizontal stripes
                    img[::2] += 100
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray (2 CPUs, loopback) for the tests that need it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
