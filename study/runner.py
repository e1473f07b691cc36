"""Running and resuming studies on Ray Tune (embedded local Ray, or a cluster via RAY_ADDRESS).

A study directory (``<storage>/<name>``) holds Tune's experiment (one folder per trial with
``result.json`` and the last checkpoint) plus:

  study.yaml        the resolved spec (what ``study resume`` reruns)
  provenance.json   code version, package versions, data fingerprint, seed, command, date
  sources/<key>/    shared source models (model.pt, info.json, users.txt)
  summary.json      trial counts and the best trial, written when the run ends
"""
from __future__ import annotations

import json
import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from study.core import metrics as M
from study.core.design import StudyDesign, design_of
from study.core.layout import SOURCES_DIR, STUDY_FILE, SUMMARY_FILE, is_uri, read_text, write_atomic
from study.core.spec import Spec, load_spec_dict, resolve_classes
from study.core.status import COMPLETED, ERRORED, INTERRUPTED, STOPPED
from study.provenance import write_provenance
from study.sources import SourceModels, sources_dir


# Checkpoints Tune keeps per trial. Tune saves the whole experiment state (every trial's) each
# time a trial has checkpointed num_to_keep times since the last save: with 1, at every
# checkpoint, O(trials) work each time (at 672 trials and 32 slots the driver spent 1.10 s of CPU
# per trial and the study took 2.4x its ideal time; benchmarks/scale.py). With 2 the saved state
# can lag a trial by a checkpoint: a restored trial then resumes from the newest checkpoint on
# storage and reports the results the snapshot missed again, untrained (trainables/resume.py),
# so a trial that had finished is not run again; a trial the searcher created after the last
# save is created again and counted once (study.core.record.recreated).
CHECKPOINTS_KEPT = 2


class StudyExistsError(RuntimeError):
    pass


# The Ray minor version this code was tested with (pyproject pins it; tests/test_versions.py
# fails on another): study resume, the rung-state callback and the checkpoint repair depend on
# Tune behaviour that is not a stable API.
TESTED_RAY = "2.60"


def ray_version_warning() -> str | None:
    v = _ray_version()
    if v.split(".")[:2] != TESTED_RAY.split("."):
        return (f"warning: Ray {v} is not the version this study service was tested with "
                f"({TESTED_RAY}.x); resume and early stopping may behave differently")
    return None


def study_dir(spec: Spec) -> str:
    base = spec.storage
    if base.startswith("file://"):
        base = base[len("file://"):]
    if is_uri(base):
        return base.rstrip("/") + "/" + spec.name
    return str(Path(base).expanduser().resolve() / spec.name)


# ----------------------------------------------------------------------------- ray

def init_ray(log=print) -> None:
    """Connect to RAY_ADDRESS if set, else start an embedded Ray bound to 127.0.0.1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Checkpoints every epoch make Tune warn about snapshot frequency (num_to_keep forces them).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if (w := ray_version_warning()):
        log(w)
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log(f"connecting to Ray cluster at {address}")
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return
    # Without this, a local Ray binds to the machine's network address (see README).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # address="local": always start a new embedded Ray. A plain ray.init() would first read
    # <Ray temp dir>/ray_current_cluster, which a killed `ray start` cluster leaves behind, and
    # hang trying to join that dead cluster.
    ray.init(address="local", include_dashboard=False, logging_level="WARNING",
             log_to_driver=True, configure_logging=True)


# ----------------------------------------------------------------------------- run / resume

def prepare_data(spec: Spec, log=print):
    """Decode (or read from the cache) the study's data and build the shared StudyData."""
    from trainables.data import load_dataset
    from trainables.trainable import build_study_data

    ds = load_dataset(spec.data.root, cache_dir=spec.data.cache_dir,
                      image_size=spec.data.image_size, progress=log)
    splits = resolve_classes(spec, ds.classes)
    check_weights(spec)
    return build_study_data(ds, spec, splits)


def check_weights(spec: Spec) -> None:
    """Fail before any trial starts when init 'imagenet' has no weights to load (this also
    fills torchvision's TORCH_HOME cache once, instead of once per trial)."""
    from trainables.backbones import REGISTRY, imagenet_state_dict

    if "imagenet" in spec.inits:
        for b in spec.backbones:
            if REGISTRY[b.name].imagenet_weights:
                imagenet_state_dict(b.name, spec.weights_file(b.name))


def _trainable(spec: Spec, data, sdir: str):
    from ray import tune

    if getattr(data, "sim", None) is not None:  # a rehearsal (trainables.simulate)
        from trainables.simulate import simulated_trainable
        fn = tune.with_parameters(simulated_trainable, spec_dict=spec.to_dict(), sim=data.sim,
                                  sources_dir=str(sources_dir(spec, sdir)))
    else:
        from trainables.trainable import transfer_trainable
        fn = tune.with_parameters(transfer_trainable, spec_dict=spec.to_dict(), data=data,
                                  sources_dir=str(sources_dir(spec, sdir)),
                                  sources_uri=f"{sdir}/{SOURCES_DIR}" if is_uri(sdir) else None)
    res = {"cpu": spec.resources.cpus}
    if spec.resources.gpu:
        res["gpu"] = spec.resources.gpu
    return tune.with_resources(fn, res)


def _scheduler(design: StudyDesign):
    """Early stopping inside a cell (mode best: a split), never across (study.scheduler)."""
    from ray.tune.schedulers import FIFOScheduler

    from study.scheduler import CellScheduler

    s = design.spec.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return CellScheduler(rule=s.type, group_key=design.group_key, group_sizes=design.group_sizes,
                         grace=s.grace_period, rf=s.reduction_factor, max_t=design.target_epochs)


def trial_dirname(trial) -> str:
    c = trial.config
    return (f"{trial.trial_id}_{c.get(M.SPLIT)}_{c.get(M.BACKBONE)}_{c.get(M.INIT)}"
            f"_d{c.get(M.FROZEN_DEPTH)}")


def prepare_simulation(spec: Spec, simulate: dict, log=print):
    """A rehearsal's stand-in for the data (``trainables.simulate.SimData``): the class names
    (CIFAR-10's when data.root is null, else the data's), the splits, and the durations from
    the plan's FLOPs at ``simulate["flops_per_s"]`` (None: probed) / ``simulate["compression"]``."""
    from study.core.spec import CIFAR10_CLASSES
    from study.rehearsal import SimData, build_simulation

    per_class = test_per_class = None
    if spec.data.root is None:
        classes = list(CIFAR10_CLASSES)
    else:
        from trainables.data import load_dataset
        ds = load_dataset(spec.data.root, cache_dir=spec.data.cache_dir,
                          image_size=spec.data.image_size, progress=log)
        classes = list(ds.classes)
        per_class = int(min(np.bincount(ds.train_y))) if len(ds.train_y) else None
        test_per_class = int(min(np.bincount(ds.test_y))) if len(ds.test_y) else None
    splits = resolve_classes(spec, classes)
    sim = build_simulation(spec, classes, splits, flops_per_s=simulate.get("flops_per_s"),
                           compression=simulate.get("compression", 1.0), per_class=per_class,
                           test_per_class=test_per_class)
    sim.update(classes=classes, splits={k: [list(v[0]), list(v[1])] for k, v in splits.items()})
    return SimData(classes, splits, sim)


def run_study(spec: Spec, log=print, callbacks: list | None = None,
              simulate: dict | None = None) -> dict:
    """Run a study to the end; returns the summary (also written to summary.json).
    ``callbacks``: extra Tune callbacks (e.g. to watch or disturb a study in tests).
    ``simulate``: a rehearsal ({"flops_per_s": F or None, "compression": C}): the cost-model
    trainable and source tasks of ``trainables.simulate`` instead of training."""
    from study.trackers import check_trackers

    sdir = study_dir(spec)
    if not is_uri(sdir) and Path(sdir).exists() and any(Path(sdir).iterdir()):
        raise StudyExistsError(f"study directory {sdir} already exists; continue it with "
                               f"`study resume {sdir}`, or choose another --name/--storage")
    check_trackers(spec.loggers)  # a missing tracker package fails before anything is written
    # bad data / unknown classes fail before anything is written
    data = prepare_simulation(spec, simulate, log) if simulate else prepare_data(spec, log)
    init_ray(log)
    if not is_uri(sdir):
        Path(sdir).mkdir(parents=True, exist_ok=True)
    write_atomic(f"{sdir}/{STUDY_FILE}", spec.to_yaml())
    if simulate:
        from trainables.simulate import SIMULATION_FILE
        write_atomic(f"{sdir}/{SIMULATION_FILE}", json.dumps(data.sim, indent=1))
        rate = data.sim["flops_per_s"]
        rate = f"{rate:.3g} FLOP/s" if rate else "the probed throughput"
        log(f"SIMULATED study (a rehearsal: no training; trainables/simulate.py): epochs and "
            f"source models last their planned FLOPs / {rate} / {data.sim['compression']:g}")
    write_provenance(sdir, spec, data, {"simulated": _sim_meta(data)} if simulate else None)
    return _execute(spec, data, sdir, log, callbacks, resume=False)


def resume_study(path: str, log=print) -> dict:
    """Continue an interrupted study: finished trials are kept, unfinished ones resume from
    their last checkpoint, errored ones are retried; the searcher's state (with racing's
    seeds), the rung records (``study.scheduler.RungState``) and the shared source models are
    reused. The same orchestration as ``run_study`` (``_execute``)."""
    from ray import tune

    from study.state import prepare_resume

    from study.rehearsal import SimData
    from trainables.simulate import read_simulation

    sdir = normalize_study_path(path)
    spec = load_study_spec(sdir)
    sim = read_simulation(sdir)
    if sim is not None:  # a rehearsal continues as one, with the durations it started with
        data = SimData(sim["classes"], {k: (v[0], v[1]) for k, v in sim["splits"].items()}, sim)
    else:
        data = prepare_data(spec, log)
    init_ray(log)
    if not tune.Tuner.can_restore(sdir):
        raise StudyExistsError(f"{path}: no Tune experiment state to resume (it never started)")
    log(f"resuming study {spec.name!r} from {sdir}")
    from study.space import register_resumed

    register_resumed(spec.name, prepare_resume(sdir, log))
    try:
        return _execute(spec, data, sdir, log, None, resume=True)
    finally:
        register_resumed(spec.name, None)


def _execute(spec: Spec, data, sdir: str, log, callbacks, resume: bool) -> dict:
    """The one execution path of ``study run`` and ``study resume``: source models as Ray tasks
    alongside Tune (the searcher holds back a trial until its source model is trained), trials
    in reused workers, the study's record and progress as Tune callbacks."""
    from ray import tune

    from study.interrupt import InterruptWatch, StudyInterrupted, fit_watched
    from study.progress import Progress
    from study.recorder import Recorder, record_study_end
    from study.scheduler import RungState
    from study.plan import schedule_costs
    from study.space import StudySearcher, register_ready
    from study.state import StateBackup
    from study.trackers import tracker_callbacks

    # Tune's automatic loggers would add TensorBoard event files to every trial, flushed with
    # fsync on every result: a third of the driver's time at 168 trials (benchmarks/scale.py).
    # TensorBoard is a tracker one asks for (loggers: [tensorboard]); JSON and CSV stay.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    design = design_of(spec)
    counts = design.trial_counts()
    racing = (f" (racing: up to {counts['confirm_max']})" if design.racing else "")
    log(f"study {spec.name!r} (mode {design.mode}): {counts['cells']} cells, "
        f"{counts['tuning']} tuning + {counts['confirm']} confirmation trials{racing}, "
        f"{spec.search.algorithm} sampling, {spec.scheduler.type} early stopping per "
        f"{'cell' if design.mode == 'compare' else 'split'}, up to "
        f"{spec.search.max_concurrent} at once; results in {sdir}")
    t0 = time.time()
    simulated = getattr(data, "sim", None) is not None
    # The order of work: longest chains first (source models, then cells; study.plan).
    costs = schedule_costs(design, data.sim if simulated else None)
    # finished models are kept; failed ones retried
    sources = SourceModels(design, data, sdir, log, costs=costs)
    trainable = _trainable(spec, data, sdir)
    # The searcher asks the source models before handing out a trial. The hook is driver-side
    # state, not saved with the searcher: registered here for a new and a restored searcher alike.
    register_ready(spec.name, sources.ready)
    if resume:
        # The searcher, the scheduler and the callbacks (record, progress, trackers, RungState
        # with the rung records) come back from the experiment state, as the run created them.
        tuner = tune.Tuner.restore(sdir, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        scheduler = _scheduler(design)
        cbs = [InterruptWatch(), Progress(spec.target_epochs, counts["cells"]),
               Recorder(sdir, spec.target_epochs),
               JsonLoggerCallback(), CSVLoggerCallback(),
               *tracker_callbacks(spec.loggers, sdir, spec.name),
               *([RungState(scheduler)] if spec.scheduler.type != "fifo" else []),
               *([StateBackup(sdir)] if not is_uri(sdir) else []), *(callbacks or [])]
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=StudySearcher(spec.to_dict(), costs=costs["cells"]),
                scheduler=scheduler,
                num_samples=counts["total_max"], max_concurrent_trials=spec.search.max_concurrent,
                time_budget_s=spec.time_budget_s, reuse_actors=True,
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=str(Path(sdir).parent) if not is_uri(sdir) else spec.storage,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                callbacks=cbs, verbose=0))
    try:
        interrupted = fit_watched(tuner)  # Ctrl-C: Tune saves the experiment and returns
    finally:
        sources.poll()  # every source a trial needed has finished; any other one is not needed now
        if sources.pending:  # e.g. time budget spent, or every trial of its cells errored
            log(f"{len(sources.pending)} source model(s) no trial needs any more: cancelled")
        sources.cancel()
    record_study_end(sdir, interrupted)
    summary = _finish(design, sdir, time.time() - t0, log, interrupted, simulated)
    if interrupted:
        raise StudyInterrupted(sdir, summary)
    return summary


def _sim_meta(data) -> dict:
    """What provenance.json says about a rehearsal."""
    sim = data.sim
    return {"model": f"trainables/simulate.py v{sim['version']}",
            "flops_per_s": sim["flops_per_s"], "throughput": sim["throughput"],
            "compression": sim["compression"],
            "note": "no training: times from the plan's FLOPs, accuracies from a cost model"}


def normalize_study_path(path: str) -> str:
    """A study directory as Tune wants it: an absolute local path, or a URI (s3://, gs://);
    file:// URIs become plain paths."""
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path.rstrip("/") if is_uri(path) else str(Path(path).expanduser().resolve())


def load_study_spec(path: str) -> Spec:
    """The resolved spec a study was started with (``<study dir>/study.yaml``, local or URI)."""
    import yaml

    from study.core.spec import SpecError

    f = f"{normalize_study_path(path)}/{STUDY_FILE}"
    try:
        text = read_text(f)
    except (OSError, ValueError) as e:  # missing file, bad URI, unreachable bucket
        raise SpecError([f"study directory {str(path)!r}: cannot read {STUDY_FILE} "
                         f"(not a study directory?): {e}"]) from e
    return load_spec_dict(yaml.safe_load(text), source=f)


def _ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "?"


def _finish(design: StudyDesign, sdir: str, wall: float, log, interrupted: bool = False,
            simulated: bool = False) -> dict:
    """summary.json from the study's record (``trials.jsonl``), statuses by the one rule."""
    from study.core.record import fold, recreated
    from study.recorder import read_record

    spec = design.spec
    events = read_record(sdir)
    table = fold(events, spec.target_epochs)
    rows = []
    for tid, t in table.items():
        cfg = t.get("config") or {}
        rows.append({"trial_id": tid, "status": t["status"],
                     **{k: cfg.get(k) for k in M.CONFIG_KEYS},
                     M.EPOCH: t["epoch"], M.VAL_ACC: t.get(M.VAL_ACC), M.TEST_ACC: t.get(M.TEST_ACC),
                     M.TARGET_FLOPS: t.get(M.TARGET_FLOPS), M.SOURCE_FLOPS: t.get(M.SOURCE_FLOPS),
                     "error": t.get("error")})
    completed = [x for x in rows if x["status"] == COMPLETED]
    per_cell = {c.id: sum(x[M.CELL] == c.id for x in completed) for c in design.cells}
    uncovered = [c for c, n in per_cell.items() if n == 0]
    n = {s: sum(x["status"] == s for x in rows) for s in (COMPLETED, STOPPED, ERRORED, INTERRUPTED)}
    summary = {
        "study": spec.name, "results": sdir, "wall_s": round(wall, 1), "simulated": simulated,
        "state": "interrupted" if interrupted else "finished", "trials": len(rows), **n,
        # runs created twice (a stop before Tune's next snapshot): the earlier ids, left out
        "recreated": recreated(events),
        "cells": len(per_cell), "cells_completed": len(per_cell) - len(uncovered),
        "completed_per_cell": per_cell, "trial_rows": rows,
    }
    write_atomic(f"{sdir}/{SUMMARY_FILE}", json.dumps(summary, indent=1, default=str))
    log(f"{'SIMULATED study ' if simulated else ''}done in {wall:.0f}s: {summary['trials']} trials, {n[COMPLETED]} completed, "
        f"{n[STOPPED]} stopped early, {n[ERRORED]} errored"
        f"{f', {n[INTERRUPTED]} interrupted' if n[INTERRUPTED] else ''}; "
        f"{summary['cells_completed']}/{summary['cells']} cells have a completed run")
    if uncovered:
        log(f"cells without a completed run: {', '.join(uncovered)}")
    if not interrupted:
        log(f"results: {sdir} (the answer: `study report {sdir}`)")
    return summary
