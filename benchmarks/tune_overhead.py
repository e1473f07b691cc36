"""Ray Tune overhead per trial, the cost of a report with and without a checkpoint, and
checkpoint sizes.

    STUDY_CACHE_DIR=/tmp/cache python benchmarks/tune_overhead.py \\
        [--data-root ../shared/datasets/cifar10-jpg.tar.xz] [--lr-grid 0.02 0.05] \\
        [--max-train-per-class 300] [--target-epochs 3] [--source-epochs 2] \\
        [--max-concurrent 1] [--report-rounds 8] [--feature-cache auto|on|off] [--json OUT]

Part 1, study overhead. A real study (``study.runner.run_study``) of 12 short scratch_cnn trials
on a CIFAR-10 subset (split 5to5 of ``examples/quick.yaml``; init source at frozen depths 0-4 +
init scratch, x 2 learning rates, grid search, FIFO so every trial runs to the end). Trial work
is what the trials report: the sum of ``epoch_s`` (``trainables.metrics.EPOCH_S``: a target
epoch's training + validation) over every epoch, plus each source model's training time
(``sources/*/info.json`` ``train_s``, once). Then

    overhead per trial = (max_concurrent x study wall - sum of trial work) / trials

where the study wall is ``Tuner.fit`` (``summary.json`` ``wall_s``). With ``--max-concurrent 1``
(the default) trials run one after the other, so this is exactly the time the study spends on
anything but training and validating; with C > 1 it is the idle slot-seconds per trial (it
assumes C trials run at full speed side by side, which needs C free cores; on a loaded machine
use 1). It is also given as % of the median trial's work (goal <= 2%), and as the trial length at
which it would be 2%. A Tune callback and the results' ``time_this_iter_s`` split it into:

  launch      Tune's gap between one trial ending and the next one's actor being up (scheduling,
              worker process, actor constructor), from the driver's callback timestamps
  setup       first report's ``time_this_iter_s`` - its ``epoch_s`` - its own source training:
              the trainable before epoch 1 (fetching the shared data from the object store,
              imports, building/loading the model, FLOP counting, data to the device) and
              epoch 1's checkpoint
  per epoch   later reports' ``time_this_iter_s`` - ``epoch_s``: checkpoint save + persist,
              and the test evaluation in the last epoch
  round trips trial lifetime seen by the driver - ``time_total_s``: the synchronous report
              hand-off (the training thread waits in ``tune.report`` until the driver asks for
              the next result) and the final stop
  tail        after the last trial: Tune's experiment wrap-up

Part 2, report cost. A tiny function trainable (same Ray, same storage kind) alternates, round by
round, ``tune.report`` without a checkpoint and ``torch.save`` + ``tune.report`` with a
checkpoint of the trainable state of small / large models (the dict the real trainable saves),
``CheckpointConfig(num_to_keep=1)`` as in the runner, and times each inside the trainable.

Part 3, checkpoint sizes. For every backbone (CIFAR stem, 5 classes) and frozen depth: the bytes
of the checkpoint the trainable writes (``_trainable_state``: non-frozen stages + head, the
optimizer state of trainable parameters, schedule, RNG states) vs a full-model checkpoint
(the whole ``state_dict``, frozen stages included, + the same optimizer state), serialised with
``torch.save``. (Frozen parameters never get momentum buffers: the optimizer holds only
trainable parameters.)

Part 4, reference costs, each in a fresh process as a trial's actor is (``reuse_actors=False``):
an empty Ray actor's start, an actor start that imports the trainable, the imports alone, and
``step_flops`` (first call in a process: torch's FlopCounterMode imports lazily; second call):
what the launch and setup components above are made of.

Defaults take about 5-10 minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
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

import torch  # noqa: E402
import yaml  # noqa: E402

from ray.tune import Callback  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"
MED = statistics.median


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dicts(backbone: str, depth: int, stem: str = "cifar", classes: int = 5):
    """(what the trainable saves, a full-model checkpoint) after one optimizer step."""
    from study.spec import OptimizerSpec
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

class Timeline(Callback):
    """Driver-side timestamps of the experiment and of every trial."""

    def __init__(self):
        self.t_setup = None
        self.start, self.complete = {}, {}
        self.results: dict[str, list] = {}

    def setup(self, **info):
        self.t_setup = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.setdefault(trial.trial_id, []).append((time.time(), dict(result)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.complete[trial.trial_id] = time.time()


def study_spec(args, storage: Path):
    from study.spec import load_spec_dict

    raw = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    raw.update({
        "name": "overhead",
        "data": {**raw["data"], "root": str(args.data_root),
                 "max_train_per_class": args.max_train_per_class, "max_test_per_class": 100},
        "splits": [s for s in raw["splits"] if s["name"] == "5to5"],
        "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]}},
        "inits": ["source", "scratch"],
        "lr": {**raw["lr"], "grid": args.lr_grid},
        "target_epochs": args.target_epochs,
        "source": {**raw["source"], "epochs": args.source_epochs},
        "search": {**raw["search"], "algorithm": "grid", "max_concurrent": args.max_concurrent},
        "scheduler": {"type": "fifo"},
        "storage": str(storage), "max_failures": 0,
    })
    if args.feature_cache:
        raw["feature_cache"] = {"mode": args.feature_cache}
    return load_spec_dict(raw)


def study_overhead(args, storage: Path) -> dict:
    from study.runner import run_study
    from trainables import metrics as M

    spec = study_spec(args, storage)
    tl = Timeline()
    t0 = time.time()
    summary = run_study(spec, callbacks=[tl])
    outer = time.time() - t0
    sdir = Path(summary["results"])
    wall = summary["wall_s"]
    sources = {}
    for f in (sdir / "sources").glob("*/info.json"):
        info = json.loads(f.read_text())
        sources[info["trained_by"]] = info["train_s"]
    trials = []
    order = sorted(tl.start, key=tl.start.get)
    prev_end = tl.t_setup
    for tid in order:
        res = [r for _, r in tl.results[tid]]
        t_res = [t for t, _ in tl.results[tid]]
        epochs = [r[M.EPOCH_S] for r in res]
        src = sources.get(tid, 0.0)
        work = sum(epochs) + src
        trials.append({
            "trial_id": tid, "work_s": work, "epochs_s": sum(epochs), "source_s": src,
            "launch_s": tl.start[tid] - prev_end,
            "setup_s": res[0]["time_this_iter_s"] - epochs[0] - src,
            "per_epoch_s": sum(r["time_this_iter_s"] - r[M.EPOCH_S] for r in res[1:]),
            "round_trips_s": (tl.complete[tid] - tl.start[tid]) - res[-1]["time_total_s"],
            "last_result_to_complete_s": tl.complete[tid] - t_res[-1],
            "epochs": len(res),
        })
        prev_end = tl.complete[tid]
    tail = tl.t_setup + wall - prev_end if tl.t_setup else float("nan")
    n = len(trials)
    sum_work = sum(t["work_s"] for t in trials)
    overhead = (args.max_concurrent * wall - sum_work) / n
    typical = MED(t["work_s"] for t in trials)
    return {"dir": str(sdir), "trials": n, "wall_s": wall, "run_study_s": outer,
            "sum_work_s": sum_work, "overhead_per_trial_s": overhead,
            "median_trial_work_s": typical, "overhead_pct": 100 * overhead / typical,
            "trial_s_for_2pct": overhead / 0.02, "tail_s": tail,
            "experiment_start_to_first_trial_s": tl.start[order[0]] - tl.t_setup,
            "per_trial": trials}


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


def report_cost(args, storage: Path, sizes_rows: list[dict]) -> dict:
    from ray import tune

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
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
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
            import trainables.trainable  # noqa: F401 - what a trial's actor imports

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
    ap.add_argument("--skip-study", action="store_true", help="parts 2 and 3 only")
    ap.add_argument("--storage", help="default: a new temp dir (kept)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="tl-tune-overhead-"))
    storage.mkdir(parents=True, exist_ok=True)
    out = {"args": vars(args)}

    sizes = checkpoint_sizes(args.stem)
    if not args.skip_study:
        s = out["study"] = study_overhead(args, storage)
        pt = s["per_trial"]
        print(f"\n1. study overhead: {s['trials']} trials (scratch_cnn, 5to5, "
              f"{args.max_train_per_class} img/class, {args.target_epochs} target + "
              f"{args.source_epochs} source epochs, FIFO, max_concurrent {args.max_concurrent}, "
              f"feature cache {getattr(getattr(study_spec(args, storage), 'feature_cache', None), 'mode', 'n/a')})")
        print(f"   study wall (Tuner.fit)        {s['wall_s']:8.1f} s   (run_study incl. data "
              f"load + Ray start: {s['run_study_s']:.1f} s)")
        print(f"   sum of trial work             {s['sum_work_s']:8.1f} s   (epoch_s of every "
              f"epoch + source train_s)")
        print(f"   overhead per trial            {s['overhead_per_trial_s']:8.2f} s   = "
              f"{s['overhead_pct']:.1f}% of the median trial's work "
              f"({s['median_trial_work_s']:.1f} s); 2% would need trials of "
              f"{s['trial_s_for_2pct']:.0f} s")
        print(f"   {'component (per trial)':<30}{'mean s':>8}{'median s':>10}{'share':>8}")
        parts = [("launch (sched + actor start)", "launch_s"), ("setup in trainable", "setup_s"),
                 ("per-epoch ckpt/report/test", "per_epoch_s"),
                 ("driver round trips + stop", "round_trips_s")]
        total = s["overhead_per_trial_s"]
        for name, k in parts:
            m = statistics.mean(t[k] for t in pt)
            print(f"   {name:<30}{m:>8.2f}{MED(t[k] for t in pt):>10.2f}{100 * m / total:>7.0f}%")
        print(f"   {'experiment tail (once) / N':<30}{s['tail_s'] / s['trials']:>8.2f}"
              f"{'':>10}{100 * s['tail_s'] / s['trials'] / total:>7.0f}%")
        print(f"   (first trial's launch includes Tune's experiment start: "
              f"{s['experiment_start_to_first_trial_s']:.2f} s)")
    from study.runner import init_ray

    init_ray()
    rc = out["report"] = report_cost(args, storage, sizes)
    print(f"\n2. cost of one report (tiny trainable, {args.report_rounds} rounds each, "
          f"alternating; median)")
    print(f"   {'variant':<26}{'ckpt bytes':>14}{'torch.save ms':>15}{'report ms':>11}"
          f"{'total ms':>10}")
    for v, r in rc.items():
        print(f"   {v:<26}{r['bytes']:>14,}{r['save_ms']:>15.1f}{r['report_ms']:>11.1f}"
              f"{r['total_ms']:>10.1f}")
    out["checkpoint_sizes"] = sizes
    print(f"\n3. checkpoint size per trial (torch.save bytes; 5 classes, SGD momentum)")
    print(f"   {'backbone':<22}{'depth':>6}{'trainable ckpt':>16}{'full ckpt':>14}{'ratio':>8}")
    for r in sizes:
        print(f"   {r['backbone'] + '/' + r['stem']:<22}{r['depth']:>6}"
              f"{r['trainable_bytes']:>16,}{r['full_bytes']:>14,}"
              f"{r['trainable_bytes'] / r['full_bytes']:>8.3f}")
    ref = out["reference"] = reference_costs()
    print("\n4. reference costs (median of 3, alternating; fresh processes)")
    for k, v in ref.items():
        print(f"   {k:<58}{v:>8.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
