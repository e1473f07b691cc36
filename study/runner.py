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
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from study.core.spec import Spec, load_spec, load_spec_dict, resolve_classes
from study.core import metrics as M
from study.core.identity import source_job

from study.core.layout import (COMPLETED, ERRORED, PROVENANCE_FILE, SOURCES_DIR, STOPPED,  # noqa: F401
                          STUDY_FILE, SUMMARY_FILE, is_uri, read_text, write_atomic)


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


def sources_dir(spec: Spec, sdir: str | None = None) -> Path:
    """Shared source models. Local storage: inside the study. URI storage: a node-local cache
    (file locks need a POSIX filesystem), keyed the same way."""
    d = sdir or study_dir(spec)
    if is_uri(d):
        from trainables.data import default_cache_dir
        return default_cache_dir() / "sources" / spec.name
    return Path(d) / SOURCES_DIR


# ----------------------------------------------------------------------------- ray

def init_ray(log=print) -> None:
    """Connect to RAY_ADDRESS if set, else start an embedded Ray bound to 127.0.0.1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # One checkpoint per epoch with num_to_keep=1 makes Tune warn about snapshot frequency.
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
    ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=True,
             configure_logging=True)


# ----------------------------------------------------------------------------- provenance

def code_version() -> str:
    """git describe of this checkout; a submitted job carries its submitter's (the job runs from a
    copy of the packages without .git)."""
    if os.environ.get("STUDY_CODE_VERSION"):
        return os.environ["STUDY_CODE_VERSION"]
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode == 0 and rev.stdout.strip():
            return f"git:{rev.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    from study import __version__
    return f"tl-study {__version__}"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow", "pyyaml"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(path: str, spec: Spec, data, extra: dict | None = None) -> dict:
    prov = {
        "study": spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "packages": package_versions(),
        "seed": spec.search.seed,
        "data": {"fingerprint": data.fingerprint, "classes": data.classes,
                 "origin": data.origin,
                 "train_images": int(len(data.train_idx)), "val_images": int(len(data.val_idx)),
                 "test_images": int(len(data.test_idx)), "mean": data.mean, "std": data.std,
                 "splits": {k: {"source": [data.classes[i] for i in v[0]],
                                "target": [data.classes[i] for i in v[1]]}
                            for k, v in data.splits.items()}},
        "command": sys.argv,
        "host": platform.node(),
    }
    prov.update(extra or {})
    _write_text(f"{path}/{PROVENANCE_FILE}", json.dumps(prov, indent=1))
    return prov


def _write_text(path, text: str) -> None:
    """Write a study file atomically (local rename, or one object PUT for a URI)."""
    write_atomic(path, text)


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


def _trainable(spec: Spec, data, sdir: str | None = None):
    from ray import tune

    from trainables.trainable import transfer_trainable

    fn = tune.with_parameters(transfer_trainable, spec_dict=spec.to_dict(), data=data,
                              sources_dir=str(sources_dir(spec, sdir)),
                              sources_uri=f"{sdir or study_dir(spec)}/{SOURCES_DIR}"
                              if is_uri(sdir or study_dir(spec)) else None)
    res = {"cpu": spec.resources.cpus}
    if spec.resources.gpu:
        res["gpu"] = spec.resources.gpu
    return tune.with_resources(fn, res)


def source_jobs(spec: Spec) -> list[tuple[str, str, str, int]]:
    """Every source model the study will need, known up front: (split, backbone, stem, seed) of
    each init-'source' cell, for every seed its trials use (mode compare: the tuning seed and
    each confirmation seed; mode best: the seed of each repeat). Tuning seed first, so those
    models are ready first. The trainable asks for the same job (``identity.source_job``)."""
    from study.cells import cells

    base = spec.search.seed
    if spec.search.mode == "compare":
        seeds = [base + i for i in range(spec.confirm.seeds + 1)]
    else:
        seeds = [base + r for r in range(spec.search.repeats)]
    out = []
    for sd in seeds:
        for c in cells(spec):
            job = (c.split, c.backbone, c.stem, sd)
            if c.needs_source and job not in out:
                out.append(job)
    return out


class SourceModels:
    """The study's source models, each trained as its own Ray task (the trial's resources), all
    submitted at once so they run in parallel across the cluster, alongside Tune: the searcher
    asks ``ready(config)`` and holds back a trial until its source model is trained, handing out
    trials that need none (init scratch / imagenet) or whose model is ready meanwhile. So no
    target trial ever holds a device while a source model it needs is trained, and the Tune
    start-up and first trials overlap the source training.

    A source model known only once a trial asks for it (mode best: the confirmation seeds of
    the best configuration) is submitted then, as a task like the others.

    Finished models are reused (resume); a model that fails is recorded
    (``sources/<key>/error.txt``) and fails only the trials of its cells (``ready`` is then
    true: the trial starts and reports the error)."""

    POLL_S = 0.2  # at most one ray.wait per this many seconds from ``ready`` (Tune calls often)

    def __init__(self, spec: Spec, data, sdir: str, log=print):
        import ray

        from trainables.trainable import train_source_task

        self.spec, self.log = spec, log
        self.jobs = source_jobs(spec)
        self.results: dict[tuple, dict] = {}  # job -> the task's status dict
        self.pending: dict = {}  # ObjectRef -> job
        self.t0 = time.time()
        self._last_poll = 0.0
        opts = {"num_cpus": spec.resources.cpus, "max_retries": spec.max_failures}
        if spec.resources.gpu:
            opts["num_gpus"] = spec.resources.gpu
        self._task = ray.remote(train_source_task).options(**opts)
        self._data, self._args = data, None
        self._dirs = (str(sources_dir(spec, sdir)), f"{sdir}/{SOURCES_DIR}" if is_uri(sdir) else None)
        if self.jobs:
            log(f"source models: {len(self.jobs)} (split x backbone x seed), each a Ray task with "
                f"{spec.resources.cpus:g} CPU"
                f"{f' + {spec.resources.gpu:g} GPU' if spec.resources.gpu else ''}"
                f"; trials that need none start meanwhile")
        for job in self.jobs:
            self._submit(job)

    def _submit(self, job: tuple) -> None:
        import ray

        if self._args is None:  # the study data goes to the object store once, when first needed
            self._args = (self.spec.to_dict(), ray.put(self._data))
        self.pending[self._task.remote(*self._args, *job, *self._dirs)] = job

    def poll(self, timeout: float | None = 0.0) -> None:
        """Collect the source tasks that have finished (waiting up to ``timeout`` s for one;
        None: until one finishes)."""
        import ray

        self._last_poll = time.time()
        if not self.pending:
            return
        done, _ = ray.wait(list(self.pending), num_returns=1 if timeout is None else len(self.pending),
                           timeout=timeout)
        for ref in done:
            job = self.pending.pop(ref)
            try:
                r = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task itself died, retries spent (node lost)
                r = self._task_died(job, e)
            self.results[job] = r
            what = (f"trained in {r['train_s']:.0f}s, val_acc {r['val_acc']:.3f}" if r["ok"] and
                    r["trained"] else "already trained" if r["ok"] else f"FAILED: {r['error']}")
            self.log(f"[{time.time() - self.t0:6.0f}s] source {len(self.results)}/{len(self.jobs)} "
                     f"{r['key']}: {what}")

    def _task_died(self, job: tuple, e: Exception) -> dict:
        """Record a source task that died (not a training error, which it records itself) as
        that key's ``error.txt``, so its cells' trials fail with the message, as for a training
        error."""
        from trainables.trainable import ERROR_FILE, source_key

        key = source_key(self.spec, self._data, *job)
        msg = f"source task died: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        (Path(self._dirs[0]) / key).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(self._dirs[0]) / key / ERROR_FILE, msg + "\n")
        return {"key": key, "ok": False, "error": msg}

    def ready(self, config: dict) -> bool:
        """True if this trial config needs no source model, or its model is trained (or failed)."""
        job = source_job(self.spec, config)
        if job is None or job in self.results:
            return True
        if job not in self.jobs:  # known only now (mode best: the best's confirmation seeds)
            self.jobs.append(job)
            self.log(f"source model {len(self.jobs)}: {'/'.join(map(str, job))} (needed now)")
            self._submit(job)
        if time.time() - self._last_poll >= self.POLL_S:
            self.poll()
        return job in self.results

    def wait(self) -> dict:
        """Block until every source task has finished; key -> the task's status dict."""
        while self.pending:
            self.poll(timeout=None)
        return {r["key"]: r for r in self.results.values()}

    def cancel(self) -> None:
        import ray

        for ref in self.pending:
            ray.cancel(ref, force=True)
        self.pending.clear()


def train_sources(spec: Spec, data, sdir: str, log=print) -> dict:
    """Train every source model of the study (``SourceModels``) and wait for all of them (the
    resume path; ``run_study`` runs them alongside Tune). Returns key -> the task's status."""
    return SourceModels(spec, data, sdir, log).wait()


def _scheduler(spec: Spec):
    """Early stopping inside a cell (mode best: a split), never across (study.scheduler)."""
    from ray.tune.schedulers import FIFOScheduler

    from study.cells import group_sizes
    from study.scheduler import CellScheduler

    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    return CellScheduler(rule=spec.scheduler.type,
                         group_key=M.CELL if spec.search.mode == "compare" else M.SPLIT,
                         group_sizes=group_sizes(spec), grace=spec.scheduler.grace_period,
                         rf=spec.scheduler.reduction_factor, max_t=spec.target_epochs)


def trial_dirname(trial) -> str:
    c = trial.config
    return (f"{trial.trial_id}_{c.get(M.SPLIT)}_{c.get(M.BACKBONE)}_{c.get(M.INIT)}"
            f"_d{c.get(M.FROZEN_DEPTH)}")


def run_study(spec: Spec, log=print, callbacks: list | None = None, warm: bool = True) -> dict:
    """Run a study to the end; returns the summary (also written to summary.json).
    ``callbacks``: extra Tune callbacks (e.g. to watch or disturb a study in tests).
    ``warm`` (default): source models are trained up front as their own Ray tasks and trials
    reuse their worker processes (Tune's ``reuse_actors``: imports, device data, FLOP probes
    and the CUDA context stay); False: the earlier path (a fresh worker per trial, each source
    model trained by the first trial that needs it), kept for the benchmarks' before/after."""
    from ray import tune

    from study.cells import trial_counts
    from study.progress import Progress
    from study.scheduler import RungState
    from study.space import StudySearcher
    from study.state import StateBackup
    from study.trackers import check_trackers, tracker_callbacks

    sdir = study_dir(spec)
    if not is_uri(sdir) and Path(sdir).exists() and any(Path(sdir).iterdir()):
        raise StudyExistsError(f"study directory {sdir} already exists; continue it with "
                               f"`study resume {sdir}`, or choose another --name/--storage")
    check_trackers(spec.loggers)  # a missing tracker package fails before anything is written
    data = prepare_data(spec, log)  # bad data / unknown classes fail before anything is written
    init_ray(log)
    if not is_uri(sdir):
        Path(sdir).mkdir(parents=True, exist_ok=True)
    _write_text(f"{sdir}/{STUDY_FILE}", spec.to_yaml())
    write_provenance(sdir, spec, data)
    search_alg = StudySearcher(spec.to_dict())
    counts = trial_counts(spec)
    num_samples = counts["total"]
    scheduler = _scheduler(spec)
    log(f"study {spec.name!r} (mode {spec.search.mode}): {counts['cells']} cells, "
        f"{counts['tuning']} tuning + {counts['confirm']} confirmation trials, "
        f"{spec.search.algorithm} sampling, {spec.scheduler.type} early stopping per "
        f"{'cell' if spec.search.mode == 'compare' else 'split'}, up to "
        f"{spec.search.max_concurrent} at once; results in {sdir}")
    t0 = time.time()
    sources = SourceModels(spec, data, sdir, log) if warm else None
    if sources:
        search_alg.ready = sources.ready
    tuner = tune.Tuner(
        _trainable(spec, data),
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=spec.search.max_concurrent, time_budget_s=spec.time_budget_s,
            reuse_actors=warm, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(Path(sdir).parent) if not is_uri(sdir) else spec.storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # RungState: the rung records are saved with the experiment state (study.scheduler)
            callbacks=[Progress(spec.target_epochs, counts["cells"]),
                       *tracker_callbacks(spec.loggers, sdir, spec.name),
                       *([RungState(scheduler)] if spec.scheduler.type != "fifo" else []),
                       *([StateBackup(sdir)] if not is_uri(sdir) else []),
                       *(callbacks or [])], verbose=0),
    )
    try:
        grid = tuner.fit()
    finally:
        if sources:  # every source a trial needed has finished; any other one is not needed now
            sources.poll()
            if sources.pending:  # e.g. time budget spent, or every trial of its cells errored
                log(f"{len(sources.pending)} source model(s) no trial needs any more: cancelled")
            sources.cancel()
    return _finish(spec, grid, sdir, time.time() - t0, log)


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


def repair_dangling_checkpoints(sdir: str, log=print) -> list[str]:
    """Tune deletes a trial's previous checkpoint (num_to_keep=1) a moment before it saves the
    experiment state that points to the new one; a driver killed in between leaves a state that
    points to a deleted checkpoint, and Tune would fail that trial ("does not exist on storage
    anymore"). The newer checkpoint is on disk: put it where the state looks (local storage).
    The trial then resumes after the newer checkpoint's epoch, as the trainable reads its epoch
    from the checkpoint itself. Returns what was repaired.

    Tune has no public API for this, so it reads the experiment state *file* (JSON: each
    trial's ``relative_logdir`` and ``last_result.checkpoint_dir_name``, written by Ray 2.60);
    anything it does not recognise is logged and skipped: the resume then goes on without the
    repair (a trial caught in that window fails as it would without it)."""
    import shutil

    if is_uri(sdir):
        return []
    states = sorted(Path(sdir).glob("experiment_state-*.json"))
    if not states:
        return []
    fixed = []
    try:
        for trial_json, meta_json in json.loads(states[-1].read_text())["trial_data"]:
            trial, meta = json.loads(trial_json), json.loads(meta_json)
            name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
            if not name or trial.get("status") == "TERMINATED":
                continue
            tdir = Path(sdir) / trial["relative_logdir"]
            missing = tdir / name
            if missing.exists():
                continue
            newer = sorted(d for d in tdir.glob("checkpoint_*") if d.is_dir() and d.name > name)
            if newer:
                shutil.copytree(newer[-1], missing)
                fixed.append(f"trial {trial['trial_id']}: its recorded checkpoint {name} was "
                             f"deleted before the driver stopped; resuming from {newer[-1].name}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log(f"checkpoint repair skipped: {states[-1].name} is not in the layout this version "
            f"knows (Ray {_ray_version()}): {type(e).__name__}: {e}")
    return fixed


def _ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "?"


def resume_study(path: str, log=print) -> dict:
    """Continue an interrupted study: finished trials are kept, unfinished ones resume from
    their last checkpoint, errored ones are retried; the searcher's state, ASHA's rung records
    (``study.scheduler.RungState``) and the shared source models are reused."""
    from ray import tune

    sdir = normalize_study_path(path)
    spec = load_study_spec(sdir)
    data = prepare_data(spec, log)
    init_ray(log)
    if not tune.Tuner.can_restore(sdir):
        raise StudyExistsError(f"{path}: no Tune experiment state to resume (it never started)")
    log(f"resuming study {spec.name!r} from {sdir}")
    from study.state import restore_cut_experiment_state

    restore_cut_experiment_state(sdir, log)
    for msg in repair_dangling_checkpoints(sdir, log):
        log(msg)
    train_sources(spec, data, sdir, log)  # finished models are kept; failed ones retried
    tuner = tune.Tuner.restore(sdir, trainable=_trainable(spec, data, sdir),
                               resume_unfinished=True, resume_errored=True)
    t0 = time.time()
    grid = tuner.fit()
    return _finish(spec, grid, sdir, time.time() - t0, log)


def _finish(spec: Spec, grid, sdir: str, wall: float, log) -> dict:
    from study.cells import cells

    rows = []
    for r in grid:
        last = r.metrics or {}
        status = (ERRORED if r.error else
                  COMPLETED if last.get(M.EPOCH, 0) >= spec.target_epochs else STOPPED)
        rows.append({"trial_id": last.get("trial_id"), "status": status,
                     **{k: r.config.get(k) for k in M.CONFIG_KEYS},
                     M.EPOCH: last.get(M.EPOCH), M.VAL_ACC: last.get(M.VAL_ACC),
                     M.TEST_ACC: last.get(M.TEST_ACC), M.TARGET_FLOPS: last.get(M.TARGET_FLOPS),
                     M.SOURCE_FLOPS: last.get(M.SOURCE_FLOPS), "error": str(r.error) if r.error else None})
    completed = [x for x in rows if x["status"] == COMPLETED]
    per_cell = {c.id: sum(x[M.CELL] == c.id for x in completed) for c in cells(spec)}
    uncovered = [c for c, n in per_cell.items() if n == 0]
    summary = {
        "study": spec.name, "results": sdir, "wall_s": round(wall, 1), "trials": len(rows),
        COMPLETED: len(completed), STOPPED: sum(x["status"] == STOPPED for x in rows),
        ERRORED: sum(x["status"] == ERRORED for x in rows),
        "cells": len(per_cell), "cells_completed": len(per_cell) - len(uncovered),
        "completed_per_cell": per_cell, "trial_rows": rows,
    }
    _write_text(f"{sdir}/{SUMMARY_FILE}", json.dumps(summary, indent=1, default=str))
    log(f"done in {wall:.0f}s: {summary['trials']} trials, {summary[COMPLETED]} completed, "
        f"{summary[STOPPED]} stopped early, {summary[ERRORED]} errored; "
        f"{summary['cells_completed']}/{summary['cells']} cells have a completed run")
    if uncovered:
        log(f"cells without a completed run: {', '.join(uncovered)}")
    log(f"results: {sdir} (the answer: `study report {sdir}`)")
    return summary
