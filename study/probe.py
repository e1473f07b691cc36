"""What this machine does: the FLOPs of each model's training step and inference, and the
FLOP/s the trainable's own loops reach here (torch; ``study plan`` prices a study with them,
``study.plan`` stays arithmetic and scheduling)."""
from __future__ import annotations

import time

from study.core.spec import Spec


class FlopsPerImage:
    """FLOPs per image of a training step (``which`` 0) or an inference (1) of a backbone at a
    frozen depth (``trainables.train.step_flops`` on the real model), counted once per
    (backbone, stem, depth, classes)."""

    def __init__(self, image_size: int):
        from trainables.train import pick_device

        self.device = pick_device()
        self.size = image_size
        self.cache: dict = {}

    def __call__(self, backbone: str, stem: str, depth: int, n_classes: int, which: int = 0):
        from trainables.backbones import build, freeze
        from trainables.train import step_flops

        k = (backbone, stem, depth, n_classes)
        if k not in self.cache:
            m = build(backbone, n_classes, stem)
            freeze(m, depth)
            self.cache[k] = step_flops(m, (3, self.size, self.size), n_classes, self.device)
        return self.cache[k][which]


def probe_throughput(backbone: str, stem: str, n_classes: int, spec: Spec,
                     min_s: float = 1.5) -> tuple[float, float]:
    """Achieved (training, inference) FLOP/s of one backbone at depth 0 on this machine (random
    images through the trainable's own loops), with the threads a trial gets on a CPU
    (``resources.cpus``)."""
    import torch

    from trainables.train import pick_device

    device = pick_device()
    threads = torch.get_num_threads()
    if device.type == "cpu":  # a trial trains with resources.cpus threads (the trainable sets it)
        torch.set_num_threads(max(1, int(spec.resources.cpus)))
    try:
        return _probe(backbone, stem, n_classes, spec, min_s, device)
    finally:
        torch.set_num_threads(threads)


def _probe(backbone: str, stem: str, n_classes: int, spec: Spec, min_s: float, device):
    """(training, inference) FLOP/s of the trainable's own loops (``train_one_epoch`` with its
    on-device augmentation and schedule; ``evaluate`` at its batch size) on random images."""
    import numpy as np
    import torch

    from trainables.backbones import build, freeze
    from trainables.data import DeviceData
    from trainables.train import (EVAL_BATCH, evaluate, make_optimizer, make_schedule,
                                  prepare_model, step_flops, train_one_epoch)

    model = prepare_model(build(backbone, n_classes, stem), device)
    freeze(model, 0)
    size = spec.data.image_size
    fpi, fpe = step_flops(model, (3, size, size), n_classes, device)
    b = spec.batch_size
    rng = np.random.default_rng(0)
    n = b * 4

    def images(k: int) -> DeviceData:
        return DeviceData(rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8),
                          rng.integers(0, n_classes, k), (0.5,) * 3, (0.25,) * 3, device)

    data = images(n)
    # Inference at evaluate's own batch size for this device (on a CPU a batch of 512 runs at
    # ~2/3 of the FLOP/s of a small one: its activations leave the caches), over 4 batches.
    eb = EVAL_BATCH.get(device.type, EVAL_BATCH["cuda"])
    evals = images(4 * eb)
    opt = make_optimizer(model, spec.optimizer, 0.01)
    sched = make_schedule(opt, spec.optimizer, n // b, 1000)
    gen = torch.Generator(device=device)

    def timed(fn, images):
        fn()  # warm-up (allocations, kernels)
        t0, reps = time.perf_counter(), 0
        while reps < 2 or time.perf_counter() - t0 < min_s / 2:
            fn()
            reps += 1
        return images * reps / (time.perf_counter() - t0)

    train = timed(lambda: train_one_epoch(model, data, opt, sched, batch_size=b, generator=gen),
                  n) * fpi
    infer = timed(lambda: evaluate(model, evals), 4 * eb) * fpe
    return train, infer
