"""Fractional GPUs: aggregate training throughput of 1, 2 and 4 trainers sharing ONE GPU.

    python benchmarks/gpu_packing.py [--backbones scratch_cnn mobilenet_v2] [--stem cifar]
        [--trainers 1 2 4] [--images 8192] [--epochs 3] [--rounds 2] [--batch-size 128]
        [--launcher process|ray] [--json OUT]
    python benchmarks/gpu_packing.py --device cpu --dry-run     # exercise the code, no GPU

A study with ``resources: {gpu: 1/k}`` runs k trials on one GPU at once. Each trial is a small
model at 32x32 (scratch_cnn, MobileNetV2), which alone leaves most of a large GPU idle (kernel
launch and Python overhead per step), so k trainers side by side should raise the aggregate
images/s. This script measures that: k trainer processes (``--launcher process``: spawned
processes; ``--launcher ray``: Ray tasks with ``num_gpus=1/k``, as Tune places fractional
trials) each build the model as a trial does (``prepare_model``: channels_last on CUDA;
``train_one_epoch``: bf16 autocast, on-device uint8 augmentation from ``DeviceData``), run a
warm-up epoch, wait at a barrier, then train ``--epochs`` epochs of ``--images`` synthetic images.

  aggregate img/s = images trained by all k trainers / (last trainer's end - first's start)
  speed-up        = aggregate img/s with k trainers / with 1 trainer (same run)
  per-trainer     = aggregate / k: what each trial sees (its epochs get slower as k grows)
  peak MiB        = the largest ``torch.cuda.max_memory_allocated`` of one trainer

Rounds alternate the order of k (1,2,4 then 4,2,1, ...) and the median per k is reported.
The processes share the GPU by time slicing (no MPS assumed; with MPS the numbers are better).

Without a CUDA device the script refuses (exit status 2) unless ``--device cpu`` is given;
``--device cpu --dry-run`` runs the same code on tiny CPU sizes (1 thread per trainer) so it is
exercised where no GPU exists; its numbers say nothing about GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def train_worker(backbone: str, stem: str, device: str, images: int, epochs: int,
                 batch_size: int, threads: int, seed: int, barrier=None, ready=None,
                 n_ready: int = 0) -> dict:
    """One trainer: build, warm up, (barrier), time ``epochs`` epochs. Returns its timings."""
    import numpy as np
    import torch

    from study.core.spec import OptimizerSpec
    from trainables.backbones import build, freeze
    from trainables.data import DeviceData
    from trainables.train import make_optimizer, make_schedule, prepare_model, train_one_epoch

    torch.set_num_threads(threads)
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    ys = rng.integers(0, 10, images)
    data = DeviceData(xs, ys, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), dev)
    torch.manual_seed(seed)
    model = build(backbone, 10, stem)
    freeze(model, 0)
    model = prepare_model(model, dev)
    spec = OptimizerSpec()
    steps = images // batch_size
    opt = make_optimizer(model, spec, 0.01)
    sched = make_schedule(opt, spec, steps, epochs + 1)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    train_one_epoch(model, data, opt, sched, batch_size=batch_size, generator=gen)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if barrier is not None:
        barrier.wait()
    if ready is not None:  # Ray: a counter actor; wait until every trainer is warm
        import ray

        ray.get(ready.arrive.remote())
        while ray.get(ready.count.remote()) < n_ready:
            time.sleep(0.005)
    t0 = time.time()
    for _ in range(epochs):
        train_one_epoch(model, data, opt, sched, batch_size=batch_size, generator=gen)  # syncs
    t1 = time.time()
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    return {"start": t0, "end": t1, "images": steps * batch_size * epochs, "peak_mib": peak}


def _proc_entry(q, kwargs):
    try:
        q.put(train_worker(**kwargs))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put({"error": f"{type(e).__name__}: {e}"})


def run_processes(k: int, kw: dict) -> list[dict]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    barrier, q = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_proc_entry, args=(q, {**kw, "seed": i, "barrier": barrier}))
             for i in range(k)]
    for p in procs:
        p.start()
    out = [q.get() for _ in procs]
    for p in procs:
        p.join()
    errs = [o["error"] for o in out if "error" in o]
    if errs:
        raise RuntimeError(f"trainer failed: {errs[0]}")
    return out


def run_ray(k: int, kw: dict, gpu: bool) -> list[dict]:
    import ray

    @ray.remote(num_cpus=0)
    class Ready:
        def __init__(self):
            self.c = 0

        def arrive(self):
            self.c += 1

        def count(self):
            return self.c

    ready = Ready.remote()
    res = {"num_gpus": 1 / k, "num_cpus": 0} if gpu else {"num_cpus": 1 / k}
    task = ray.remote(**res)(train_worker)
    out = ray.get([task.remote(**{**kw, "seed": i, "ready": ready, "n_ready": k}) for i in range(k)])
    ray.kill(ready)
    return out


from study_timing import stop_on_sigterm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["scratch_cnn", "mobilenet_v2"])
    ap.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"])
    ap.add_argument("--trainers", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--images", type=int, default=8192, help="images per trainer per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per trainer")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--launcher", default="process", choices=["process", "ray"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes (256 images, 1 epoch, 1 round, trainers 1 2); with "
                         "--device cpu this exercises the code without a GPU")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    stop_on_sigterm()  # clusters started below are stopped on every exit path

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_packing: no CUDA device is available (torch.cuda.is_available() is False); "
              "this benchmark measures trainers sharing one GPU. Run it on a GPU machine, or use "
              "`--device cpu --dry-run` to exercise the code on the CPU.", file=sys.stderr)
        sys.exit(2)
    if args.dry_run:
        args.images, args.epochs, args.rounds = 256, 1, 1
        args.trainers = [k for k in args.trainers if k <= 2] or [1]
    gpu = args.device == "cuda"
    if gpu:
        name = f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
    else:
        name = f"CPU ({os.cpu_count()} cores), 1 thread per trainer"
    print(f"device: {name}; launcher {args.launcher}; {args.images} images x {args.epochs} "
          f"epochs per trainer, batch {args.batch_size}, stem {args.stem}, {args.rounds} rounds"
          f"{' (DRY RUN: numbers are not GPU measurements)' if args.dry_run else ''}", flush=True)
    if args.launcher == "ray":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING",
                 num_cpus=max(2, os.cpu_count() or 2), num_gpus=1 if gpu else 0)

    rows = []
    for bb in args.backbones:
        stem = "cifar" if bb == "scratch_cnn" else args.stem
        kw = dict(backbone=bb, stem=stem, device=args.device, images=args.images,
                  epochs=args.epochs, batch_size=args.batch_size, threads=1)
        agg = {k: [] for k in args.trainers}
        peaks = {k: [] for k in args.trainers}
        for r in range(args.rounds):
            for k in (args.trainers if r % 2 == 0 else args.trainers[::-1]):
                out = run_processes(k, kw) if args.launcher == "process" else run_ray(k, kw, gpu)
                span = max(o["end"] for o in out) - min(o["start"] for o in out)
                agg[k].append(sum(o["images"] for o in out) / span)
                peaks[k].append(max((o["peak_mib"] or 0) for o in out))
        print(f"\n{bb}/{stem}")
        print(f"{'trainers':>8}{'aggregate img/s':>17}{'speed-up':>10}{'per trainer':>13}"
              f"{'peak MiB/trainer':>18}")
        base = statistics.median(agg[args.trainers[0]])
        for k in args.trainers:
            a = statistics.median(agg[k])
            pk = f"{max(peaks[k]):>18.0f}" if gpu else f"{'n/a (CPU)':>18}"
            print(f"{k:>8}{a:>17.1f}{a / base:>10.2f}{a / k:>13.1f}{pk}", flush=True)
            rows.append({"backbone": bb, "stem": stem, "trainers": k, "aggregate_ips": a,
                         "all_rounds": agg[k], "speedup": a / base,
                         "peak_mib": max(peaks[k]) if gpu else None})
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args),
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
