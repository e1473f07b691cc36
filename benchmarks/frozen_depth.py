"""Training-step speed-up by frozen depth, per backbone, against the FLOP model.

    python benchmarks/frozen_depth.py [--backbones scratch_cnn mobilenet_v2 resnet18]
        [--stem cifar] [--images 512] [--batch-size 128] [--threads 2] [--rounds 2]
        [--json OUT]

For each backbone and each frozen depth d = 0 .. max (``trainables.backbones.freeze``; frozen
stages run under ``no_grad`` in ``StagedModel.forward``), one process builds the model exactly as
a trial does (``prepare_model``, ``make_optimizer`` over the trainable parameters, the per-step
schedule) and times ``trainables.train.train_one_epoch`` over ``--images`` synthetic uint8
32x32 images already on the device (``DeviceData``: on-device crop/flip/normalise, as in a
trial; image content does not change the speed). Rounds alternate over the depths (0..max, then
max..0, ...) so that load drift on a shared machine hits every depth alike; the median images/s
per depth is reported. The speed-up is the median over rounds of (images/s at depth d / images/s
at depth 0 in the same round), with the range over rounds beside it: on a shared CPU the load
changes between rounds, and a wide range means the numbers are noise-limited (more rounds help;
so do fewer --images per round).

Columns:
  GFLOP/img     training FLOPs per image (``trainables.train.step_flops``: forward through
                every stage, backward only through the trainable part)
  FLOP x        FLOPs at depth 0 / FLOPs at depth d: the speed-up the FLOP model predicts
  speed-up      median over rounds of images/s at depth d / images/s at depth 0 (same round)
  range         min-max of that ratio over the rounds
  saved MiB     activation memory autograd keeps for the backward pass of one batch (summed
                over ``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters
                excluded): device-independent, shrinks as stages are frozen
  peak MiB      ``torch.cuda.max_memory_allocated`` during an epoch (CUDA only; "n/a" on CPU,
                where torch has no allocator statistics)

A warm-up of two batches per depth precedes the timed rounds. Defaults (CIFAR stems, batch 128,
512 images, 2 rounds) take about 5-10 minutes on a 2-core CPU, mostly ResNet18 at depth 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from study.core.spec import OptimizerSpec  # noqa: E402
from trainables.backbones import REGISTRY, build, count_params, freeze  # noqa: E402
from trainables.data import DeviceData  # noqa: E402
from trainables.train import (autocast, describe_device, make_optimizer, make_schedule, prepare_model,  # noqa: E402
                              step_flops, train_one_epoch)


def saved_activation_bytes(model, data: DeviceData, batch_size: int) -> int:
    """Bytes autograd saves for backward in one training step (each storage counted once,
    parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        try:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in params:
                seen[ptr] = max(seen.get(ptr, 0), s.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            pass
        return t

    g = torch.Generator(device=data.device)
    g.manual_seed(0)
    xb, yb = next(data.batches(batch_size, shuffle=True, augment=True, generator=g))
    if data.device.type == "cuda":
        xb = xb.contiguous(memory_format=torch.channels_last)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(data.device):
            loss = nn.functional.cross_entropy(model(xb), yb)
    del loss
    return sum(seen.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    ap.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"])
    ap.add_argument("--images", type=int, default=512, help="images per timed epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    dev_name = describe_device(torch.device("cuda" if cuda else "cpu"), args.threads)
    print(f"device: {dev_name}; torch {torch.__version__}; stem {args.stem}, 32x32, batch "
          f"{args.batch_size}, {args.images} images/epoch, {args.rounds} rounds (median)")

    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    ys = rng.integers(0, args.classes, args.images)
    data = DeviceData(xs, ys, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), device)
    warm = DeviceData(xs[:2 * args.batch_size], ys[:2 * args.batch_size],
                      (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), device)
    opt_spec = OptimizerSpec()
    steps = args.images // args.batch_size
    out = []
    for bb in args.backbones:
        stem = args.stem if args.stem in REGISTRY[bb].stems else REGISTRY[bb].stems[0]
        depths = list(range(REGISTRY[bb].num_stages + 1))
        runs = {}
        for d in depths:
            torch.manual_seed(0)
            m = build(bb, args.classes, stem)
            freeze(m, d)
            m = prepare_model(m, device)
            fpi, _ = step_flops(m, (3, 32, 32), args.classes, device)
            opt = make_optimizer(m, opt_spec, 0.01)
            sched = make_schedule(opt, opt_spec, steps, 1000)
            gen = torch.Generator(device=device)
            gen.manual_seed(0)
            act = saved_activation_bytes(m, data, args.batch_size)
            train_one_epoch(m, warm, opt, sched, batch_size=args.batch_size, generator=gen)
            runs[d] = dict(model=m, opt=opt, sched=sched, gen=gen, flops=fpi, act=act,
                           trainable=count_params(m)[0], rates=[], peak=[])
        for r in range(args.rounds):
            for d in (depths if r % 2 == 0 else depths[::-1]):
                x = runs[d]
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                train_one_epoch(x["model"], data, x["opt"], x["sched"],
                                batch_size=args.batch_size, generator=x["gen"])  # .item() syncs
                x["rates"].append(steps * args.batch_size / (time.perf_counter() - t))
                if cuda:
                    x["peak"].append(torch.cuda.max_memory_allocated() / 2**20)
        names = [s.name for s in runs[0]["model"].stage_table]
        print(f"\n{bb}/{stem}")
        print(f"{'depth':>5} {'frozen':<16}{'trainable':>11}{'GFLOP/img':>11}{'FLOP x':>8}"
              f"{'img/s':>9}{'speed-up':>10}{'range':>13}{'saved MiB':>11}{'peak MiB':>10}")
        base_f = runs[0]["flops"]
        for d in depths:
            x = runs[d]
            rate = statistics.median(x["rates"])
            ratios = [a / b for a, b in zip(x["rates"], runs[0]["rates"])]
            sp = statistics.median(ratios)
            rng = f"{min(ratios):.2f}-{max(ratios):.2f}"
            peak = f"{max(x['peak']):>10.0f}" if x["peak"] else f"{'n/a':>10}"
            frozen = "-" if d == 0 else (names[0] if d == 1 else f"{names[0]}..{names[d - 1]}")
            print(f"{d:>5} {frozen:<16}{x['trainable']:>11,}{x['flops'] / 1e9:>11.3f}"
                  f"{base_f / x['flops']:>8.2f}{rate:>9.1f}{sp:>10.2f}{rng:>13}"
                  f"{x['act'] / 2**20:>11.1f}{peak}", flush=True)
            out.append({"backbone": bb, "stem": stem, "depth": d, "trainable_params": x["trainable"],
                        "train_flops_per_image": x["flops"], "flop_ratio": base_f / x["flops"],
                        "images_per_s": rate, "rates": x["rates"], "speedup": sp,
                        "speedup_per_round": ratios,
                        "saved_activation_bytes": x["act"],
                        "cuda_peak_mib": max(x["peak"]) if x["peak"] else None})
        del runs
    if not cuda:
        print("\npeak MiB: n/a on CPU (torch keeps no allocator statistics there); saved MiB is "
              "the activation memory of one batch kept for backward")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev_name, "args": vars(args),
                                               "rows": out}, indent=1))


if __name__ == "__main__":
    main()
