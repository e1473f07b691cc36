"""Studies as Ray jobs: submit a study to a running cluster through the Ray Jobs API and watch it.

``study submit`` validates the spec on the laptop (bad input never reaches the cluster), then
submits ``python -m study.cli run study.yaml`` as a Ray job whose runtime environment carries
this project's code (``py_modules``: the ``study``, ``trainables`` and ``analysis`` packages, so
the cluster runs exactly the submitted version) and the resolved spec (``working_dir``: a
temporary folder holding only ``study.yaml``). The job's driver runs on the head node and connects
to the cluster it runs in (Ray sets ``RAY_ADDRESS`` for job drivers), so trials go to the workers.

Paths in the spec are read *on the cluster*: ``data.root``, ``data.cache_dir`` and ``storage``
must be absolute paths there or URIs (a relative path would land in the job's temporary working
directory and vanish with it).

Address: ``--address`` > ``RAY_API_SERVER_ADDRESS`` > ``RAY_ADDRESS`` (http://HOST:8265, the
dashboard; for a remote cluster keep it behind ``ray dashboard cluster.yaml``'s SSH tunnel).
Token authentication: when the cluster runs with ``RAY_AUTH_MODE=token``, set ``RAY_AUTH_MODE=token``
and the cluster's token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``;
``ray get-auth-token`` on the head prints it) where ``study submit`` runs; Ray's client adds it to
every request.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from study.core.spec import Spec, SpecError

PACKAGES = ("study", "trainables", "analysis")
REPO = Path(__file__).resolve().parent.parent
META_STUDY, META_RESULTS, META_KIND = "study", "results", "kind"
JOB_KIND = "tl-study"


class JobError(RuntimeError):
    """The cluster could not be reached, refused a request, or does not know the job."""


class AddressError(JobError):
    """No usable cluster address was given (bad input: exit status 2)."""


def resolve_address(address: str | None) -> str:
    addr = (address or os.environ.get("RAY_API_SERVER_ADDRESS")
            or os.environ.get("RAY_ADDRESS"))
    if not addr:
        raise AddressError("no cluster address: pass --address http://HOST:8265 (the head's dashboard "
                       "port; `ray dashboard cluster.yaml` forwards it to 127.0.0.1:8265) or set "
                       "RAY_API_SERVER_ADDRESS")
    if addr == "auto" or "://" not in addr:
        raise AddressError(f"--address = {addr!r}: must be the Jobs API's http(s)://HOST:PORT URL "
                       f"(the head's dashboard, port 8265 by default)")
    return addr.rstrip("/")


@contextlib.contextmanager
def _env_without(*names):
    """Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override an explicit address;
    here the explicit --address wins."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    addr = resolve_address(address)
    try:
        with _env_without("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            return JobSubmissionClient(addr)
    except Exception as e:  # ConnectionError, auth errors: say where and what to check
        raise JobError(f"cannot reach the Ray Jobs API at {addr}: {_short(e)}") from e


def _short(e: Exception) -> str:
    s = str(e).strip() or type(e).__name__
    return s if len(s) < 600 else s[:600] + " ..."


def _check_cluster_paths(spec: Spec) -> None:
    problems = []
    for field, value in (("data.root", spec.data.root), ("data.cache_dir", spec.data.cache_dir),
                         ("storage", spec.storage)):
        if value and "://" not in value and not Path(value).is_absolute():
            problems.append(f"{field} = {value!r}: must be an absolute path on the cluster or a URI "
                            f"(s3://, gs://, file://) for `study submit`; a relative path would "
                            f"resolve inside the job's temporary working directory")
    if problems:
        raise SpecError(problems)


def results_location(spec: Spec) -> str:
    base = spec.storage[len("file://"):] if spec.storage.startswith("file://") else spec.storage
    return base.rstrip("/") + "/" + spec.name


def submit(spec: Spec, address: str | None, *, extra_env: dict | None = None,
           log=print) -> str:
    """Submit a validated spec as a Ray job; returns the job's submission id."""
    from study.provenance import code_version

    _check_cluster_paths(spec)
    c = client(address)
    sub_id = f"study-{spec.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    env = {"PYTHONUNBUFFERED": "1", "STUDY_CODE_VERSION": code_version(),
           "STUDY_SUBMISSION_ID": sub_id, **(extra_env or {})}
    with tempfile.TemporaryDirectory(prefix="study-submit-") as wd:
        (Path(wd) / "study.yaml").write_text(spec.to_yaml())
        runtime_env = {
            "working_dir": wd,
            "py_modules": [str(REPO / p) for p in PACKAGES],
            "excludes": ["__pycache__", "*.pyc"],
            "env_vars": env,
        }
        deadline = time.time() + 90
        while True:
            try:
                job = c.submit_job(
                    entrypoint="python -m study.cli run study.yaml", submission_id=sub_id,
                    runtime_env=runtime_env,
                    metadata={META_KIND: JOB_KIND, META_STUDY: spec.name,
                              META_RESULTS: results_location(spec)})
                break
            except Exception as e:
                # A cluster that has just started answers before its job agent is up.
                if "No available agent" in str(e) and time.time() < deadline:
                    log("the cluster's job agent is not ready yet; retrying")
                    time.sleep(3)
                    continue
                raise JobError(f"the cluster refused the job: {_short(e)}") from e
    log(f"submitted study {spec.name!r} as job {job}")
    log(f"results: {results_location(spec)} (on the cluster's storage)")
    log(f"watch:   study status {job}  |  study logs {job} --follow  |  stop: study stop {job}")
    return job


def _call(fn, *args):
    try:
        return fn(*args)
    except JobError:
        raise
    except Exception as e:  # RuntimeError from the SDK: unknown job, HTTP errors
        raise JobError(_short(e)) from e


def list_jobs(address: str | None) -> list:
    jobs = _call(client(address).list_jobs)
    return sorted(jobs, key=lambda j: j.start_time or 0)


def job_info(address: str | None, job_id: str):
    return _call(client(address).get_job_info, job_id)


def format_jobs(jobs: list, all_jobs: bool = False) -> str:
    rows = [("JOB", "STATUS", "STUDY", "STARTED", "DURATION", "RESULTS")]
    for j in jobs:
        md = j.metadata or {}
        if md.get(META_KIND) != JOB_KIND and not all_jobs:
            continue
        start = datetime.fromtimestamp(j.start_time / 1000) if j.start_time else None
        end = j.end_time / 1000 if j.end_time else time.time()
        dur = f"{end - j.start_time / 1000:.0f}s" if j.start_time else "-"
        rows.append((j.submission_id or j.job_id or "-", str(j.status.value if hasattr(j.status, "value") else j.status),
                     md.get(META_STUDY, "-"), f"{start:%Y-%m-%d %H:%M:%S}" if start else "-", dur,
                     md.get(META_RESULTS, "-")))
    if len(rows) == 1:
        return "no studies submitted to this cluster" + ("" if all_jobs else " (--all: every job)")
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def format_status(info) -> str:
    md = info.metadata or {}
    status = info.status.value if hasattr(info.status, "value") else str(info.status)
    lines = [f"job:     {info.submission_id}", f"status:  {status}",
             f"study:   {md.get(META_STUDY, '-')}", f"results: {md.get(META_RESULTS, '-')}"]
    if info.start_time:
        end = (info.end_time or time.time() * 1000) / 1000
        lines.append(f"running: {end - info.start_time / 1000:.0f}s"
                     + ("" if info.end_time else " so far"))
    if info.message:
        lines.append(f"message: {info.message}")
    return "\n".join(lines)


def logs(address: str | None, job_id: str) -> str:
    return _call(client(address).get_job_logs, job_id)


def follow(address: str | None, job_id: str, out=sys.stdout) -> str:
    """Stream a job's logs until it ends; returns its final status."""
    c = client(address)
    _call(c.get_job_info, job_id)  # unknown job: a clear error, not an empty stream

    async def _tail():
        async for chunk in c.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(_tail())
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (study stop {job_id} ends it)",
              file=sys.stderr)
        raise
    except Exception:  # the log stream can drop (e.g. head restart): fall back to polling
        pass
    while True:
        st = _call(c.get_job_status, job_id)
        if st.is_terminal():  # ray.job_submission.JobStatus
            return st.value
        time.sleep(1.0)


def stop(address: str | None, job_id: str, wait_s: float = 60.0) -> str:
    """Ask the job to stop (Ray sends SIGTERM to the driver, then SIGKILL); the study keeps its
    checkpoints, so `study resume RESULTS` continues it later."""
    c = client(address)
    _call(c.stop_job, job_id)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        st = _call(c.get_job_status, job_id)
        if st.is_terminal():  # ray.job_submission.JobStatus
            return st.value
        time.sleep(0.5)
    return st.value
