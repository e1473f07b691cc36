"""Ray Tune overhead per trial of a real study, the cost of a report with and without a
checkpoint, and (``--all``) checkpoint sizes and reference costs.

    python benchmarks/tune_overhead.py [--data-root ../shared/datasets/cifar10-jpg.tar.xz] \\
        [--lr-grid 0.02 0.05] [--max-train-per-class 300] [--target-epochs 3] \\
        [--source-epochs 2] [--max-concurrent 1] [--report-rounds 8] \\
        [--feature-cache auto|on|off] [--skip-study] [--all] [--json OUT]

Part 1, study overhead. A real study (``study.runner.run_study``: the source model submitted up
front as its own Ray task, Tune started alongside, a trial needing the model handed out once it
is trained; trials in reused workers, Tune ``reuse_actors=True``) in a Ray instance limited to
``--max-concurrent`` CPUs (so nothing runs beside the slots the accounting counts). The study:
12 short scratch_cnn trials in compare mode on a CIFAR-10 subset (split 5to5 of
``examples/quick.yaml``; cells init source at frozen depths 0-4 + init scratch = 6, x 2 learning
rates of ``lr.grid`` (``trials_per_cell`` 2), ``confirm: {seeds: 0}``, FIFO so every trial runs
to the end). Work is what the trials and the source task measure themselves: every epoch's
``epoch_s`` (``study.core.metrics.EPOCH_S``: training + validation), every completed trial's
``test_s`` (the test split's evaluation) and the source model's ``train_s``
(``sources/*/info.json``). Then

    overhead per trial = (max_concurrent x study wall - work) / trials

    study wall = summary.json's wall_s: source models submitted -> Tune returned

all read from what the study writes (``trials.jsonl``, ``summary.json``, ``sources/``) and a
public Tune callback (``study_timing.py``; nothing in the study is wrapped). With
``--max-concurrent 1`` (the default) trials run one after the other, so this is exactly the time
the study spends on anything but training and evaluating; with C > 1 it is the idle slot-seconds
per trial. It is also given as % of the median trial's work, and as the trial length at which it
would be 2%. It splits exactly (``study_timing.py``) into the source task's time outside its
training (worker process, imports, data fetch, build, save; its split from the next launch gap
is estimated), launch gaps (Tune's experiment start-up before the first trial, then the gap
between a slot freeing and the next trial's actor being up or reused), setup (start -> first
result: the trainable before epoch 1 + epoch 1's checkpoint and report), per later report
(checkpoint + report), stop (last result -> trial end), and the tail after the last trial. The
last line printed is ``overhead_per_trial_s=<value>``; the line before it is the same without
the study's one-off costs (source task outside training, Tune's start-up to the first trial,
tail): what each further trial adds.

Before/after. The script measures the code it is run from. To compare with an older version
(e.g. the removed ``warm=False`` path: a fresh Ray worker per trial, the source model trained
inside the first trial; last present in commit ec2abbf, whose script runs it with
``--paths old``), run that commit's own copy of the script on the same machine, with the same
flags, and compare the ``name=value`` lines (``--json`` for the rest):

    git worktree add /tmp/tl-old ec2abbf
    (cd /tmp/tl-old && PYTHONPATH=/tmp/tl-old python benchmarks/tune_overhead.py --paths old)
    python benchmarks/tune_overhead.py
    git worktree remove /tmp/tl-old

(``PYTHONPATH`` makes that checkout's packages win over the editable install of this one.) The
headline ``overhead_per_trial_s`` is defined alike in both (held slot-seconds - work, per trial);
the component split of older scripts used worker-side ``time_this_iter_s`` and is close to, not
the same as, this one. Run them one after the other, not at once (they share the CPU).

Part 2, report cost. A tiny function trainable (same Ray, same storage kind) alternates, round by
round, ``tune.report`` without a checkpoint and ``torch.save`` + ``tune.report`` with a
checkpoint of the trainable state of small / large models (the dict the real trainable saves),
``CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)`` as in the runner, and times each inside the
trainable.

Part 3 (``--all``), checkpoint sizes. For every backbone (CIFAR stem, 5 classes) and frozen depth: the bytes
of the checkpoint the trainable writes (``_trainable_state``: non-frozen stages + head, the
optimizer state of trainable parameters, schedule, RNG states) vs a full-model checkpoint
(the whole ``state_dict``, frozen stages included, + the same optimizer state), serialised with
``torch.save``. (Frozen parameters never get momentum buffers: the optimizer holds only
trainable parameters.)

Part 4 (``--all``), reference costs, each in a fresh process (what the first trial's actor and
the source task's worker pay once per study, and a fresh worker per trial would pay every
trial): an empty Ray actor's start, an actor start that imports the trainable, the imports
alone, and ``step_flops`` (first call in a process: torch's FlopCounterMode imports lazily;
second call): what the one-off launch and setup costs above are made of.

Defaults (parts 1 + 2) take a few minutes on a 2-core CPU; ``--all`` adds 1-2 minutes. A quick
check (6 trials, about 1 minute): ``--lr-grid 0.05 --max-train-per-class 100 --target-epochs 2
--source-epochs 1 --report-rounds 3``.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
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
sys.path.insert(0, str(REPO / "benchmarks"))  # study_timing (benchmarks/ is not a package)

import torch  # noqa: E402
import yaml  # noqa: E402

from study_timing import (stop_on_sigterm, MED, print_common_rows, print_components, row_printer,  # noqa: E402
                          timed_study)

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dicts(backbone: str, depth: int, stem: str = "cifar", classes: int = 5):
    """(what the trainable saves, a full-model checkpoint) after one optimizer step."""
    from study.core.spec import OptimizerSpec
    from trainables.backbones import build, freeze
    from trainables.train import make_optimizer, make_schedule
    from trainables.trainable import _trainable_state

    torch.manual_seed(0)
    model = build(backbone, classes, stem)
    freeze(model, depth)
    spec = OptimizerSpec()
    opt = make_optimizer(model, spec, 0.01)
    sched = make_schedule(opt, spec, 10, 10)
    x = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    opt.step()  # creates the momentum buffers
    sched.step()
    gen = torch.Generator()
    extra = {"schedule": sched.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "epoch": 1, "target_flops": 0.0, "wall_s": 0.0}
    ours = {"model": _trainable_state(model), "optimizer": opt.state_dict(), **extra}
    # a naive trainable: the whole model's state_dict (frozen stages included), same optimizer
    full = {"model": model.state_dict(), "optimizer": opt.state_dict(), **extra}
    return ours, full


def nbytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def checkpoint_sizes(stem: str) -> list[dict]:
    from trainables.backbones import REGISTRY

    rows = []
    for bb, info in REGISTRY.items():
        st = stem if stem in info.stems else info.stems[0]
        for d in range(info.num_stages + 1):
            ours, full = checkpoint_dicts(bb, d, st)
            rows.append({"backbone": bb, "stem": st, "depth": d, "trainable_bytes": nbytes(ours),
                         "full_bytes": nbytes(full)})
    return rows


# ----------------------------------------------------------------------------- part 1

def study_spec(args, storage: Path, name: str):
    """12 trials in compare mode: split 5to5 of examples/quick.yaml, scratch_cnn, init source at
    frozen depths 0-4 + init scratch (6 cells) x the lr grid (2 values: trials_per_cell 2), no
    confirmation seeds, FIFO (every trial runs to target_epochs)."""
    from study.core.spec import load_spec_dict

    raw = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    raw.update({
        "name": name,
        "data": {**raw["data"], "root": str(args.data_root),
                 "max_train_per_class": args.max_train_per_class, "max_test_per_class": 100},
        "splits": [s for s in raw["splits"] if s["name"] == "5to5"],
        "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]}},
        "inits": ["source", "scratch"],
        "lr": {**raw["lr"], "grid": args.lr_grid},
        "target_epochs": args.target_epochs,
        "source": {**raw["source"], "epochs": args.source_epochs},
        "search": {**raw["search"], "mode": "compare", "algorithm": "grid",
                   "trials_per_cell": len(args.lr_grid), "max_concurrent": args.max_concurrent},
        "confirm": {"seeds": 0},
        "scheduler": {"type": "fifo"},
        "storage": str(storage), "max_failures": 0,
    })
    if args.feature_cache:
        raw["feature_cache"] = {"mode": args.feature_cache}
    return load_spec_dict(raw)


def study_overhead(args, storage: Path) -> dict:
    """One run of the study, accounted per slot (study_timing.account); slots = max_concurrent."""
    spec = study_spec(args, storage, "overhead")
    a = timed_study(spec, args.max_concurrent)
    n = a["trials"]
    a["overhead_per_trial_s"] = a["overhead_s"] / n
    c = a["components"]
    first_launch = min(a["per_trial"], key=lambda t: t["start"])["launch_s"]
    a["one_off_s"] = c["source_outside"] + first_launch + c["tail"]
    a["marginal_overhead_per_trial_s"] = (a["overhead_s"] - a["one_off_s"]) / n
    a["median_trial_work_s"] = MED(t["work_s"] for t in a["per_trial"])
    a["overhead_pct"] = 100 * a["overhead_per_trial_s"] / a["median_trial_work_s"]
    a["trial_s_for_2pct"] = a["overhead_per_trial_s"] / 0.02
    a["feature_cache"] = spec.feature_cache.mode
    return a


def print_study(args, run: dict) -> None:
    print(f"\n1. study overhead ({run['code_version']}): {run['trials']} trials (compare mode, "
          f"5to5, scratch_cnn: init source d0-4 + scratch = 6 cells x {len(args.lr_grid)} lrs; "
          f"{args.max_train_per_class} img/class, {args.target_epochs} target + "
          f"{args.source_epochs} source epochs, FIFO, max_concurrent {args.max_concurrent}, "
          f"feature cache {run['feature_cache']})")
    runs = {"this run": run}
    row = row_printer(runs)
    row("trials (completed)", lambda r: r["completed"], "{:>12d}")
    print_common_rows(row)
    row("run_study incl. data + Ray (s)", lambda r: r["run_study_s"])
    row("median trial work (s)", lambda r: r["median_trial_work_s"])
    row("overhead / median trial work (%)", lambda r: r["overhead_pct"])
    row("trial length for 2% (s)", lambda r: r["trial_s_for_2pct"], "{:>12.0f}")
    print_components(runs)
    row("one-off: src outside+1st launch+tail", lambda r: r["one_off_s"])
    row("overhead per further trial (s)", lambda r: r["marginal_overhead_per_trial_s"], "{:>12.2f}")
    pt = run["per_trial"]
    later = [t["per_epoch_s"] / (t["epochs"] - 1) for t in pt if t["epochs"] > 1]
    print(f"   per trial, median s: launch {MED(t['launch_s'] for t in pt):.2f} / setup "
          f"{MED(t['setup_s'] for t in pt):.2f} / per later report "
          f"{MED(later) if later else float('nan'):.3f} / stop {MED(t['stop_s'] for t in pt):.3f}")
    print(f"   (Tune's experiment start -> first trial start: "
          f"{run['experiment_start_to_first_trial_s']:.2f} s)")

# ----------------------------------------------------------------------------- part 2

def report_probe(config):
    """A tiny function trainable: alternate report variants, time them, write the timings."""
    import logging

    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # as the real trainable

    states = {name: torch.load(path, weights_only=False) for name, path in config["states"].items()}
    variants = ["no checkpoint", *states]
    times = {v: {"save_s": [], "report_s": []} for v in variants}
    it = 0
    for r in range(config["rounds"]):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            it += 1
            if v == "no checkpoint":
                t = time.perf_counter()
                tune.report({"it": it})
                times[v]["save_s"].append(0.0)
                times[v]["report_s"].append(time.perf_counter() - t)
                continue
            with tempfile.TemporaryDirectory() as cd:
                t = time.perf_counter()
                torch.save(states[v], Path(cd) / "state.pt")
                t1 = time.perf_counter()
                tune.report({"it": it}, checkpoint=tune.Checkpoint.from_directory(cd))
                t2 = time.perf_counter()
            times[v]["save_s"].append(t1 - t)
            times[v]["report_s"].append(t2 - t1)
    Path(config["out"]).write_text(json.dumps(times))


def report_cost(args, storage: Path) -> dict:
    from ray import tune

    from study.runner import CHECKPOINTS_KEPT

    picks = {"scratch_cnn d3": ("scratch_cnn", 3), "mobilenet_v2 d0": ("mobilenet_v2", 0),
             "resnet18 d0": ("resnet18", 0)}
    states, nb = {}, {}
    for name, (bb, d) in picks.items():
        ours, _ = checkpoint_dicts(bb, d)
        p = storage / f"state-{bb}-{d}.pt"
        torch.save(ours, p)
        states[f"ckpt {name}"] = str(p)
        nb[f"ckpt {name}"] = p.stat().st_size
    out = storage / "report_times.json"
    tuner = tune.Tuner(
        report_probe,
        param_space={"states": states, "rounds": args.report_rounds, "out": str(out)},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="report_probe", storage_path=str(storage), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)),
    )
    tuner.fit()
    times = json.loads(out.read_text())
    rows = {}
    for v, t in times.items():
        rows[v] = {"bytes": nb.get(v, 0), "save_ms": 1000 * MED(t["save_s"]),
                   "report_ms": 1000 * MED(t["report_s"]),
                   "total_ms": 1000 * MED(a + b for a, b in zip(t["save_s"], t["report_s"]))}
    return rows


# ----------------------------------------------------------------------------- part 4

_PROBE = """
import json, time
T = time.perf_counter
t0 = T()
import torch, trainables.trainable
t1 = T()
import ray.tune
t2 = T()
from trainables.backbones import build, freeze
from trainables.train import step_flops
m = build("scratch_cnn", 5); freeze(m, 2)
t3 = T(); step_flops(m, (3, 32, 32), 5, torch.device("cpu"))
t4 = T(); step_flops(m, (3, 32, 32), 5, torch.device("cpu"))
t5 = T()
print(json.dumps({"import": t1 - t0, "ray": t2 - t1, "flops1": t4 - t3, "flops2": t5 - t4}))
"""


def reference_costs(repeats: int = 3) -> dict:
    """What a trial's launch and setup are made of, measured one at a time (fresh processes)."""
    import subprocess

    import ray

    @ray.remote(num_cpus=1)
    class Bare:
        def ping(self):
            return 1

    @ray.remote(num_cpus=1)
    class WithTorch:
        def __init__(self):
            importlib.import_module("trainables.trainable")  # what a trial's actor imports

        def ping(self):
            return 1

    def actor_start(cls):
        t = time.perf_counter()
        a = cls.remote()
        ray.get(a.ping.remote())
        dt = time.perf_counter() - t
        ray.kill(a)
        time.sleep(0.5)  # let Ray reap the worker, so the next actor starts a fresh one
        return {"actor": dt}

    def fresh():
        r = subprocess.run([sys.executable, "-c", _PROBE], check=True, cwd=str(REPO),
                           capture_output=True, text=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    fns = {"bare": lambda: actor_start(Bare), "torch": lambda: actor_start(WithTorch),
           "fresh": fresh}
    times = {k: [] for k in fns}
    for r in range(repeats):  # alternate, so load drift hits each alike
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[k].append(fns[k]())

    def med(k, f):
        return MED(x[f] for x in times[k])

    return {
        "Ray actor start, empty actor (first call answered)": med("bare", "actor"),
        "Ray actor start + import trainables.trainable": med("torch", "actor"),
        "fresh interpreter: import torch + trainables.trainable": med("fresh", "import"),
        "fresh interpreter: import ray.tune (after torch)": med("fresh", "ray"),
        "step_flops(scratch_cnn), first call in a process": med("fresh", "flops1"),
        "step_flops(scratch_cnn), second call": med("fresh", "flops2"),
    }


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--lr-grid", nargs="+", type=float, default=[0.02, 0.05])
    ap.add_argument("--max-train-per-class", type=int, default=300)
    ap.add_argument("--target-epochs", type=int, default=3)
    ap.add_argument("--source-epochs", type=int, default=2)
    ap.add_argument("--max-concurrent", type=int, default=1)
    ap.add_argument("--feature-cache", choices=["auto", "on", "off"],
                    help="the study's feature_cache mode (default: the spec's)")
    ap.add_argument("--report-rounds", type=int, default=8)
    ap.add_argument("--stem", default="cifar", help="stem for the checkpoint-size table")
    ap.add_argument("--all", action="store_true", help="also parts 3 and 4 (slower)")
    ap.add_argument("--skip-study", action="store_true", help="no part 1")
    ap.add_argument("--storage", help="default: a new temp dir (kept)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    stop_on_sigterm()  # clusters started below are stopped on every exit path
    storage = Path(args.storage or tempfile.mkdtemp(prefix="tl-tune-overhead-"))
    storage.mkdir(parents=True, exist_ok=True)
    out = {"args": vars(args)}

    import ray

    # Ray gets exactly the slots the accounting counts: with more CPUs the source task and a
    # trial could run side by side, and held = slots x wall would undercount.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=args.max_concurrent, include_dashboard=False, logging_level="WARNING")
    run = None
    if not args.skip_study:
        print("\n--- part 1 ---", flush=True)
        run = out["study"] = study_overhead(args, storage)
        print_study(args, run)
    from study.runner import init_ray

    init_ray()
    rc = out["report"] = report_cost(args, storage)
    print(f"\n2. cost of one report (tiny trainable, {args.report_rounds} rounds each, "
          f"alternating; median)")
    print(f"   {'variant':<26}{'ckpt bytes':>14}{'torch.save ms':>15}{'report ms':>11}"
          f"{'total ms':>10}")
    for v, r in rc.items():
        print(f"   {v:<26}{r['bytes']:>14,}{r['save_ms']:>15.1f}{r['report_ms']:>11.1f}"
              f"{r['total_ms']:>10.1f}")
    if args.all:
        sizes = out["checkpoint_sizes"] = checkpoint_sizes(args.stem)
        print("\n3. checkpoint size per trial (torch.save bytes; 5 classes, SGD momentum)")
        print(f"   {'backbone':<22}{'depth':>6}{'trainable ckpt':>16}{'full ckpt':>14}{'ratio':>8}")
        for r in sizes:
            print(f"   {r['backbone'] + '/' + r['stem']:<22}{r['depth']:>6}"
                  f"{r['trainable_bytes']:>16,}{r['full_bytes']:>14,}"
                  f"{r['trainable_bytes'] / r['full_bytes']:>8.3f}")
        ref = out["reference"] = reference_costs()
        print("\n4. reference costs (median of 3, alternating; fresh processes)")
        for k, v in ref.items():
            print(f"   {k:<58}{v:>8.2f} s")
    ray.shutdown()  # the workers' exit messages come before the headline lines, not after
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if run:
        print(f"marginal_overhead_per_trial_s={run['marginal_overhead_per_trial_s']:.3f}")
        print(f"overhead_per_trial_s={run['overhead_per_trial_s']:.3f}")


if __name__ == "__main__":
    main()
