"""Where a real study's time goes, read from what the study writes, accounted per CPU slot.
Shared by ``tune_overhead.py`` (part 1) and ``utilization.py`` (benchmarks/ is not a package:
the scripts import this module from their own directory). Nothing in ``study`` or Tune is
wrapped or patched: ``timed_study`` calls ``study.runner.run_study(spec, log, callbacks=[...])``
with one public Tune callback and then reads the study directory.

What is read:

* ``<study>/trials.jsonl`` (the study's record, ``study.core.record``): every trial's
  ``start`` (Tune's ``on_trial_start``: its actor is up, new or reused), ``result`` (one per
  reported epoch, with the trainable's own ``epoch_s`` and, in a completed trial's last epoch,
  ``test_s``) and ``end`` events, each with the driver's wall-clock ``t``, and the ``study``
  event written when Tune returned;
* ``<study>/summary.json``: ``wall_s``, run_study's own clock from just before the source models
  are submitted to just after Tune returned (its ``study`` event). The study holds its
  ``slots`` from **start** = that event's ``t`` - ``wall_s`` (summary rounds to 0.1 s, so the
  start is known to +-0.05 s) to **end** = that event's ``t``;
* ``<study>/sources/<key>/info.json``: ``train_s`` (the source model's epochs + its validation
  and test evaluation, measured by the source task) and the file's modification time (written
  by the source task right after ``model.pt``, the last thing it does);
* ``TuneClock`` (a ``ray.tune.Callback`` passed through ``run_study``): when Tune's experiment
  started (``setup``) and ended (``on_experiment_end``);
* ``<study>/provenance.json``: the code version the study ran (``git describe``);
* each trial folder's ``result.json`` (Tune's): the worker ``pid`` and ``worker_rss_mib`` (how
  many worker processes served the trials, and their memory).

**Source tasks: approximated.** The study writes no start or end time of a source task
(``train_source_task`` returns ``started_at`` / ``ended_at`` to the driver, which keeps them in
memory only). A source task is counted as occupying a slot from ``mtime(info.json) - train_s``
to ``mtime(info.json)``: its training and evaluation, shifted later by the time ``model.pt``
takes to save. Everything else the task spends in its slot (Ray scheduling, worker process
start + imports, the study data from the object store, data to the device, model build, FLOP
probe, saving) falls into the gap before that interval: the component "source task outside
training". Held and work, so the overhead and its total, are exact; only how the source task's
own overhead is split from the next occupant's launch gap is estimated.

Work is what the trials and source tasks measure themselves: every reported epoch's ``epoch_s``
(training + validation of that epoch), every completed trial's ``test_s`` and every source
model's ``train_s``. Held slot-seconds (``slots`` x wall) minus work split, exactly, into

  source task outside training  slot-seconds from a slot becoming free to a source task's
                     (est.)     training (see above)
  launch gaps        slot-seconds from a slot becoming free (the study's start, a trial's or
                     source task's end) to the next trial's ``start`` event: Tune's experiment
                     start-up (first trial), scheduling, actor start (a new worker process) or
                     reuse (``reset_config``), the searcher, waiting for a source model
  setup              per trial: ``start`` -> its first ``result`` minus that result's epoch_s +
                     test_s: the trainable before epoch 1 (data from the object store, model
                     build / source model load, FLOP probe, data to the device), epoch 1's
                     checkpoint + report and its hand-off to the driver
  per later report   per trial: each later ``result`` minus the one before, minus its epoch_s +
                     test_s: checkpoint save + persist + report + hand-off
  stop               per trial: its last ``result`` -> its ``end`` event: the driver processing
                     the last result and stopping the trial (a trial open when Tune returned
                     ends at the ``study`` event)
  tail               slot-seconds from each slot's last occupant's end to the study's end

Slot assignment is by time (an occupant that starts takes the slot that became free earliest);
with 1 slot it is exact, with more the split between gaps and tail is an attribution, their sum
is exact (held slot-seconds - the occupants' lifetimes). Only the run up to the record's first
``study`` event is accounted (a resumed study appends more).
"""
from __future__ import annotations

import heapq
import json
import statistics
import time
from pathlib import Path

from ray.tune import Callback

MED = statistics.median


class TuneClock(Callback):
    """When Tune's experiment started (``setup``: as ``Tuner.fit`` sets it up) and ended."""

    def __init__(self):
        self.setup_t = None
        self.end_t = None

    def setup(self, **info):
        self.setup_t = time.time()

    def on_experiment_end(self, trials, **info):
        self.end_t = time.time()


def stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a CI timeout) ends a benchmark like Ctrl-C does: as SystemExit, so its
    ``finally`` blocks and Ray's exit handler stop the clusters it started."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def timed_study(spec, slots: int, log=print) -> dict:
    """Run ``spec`` with ``study.runner.run_study`` and account it (``account``); also
    ``run_study_s``: the whole call, data preparation and Ray start included."""
    from study.runner import run_study

    clock = TuneClock()
    t0 = time.time()
    summary = run_study(spec, log=log, callbacks=[clock])
    a = account(summary, clock, slots)
    a["run_study_s"] = time.time() - t0
    return a


def record_trials(sdir: Path) -> tuple[list[dict], float | None]:
    """The trials of ``<sdir>/trials.jsonl`` up to its first ``study`` event, in start order:
    {trial_id, cell, start, end, results: [(t, epoch_s, test_s)], status}; and that event's t."""
    from study.core import metrics as M
    from study.recorder import read_record

    trials: dict[str, dict] = {}
    study_t = None
    for e in read_record(str(sdir)):
        kind, tid = e.get("event"), e.get("trial_id")
        if kind == "study":
            study_t = e["t"]
            break
        if kind == "start":
            trials.setdefault(tid, {"trial_id": tid, "cell": e.get("cell"), "start": e["t"],
                                    "end": None, "results": [], "status": "?"})
        elif kind == "result" and tid in trials:
            trials[tid]["results"].append((e["t"], float(e.get(M.EPOCH_S) or 0.0),
                                           float(e.get(M.TEST_S) or 0.0)))
        elif kind == "end" and tid in trials:
            trials[tid].update(end=e["t"], status=e.get("status", "?"))
    return sorted(trials.values(), key=lambda t: t["start"]), study_t


def worker_of(sdir: Path, trial_id: str) -> tuple:
    """(pid, worker_rss_mib) of a trial's last result in Tune's ``result.json`` (None if none)."""
    from study.core import metrics as M

    for f in sdir.glob(f"{trial_id}_*/result.json"):
        lines = [x for x in f.read_text().splitlines() if x.strip()]
        if lines:
            r = json.loads(lines[-1])
            return r.get("pid"), r.get(M.WORKER_RSS_MIB)
    return None, None


def source_tasks(sdir: Path) -> list[dict]:
    """Per trained source model: key, train_s and the estimated interval of its training
    (module docstring); keys that failed (no info.json) are left out."""
    from study.core.layout import SOURCES_DIR

    out = []
    for f in sorted((sdir / SOURCES_DIR).glob("*/info.json")):
        info = json.loads(f.read_text())
        end, train = f.stat().st_mtime, float(info.get("train_s") or 0.0)
        out.append({"key": f.parent.name, "train_s": train, "start": end - train, "end": end})
    return out


COMPONENTS = [  # (label, key), in the order printed; they sum to held - work
    ("source task outside training (est.)", "source_outside"),
    ("launch gaps (sched, actor, wait)", "launch"),
    ("setup: start -> 1st result", "setup"),
    ("per later report (ckpt + report)", "per_epoch"),
    ("stop: last result -> end", "stop"),
    ("tail (idle slots, wrap-up)", "tail"),
]


def account(summary: dict, clock: TuneClock | None, slots: int) -> dict:
    """The slot accounting of one study run (see the module docstring). Slot-seconds
    throughout. ``clock``: the run's ``TuneClock`` (None: Tune's start is not reported)."""
    from study.core.layout import PROVENANCE_FILE

    sdir = Path(summary["results"])
    recorded, study_t = record_trials(sdir)
    if study_t is None:
        raise ValueError(f"{sdir}: trials.jsonl has no 'study' event (did Tune return?)")
    end = study_t
    start = end - summary["wall_s"]
    sources = source_tasks(sdir)

    trials = []
    for r in recorded:
        res = r["results"]
        t_end = r["end"] if r["end"] is not None else end
        epochs_s = sum(x[1] for x in res)
        test = sum(x[2] for x in res)
        if res:
            setup = res[0][0] - r["start"] - res[0][1] - res[0][2]
            per_epoch = sum(b[0] - a[0] - b[1] - b[2] for a, b in zip(res, res[1:]))
            stop = t_end - res[-1][0]
        else:  # nothing reported: its whole life was before epoch 1
            setup, per_epoch, stop = t_end - r["start"], 0.0, 0.0
        pid, rss = worker_of(sdir, r["trial_id"])
        trials.append({
            "trial_id": r["trial_id"], "cell": r["cell"], "status": r["status"],
            "start": r["start"], "end": t_end, "lifetime_s": t_end - r["start"],
            "epochs": len(res), "epochs_s": epochs_s, "test_eval_s": test,
            "work_s": epochs_s + test, "setup_s": setup, "per_epoch_s": per_epoch,
            "stop_s": stop, "pid": pid, "worker_rss_mib": rss,
        })

    # gaps: each occupant (trial or source task) that starts takes the slot free the longest
    occupants = [("trial", t["start"], t["end"], t) for t in trials] + \
                [("source", s["start"], s["end"], s) for s in sources]
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

    comp = {
        "source_outside": gaps["source"],
        "launch": gaps["trial"],
        "setup": sum(t["setup_s"] for t in trials),
        "per_epoch": sum(t["per_epoch_s"] for t in trials),
        "stop": sum(t["stop_s"] for t in trials),
        "tail": tail,
    }
    epochs_s = sum(t["epochs_s"] for t in trials)
    test_s = sum(t["test_eval_s"] for t in trials)
    src_total = sum(s["train_s"] for s in sources)
    wall = end - start
    held = slots * wall
    work = epochs_s + test_s + src_total
    tune_start = clock.setup_t if clock is not None and clock.setup_t else float("nan")
    first = min((t["start"] for t in trials), default=float("nan"))
    prov = sdir / PROVENANCE_FILE
    version = json.loads(prov.read_text()).get("code_version") if prov.is_file() else None
    return {
        "dir": str(sdir), "slots": slots, "trials": len(trials),
        "code_version": version,
        "completed": summary.get("completed"), "stopped": summary.get("stopped"),
        "errored": summary.get("errored"),
        "start_t": start, "end_t": end, "wall_s": wall, "held_s": held,
        "fit_start_after_s": tune_start - start,
        "sources_done_after_s": max((s["end"] for s in sources), default=start) - start,
        "epochs_s": epochs_s, "source_train_s": src_total, "sources": len(sources),
        "test_eval_s": test_s, "work_s": work,
        "overhead_s": held - work, "components": comp,
        "unaccounted_s": held - work - sum(comp.values()),  # ~0 by construction (rounding)
        "workers": len({t["pid"] for t in trials if t["pid"] is not None}),
        "max_worker_rss_mib": max((t["worker_rss_mib"] or 0.0) for t in trials) if trials else 0.0,
        "experiment_start_to_first_trial_s": first - tune_start,
        "per_trial": trials, "source_tasks": sources,
    }


def row_printer(runs: dict[str, dict], indent: str = "   "):
    """``row(label, f, fmt)``: one table row, ``f(run)`` formatted per run, side by side."""
    def row(label, f, fmt="{:>12.1f}"):
        print(f"{indent}{label:<36}" + "".join(fmt.format(f(r)) for r in runs.values()))
    print(f"{indent}{'':<36}" + "".join(f"{n:>12}" for n in runs))
    return row


def print_common_rows(row) -> None:
    """The rows both benchmarks print: wall, phases, work, source models, workers."""
    row("study wall (s)", lambda r: r["wall_s"])
    row("  Tune's experiment starts after (s)", lambda r: r["fit_start_after_s"])
    row("  source models done after (s, est.)", lambda r: r["sources_done_after_s"])
    row("work: sum epoch_s (s)", lambda r: r["epochs_s"])
    row("work: sum test_s (s)", lambda r: r["test_eval_s"])
    row("work: source train_s (s)", lambda r: r["source_train_s"])
    row("source models trained", lambda r: r["sources"], "{:>12d}")
    row("worker processes", lambda r: r["workers"], "{:>12d}")
    row("max worker RSS (MiB)", lambda r: r["max_worker_rss_mib"], "{:>12.0f}")


def print_components(rows: dict[str, dict], per: str = "trial", indent: str = "   "):
    """Side-by-side component table, in seconds per trial (rows: label -> account())."""
    print(f"{indent}{'component (s per ' + per + ')':<36}" + "".join(f"{n:>12}" for n in rows))
    for label, k in COMPONENTS:
        print(f"{indent}{label:<36}" + "".join(
            f"{r['components'][k] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'= overhead (held - work)':<36}" + "".join(
        f"{r['overhead_s'] / r['trials']:>12.2f}" for r in rows.values()))
    print(f"{indent}{'  (unaccounted, rounding)':<36}" + "".join(
        f"{r['unaccounted_s'] / r['trials']:>12.3f}" for r in rows.values()))
