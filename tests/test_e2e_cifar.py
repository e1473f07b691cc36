"""End to end on the real CIFAR-10 (../shared/datasets/cifar10-jpg.tar.xz), a subset: `pytest -m slow`."""
import json

import pytest

from study.cli import main
from study.core import metrics as M

from conftest import CIFAR_ARCHIVE

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CIFAR_ARCHIVE.exists(), reason=f"{CIFAR_ARCHIVE} not present")]

SPEC = """
name: e2e
data: {{root: {root}, max_train_per_class: 400, max_test_per_class: 200}}
splits:
  - {{name: 5to5, source: [airplane, automobile, bird, cat, deer], target: [dog, frog, horse, ship, truck]}}
backbones:
  scratch_cnn: {{depths: [0, 4]}}
inits: [source, scratch]
lr: {{low: 0.01, high: 0.2}}
batch_size: 64
target_epochs: 4
source: {{epochs: 3, lr: 0.05}}
search: {{trials_per_cell: 2, max_concurrent: 2, seed: 0}}
confirm: {{seeds: 0}}
scheduler: {{type: halving, grace_period: 1, reduction_factor: 2}}
storage: {storage}
"""


def test_quick_cifar10_study_is_far_above_chance(tmp_path, ray_local):
    spec = tmp_path / "e2e.yaml"
    spec.write_text(SPEC.format(root=CIFAR_ARCHIVE, storage=tmp_path / "studies"))
    assert main(["run", str(spec)]) == 0
    summary = json.loads((tmp_path / "studies" / "e2e" / "summary.json").read_text())
    best = max((r for r in summary["trial_rows"] if r["status"] == "completed"),
               key=lambda r: r[M.VAL_ACC])
    assert summary["cells_completed"] == summary["cells"] == 3
    # 5 target classes: chance is 0.20
    assert best[M.VAL_ACC] > 0.45 and best[M.TEST_ACC] > 0.45, best
    assert summary["errored"] == 0
    prov = json.loads((tmp_path / "studies" / "e2e" / "provenance.json").read_text())
    assert prov["data"]["classes"][0] == "airplane" and len(prov["data"]["classes"]) == 10
