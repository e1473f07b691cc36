"""benchmarks/cell_scheduling.py on a tiny hand-made FIFO study (no Ray, no training)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "cell_scheduling.py"


def load_bench():
    """The benchmark as a module (also where ``simulate`` lives, for tests/test_policy.py)."""
    if "cell_scheduling_bench" in sys.modules:
        return sys.modules["cell_scheduling_bench"]
    spec = importlib.util.spec_from_file_location("cell_scheduling_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # benchmarks/ is not a package
    return mod


# 2 cells x 3 tuning trials x 4 epochs. In each cell the first trial leads at every epoch (so at
# every rung); the others cross each other. Cell B scores below cell A everywhere.
CURVES = {
    "s/scratch_cnn/source/d1": [([0.30, 0.40, 0.50, 0.55], 0.52, 0.01),
                                ([0.20, 0.25, 0.30, 0.32], 0.30, 0.02),
                                ([0.15, 0.30, 0.40, 0.45], 0.44, 0.05)],
    "s/scratch_cnn/scratch/d0": [([0.15, 0.22, 0.28, 0.30], 0.29, 0.03),
                                 ([0.12, 0.20, 0.25, 0.27], 0.26, 0.1),
                                 ([0.05, 0.18, 0.26, 0.28], 0.27, 0.005)],
}
FLOPS_PER_EPOCH = {"s/scratch_cnn/source/d1": 1e9, "s/scratch_cnn/scratch/d0": 3e9}


def _write_trial(root: Path, index: int, cell: str, lr: float, val: list, test: float,
                 phase: str = "tune") -> None:
    split, backbone, init, depth = cell.split("/")
    tid = f"abcde_{index:05d}"
    tdir = root / f"{tid}_{split}_{backbone}_{init}_{depth}"
    tdir.mkdir()
    cfg = {"cell": cell, "phase": phase, "lr": lr, "split": split, "backbone": backbone,
           "init": init, "frozen_depth": int(depth[1:]), "seed": 0}
    lines = []
    for e, v in enumerate(val, 1):
        row = {"epoch": e, "val_acc": v, "target_flops": FLOPS_PER_EPOCH[cell] * e,
               "trial_id": tid, "config": cfg}
        if e == len(val):
            row["test_acc"] = test
        lines.append(json.dumps(row))
    (tdir / "result.json").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fifo_study(tmp_path) -> Path:
    root = tmp_path / "fifo"
    root.mkdir()
    (root / "study.yaml").write_text("name: tiny\ntarget_epochs: 4\n")
    # the study's own order: round-robin across cells, as StudyDesign.tuning_configs
    index = 0
    for k in range(3):
        for cell, trials in CURVES.items():
            val, test, lr = trials[k]
            _write_trial(root, index, cell, lr, val, test)
            index += 1
    # a confirmation trial that would win everything: must be ignored
    _write_trial(root, index, "s/scratch_cnn/scratch/d0", 0.03, [0.9, 0.95, 0.97, 0.99], 0.99,
                 phase="confirm")
    return root


def test_replay_on_a_tiny_fifo_study(fifo_study, capsys):
    bench = load_bench()
    summ = bench.main([str(fifo_study), "--orders", "50", "--per-cell"])
    out = capsys.readouterr().out
    assert "6 tuning trials, 2 cells" in out
    rules = summ["rules"]
    for kind in ("random", "round-robin"):
        fifo = rules["fifo"][kind]
        assert fifo["compute"]["mean"] == pytest.approx(1.0)
        assert fifo["compute"]["p5"] == pytest.approx(1.0)
        assert fifo["compute"]["p95"] == pytest.approx(1.0)
        assert fifo["agreement"] == 1.0 and fifo["coverage"] == 1.0
        assert fifo["regret"]["mean"] == pytest.approx(0.0)
        for rule in ("cell-halving", "cell-asha"):
            assert rules[rule][kind]["coverage"] == 1.0, (rule, kind)
        # the best trial leads at every rung: halving never stops it
        assert rules["cell-halving"][kind]["agreement"] == 1.0, kind
        assert rules["cell-halving"][kind]["regret"]["mean"] == pytest.approx(0.0)
        assert rules["cell-halving"][kind]["compute"]["mean"] < 1.0  # and it did stop others
    assert summ["halving_agreement"] == 1.0
    for cell in CURVES:
        assert summ["cells"]["cell-halving"][cell]["random"]["coverage"] == 1.0
    last = out.strip().splitlines()[-1]
    assert last.startswith("halving_agreement=")
    assert float(last.split("=", 1)[1]) == pytest.approx(1.0)


def test_demo_runs(capsys):
    bench = load_bench()
    summ = bench.main(["--demo", "--orders", "5"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"halving_agreement={summ['halving_agreement']:.4f}"
    assert summ["rules"]["fifo"]["random"]["compute"]["mean"] == pytest.approx(1.0)
