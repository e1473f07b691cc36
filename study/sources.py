"""Source models: each trained once, as its own Ray task, alongside Tune (``SourceModels``).

``SourceModels`` is what the searcher's ``ready`` hook asks; it is picklable-free runner state
(it holds Ray object refs) and lives in the driver only.
"""
from __future__ import annotations

import time
from pathlib import Path

from study.core.design import StudyDesign
from study.core.identity import source_job
from study.core.layout import SOURCES_DIR, is_uri, write_atomic
from study.core.spec import Spec


def sources_dir(spec: Spec, sdir: str) -> Path:
    """Shared source models. Local storage: inside the study. URI storage: a node-local cache
    (file locks need a POSIX filesystem), keyed the same way."""
    if is_uri(sdir):
        from trainables.data import default_cache_dir
        return default_cache_dir() / "sources" / spec.name
    return Path(sdir) / SOURCES_DIR


class SourceModels:
    """The study's source models, each trained as its own Ray task (the trial's resources), run
    in parallel across the cluster, alongside Tune: the searcher asks ``ready(config)`` and holds
    back a trial until its source model is trained, handing out trials that need none (init
    scratch / imagenet) or whose model is ready meanwhile. So no target trial ever holds a
    device while a source model it needs is trained, and the Tune start-up and first trials
    overlap the source training.

    Every model a trial may need is submitted at the start (Ray runs them roughly in submission
    order), up to racing's ceiling: with ``costs`` (``study.plan.schedule_costs``) the longest
    chains first (a model and the cells' trials that wait for it, ``study.plan.source_order``),
    else the tuning seed's first. Not later, when a seed is first
    needed: Tune keeps its reused trial actors (and their CPUs/GPUs) while it waits for the
    searcher, so a task submitted mid-study may get no slot until Tune gives up waiting
    (measured: a 607 s stall of a tiny study, ``tests/test_racing_study.py``, and the same in
    mode best when its confirmation seeds' models were submitted once the best configuration
    was known). A model no planned job names (none today) is submitted when first needed.

    Finished models are reused (resume); a model that fails is recorded
    (``sources/<key>/error.txt``) and fails only the trials of its cells (``ready`` is then
    true: the trial starts and reports the error)."""

    POLL_S = 0.2  # at most one ray.wait per this many seconds from ``ready`` (Tune calls often)

    def __init__(self, design: StudyDesign, data, sdir: str, log=print,
                 costs: dict | None = None):
        import ray

        if getattr(data, "sim", None) is not None:  # a rehearsal: simulated source models
            from trainables.simulate import simulated_source_task as train_source_task
        else:
            from trainables.trainable import train_source_task

        spec = design.spec
        self.spec, self.log = spec, log
        self.jobs = design.source_jobs()  # every model a trial may need
        if costs:  # longest chain first (study.plan.schedule_costs / source_order)
            from study.plan import source_order
            self.jobs = source_order(design, self.jobs, costs)
        self.submitted: set = set()
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
            first = "the longest chains" if costs else "the tuning seed's"
            log(f"source models: {len(self.jobs)} (split x backbone x seed, {first} first), "
                f"each a Ray task with {spec.resources.cpus:g} CPU"
                f"{f' + {spec.resources.gpu:g} GPU' if spec.resources.gpu else ''}"
                f"; trials that need none start meanwhile")
        for job in self.jobs:
            self._submit(job)

    def _submit(self, job: tuple) -> None:
        import ray

        if self._args is None:  # the study data goes to the object store once, when first needed
            self._args = (self.spec.to_dict(), ray.put(self._data))
        self.submitted.add(job)
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
            self.log(f"[{time.time() - self.t0:6.0f}s] source {len(self.results)}/{len(self.submitted)} "
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
        if job not in self.submitted:  # known only now (mode best: the best's confirmation seeds)
            self.jobs.append(job)
            self.log(f"source model {len(self.submitted) + 1}/{len(self.jobs)}: "
                     f"{'/'.join(map(str, job))} (needed now)")
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
