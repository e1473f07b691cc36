"""Frozen-feature cache: seconds per epoch and accuracy, cached vs uncached, side by side in one
process, on real CIFAR-10 (5 -> 5 split: airplane..deer -> dog..truck).

    STUDY_CACHE_DIR=/tmp/cache python benchmarks/feature_cache.py \\
        --data-root ../shared/datasets/cifar10-jpg.tar.xz \\
        [--backbones scratch_cnn resnet18 mobilenet_v2] [--stem cifar] [--epochs 6] [--views 2] \\
        [--per-class scratch_cnn=1000 resnet18=160 mobilenet_v2=160] \\
        [--source-epochs scratch_cnn=8 resnet18=1 mobilenet_v2=1] \\
        [--depths scratch_cnn=3,4 resnet18=4,5 mobilenet_v2=6,7] [--threads 2]

For each backbone, the source model is trained on the source classes exactly as a study trains
it (``trainable.build_target_model``: same source key, same code; kept in ``--sources-dir`` so a
second run reuses it; ``--source-epochs NAME=0`` uses a randomly initialised prefix instead).
Then, for each frozen depth (by default an intermediate deep depth and the linear probe), two
identical target models (same seed, learning rate, batch size, epochs) are trained:

* **uncached**: the trainable's usual path (pad-4 random crop + flip every epoch, the full model);
* **cached**: the trainable's cached path (``features.plan/prepare``, mode ``on``, ``--views``
  fixed views: identity, mirror, then seeded crop+flip), the suffix trained on stored features,
  each (image, view) computed the first time it is drawn.

Epochs alternate between the two (AB BA AB ...; each side keeps its own RNG state, so each
trains exactly as if alone) because the CPU is shared and noisy. Every epoch is training +
validation (what a trial pays per epoch). Reported per row:

* ``unc s/ep``: uncached, median seconds per epoch;
* ``cached s/ep``: cached, median seconds per epoch *excluding* the prefix forwards that fill the
  cache (the steady state once every view is cached); ``fill s``: those forwards' seconds,
  summed over the run (train views + validation; the one-off "build", spread over the epochs
  in which views are first drawn: about one uncached pass in epoch 1, less and less after);
* ``speed-up``: unc s/ep / cached s/ep (excluding the fill); ``w/ fill``: the whole run's
  seconds, uncached / cached (including it); ``FLOPs``: the predicted steady-state ratio
  (``CachePlan.epoch_speedup``); ``auto``: what ``feature_cache: auto`` decides for this depth;
* ``src val``: the source model's validation accuracy on the source classes (a source trained
  too briefly has unconverged BatchNorm statistics, and its frozen features are useless);
* validation and test accuracy after ``--epochs`` epochs, uncached / cached (test through the
  full model, as in a trial).

Measured on the project's shared 2-core CPU (defaults, 6 epochs, 2 views; resnet18/mobilenet_v2
also with ``--source-epochs resnet18=5 mobilenet_v2=5``): a linear probe's epoch is 33x
(scratch_cnn), 106-144x (mobilenet_v2) and 123-241x (resnet18) faster once its views are cached,
2.5-4.4x over the whole 6-epoch run including the fill; scratch_cnn depth 3 (only the fc stage
trains) 25x / 2.3x. Accuracy with a trained source (scratch_cnn, source val 0.667), uncached vs
cached test accuracy: 0.658 vs 0.665 (probe), 0.697 vs 0.700 (depth 3). The 1-5 epoch
resnet18/mobilenet_v2 sources are too weak for an accuracy comparison (source val 0.2-0.3).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from study.core.spec import (FeatureCacheSpec, load_spec_dict, resolve_classes,  # noqa: E402
                        resolve_stem)
from trainables import features  # noqa: E402
from study.core import metrics as M  # noqa: E402
from trainables.backbones import REGISTRY, build, freeze  # noqa: E402
from trainables.data import load_dataset  # noqa: E402
from trainables.train import (describe_device, evaluate, make_optimizer, make_schedule, pick_device,  # noqa: E402
                              prepare_model, train_one_epoch)
from trainables.trainable import _device_split, build_study_data, build_target_model  # noqa: E402

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET = ["dog", "frog", "horse", "ship", "truck"]
PER_CLASS = {"scratch_cnn": 1000, "resnet18": 160, "mobilenet_v2": 160}
SOURCE_EPOCHS = {"scratch_cnn": 8, "resnet18": 1, "mobilenet_v2": 1}
DEPTHS = {"scratch_cnn": (3, 4), "resnet18": (4, 5), "mobilenet_v2": (6, 7)}


def per_backbone(pairs: list[str] | None, default: dict, parse=int) -> dict:
    out = dict(default)
    for p in pairs or []:
        name, _, v = p.partition("=")
        if name not in REGISTRY or not v:
            raise SystemExit(f"expected NAME=VALUE with NAME in {', '.join(REGISTRY)}, got {p!r}")
        out[name] = parse(v)
    return out


def make_spec(args, backbone: str, per_class: int, source_epochs: int):
    return load_spec_dict({
        "name": "feature-cache-bench",
        "data": {"root": args.data_root, "val_fraction": 0.1, "max_train_per_class": per_class,
                 "max_test_per_class": args.test_per_class},
        "splits": [{"name": "5to5", "source": SOURCE, "target": TARGET}],
        "backbones": {backbone: {"stem": args.stem if args.stem in REGISTRY[backbone].stems
                                 else "auto"}},
        "inits": ["source"],
        "lr": {"low": args.lr, "high": args.lr},
        "batch_size": args.batch_size,
        "target_epochs": args.epochs,
        "source": {"epochs": max(1, source_epochs), "lr": 0.05},
        "search": {"seed": args.seed},
        "feature_cache": {"mode": "on", "views": args.views, "max_gib": args.max_gib},
    })


def target_model(spec, data, backbone: str, depth: int, source_epochs: int, args, device):
    cfg = {M.SPLIT: "5to5", M.BACKBONE: backbone, M.INIT: "source", M.FROZEN_DEPTH: depth,
           M.LR: args.lr, M.SEED: args.seed}
    if source_epochs > 0:
        model, info = build_target_model(spec, data, cfg, Path(args.sources_dir), "bench",
                                         log=lambda m: print(m, flush=True))
    else:  # a randomly initialised frozen prefix (speed only)
        torch.manual_seed(args.seed)
        model = build(backbone, len(TARGET), resolve_stem(spec, backbone, "source"))
        torch.manual_seed(args.seed + 1)
        model.replace_head(len(TARGET))
        freeze(model, depth)
        info = {"val_acc": float("nan"), "test_acc": float("nan")}
    return prepare_model(model, device), info


def fill_s(side: dict) -> float:
    """Seconds the cached side has spent computing features (0 for the uncached side)."""
    t, v = side["train"], side["val"]
    return t.compute_s + v.compute_s if isinstance(t, features.FeatureData) else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                               "datasets" / "cifar10-jpg.tar.xz"))
    ap.add_argument("--backbones", nargs="+", default=list(REGISTRY))
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--per-class", nargs="*", help="NAME=N train+val images per class")
    ap.add_argument("--source-epochs", nargs="*", help="NAME=N (0: random prefix, no source)")
    ap.add_argument("--depths", nargs="*", help="NAME=D1,D2 frozen depths")
    ap.add_argument("--test-per-class", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--max-gib", type=float, default=4.0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sources-dir", default="/tmp/tl-study-feature-cache-bench/sources")
    args = ap.parse_args()
    per_class = per_backbone(args.per_class, PER_CLASS)
    source_epochs = per_backbone(args.source_epochs, SOURCE_EPOCHS)
    depths = per_backbone(args.depths, DEPTHS, lambda v: tuple(int(x) for x in v.split(",")))

    torch.set_num_threads(args.threads)
    device = pick_device()
    name = describe_device(device, args.threads)
    print(f"device: {name}; torch {torch.__version__}; CIFAR-10 5->5; {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {args.lr}, {args.views} cached views; uncached: crop+flip per epoch",
          flush=True)
    ds = load_dataset(args.data_root, progress=lambda m: print(m, flush=True))

    rows = []
    for backbone in args.backbones:
        spec = make_spec(args, backbone, per_class[backbone], source_epochs[backbone])
        data = build_study_data(ds, spec, resolve_classes(spec, ds.classes))
        _, tgt = data.splits["5to5"]
        for depth in depths[backbone]:
            sides = {}
            for side in ("uncached", "cached"):
                model, info = target_model(spec, data, backbone, depth, source_epochs[backbone],
                                           args, device)
                train, val = (_device_split(data, w, tgt, device) for w in ("train", "val"))
                steps = len(train) // args.batch_size or 1
                opt = make_optimizer(model, spec.optimizer, args.lr)
                sched = make_schedule(opt, spec.optimizer, steps, args.epochs)
                gen = torch.Generator(device=device)
                gen.manual_seed(args.seed + 2)
                s = dict(model=model, net=model, train=train, val=val, opt=opt, sched=sched,
                         gen=gen, rng=torch.get_rng_state(), times=[], fills=[], info=info)
                if side == "cached":
                    sizes = dict(n_train=len(train), n_val=len(val),
                                 images_per_epoch=steps * args.batch_size, device=device)
                    shape = tuple(train.x.shape[1:])
                    s["plan"] = features.plan(FeatureCacheSpec("on", args.views, args.max_gib),
                                              model, shape, **sizes)
                    s["auto"] = features.plan(FeatureCacheSpec("auto", args.views, args.max_gib),
                                              model, shape, **sizes).use
                    s["net"], s["train"], s["val"] = features.prepare(model, train, val, s["plan"],
                                                                      seed=args.seed + 3)
                sides[side] = s
            n_train, n_val = len(sides["uncached"]["train"]), len(sides["uncached"]["val"])
            print(f"{backbone} depth {depth}: {n_train} train / {n_val} val images, source val acc "
                  f"{sides['cached']['info']['val_acc']:.3f}; cache {sides['cached']['plan'].reason}",
                  flush=True)
            for epoch in range(args.epochs):
                for name in (("uncached", "cached") if epoch % 2 == 0 else ("cached", "uncached")):
                    s = sides[name]
                    torch.set_rng_state(s["rng"])  # each side's own dropout stream
                    fill0 = fill_s(s)
                    t0 = time.perf_counter()
                    train_one_epoch(s["net"], s["train"], s["opt"], s["sched"],
                                    batch_size=args.batch_size, generator=s["gen"])
                    s["val_acc"] = evaluate(s["net"], s["val"])[0]
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    s["times"].append(time.perf_counter() - t0)
                    s["fills"].append(fill_s(s) - fill0)
                    s["rng"] = torch.get_rng_state()
                u, c = sides["uncached"], sides["cached"]
                print(f"  epoch {epoch + 1}: uncached {u['times'][-1]:.2f}s val {u['val_acc']:.3f} | "
                      f"cached {c['times'][-1]:.3f}s (filling {c['fills'][-1]:.3f}s, "
                      f"{c['train'].computed} train pairs) val {c['val_acc']:.3f}", flush=True)
            test = _device_split(data, "test", tgt, device)
            for s in sides.values():
                s["test_acc"] = evaluate(s["model"], test)[0]
            u, c = sides["uncached"], sides["cached"]
            tu = statistics.median(u["times"])
            tc = statistics.median(t - f for t, f in zip(c["times"], c["fills"]))
            stem = resolve_stem(spec, backbone, "source")
            rows.append((f"{backbone}/{stem}", f"{depth}/{REGISTRY[backbone].num_stages}",
                         "yes" if c["auto"] else "no", n_train, tu, tc, sum(c["fills"]), tu / tc,
                         sum(u["times"]) / sum(c["times"]), c["plan"].epoch_speedup,
                         c["info"]["val_acc"], u["val_acc"], c["val_acc"], u["test_acc"],
                         c["test_acc"], len(test)))
            del sides

    print()
    print(f"{'backbone':<20}{'depth':>6}{'auto':>5}{'train':>6}{'unc s/ep':>9}{'cached s/ep':>12}"
          f"{'fill s':>8}{'speed-up':>9}{'w/ fill':>8}{'FLOPs':>8}{'src val':>8}{'val unc/cached':>16}"
          f"{'test unc/cached':>17}")
    for (bb, d, auto, n, tu, tc, fill, x, xw, xf, sv, vu, vc, su, sc, nt) in rows:
        print(f"{bb:<20}{d:>6}{auto:>5}{n:>6}{tu:>9.2f}{tc:>12.3f}{fill:>8.1f}{x:>8.1f}x{xw:>7.1f}x"
              f"{xf:>7.0f}x{sv:>8.3f}{vu:>9.3f}/{vc:.3f}{su:>10.3f}/{sc:.3f}")
    print(f"(test: {rows[0][-1] if rows else 0} images; {args.epochs} epochs per side; speed-up "
          f"excludes the cache fill, w/ fill is the whole run's time ratio)")


if __name__ == "__main__":
    main()
