"""Busy fraction of the CPU slots a real study holds on a multi-node Ray cluster.

    python benchmarks/utilization.py [--study quick|small] \
        [--data-root ../shared/datasets/cifar10-jpg.tar.xz] [--storage DIR] [--json OUT]

The cluster is local (``ray.cluster_utils.Cluster``): a head node with 0 CPUs (it runs the
driver: Tune's loop, never a trial) and 2 worker nodes with 1 CPU each, i.e. 2 slots of
``resources.cpus: 1``. The study (``study.runner.run_study``: source models as their own Ray
tasks, Tune alongside, trials in reused workers):

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

    study wall = summary.json's wall_s: source models submitted -> Tune returned

``epoch_s`` is a target epoch's training + validation (``metrics.EPOCH_S``), ``test_s`` the test
split's evaluation in a completed trial's last epoch (``metrics.TEST_S``), ``train_s`` a source
model's training + its validation/test evaluation (``sources/<key>/info.json``): all measured by
the trainable or source task itself, and read from what the study writes (``trials.jsonl``,
``summary.json``, ``sources/``; ``study_timing.py``, nothing in the study is wrapped).

Where the idle slot-seconds go (``study_timing.account``, exact split, per trial): the source
tasks' time outside their training (Ray task start, worker imports, data fetch, build, save;
estimated from ``info.json``'s time, as the study records no source-task start/end), launch
gaps (a slot free -> the next trial started in it: Tune's start-up, scheduling, actor start or
reuse, the searcher, a trial waiting for its source model), setup (start -> first result: the
trainable before epoch 1 + epoch 1's checkpoint and report), later checkpoints + reports, stop
(last result -> end), and the tail (slots idle after their last occupant, because nothing is
left to start).

Before/after: the script measures the code it is run from. To compare with an older version
(e.g. the removed ``warm=False`` path, last present in commit ec2abbf, whose script runs it with
``--paths old``), run that commit's own copy on the same machine with the same ``--study``, one
after the other, and compare the ``busy_fraction=`` lines:

    git worktree add /tmp/tl-old ec2abbf
    (cd /tmp/tl-old && PYTHONPATH=/tmp/tl-old python benchmarks/utilization.py --paths old)
    python benchmarks/utilization.py
    git worktree remove /tmp/tl-old

The last line printed is ``busy_fraction=<value>``. It takes the study's wall plus the cluster's
start: on a 2-core CPU about 10 minutes with ``quick`` (its study wall was 543 s), a few with
``small``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # study_timing (benchmarks/ is not a package)

import yaml  # noqa: E402

from study_timing import (stop_on_sigterm, MED, print_common_rows, print_components, row_printer,  # noqa: E402
                          timed_study)

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


def run(args, storage: Path) -> dict:
    a = timed_study(study_spec(args, storage, "util"), SLOTS)
    a["busy_fraction"] = a["work_s"] / a["held_s"]
    pt = a["per_trial"]
    later = [t["per_epoch_s"] / (t["epochs"] - 1) for t in pt if t["epochs"] > 1]
    a["first_report_setup_median_s"] = MED(t["setup_s"] for t in pt)
    a["launch_gap_median_s"] = MED(t["launch_s"] for t in pt)
    a["per_report_cost_median_s"] = MED(later) if later else float("nan")
    return a


def print_table(args, r: dict) -> None:
    sp = study_spec(args, Path("/tmp"), "x")
    print(f"\nutilization ({r['code_version']}): local Ray cluster (head 0 CPU + 2 x 1-CPU "
          f"worker nodes = {SLOTS} slots); study {args.study}: {r['trials']} trials, "
          f"{r['sources']} source models; {sp.data.max_train_per_class} img/class, "
          f"{sp.target_epochs} target + {sp.source.epochs} source epochs, {sp.scheduler.type} "
          f"per cell, confirm seeds {sp.confirm.seeds}")

    runs = {"this run": r}
    row = row_printer(runs)
    row("trials completed / stopped", lambda r: f"{r['completed']}/{r['stopped']}", "{:>12}")
    print_common_rows(row)
    row("held: 2 x wall (slot-s)", lambda r: r["held_s"])
    row("idle slot-s", lambda r: r["held_s"] - r["work_s"])
    row("median launch gap (s)", lambda r: r["launch_gap_median_s"], "{:>12.2f}")
    row("median setup to 1st result (s)", lambda r: r["first_report_setup_median_s"], "{:>12.2f}")
    row("median cost per later report (s)", lambda r: r["per_report_cost_median_s"], "{:>12.3f}")
    row("BUSY FRACTION", lambda r: r["busy_fraction"], "{:>12.3f}")
    print("   idle slot-seconds by cause:")
    print_components(runs)
    print("\n   per trial (start order; s)")
    print(f"     {'cell':<30}{'ep':>3}{'launch':>8}{'setup':>7}{'epochs':>8}"
          f"{'report':>7}{'test':>6}{'stop':>6}  pid")
    for t in r["per_trial"]:
        print(f"     {str(t['cell']):<30}{t['epochs']:>3}{t['launch_s']:>8.2f}{t['setup_s']:>7.2f}"
              f"{t['epochs_s']:>8.2f}{t['per_epoch_s']:>7.2f}{t['test_eval_s']:>6.2f}"
              f"{t['stop_s']:>6.2f}  {t['pid']}")
    print("   source models (est. training interval, s from the study's start)")
    for s in r["source_tasks"]:
        print(f"     {s['key']:<36}{s['start'] - r['start_t']:>8.1f}"
              f"{s['end'] - r['start_t']:>8.1f}  train_s {s['train_s']:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--study", choices=["quick", "small"], default="quick",
                    help="quick: examples/quick.yaml as it is; small: the 14-trial study")
    ap.add_argument("--storage", help="default: a new temp dir (kept)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    stop_on_sigterm()  # clusters started below are stopped on every exit path
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
    try:
        r = run(args, storage)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print_table(args, r)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "run": r}, indent=1,
                                              default=str))
    print(f"busy_fraction={r['busy_fraction']:.3f}")


if __name__ == "__main__":
    main()
