"""Does the training budget train every target size enough? The scratch baseline of each size,
trained under the study's budget (``study.core.design.passes_per_epoch``: at least
``target_steps`` optimizer steps, null = what the largest size takes in target_epochs epochs)
and under ``--factor`` times that budget, with the same seeds (the same nested subsets, the same
batches), compared on validation accuracy.

    python benchmarks/budget.py [--spec examples/quick.yaml] [--data-root ARCHIVE]
        [--seeds 3] [--factor 2] [--lr 0.05 | --study STUDY_DIR]

The learning rate: ``--study``'s chosen one for each size's scratch cell (the confirmation runs'
learning rate), else ``--lr``. No Ray: the trainable's own pieces (``target_indices``,
``build_target_model``, ``train_one_epoch``, ``evaluate``) in this process.

Printed per size: validation accuracy (mean over seeds) at the budget and at factor x budget,
and the paired difference; last (headline), ``more_training_gain_max`` = the largest mean gain
(accuracy points) that the longer budget bought at any size: near 0 (within the seeds' noise)
means the budget trains every size to where more training no longer helps validation.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"


def study_lrs(study_dir: str) -> dict:
    """size -> the learning rate of the study's scratch cell at that size (its confirmation runs)."""
    from analysis import cells as C
    from analysis.load import load_study
    from study.core import metrics as M
    from study.core.design import SCRATCH

    runs = C.cell_runs(load_study(study_dir).trials)
    s = runs[runs[M.INIT] == SCRATCH]
    return {int(k): float(g[M.LR].iloc[0]) for k, g in s.groupby(M.SIZE)}


def val_accuracy(spec, data, design, split: str, size, seed: int, lr: float, factor: int) -> float:
    from study.core import metrics as M
    from study.core.design import SCRATCH, steps_per_pass
    from trainables.trainable import (_device_split, build_target_model, target_indices,
                                      trial_generators)
    from trainables.train import (evaluate, make_optimizer, make_schedule, pick_device,
                                  prepare_model, train_one_epoch)

    device = pick_device()
    cfg = {M.SPLIT: split, M.SIZE: size, M.BACKBONE: "scratch_cnn", M.INIT: SCRATCH,
           M.FROZEN_DEPTH: 0, M.LR: lr, M.SEED: seed}
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = build_target_model(spec, data, cfg, Path(tmp), "budget", log=lambda *a: None)
    model = prepare_model(model, device)
    _, tgt = data.splits[split]
    train = _device_split(data, "target_train", tgt, device, idx=target_indices(data, size, seed))
    val = _device_split(data, "val", tgt, device)
    passes = design.passes(split, len(train)) * factor
    steps = steps_per_pass(len(train), spec.batch_size) * passes
    opt = make_optimizer(model, spec.optimizer, lr)
    sched = make_schedule(opt, spec.optimizer, steps, spec.target_epochs)
    gen, aug = trial_generators(seed)
    for _ in range(spec.target_epochs * passes):
        train_one_epoch(model, train, opt, sched, batch_size=spec.batch_size, generator=gen,
                        aug_generator=aug, label_smoothing=spec.optimizer.label_smoothing)
    return evaluate(model, val)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(REPO / "examples" / "quick.yaml"))
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--study", help="take each size's scratch learning rate from this study")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from study.core.design import design_of
    from study.core.spec import load_spec
    from study.runner import prepare_data

    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec, {"data": {"root": args.data_root}})
    design = design_of(spec)
    data = prepare_data(spec, log=lambda *a: None)
    lrs = study_lrs(args.study) if args.study else {}
    split = spec.splits[0].name
    seeds = [spec.search.seed + i for i in range(1, args.seeds + 1)]
    gains = []
    print(f"{spec.name}: split {split}, scratch_cnn from scratch, seeds {seeds}, budget "
          f">= {design.min_steps(split)} steps vs {args.factor}x")
    for size in design.sizes:
        lr = lrs.get(int(size or 0), args.lr)
        a = [val_accuracy(spec, data, design, split, size, sd, lr, 1) for sd in seeds]
        b = [val_accuracy(spec, data, design, split, size, sd, lr, args.factor) for sd in seeds]
        d = np.subtract(b, a)
        sd = d.std(ddof=1) if len(d) > 1 else float("nan")
        gains.append(100 * d.mean())
        print(f"  {size} img/class, lr {lr:.3g}: val {100 * np.mean(a):.1f} % at the budget, "
              f"{100 * np.mean(b):.1f} % at {args.factor}x; paired gain {100 * d.mean():+.1f} "
              f"points (sd {100 * sd:.1f}, n={len(d)})", flush=True)
    print(f"more_training_gain_max={max(gains):.2f}")


if __name__ == "__main__":
    main()
