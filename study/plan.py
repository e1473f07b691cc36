"""`study plan`: what a study will run and cost, before anything runs.

Counts come from ``study.cells`` (the same lists the searcher hands out). FLOPs come from
``trainables.train.step_flops`` on each real (backbone, stem, depth, classes) model:

    source FLOPs  = source models x source.epochs x train images(source classes) x F_train(d=0)
    tuning FLOPs  = sum over cells of epochs x train images(target classes) x F_train(cell)
    confirm FLOPs = cells x confirm.seeds x target_epochs x train images x F_train(cell)

where tuning epochs are given for FIFO (every trial to target_epochs) and for ideal synchronous
successive halving (``n m_0 + keep_0 (m_1 - m_0) + ... + keep_last (T - m_last)``): the
``halving`` rule decides the same trials as results arrive, so it spends between the two (it
stops a trial only once the results that rule it out exist). Training images per epoch are
``steps x batch_size`` (the last partial batch is dropped). Device seconds = FLOPs / throughput,
the throughput (FLOP/s) measured per backbone by a short probe on this machine (a few training
steps at depth 0), or given by the user (``--flops-per-s``). Validation passes and feature-cache
savings are not counted (so the estimate errs high for cached linear probes).
"""
from __future__ import annotations

import time

from study import cells as C
from study import policy
from study.core.spec import Spec

CIFAR10_TRAIN_PER_CLASS = 5000  # used when no data is given (data.root null: the download)


def train_images(spec: Spec, n_classes: int, per_class: int) -> int:
    """Training images per epoch of a stage over ``n_classes`` classes (val held out, batches
    of batch_size, the last partial one dropped)."""
    cap = min(per_class, spec.data.max_train_per_class or per_class)
    n = n_classes * (cap - max(1, round(cap * spec.data.val_fraction)))
    steps = max(1, n // spec.batch_size)
    return steps * spec.batch_size


def tuning_epochs(spec: Spec, n: int) -> tuple[int, int]:
    """(FIFO, ideal synchronous halving) target epochs of one group of n tuning trials."""
    t = spec.target_epochs
    if spec.scheduler.type == "fifo":
        return n * t, n * t
    ms = policy.milestones(spec.scheduler.grace_period, spec.scheduler.reduction_factor, t)
    keep = policy.keep_counts(n, spec.scheduler.reduction_factor, len(ms))
    epochs, alive, prev = 0, n, 0
    for m, k in zip(ms, keep):
        epochs += alive * (m - prev)
        alive, prev = k, m
    return n * t, epochs + alive * (t - prev)


def probe_throughput(backbone: str, stem: str, n_classes: int, spec: Spec,
                     min_s: float = 1.5) -> float:
    """Achieved training FLOP/s of one backbone at depth 0 on this machine (random data)."""
    import torch

    from trainables.backbones import build, freeze
    from trainables.train import pick_device, prepare_model, step_flops

    device = pick_device()
    model = prepare_model(build(backbone, n_classes, stem), device)
    freeze(model, 0)
    size = spec.data.image_size
    fpi, _ = step_flops(model, (3, size, size), n_classes, device)
    b = min(spec.batch_size, 64)
    x = torch.randn(b, 3, size, size, device=device)
    y = torch.randint(0, n_classes, (b,), device=device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()  # warm-up (allocations, kernels)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, steps = time.perf_counter(), 0
    while steps < 3 or time.perf_counter() - t0 < min_s:
        step()
        steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return fpi * b * steps / (time.perf_counter() - t0)


def make_plan(spec: Spec, per_class: int | None = None, flops_per_s: float | None = None,
              log=print) -> dict:
    """The study's cells, trials, FLOPs per phase and estimated device hours."""
    from trainables.backbones import build, freeze
    from trainables.train import pick_device, step_flops

    per_class = per_class or CIFAR10_TRAIN_PER_CLASS
    device = pick_device()
    size = spec.data.image_size
    fcache: dict = {}

    def fpi(backbone, stem, depth, n_classes):
        k = (backbone, stem, depth, n_classes)
        if k not in fcache:
            m = build(backbone, n_classes, stem)
            freeze(m, depth)
            fcache[k] = step_flops(m, (3, size, size), n_classes, device)[0]
        return fcache[k]

    rates: dict = {}

    def rate(backbone, stem):
        if flops_per_s:
            return flops_per_s
        if (backbone, stem) not in rates:
            rates[(backbone, stem)] = probe_throughput(backbone, stem, 10, spec)
            log(f"probe: {backbone} ({stem} stem) trains at {rates[(backbone, stem)] / 1e9:.1f} "
                f"GFLOP/s on {device.type}")
        return rates[(backbone, stem)]

    splits = {s.name: s for s in spec.splits}
    sizes = C.group_sizes(spec)
    k = spec.confirm.seeds
    rows, sources = [], {}
    for c in C.cells(spec):
        s = splits[c.split]
        n_t = len(s.target)
        imgs = train_images(spec, n_t, per_class)
        f = fpi(c.backbone, c.stem, c.depth, n_t)
        n = sizes.get(c.id, 0) if spec.search.mode == "compare" else 0
        fifo_e, sh_e = tuning_epochs(spec, n)
        confirm_e = k * spec.target_epochs if spec.search.mode == "compare" else 0
        r = rate(c.backbone, c.stem)
        rows.append({"cell": c.id, "tuning_trials": n, "epoch_flops": imgs * f,
                     "tuning_flops_fifo": fifo_e * imgs * f, "tuning_flops_halving": sh_e * imgs * f,
                     "confirm_trials": k if spec.search.mode == "compare" else 0,
                     "confirm_flops": confirm_e * imgs * f, "rate": r})
        if c.needs_source:
            seeds = [spec.search.seed + i for i in range(k + 1)]
            for sd in seeds:
                key = (c.split, c.backbone, c.stem, sd)
                if key not in sources:
                    src_imgs = train_images(spec, len(s.source), per_class)
                    sources[key] = (spec.source.epochs * src_imgs
                                    * fpi(c.backbone, c.stem, 0, len(s.source)), r)
    src_flops = sum(v[0] for v in sources.values())
    src_s = sum(v[0] / v[1] for v in sources.values())
    tot = {"source_models": len(sources), "source_flops": src_flops,
           "tuning_flops_fifo": sum(r["tuning_flops_fifo"] for r in rows),
           "tuning_flops_halving": sum(r["tuning_flops_halving"] for r in rows),
           "confirm_flops": sum(r["confirm_flops"] for r in rows)}
    dev_s = {ph: src_s + sum(r[f"tuning_flops_{ph}"] / r["rate"] + r["confirm_flops"] / r["rate"]
                             for r in rows) for ph in ("fifo", "halving")}
    return {"counts": C.trial_counts(spec), "cells": rows, "totals": tot, "device_s": dev_s,
            "max_concurrent": spec.search.max_concurrent,
            "throughput": "given" if flops_per_s else "probed", "per_class": per_class}


def format_plan(spec: Spec, plan: dict) -> str:
    def g(x):
        return f"{x / 1e12:.2f} TFLOP" if x >= 1e11 else f"{x / 1e9:.2f} GFLOP"

    c, t = plan["counts"], plan["totals"]
    lines = [f"study {spec.name!r} (mode {spec.search.mode}): {c['cells']} cells, "
             f"{c['tuning']} tuning + {c['confirm']} confirmation trials = {c['total']} trials, "
             f"{t['source_models']} source models; {plan['per_class']} training images per class "
             f"before the validation split",
             "",
             f"{'cell':<44} {'tune':>4} {'confirm':>7} {'FLOP/epoch':>12} {'tuning (halving..FIFO)':>26}"]
    for r in plan["cells"]:
        lines.append(f"{r['cell']:<44} {r['tuning_trials']:>4} {r['confirm_trials']:>7} "
                     f"{g(r['epoch_flops']):>12} {g(r['tuning_flops_halving']):>12} .. "
                     f"{g(r['tuning_flops_fifo']):>11}")
    total_h = t["source_flops"] + t["tuning_flops_halving"] + t["confirm_flops"]
    total_f = t["source_flops"] + t["tuning_flops_fifo"] + t["confirm_flops"]
    lines += ["",
              f"source models:  {t['source_models']} x {spec.source.epochs} epochs = "
              f"{g(t['source_flops'])}",
              f"tuning:         {g(t['tuning_flops_halving'])} (ideal successive halving) .. "
              f"{g(t['tuning_flops_fifo'])} (FIFO); expected early-stopping saving "
              f"{1 - t['tuning_flops_halving'] / max(t['tuning_flops_fifo'], 1):.0%} at most",
              f"confirmation:   {g(t['confirm_flops'])}",
              f"total:          {g(total_h)} .. {g(total_f)}",
              f"device time:    {plan['device_s']['halving'] / 3600:.2f} .. "
              f"{plan['device_s']['fifo'] / 3600:.2f} device-hours ({plan['throughput']} "
              f"throughput); wall >= {plan['device_s']['halving'] / 3600 / plan['max_concurrent']:.2f} h "
              f"with {plan['max_concurrent']} trials at once (validation, start-up and "
              f"scheduling not included)"]
    return "\n".join(lines)
