"""Busy fraction of the CPU slots a real study holds on a multi-node Ray cluster: old path
(``warm=False``) vs new path (``warm=True``), one after the other on the same cluster.

    python benchmarks/utilization.py [--study quick|small] \
        [--data-root ../shared/datasets/cifar10-jpg.tar.xz] [--paths old new] [--json OUT]

The cluster is local (``ray.cluster_utils.Cluster``): a head node with 0 CPUs (it runs the
driver: Tune's loop, never a trial) and 2 worker nodes with 1 CPU each, i.e. 2 slots of
``resources.cpus: 1``. The study (``study.runner.run_study``):

* ``--study quick`` (default): ``examples/quick.yaml`` as it is (only the data root and storage
  changed): 10 cells, 40 trials (3 per cell + 1 confirmation seed each), 4 source models
  (scratch_cnn and ResNet18 x 2 seeds), successive halving per cell, ``max_concurrent`` 2.
* ``--study small``: a shorter study of the same shape (split 5to5, 200 images per class, 100
  test images per class): scratch_cnn at depths 0/2/4 and ResNet18 (ImageNet-layout stem) at
  depths 0/3, init source + each backbone's scratch baseline: 7 cells x 2 learning rates = 14
  trials, 2 source models, 3 target + 2 source epochs, halving (grace 1, reduction factor 3).

    busy fraction = (sum over trials of every reported epoch's epoch_s
                     + sum over completed trials of test_s
                     + sum over source models of train_s)
                    / (2 slots x study wall)

    study wall = Tuner.fit start -> Tuner.fit end            old path (sources trained inside
                                                             the first trial needing each)
               = SourceModels built -> Tuner.fit end         new path (source models as their
                                                             own Ray tasks, Tune alongside)

``epoch_s`` is a target epoch's training + validation (``metrics.EPOCH_S``), ``test_s`` the test
split's evaluation in a completed trial's last epoch (``metrics.TEST_S``), ``train_s`` a source
model's training + its validation/test evaluation (``sources/<key>/info.json``): all measured by
the trainable or source task itself. Both phases are timed by wrapping
``study.runner.SourceModels`` and ``Tuner.fit`` (``study_timing.phase_clock``).

Where the idle slot-seconds go (``study_timing.account``, exact split, per trial): source task
start (Ray task start, worker imports, data fetch) and the rest of a source task outside its
training, launch gaps (a slot free -> the next trial started in it: Tune's start-up, scheduling,
actor start or reuse, the searcher, a trial waiting for its source model), setup (the trainable
before epoch 1, incl. waiting on another trial's source lock in the old path), per-epoch
checkpoint + report, the driver's round trips + stop, and the tail (slots idle after their last
occupant, because nothing is left to start).

The last line printed is ``busy_fraction=<value>`` of the new path. About 4-6 minutes on a
2-core CPU (two studies of ~1-2 minutes plus the cluster's start).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # study_timing (benchmarks/ is not a package)

import yaml  # noqa: E402

from study_timing import (MED, Timeline, account, phase_clock, print_common_rows,  # noqa: E402
                          print_components, row_printer)

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.xz"
SLOTS = 2


def study_spec(args, storage: Path, name: str):
    from study.core.spec import load_spec_dict

    raw = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    raw.update({"name": name, "data": {**raw["data"], "root": str(args.data_root)},
                "resources": {"cpus": 1, "gpu": 0}, "storage": str(storage)})
    raw["search"] = {**raw["search"], "max_concurrent": SLOTS}
    if args.study == "small":
        raw.update({
            "data": {**raw["data"], "max_train_per_class": 200, "max_test_per_class": 100},
            "splits": [s for s in raw["splits"] if s["name"] == "5to5"],
            "backbones": {"scratch_cnn": {"depths": [0, 2, 4]},
                          "resnet18": {"depths": [0, 3], "stem": "imagenet"}},
            "inits": ["source", "scratch"],
            "target_epochs": 3,
            "source": {**raw["source"], "epochs": 2},
            "search": {"mode": "compare", "algorithm": "qmc", "trials_per_cell": 2,
                       "max_concurrent": SLOTS, "seed": 0},
            "confirm": {"seeds": 0},
            "scheduler": {"type": "halving", "grace_period": 1, "reduction_factor": 3},
            "max_failures": 0,
        })
    return load_spec_dict(raw)


def run(args, storage: Path, warm: bool) -> dict:
    from study.runner import run_study

    spec = study_spec(args, storage, "util-" + ("new" if warm else "old"))
    tl = Timeline()
    with phase_clock() as clock:
        summary = run_study(spec, callbacks=[tl], warm=warm)
    a = account(summary, tl, clock, SLOTS)
    a["busy_fraction"] = a["work_s"] / a["held_s"]
    pt = a["per_trial"]
    a["first_report_setup_median_s"] = MED(t["setup_s"] for t in pt)
    a["launch_gap_median_s"] = MED(t["launch_s"] for t in pt)
    a["per_report_cost_median_s"] = MED(t["per_epoch_s"] / (t["epochs"] - 1)
                                        for t in pt if t["epochs"] > 1) if any(
        t["epochs"] > 1 for t in pt) else float("nan")
    return a


def print_table(args, runs: dict[str, dict]) -> None:
    r0 = next(iter(runs.values()))
    sp = study_spec(args, Path("/tmp"), "x")
    print(f"\nutilization: local Ray cluster (head 0 CPU + 2 x 1-CPU worker nodes = {SLOTS} slots); "
          f"study {args.study}: {r0['trials']} trials, {r0['sources']} source models; "
          f"{sp.data.max_train_per_class} img/class, {sp.target_epochs} target + "
          f"{sp.source.epochs} source epochs, {sp.scheduler.type} per cell, confirm seeds "
          f"{sp.confirm.seeds}")

    row = row_printer(runs)
    row("trials completed / stopped", lambda r: f"{r['completed']}/{r['stopped']}", "{:>12}")
    print_common_rows(row)
    row("held: 2 x wall (slot-s)", lambda r: r["held_s"])
    row("idle slot-s", lambda r: r["held_s"] - r["work_s"])
    row("median launch gap (s)", lambda r: r["launch_gap_median_s"], "{:>12.2f}")
    row("median first-report setup (s)", lambda r: r["first_report_setup_median_s"], "{:>12.2f}")
    row("median cost per later report (s)", lambda r: r["per_report_cost_median_s"], "{:>12.3f}")
    row("BUSY FRACTION", lambda r: r["busy_fraction"], "{:>12.3f}")
    print("   idle slot-seconds by cause:")
    print_components(runs)
    for n, r in runs.items():
        print(f"\n   {n}: per trial (start order; s)")
        print(f"     {'cell':<30}{'ep':>3}{'launch':>8}{'setup':>7}{'epochs':>8}{'src':>6}"
              f"{'report':>7}{'test':>6}{'trip':>6}  pid")
        for t in r["per_trial"]:
            print(f"     {str(t['cell']):<30}{t['epochs']:>3}{t['launch_s']:>8.2f}{t['setup_s']:>7.2f}"
                  f"{t['epochs_s']:>8.2f}{t['source_s']:>6.1f}{t['per_epoch_s']:>7.2f}"
                  f"{t['test_eval_s']:>6.2f}{t['round_trips_s']:>6.2f}  {t['pid']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--study", choices=["quick", "small"], default="quick",
                    help="quick: examples/quick.yaml as it is; small: the 14-trial study")
    ap.add_argument("--paths", nargs="+", choices=["old", "new"], default=["old", "new"],
                    help="runs in this order (old: warm=False, new: warm=True)")
    ap.add_argument("--storage", help="default: a new temp dir (kept)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="tl-utilization-"))
    storage.mkdir(parents=True, exist_ok=True)

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    for _ in range(SLOTS):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # study.runner.init_ray joins this cluster
    ray.init(address=cluster.address, logging_level="WARNING")
    runs = {}
    try:
        for p in args.paths:
            print(f"\n--- {p} path (warm={p == 'new'}) ---", flush=True)
            t0 = time.time()
            runs[p] = run(args, storage, warm=p == "new")
            runs[p]["run_study_s"] = time.time() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    print_table(args, runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1,
                                              default=str))
    last = runs.get("new") or runs[args.paths[-1]]
    print(f"busy_fraction={last['busy_fraction']:.3f}")


if __name__ == "__main__":
    main()
