"""Where a real study's time goes: driver-side timestamps + the trials' and source tasks' own
measurements, accounted per CPU slot. Shared by ``tune_overhead.py`` (part 1) and
``utilization.py`` (benchmarks/ is not a package: the scripts import this module from their own
directory).

A study run by ``study.runner.run_study`` holds ``slots`` slots (the CPUs its trials and source
tasks may use: the cluster's CPUs, or ``max_concurrent`` on a Ray limited to that many) from its
**start** to its end:

* old path (``warm=False``): start = ``Tuner.fit`` starts (the source models are trained inside
  the first trial that needs each, so their time is inside that trial); end = ``Tuner.fit`` ends;
* new path (``warm=True``): start = ``study.runner.SourceModels`` is built (every source model
  submitted as its own Ray task; Tune starts right after, alongside); end = ``Tuner.fit`` ends
  (``run_study`` then waits for any source task still running: none is, all were needed).

``phase_clock`` records these by wrapping ``study.runner.SourceModels`` and ``Tuner.fit`` for
one ``run_study`` call (nothing else changes) and keeps the ``SourceModels`` object, whose task
results carry each task's own start/end wall-clock time and ``train_s``.

Work is what the trials and source tasks measure themselves: every reported epoch's ``epoch_s``
(training + validation of that epoch), every completed trial's ``test_s`` (the test split's
evaluation in its last epoch) and every source model's ``train_s`` (its epochs plus its
validation and test evaluation). Held slot-seconds minus work split, exactly, into

  source task start  slot-seconds from a slot becoming free to a source task's function
                     starting in it: Ray task scheduling, worker process start + imports, the
                     study data fetched from the object store (new path)
  source task rest   a source task's lifetime minus its train_s: model build, FLOP probe,
                     checkpoint writes (new path)
  launch gaps        slot-seconds from a slot becoming free (the study's start, a trial's or
                     source task's end) to the next trial starting in it: Tune's experiment
                     start-up (first trial), scheduling, actor start (a new worker process) or
                     reuse (``reset_config``), the searcher, or waiting for a source model
  setup              per trial: first report's ``time_this_iter_s`` - its ``epoch_s`` - the
                     source model it trained itself (old path): the trainable before epoch 1 (data
                     from the object store, model build / source load, FLOP probe, data to the
                     device, waiting on another trial's source-model lock) and epoch 1's
                     checkpoint + report
  per epoch          per trial: later reports' ``time_this_iter_s`` - ``epoch_s``: checkpoint
                     save + persist + report (minus ``test_s``)
  round trips        per trial: its lifetime seen by the driver (``on_trial_start`` ->
                     ``on_trial_complete``) - the sum of its ``time_this_iter_s``: the
                     synchronous result hand-off and the stop
  tail               slot-seconds from each slot's last occupant's end to the study's end

Slot assignment is by time (an occupant that starts takes the slot that became free earliest);
with 1 slot it is exact, with more the split between gaps and tail is an attribution, their sum
is exact (held slot-seconds - the occupants' lifetimes).
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
    """Wall-clock start/end of one ``run_study`` call's phases, and its ``SourceModels``."""
    import study.runner as runner
    from ray import tune

    t: dict = {}
    orig_sources, orig_fit = runner.SourceModels, tune.Tuner.fit

    class SourceModels(orig_sources):  # run_study builds it once, before Tuner.fit
        def __init__(self, *a, **k):
            t["src_start"] = time.time()
            super().__init__(*a, **k)
            t["sources"] = self

    def fit(self, *a, **k):
        t["fit_start"] = time.time()
        try:
            return orig_fit(self, *a, **k)
        finally:
            t["fit_end"] = time.time()

    runner.SourceModels, tune.Tuner.fit = SourceModels, fit
    try:
        yield t
    finally:
        runner.SourceModels, tune.Tuner.fit = orig_sources, orig_fit


COMPONENTS = [  # (label, key), in the order printed; they sum to held - work
    ("source task start (worker, data)", "source_start"),
    ("source task rest (build, save)", "source_rest"),
    ("launch gaps (sched, actor, wait)", "launch"),
    ("setup in trainable", "setup"),
    ("per-epoch ckpt + report", "per_epoch"),
    ("driver round trips + stop", "round_trips"),
    ("tail (idle slots, wrap-up)", "tail"),
]


def account(summary: dict, tl: Timeline, clock: dict, slots: int) -> dict:
    """The slot accounting of one study (see the module docstring). Slot-seconds throughout."""
    from study.core import metrics as M

    sdir = Path(summary["results"])
    infos = [json.loads(f.read_text()) for f in sorted((sdir / "sources").glob("*/info.json"))]
    src_by_trial: dict[str, float] = {}  # old path: source models trained inside trials
    for info in infos:
        if info["trained_by"] != "source-task":
            src_by_trial[info["trained_by"]] = src_by_trial.get(info["trained_by"], 0.0) + info["train_s"]
    tasks = [r for r in clock["sources"].results.values()] if clock.get("sources") else []

    warm = "src_start" in clock
    start = clock["src_start"] if warm else clock["fit_start"]
    end = clock["fit_end"]
    wall = end - start

    trials = []
    for tid in sorted(tl.start, key=tl.start.get):
        res = [r for _, r in tl.results.get(tid, [])]
        t_res = [t for t, _ in tl.results.get(tid, [])]
        end_t = tl.complete.get(tid, t_res[-1] if t_res else tl.start[tid])
        own_src = src_by_trial.get(tid, 0.0)
        epochs_s = sum(r[M.EPOCH_S] for r in res)
        test = sum(r.get(M.TEST_S, 0.0) for r in res)
        tti = [r["time_this_iter_s"] for r in res]
        per_epoch = sum(t - r[M.EPOCH_S] - r.get(M.TEST_S, 0.0) for t, r in zip(tti[1:], res[1:]))
        setup = (tti[0] - res[0][M.EPOCH_S] - res[0].get(M.TEST_S, 0.0) - own_src) if res else 0.0
        lifetime = end_t - tl.start[tid]
        trials.append({
            "trial_id": tid, "cell": (res[0].get("config") or {}).get(M.CELL) if res else None,
            "start": tl.start[tid], "end": end_t, "lifetime_s": lifetime,
            "epochs": len(res), "epochs_s": epochs_s, "source_s": own_src, "test_eval_s": test,
            "work_s": epochs_s + own_src + test, "setup_s": setup, "per_epoch_s": per_epoch,
            "round_trips_s": lifetime - sum(tti),
            "pid": res[0].get("pid") if res else None,
            "worker_rss_mib": res[-1].get(M.WORKER_RSS_MIB) if res else None,
            "status": tl.status.get(tid, "?"),
        })

    # gaps: each occupant (trial or source task) that starts takes the slot free the longest
    occupants = [("trial", t["start"], t["end"], t) for t in trials] + \
                [("source", r["started_at"], r["ended_at"], r) for r in tasks if "started_at" in r]
    free = [start] * slots
    heapq.heapify(free)
    gaps = {"trial": 0.0, "source": 0.0}
    events = sorted([(s0, 1, kind, o) for kind, s0, _, o in occupants] +
                    [(e0, 0, kind, o) for kind, _, e0, o in occupants], key=lambda e: (e[0], e[1]))
    for when, is_start, kind, o in events:
        if is_start:
            freed = heapq.heappop(free) if free else when  # (more occupants than slots: none)
            o["launch_s"] = max(0.0, when - freed)
            gaps[kind] += o["launch_s"]
        else:
            heapq.heappush(free, when)
    tail = sum(max(0.0, end - f) for f in free)

    src_task_train = sum(r.get("train_s", 0.0) for r in tasks)
    comp = {
        "source_start": gaps["source"],
        "source_rest": sum(r["ended_at"] - r["started_at"] - r.get("train_s", 0.0)
                           for r in tasks if "started_at" in r),
        "launch": gaps["trial"],
        "setup": sum(t["setup_s"] for t in trials),
        "per_epoch": sum(t["per_epoch_s"] for t in trials),
        "round_trips": sum(t["round_trips_s"] for t in trials),
        "tail": tail,
    }
    epochs_s = sum(t["epochs_s"] for t in trials)
    test_s = sum(t["test_eval_s"] for t in trials)
    src_total = src_task_train + sum(src_by_trial.values())
    held = slots * wall
    work = epochs_s + test_s + src_total
    return {
        "dir": str(sdir), "warm": warm, "slots": slots, "trials": len(trials),
        "completed": summary.get("completed"), "stopped": summary.get("stopped"),
        "errored": summary.get("errored"),
        "wall_s": wall, "fit_wall_s": end - clock["fit_start"],
        "fit_start_after_s": clock["fit_start"] - start,
        "sources_done_after_s": max((r["ended_at"] for r in tasks if "ended_at" in r),
                                    default=start) - start,
        "summary_wall_s": summary["wall_s"], "held_s": held,
        "epochs_s": epochs_s, "source_train_s": src_total, "sources": len(infos),
        "source_trainings": sum(1 for i in infos if i.get("train_s") is not None),
        "test_eval_s": test_s, "work_s": work,
        "overhead_s": held - work, "components": comp,
        "unaccounted_s": held - work - sum(comp.values()),  # ~0 by construction (rounding)
        "workers": len({t["pid"] for t in trials}),
        "max_worker_rss_mib": max((t["worker_rss_mib"] or 0.0) for t in trials) if trials else 0.0,
        "experiment_start_to_first_trial_s": (min(t["start"] for t in trials) - clock["fit_start"])
        if trials else float("nan"),
        "per_trial": trials,
    }


def row_printer(runs: dict[str, dict], indent: str = "   "):
    """``row(label, f, fmt)``: one table row, ``f(run)`` formatted per run, side by side."""
    def row(label, f, fmt="{:>12.1f}"):
        print(f"{indent}{label:<36}" + "".join(fmt.format(f(r)) for r in runs.values()))
    print(f"{indent}{'':<36}" + "".join(f"{n:>12}" for n in runs))
    return row


def print_common_rows(row) -> None:
    """The rows both benchmarks print: wall, phases, work, source trainings, workers."""
    row("study wall (s)", lambda r: r["wall_s"])
    row("  Tuner.fit starts after (s)", lambda r: r["fit_start_after_s"])
    row("  source models done after (s)", lambda r: r["sources_done_after_s"])
    row("work: sum epoch_s (s)", lambda r: r["epochs_s"])
    row("work: sum test_s (s)", lambda r: r["test_eval_s"])
    row("work: source train_s (s)", lambda r: r["source_train_s"])
    row("source models trained", lambda r: r["source_trainings"], "{:>12d}")
    row("worker processes", lambda r: r["workers"], "{:>12d}")
    row("max worker RSS (MiB)", lambda r: r["max_worker_rss_mib"], "{:>12.0f}")


def print_components(rows: dict[str, dict], per: str = "trial", indent: str = "   "):
    """Side-by-side component table, in seconds per trial (rows: label -> account())."""
    names = list(rows)
    print(f"{indent}{'component (s per ' + per + ')':<36}" + "".join(f"{n:>12}" for n in names))
    for label, k in COMPONENTS:
        print(f"{indent}{label:<36}" + "".join(
            f"{r['components'][k] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'= overhead (held - work)':<36}" + "".join(
        f"{r['overhead_s'] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'  (unaccounted, rounding)':<36}" + "".join(
        f"{r['unaccounted_s'] / r['trials']:>12.3f}" for r in rows.values()))


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
