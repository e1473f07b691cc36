"""Where a real study's time goes: driver-side timestamps + the trials' own reports, accounted
per CPU slot. Shared by ``tune_overhead.py`` (part 1) and ``utilization.py`` (benchmarks/ is not a
package: the scripts import this module from their own directory).

A study run by ``study.runner.run_study`` holds ``slots`` trial slots (the CPUs its trials and
source tasks may use) from its **start** to the end of ``Tuner.fit``:

* old path (``warm=False``): start = ``Tuner.fit`` starts (the source models are trained inside
  the first trial that needs each, so their time is inside ``Tuner.fit``);
* new path (``warm=True``): start = ``train_sources`` starts (every source model as its own Ray
  task, before ``Tuner.fit``).

``phase_clock`` times both phases by wrapping ``study.runner.train_sources`` and
``ray.tune.Tuner.fit`` for the duration of one ``run_study`` call (nothing else changes).

Work is what the trials and source tasks measure themselves: every reported epoch's ``epoch_s``
(training + validation of that epoch) and every source model's ``train_s``
(``sources/<key>/info.json``: its epochs plus its validation and test evaluation). The
held slot-seconds minus the work split, exactly, into

  source phase    slots x (train_sources wall) - the source tasks' train_s: Ray task start (a
                  worker process importing torch + the project), fetching the data, and slots idle
                  while fewer source models than slots are left (new path only)
  sources -> fit  slots x (Tuner.fit start - train_sources end): building the Tuner (new path)
  setup           per trial: first report's ``time_this_iter_s`` - its ``epoch_s`` - the source
                  model it trained itself (old path): the trainable before epoch 1 (data from the
                  object store, model build / source load, FLOP probe, data to the device, waiting
                  on another trial's source-model lock) and epoch 1's checkpoint + report
  per epoch       per trial: later reports' ``time_this_iter_s`` - ``epoch_s``: checkpoint save +
                  persist + report; minus the test evaluation estimate below
  test eval (est) per trial that reached target_epochs: its last report's (``time_this_iter_s`` -
                  ``epoch_s``) minus the median of the same for the study's other epochs >= 2
                  (the test split is evaluated in the last epoch, outside ``epoch_s``); >= 0
  round trips     per trial: its lifetime seen by the driver (``on_trial_start`` ->
                  ``on_trial_complete``) - the sum of its ``time_this_iter_s``: the synchronous
                  result hand-off and the stop
  launch gaps     slot-seconds between a slot becoming free (``Tuner.fit`` start, or a trial's
                  completion) and the next trial starting in it: Tune's scheduling, actor start
                  (new worker process) or actor reuse (``reset_config``), searcher
  tail            slot-seconds from each slot's last trial completion to the end of ``Tuner.fit``
                  (slots idle because no trial is left, and Tune's wrap-up)

Slot assignment for launch gaps/tail is by time (a starting trial takes the slot that became free
earliest); with 1 slot it is exact, with more the split between launch gaps and tail is an
attribution, their sum is exact (fit slot-seconds - the trials' lifetimes).
"""
from __future__ import annotations

import contextlib
import heapq
import json
import statistics
import time
from pathlib import Path

from ray.tune import Callback

MED = statistics.median


class Timeline(Callback):
    """Driver-side timestamps of the experiment and of every trial."""

    def __init__(self):
        self.t_setup = None
        self.t_end = None
        self.start, self.complete = {}, {}
        self.results: dict[str, list] = {}
        self.status: dict[str, str] = {}

    def setup(self, **info):
        self.t_setup = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.setdefault(trial.trial_id, []).append((time.time(), dict(result)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.complete[trial.trial_id] = time.time()
        self.status[trial.trial_id] = "complete"

    def on_trial_error(self, iteration, trials, trial, **info):
        self.complete[trial.trial_id] = time.time()
        self.status[trial.trial_id] = "error"

    def on_experiment_end(self, trials, **info):
        self.t_end = time.time()


@contextlib.contextmanager
def phase_clock():
    """Wall-clock times of ``train_sources`` and ``Tuner.fit`` inside one ``run_study`` call."""
    import study.runner as runner
    from ray import tune

    t: dict[str, float] = {}
    orig_sources, orig_fit = runner.train_sources, tune.Tuner.fit

    def train_sources(*a, **k):
        t["src_start"] = time.time()
        try:
            return orig_sources(*a, **k)
        finally:
            t["src_end"] = time.time()

    def fit(self, *a, **k):
        t["fit_start"] = time.time()
        try:
            return orig_fit(self, *a, **k)
        finally:
            t["fit_end"] = time.time()

    runner.train_sources, tune.Tuner.fit = train_sources, fit
    try:
        yield t
    finally:
        runner.train_sources, tune.Tuner.fit = orig_sources, orig_fit


COMPONENTS = [  # (label, key), in the order printed; they sum to held - work
    ("source phase (tasks, idle slots)", "source_phase"),
    ("sources -> Tuner.fit", "sources_to_fit"),
    ("launch gaps (sched + actor)", "launch"),
    ("setup in trainable", "setup"),
    ("per-epoch ckpt + report", "per_epoch"),
    ("test evaluation (est.)", "test_eval"),
    ("driver round trips + stop", "round_trips"),
    ("tail (idle slots, wrap-up)", "tail"),
]


def account(summary: dict, tl: Timeline, clock: dict, slots: int) -> dict:
    """The slot accounting of one study (see the module docstring). Slot-seconds throughout."""
    from study.core import metrics as M

    sdir = Path(summary["results"])
    sources = [json.loads(f.read_text()) for f in sorted((sdir / "sources").glob("*/info.json"))]
    src_by_trial: dict[str, float] = {}
    for info in sources:
        src_by_trial[info["trained_by"]] = src_by_trial.get(info["trained_by"], 0.0) + info["train_s"]
    src_task_s = sum(i["train_s"] for i in sources if i["trained_by"] == "source-task")
    src_total = sum(i["train_s"] for i in sources)

    warm = "src_start" in clock
    start = clock["src_start"] if warm else clock["fit_start"]
    end = clock["fit_end"]
    wall = end - start

    # every epoch >= 2 except a trial's test-evaluating last one: the plain report cost
    extras = [r["time_this_iter_s"] - r[M.EPOCH_S]
              for tid in tl.results for i, (_, r) in enumerate(tl.results[tid])
              if i >= 1 and M.TEST_ACC not in r]
    base = MED(extras) if extras else 0.0

    trials = []
    for tid in sorted(tl.start, key=tl.start.get):
        res = [r for _, r in tl.results.get(tid, [])]
        t_res = [t for t, _ in tl.results.get(tid, [])]
        end_t = tl.complete.get(tid, t_res[-1] if t_res else tl.start[tid])
        own_src = src_by_trial.get(tid, 0.0)
        epochs_s = sum(r[M.EPOCH_S] for r in res)
        tti = [r["time_this_iter_s"] for r in res]
        test = 0.0
        if res and M.TEST_ACC in res[-1]:
            test = max(0.0, tti[-1] - res[-1][M.EPOCH_S] - (base if len(res) > 1 else 0.0))
        per_epoch = sum(t - r[M.EPOCH_S] for t, r in zip(tti[1:], res[1:]))
        setup = (tti[0] - res[0][M.EPOCH_S] - own_src) if res else 0.0
        if len(res) == 1:  # a one-epoch trial evaluated the test split in its first report
            setup -= test
        else:
            per_epoch -= test
        lifetime = end_t - tl.start[tid]
        trials.append({
            "trial_id": tid, "cell": (res[0].get("config") or {}).get(M.CELL) if res else None,
            "start": tl.start[tid], "end": end_t, "lifetime_s": lifetime,
            "epochs": len(res), "epochs_s": epochs_s, "source_s": own_src,
            "work_s": epochs_s + own_src, "setup_s": setup, "per_epoch_s": per_epoch,
            "test_eval_s": test, "round_trips_s": lifetime - sum(tti),
            "pid": res[0].get("pid") if res else None,
            "worker_rss_mib": res[-1].get(M.WORKER_RSS_MIB) if res else None,
            "status": tl.status.get(tid, "?"),
        })

    # launch gaps: each trial start takes the slot that became free earliest
    free = [clock["fit_start"]] * slots
    heapq.heapify(free)
    launch = 0.0
    events = sorted([(t["start"], 1, t) for t in trials] + [(t["end"], 0, t) for t in trials],
                    key=lambda e: (e[0], e[1]))
    for when, is_start, t in events:
        if is_start:
            freed = heapq.heappop(free) if free else when  # (more trials than slots: none)
            t["launch_s"] = max(0.0, when - freed)
            launch += t["launch_s"]
        else:
            heapq.heappush(free, when)
    tail = sum(max(0.0, end - f) for f in free)

    comp = {
        "source_phase": slots * (clock["src_end"] - clock["src_start"]) - src_task_s if warm else 0.0,
        "sources_to_fit": slots * (clock["fit_start"] - clock["src_end"]) if warm else 0.0,
        "launch": launch,
        "setup": sum(t["setup_s"] for t in trials),
        "per_epoch": sum(t["per_epoch_s"] for t in trials),
        "test_eval": sum(t["test_eval_s"] for t in trials),
        "round_trips": sum(t["round_trips_s"] for t in trials),
        "tail": tail,
    }
    epochs_s = sum(t["epochs_s"] for t in trials)
    held = slots * wall
    work = epochs_s + src_total
    return {
        "dir": str(sdir), "warm": warm, "slots": slots, "trials": len(trials),
        "completed": summary.get("completed"), "stopped": summary.get("stopped"),
        "errored": summary.get("errored"),
        "wall_s": wall, "fit_wall_s": end - clock["fit_start"],
        "source_phase_wall_s": clock["src_end"] - clock["src_start"] if warm else 0.0,
        "summary_wall_s": summary["wall_s"], "held_s": held,
        "epochs_s": epochs_s, "source_train_s": src_total, "sources": len(sources),
        "test_eval_s": comp["test_eval"], "work_s": work,
        "overhead_s": held - work, "components": comp,
        "unaccounted_s": held - work - sum(comp.values()),  # ~0 by construction (rounding)
        "workers": len({t["pid"] for t in trials}),
        "max_worker_rss_mib": max((t["worker_rss_mib"] or 0.0) for t in trials) if trials else 0.0,
        "experiment_start_to_first_trial_s": (min(t["start"] for t in trials) - clock["fit_start"])
        if trials else float("nan"),
        "per_trial": trials,
    }


def print_components(rows: dict[str, dict], per: str = "trial", indent: str = "   "):
    """Side-by-side component table, in seconds per trial (rows: label -> account())."""
    names = list(rows)
    print(f"{indent}{'component (s per ' + per + ')':<36}" + "".join(f"{n:>12}" for n in names))
    for label, k in COMPONENTS:
        print(f"{indent}{label:<36}" + "".join(
            f"{r['components'][k] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'= overhead, test eval as overhead':<36}" + "".join(
        f"{r['overhead_s'] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'= overhead, test eval as work':<36}" + "".join(
        f"{(r['overhead_s'] - r['test_eval_s']) / r['trials']:>12.2f}" for r in rows.values()))


def time_test_eval(backbone: str, stem: str, depth: int, n_images: int, classes: int,
                   threads: int = 1, repeats: int = 3) -> float:
    """Seconds of ``evaluate`` + ``classification_report`` (what a trial's last epoch adds for
    the test split) on ``n_images`` random 32x32 images, in this process, median of ``repeats``
    after one warm-up: a check of the 'test evaluation (est.)' component."""
    import numpy as np
    import torch

    from trainables.backbones import build, freeze
    from trainables.data import DeviceData
    from trainables.train import classification_report, evaluate, pick_device, prepare_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dev = pick_device()
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
        y = np.arange(n_images) % classes
        model = prepare_model(build(backbone, classes, stem), dev)
        freeze(model, depth)
        dd = DeviceData(x, y, (0.5,) * 3, (0.25,) * 3, dev)
        times = []
        for i in range(repeats + 1):
            t = time.perf_counter()
            _, _, pred = evaluate(model, dd)
            classification_report(pred, dd.y, [str(c) for c in range(classes)])
            if i:
                times.append(time.perf_counter() - t)
        return MED(times)
    finally:
        torch.set_num_threads(before)
