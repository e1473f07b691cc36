"""Training throughput: the trainable's epoch (trainables.train.train_one_epoch) vs a bare
PyTorch loop, same model, batch size and device, side by side in one process.

    python benchmarks/throughput.py [--backbones scratch_cnn resnet18] [--images 2048]
                                    [--batch-size 128] [--threads 2] [--rounds 3]

The bare loop is the least a training loop can do: pre-normalised float images already on the
device, a random permutation, forward / loss / backward / step. The trainable's loop adds what the
study needs: on-device crop+flip augmentation of uint8 batches, normalisation, a per-step LR
schedule and on-device loss accumulation. Rounds alternate between the two (ABAB...) and the
median images/s of each is reported, with ratio = trainable / bare (target >= 0.95).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from study.core.spec import OptimizerSpec
from trainables.backbones import REGISTRY, build, freeze
from trainables.data import DeviceData
from trainables.train import (describe_device, make_optimizer, make_schedule, pick_device, prepare_model,
                              train_one_epoch, autocast)


def bare_epoch(model, x, y, opt, batch_size):
    model.train()
    perm = torch.randperm(len(y), device=x.device)
    for i in range(0, len(y) - len(y) % batch_size, batch_size):
        idx = perm[i:i + batch_size]
        with autocast(x.device):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=list(REGISTRY))
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--images", type=int, default=2048, help="images per timed epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frozen-depth", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device()
    name = describe_device(device, args.threads)
    print(f"device: {name}; torch {torch.__version__}; {args.images} images/epoch, batch {args.batch_size}, "
          f"frozen_depth {args.frozen_depth}, stem {args.stem}")
    print(f"{'backbone':<14}{'trainable img/s':>16}{'bare img/s':>12}{'ratio':>8}")
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    ys = rng.integers(0, 10, args.images)
    data = DeviceData(xs, ys, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), device)
    x_bare = data.normalize(data.x)
    if device.type == "cuda":
        x_bare = x_bare.contiguous(memory_format=torch.channels_last)
    y_bare = data.y
    opt_spec = OptimizerSpec()
    for bb in args.backbones:
        stem = args.stem if args.stem in REGISTRY[bb].stems else REGISTRY[bb].stems[0]
        models = {}
        for side in ("trainable", "bare"):
            torch.manual_seed(0)
            m = build(bb, 10, stem)
            freeze(m, args.frozen_depth)
            m = prepare_model(m, device)
            opt = make_optimizer(m, opt_spec, 0.01)
            models[side] = (m, opt, make_schedule(opt, opt_spec, args.images // args.batch_size, 100))
        gen = torch.Generator(device=device)
        gen.manual_seed(0)

        def run(side):
            m, opt, sched = models[side]
            t = time.perf_counter()
            if side == "trainable":
                train_one_epoch(m, data, opt, sched, batch_size=args.batch_size, generator=gen)
            else:
                bare_epoch(m, x_bare, y_bare, opt, args.batch_size)
            return (args.images - args.images % args.batch_size) / (time.perf_counter() - t)

        run("trainable"), run("bare")  # warm-up
        rates = {"trainable": [], "bare": []}
        for _ in range(args.rounds):
            for side in ("trainable", "bare"):
                rates[side].append(run(side))
        a, b = statistics.median(rates["trainable"]), statistics.median(rates["bare"])
        print(f"{bb + '/' + stem:<14}{a:>16.1f}{b:>12.1f}{a / b:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
