"""ASHA vs FIFO on the same grid: compute spent and the best configuration found.

    STUDY_CACHE_DIR=/tmp/cache python benchmarks/asha_vs_fifo.py \\
        [--data-root ../shared/datasets/cifar10-jpg.tar.xz] [--splits 5to5] \\
        [--backbones scratch_cnn resnet18] [--lr-grid 0.01 0.03 0.1] \\
        [--max-train-per-class 300] [--val-fraction 0.2] [--target-epochs 5] \\
        [--grace-period 1] [--reduction-factor 3] [--feature-cache auto|on|off] \
        [--storage DIR] [--json OUT]

Two real studies (``study.runner.run_study``, one process, one embedded Ray) built from
``examples/quick.yaml`` with the overrides above: the same space, seed and data, searched with
``grid`` (``study.core.design.StudyDesign``'s tuning configurations: both studies run exactly
the same configurations in the same order; TPE's configurations would depend on the results and
differ), once with the FIFO scheduler (every trial runs ``target_epochs``) and once with ASHA.
Each study is then read back with ``analysis.load.load_study`` and the script prints, for each:

* compute = target FLOPs of every trial (``target_flops``, training steps, from
  ``trainables.train.step_flops``) + the FLOPs of each distinct source model once;
* the best configuration = the completed trial with the highest final validation accuracy
  (what ``study run`` reports), its validation and test accuracy;
* ASHA's compute as a fraction of FIFO's (with and without the source models, which both
  schedulers pay in full) and the accuracy gap in points (goal: within 0.5 points of FIFO's best
  using at most 1/3 of its compute);
* how many trials reached each ASHA rung, and the fraction ASHA would spend if it were
  synchronous (every rung keeps exactly 1/reduction_factor): sum over rungs of
  (epochs of the rung segment x share of trials reaching it) / target_epochs;
* where ASHA's chosen configuration ranks among FIFO's trials (same config, same seed), and
  where FIFO's best ranked at each earlier epoch;
* ASHA replayed on FIFO's learning curves (trials are seeded and deterministic, so FIFO's curve
  of a configuration is what an ASHA trial of it reports; the script checks this on the trials
  both completed): Ray's stopping rule applied with trials arriving one at a time, in the grid
  order and in ``--replays`` random orders, for several grace periods / reduction factors.
  This shows how much the single real ASHA run owes to its arrival order and settings;
* the source-sharing table of each study (``benchmarks/source_sharing.py``).

``--from-dirs FIFO_DIR ASHA_DIR`` repeats the analysis on two study directories written before,
without training.

Wall times are printed for information only (the CPU is shared); the comparison is in FLOPs.
The README's figures were measured before the frozen-feature cache existed (commit d0e65cc);
``--feature-cache off`` runs the same trainable path today.
Defaults (1 split, scratch_cnn + resnet18 with the ImageNet stem, 3 learning rates = 39 trials
per study, 240 training / 60 validation images per class) take about 15-25 minutes for both
studies on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from source_sharing import print_sharing, source_sharing  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"


def grid_configs(spec) -> list[dict]:
    """The study's tuning configurations in its order (``StudyDesign``: mode compare, each
    cell's grid, round-robin across cells; mode best, the grid cell by cell)."""
    from study.core.design import design_of

    design = design_of(spec)
    return design.tuning_configs() if design.mode == "compare" else design.best_grid()


def asha_rungs(target_epochs: int, grace: int, rf: float) -> list[int]:
    """Ray's ASHA milestones (ray.tune.schedulers.async_hyperband._Bracket), ascending."""
    n = int(math.log(target_epochs / grace) / math.log(rf) + 1)
    return sorted({int(grace * rf ** k) for k in range(n)} - {target_epochs})


def synchronous_fraction(target_epochs: int, grace: int, rf: float) -> float:
    """Compute of ideal synchronous successive halving over FIFO (target stage only)."""
    rungs = asha_rungs(target_epochs, grace, rf)
    edges = [0, *rungs, target_epochs]
    return sum((edges[i + 1] - edges[i]) * rf ** -i for i in range(len(edges) - 1)) / target_epochs


def replay_asha(curves: dict, eflops: dict, order: list, rungs: list[int], rf: float,
                target_epochs: int):
    """Ray's ASHA stopping rule (one bracket) replayed on complete learning curves, trials
    arriving one after another in ``order``: at each rung a trial stops if its validation
    accuracy is below the (1 - 1/rf) quantile of the values recorded there before it.
    Returns (target FLOPs spent, {config: final val acc} of the trials that completed)."""
    recorded = {m: [] for m in rungs}
    spent, finals = 0.0, {}
    for k in order:
        c, ran = curves[k], target_epochs
        for m in rungs:
            v, rec = c[m - 1], recorded[m]
            cut = np.nanpercentile(rec, (1 - 1 / rf) * 100) if rec else None
            rec.append(v)
            if cut is not None and v < cut:
                ran = m
                break
        spent += ran * eflops[k]
        if ran == target_epochs:
            finals[k] = c[target_epochs - 1]
    return spent, finals


def replay_table(f: dict, n: int, settings: list[tuple[int, float]], seed: int = 0) -> list[dict]:
    """ASHA replayed on FIFO's curves: for each (grace, rf), the grid order and ``n`` random
    trial orders. Same seeds and deterministic trials: FIFO's curve of a configuration is what an
    ASHA trial of it reports (the script checks this on the trials both studies completed)."""
    te = f["target_epochs"]
    curves = {k: v for k, v in f["curves"].items() if len(v) >= te}
    fifo_target = sum(te * f["epoch_flops"][k] for k in curves)
    best_val = max(v[te - 1] for v in curves.values())
    best_test = max(((v[te - 1], f["test"][k]) for k, v in curves.items()))[1]
    rng = np.random.default_rng(seed)
    keys = list(curves)
    orders = [[k for k in f["grid_order"] if k in curves]] + [
        [keys[i] for i in rng.permutation(len(keys))] for _ in range(n)]
    rows = []
    for grace, rf in settings:
        if grace >= te:
            continue
        rungs = asha_rungs(te, grace, rf)
        out = []
        for o in orders:
            spent, finals = replay_asha(curves, f["epoch_flops"], o, rungs, rf, te)
            bk = max(finals, key=finals.get)
            frac = spent / fifo_target
            total = (spent + f["source_flops"]) / (fifo_target + f["source_flops"])
            gap = 100 * (best_val - finals[bk])
            out.append((frac, total, gap, 100 * (best_test - f["test"][bk]), len(finals)))
        arr = np.array(out[1:])
        rows.append({
            "grace": grace, "rf": rf, "rungs": rungs,
            "sync_fraction": synchronous_fraction(te, grace, rf),
            "grid_order": dict(zip(("target_frac", "total_frac", "gap_val", "gap_test",
                                    "completed"), out[0])),
            "random_mean": dict(zip(("target_frac", "total_frac", "gap_val", "gap_test",
                                     "completed"), arr.mean(0).tolist())),
            "p_gap_le_0_5": float((arr[:, 2] <= 0.5).mean()),
            "p_goal": float(((arr[:, 2] <= 0.5) & (arr[:, 1] <= 1 / 3)).mean()),
            "gap_val_p90": float(np.percentile(arr[:, 2], 90)),
        })
    return rows


def print_replay(rows: list[dict], n: int, trials: int) -> None:
    print(f"\nASHA replayed on FIFO's learning curves ({trials} trials arriving one at a time; "
          f"grid order, and the mean over {n} random orders; compute = fraction of FIFO's, "
          f"total includes the source models; gap = FIFO's best val acc - ASHA's, points)")
    print(f"{'grace':>5}{'rf':>4} {'rungs':<10}{'sync':>6} |{'grid: total':>12}{'gap':>6} |"
          f"{'random: target':>15}{'total':>7}{'gap':>6}{'gap p90':>8}{'test gap':>9}"
          f"{'done':>6}{'P(gap<=.5)':>11}{'P(goal)':>8}")
    for r in rows:
        g, m = r["grid_order"], r["random_mean"]
        print(f"{r['grace']:>5}{r['rf']:>4g} {str(r['rungs']):<10}{r['sync_fraction']:>6.3f} |"
              f"{g['total_frac']:>12.3f}{g['gap_val']:>6.2f} |{m['target_frac']:>15.3f}"
              f"{m['total_frac']:>7.3f}{m['gap_val']:>6.2f}{r['gap_val_p90']:>8.2f}"
              f"{m['gap_test']:>9.2f}{m['completed']:>6.1f}{r['p_gap_le_0_5']:>11.2f}"
              f"{r['p_goal']:>8.2f}")


def feature_cache_mode(study_dir) -> str:
    fc = (yaml.safe_load((Path(study_dir) / "study.yaml").read_text()) or {}).get("feature_cache")
    return fc.get("mode", "?") if isinstance(fc, dict) else "none (code before the feature cache)"


def build_spec(args, scheduler: str, storage: Path):
    """quick.yaml with the benchmark's overrides. Lists and the backbones mapping are replaced,
    not merged (``load_spec``'s overrides merge mappings, so they could not drop a backbone)."""
    from study.core.spec import load_spec_dict

    raw = yaml.safe_load((REPO / args.spec).read_text())
    splits = [s for s in raw["splits"] if s["name"] in args.splits]
    if len(splits) != len(args.splits):
        sys.exit(f"--splits {args.splits}: {args.spec} has {[s['name'] for s in raw['splits']]}")
    backbones = {b: raw["backbones"][b] for b in args.backbones}
    over = {
        "name": f"{scheduler}",
        "data": {"root": str(args.data_root), "max_train_per_class": args.max_train_per_class,
                 "val_fraction": args.val_fraction,
                 "max_test_per_class": args.max_test_per_class},
        "splits": splits, "backbones": backbones,
        "lr": {**raw["lr"], "grid": args.lr_grid},
        "search": {"algorithm": "grid", "max_concurrent": args.max_concurrent, "repeats": 1},
        "scheduler": {"type": scheduler, "grace_period": args.grace_period,
                      "reduction_factor": args.reduction_factor},
        "storage": str(storage), "max_failures": 1,
    }
    if args.target_epochs:
        over["target_epochs"] = args.target_epochs
    if args.source_epochs:
        over["source"] = {**raw.get("source", {}), "epochs": args.source_epochs}
    if args.feature_cache:
        over["feature_cache"] = {"mode": args.feature_cache}
    over["data"] = {**raw.get("data", {}), **over["data"]}
    over["search"] = {**raw.get("search", {}), **over["search"]}
    over["scheduler"] = {**raw.get("scheduler", {}), **over["scheduler"]}
    return load_spec_dict({**raw, **over}, source=str(REPO / args.spec))


def summarise(sdir: Path, wall: float) -> dict:
    from analysis.load import load_study
    from study.core import metrics as M

    st = load_study(sdir)
    t = st.trials
    target = float(t[M.TARGET_FLOPS].fillna(0).sum())
    source = sum(float(i.get("flops", 0) or 0) for i in st.sources.values())
    done = t[t["status"] == "completed"]
    best = done.loc[done[M.VAL_ACC].idxmax()] if len(done) else None
    epochs = t["epochs"].fillna(0).astype(int)
    cfg_key = [M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR]
    from study.core.spec import load_spec_dict

    grid = [tuple(str(p[k]) for k in cfg_key) for p in grid_configs(load_spec_dict(st.spec))]
    curves, eflops, order, test = {}, {}, {}, {}
    for _, r in t.iterrows():
        ep = st.epochs[st.epochs["trial_id"] == r["trial_id"]].sort_values(M.EPOCH)
        k = tuple(str(r[c]) for c in cfg_key)
        curves[k] = [float(v) for v in ep[M.VAL_ACC]]
        eflops[k] = float(r["epoch_flops"])
        order[k] = grid.index(k) if k in grid else len(grid)
        test[k] = float(r[M.TEST_ACC])
    return {
        "curves": curves, "epoch_flops": eflops, "grid_order": sorted(order, key=order.get),
        "test": test,
        "dir": str(sdir), "wall_s": wall, "trials": int(len(t)),
        "completed": int(len(done)), "stopped": int((t["status"] == "stopped").sum()),
        "errored": int((t["status"] == "errored").sum()),
        "epochs_run": int(epochs.sum()),
        "reached": {int(e): int((epochs >= e).sum()) for e in range(1, st.target_epochs + 1)},
        "target_flops": target, "source_flops": source, "total_flops": target + source,
        "best": None if best is None else {
            **{k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in cfg_key},
            "trial_id": best["trial_id"], "val_acc": float(best[M.VAL_ACC]),
            "test_acc": float(best[M.TEST_ACC])},
        "best_val_any_epoch": float(t["best_val_acc"].max()),
        "final": {tuple(str(r[k]) for k in cfg_key): float(r[M.VAL_ACC])
                  for _, r in done.iterrows()},
        "target_epochs": st.target_epochs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="examples/quick.yaml")
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--splits", nargs="+", default=["5to5"])
    ap.add_argument("--backbones", nargs="+", default=["scratch_cnn", "resnet18"])
    ap.add_argument("--lr-grid", nargs="+", type=float, default=[0.01, 0.03, 0.1])
    ap.add_argument("--max-train-per-class", type=int, default=300)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--max-test-per-class", type=int, default=200)
    ap.add_argument("--target-epochs", type=int, default=None, help="default: the spec's")
    ap.add_argument("--source-epochs", type=int, default=None, help="default: the spec's")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=3)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--feature-cache", choices=["auto", "on", "off"],
                    help="the spec's feature_cache mode for both studies (default: the spec's)")
    ap.add_argument("--order", nargs=2, default=["fifo", "asha"], choices=["fifo", "asha"])
    ap.add_argument("--storage", help="where the two studies go (default: a new temp dir, kept)")
    ap.add_argument("--replays", type=int, default=1000,
                    help="random trial orders for the replay of ASHA on FIFO's curves")
    ap.add_argument("--from-dirs", nargs=2, metavar=("FIFO_DIR", "ASHA_DIR"),
                    help="do not run: analyse two existing study directories of this script")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()

    res, sharing = {}, {}
    if args.from_dirs:
        for sched, d in zip(("fifo", "asha"), args.from_dirs):
            wall = json.loads((Path(d) / "summary.json").read_text())["wall_s"]
            res[sched] = summarise(Path(d), wall)
            sharing[sched] = source_sharing(d)
        sp = yaml.safe_load((Path(args.from_dirs[1]) / "study.yaml").read_text())
        args.splits = [x["name"] for x in sp["splits"]]
        args.backbones = list(sp["backbones"])
        args.lr_grid = sp["lr"]["grid"]
        args.max_train_per_class = sp["data"]["max_train_per_class"]
        args.val_fraction = sp["data"]["val_fraction"]
        args.grace_period = sp["scheduler"]["grace_period"]
        args.reduction_factor = sp["scheduler"]["reduction_factor"]
    else:
        from study.runner import run_study

        storage = Path(args.storage or tempfile.mkdtemp(prefix="tl-asha-vs-fifo-"))
        for sched in args.order:
            spec = build_spec(args, sched, storage)
            print(f"=== {sched}: {len(grid_configs(spec))} tuning trials, target_epochs "
                  f"{spec.target_epochs}, {storage / spec.name}", flush=True)
            t0 = time.time()
            summary = run_study(spec)
            res[sched] = summarise(Path(summary["results"]), time.time() - t0)
            sharing[sched] = source_sharing(summary["results"])
    f, a = res["fifo"], res["asha"]
    te = f["target_epochs"]
    rungs = asha_rungs(te, args.grace_period, args.reduction_factor)

    print(f"\nASHA vs FIFO: {f['trials']} configurations (grid), splits {args.splits}, "
          f"backbones {args.backbones}, lr {args.lr_grid}, {args.max_train_per_class} images/class "
          f"(val {args.val_fraction}), target_epochs {te}, ASHA grace {args.grace_period} "
          f"rf {args.reduction_factor:g} (rungs at epochs {rungs}), feature cache "
          f"{feature_cache_mode(a['dir'])}")
    print(f"{'':<28}{'FIFO':>14}{'ASHA':>14}{'ASHA/FIFO':>12}")

    def row(name, x, y, fmt="{:>14.1f}", ratio=True):
        r = f"{y / x:>12.3f}" if ratio and x else f"{'':>12}"
        print(f"{name:<28}{fmt.format(x)}{fmt.format(y)}{r}")

    row("target compute (TFLOP)", f["target_flops"] / 1e12, a["target_flops"] / 1e12, "{:>14.2f}")
    row("source compute (TFLOP)", f["source_flops"] / 1e12, a["source_flops"] / 1e12, "{:>14.2f}")
    row("total compute (TFLOP)", f["total_flops"] / 1e12, a["total_flops"] / 1e12, "{:>14.2f}")
    row("target epochs run", f["epochs_run"], a["epochs_run"], "{:>14d}")
    row("wall time (s, noisy)", f["wall_s"], a["wall_s"], "{:>14.0f}")
    row("trials completed", f["completed"], a["completed"], "{:>14d}", ratio=False)
    row("trials stopped early", f["stopped"], a["stopped"], "{:>14d}", ratio=False)
    row("trials errored", f["errored"], a["errored"], "{:>14d}", ratio=False)
    row("best val acc (%)", 100 * f["best"]["val_acc"], 100 * a["best"]["val_acc"], "{:>14.2f}",
        ratio=False)
    row("  its test acc (%)", 100 * f["best"]["test_acc"], 100 * a["best"]["test_acc"],
        "{:>14.2f}", ratio=False)
    row("best val acc, any epoch (%)", 100 * f["best_val_any_epoch"],
        100 * a["best_val_any_epoch"], "{:>14.2f}", ratio=False)
    for k in ("fifo", "asha"):
        b = res[k]["best"]
        print(f"  best {k}: {b['split']} {b['backbone']} {b['init']} d{b['frozen_depth']} "
              f"lr {b['lr']:g} ({b['trial_id']})")
    sync = synchronous_fraction(te, args.grace_period, args.reduction_factor)
    print("trials reaching epoch e (FIFO / ASHA): "
          + ", ".join(f"{e}: {f['reached'][e]}/{a['reached'][e]}" for e in range(1, te + 1)))
    print(f"ASHA target-compute fraction: measured {a['target_flops'] / f['target_flops']:.3f}, "
          f"ideal synchronous successive halving {sync:.3f}")
    gap_val = 100 * (f["best"]["val_acc"] - a["best"]["val_acc"])
    gap_test = 100 * (f["best"]["test_acc"] - a["best"]["test_acc"])
    ratio = a["total_flops"] / f["total_flops"]
    # ASHA's pick among FIFO's finished trials (same config, same seed)
    ranked = sorted(f["final"].items(), key=lambda kv: -kv[1])
    bkey = tuple(str(a["best"][k]) for k in ("split", "backbone", "init", "frozen_depth", "lr"))
    rank = next((i + 1 for i, (k, _) in enumerate(ranked) if k == bkey), None)
    same = [k for k in a["final"] if k in f["final"]]
    identical = sum(abs(a["final"][k] - f["final"][k]) < 1e-9 for k in same)
    print(f"ASHA's best configuration is FIFO's #{rank} of {len(ranked)} by final val acc; "
          f"{identical}/{len(same)} configurations completed by both reached the identical final "
          f"val acc")
    fb = tuple(str(f["best"][k]) for k in ("split", "backbone", "init", "frozen_depth", "lr"))
    at = []
    for e in range(1, te):
        vals = sorted((c[e - 1] for c in f["curves"].values() if len(c) >= e), reverse=True)
        at.append(f"epoch {e}: #{vals.index(f['curves'][fb][e - 1]) + 1}")
    print(f"FIFO's best configuration ranked (by val acc, ties share the best rank) "
          f"{', '.join(at)} of {len(f['curves'])}")
    ok = gap_val <= 0.5 and ratio <= 1 / 3
    print(f"RESULT: ASHA used {ratio:.3f} of FIFO's total compute "
          f"({a['target_flops'] / f['target_flops']:.3f} of its target compute); best val acc gap "
          f"{gap_val:+.2f} points (test {gap_test:+.2f}); goal (<= 0.5 points, <= 1/3 compute): "
          f"{'met' if ok else 'NOT met'}")
    settings = sorted({(args.grace_period, args.reduction_factor), (1, 2), (1, 3), (1, 4),
                       (2, 2), (2, 3)})
    replay = replay_table(f, args.replays, settings)
    print_replay(replay, args.replays, len(f["curves"]))
    for k in ("fifo", "asha"):
        print_sharing(sharing[k], f"{k} study ({res[k]['dir']})")
    if args.json:
        for r in res.values():
            for key in ("final", "curves", "epoch_flops", "test"):
                r[key] = {"|".join(k): v for k, v in r[key].items()}
            r["grid_order"] = ["|".join(k) for k in r["grid_order"]]
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "fifo": f, "asha": a, "rungs": rungs, "sync_fraction": sync,
             "ratio_total": ratio, "gap_val_points": gap_val, "gap_test_points": gap_test,
             "asha_best_rank_in_fifo": rank, "replay": replay, "source_sharing": sharing},
            indent=1, default=str))


if __name__ == "__main__":
    main()
