"""`study submit / jobs / status / logs / stop` against a real Ray cluster (head with dashboard and
Jobs API, on 127.0.0.1), and `study run`/`resume` joining a running cluster through RAY_ADDRESS."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_study_integration import tiny_spec

STUDY = [sys.executable, "-m", "study.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def study(*args, env=None, timeout=300, check=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([*STUDY, *map(str, args)], capture_output=True, text=True, env=e,
                       timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def cluster():
    """A real Ray cluster head (dashboard + Jobs API, 2 CPUs), every process on 127.0.0.1.
    One node: two nodes on one machine share runtime_resources/, and the second node's
    runtime-env agent deletes the job's working directory (see README); multi-node behaviour is
    tested in test_fault_tolerance.py."""
    from ray.cluster_utils import Cluster

    port = free_port()
    # A job's entrypoint runs `python` from the head's PATH, as on a real cluster node.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        # the job agent's default port (52365) may be held by another Ray on this machine
        "dashboard_agent_listen_port": free_port()})
    url = f"http://127.0.0.1:{port}"
    from ray.job_submission import JobSubmissionClient
    deadline = time.time() + 60
    while True:  # the Jobs API comes up a little after the head
        try:
            JobSubmissionClient(url).list_jobs()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
    yield c, url
    c.shutdown()


def write_spec(tmp: Path, data: Path, **over) -> Path:
    d = tiny_spec(data, tmp / "storage", tmp / "cache", **over)
    d["backbones"] = {"scratch_cnn": {"depths": [0, 2, 4]}}  # 3 cells x 1 trial
    d["search"]["trials_per_cell"] = 1
    d["target_epochs"] = 2
    f = tmp / "spec.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def job_id_from(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("submitted study"):
            return line.split(" as job ")[1].strip()
    raise AssertionError(out)


def test_submit_wait_jobs_status_logs(cluster, tiny_folder, tmp_path):
    _, url = cluster
    spec = write_spec(tmp_path, tiny_folder)
    p = study("submit", spec, "--address", url, "--wait", check=0)
    job = job_id_from(p.stdout)
    assert f"results: {tmp_path / 'storage' / 'tiny'}" in p.stdout
    assert "SUCCEEDED" in p.stdout.splitlines()[-1]
    assert "done in" in p.stdout  # the study's own output, streamed from the cluster
    sdir = tmp_path / "storage" / "tiny"
    summary = json.loads((sdir / "summary.json").read_text())
    assert summary["trials"] == 3 and summary["errored"] == 0
    prov = json.loads((sdir / "provenance.json").read_text())
    assert prov["code_version"].startswith(("git:", "tl-study"))  # the submitter's version
    # the address may come from the environment
    jobs = study("jobs", env={"RAY_API_SERVER_ADDRESS": url}, check=0).stdout
    assert job in jobs and "SUCCEEDED" in jobs and str(sdir) in jobs
    st = study("status", job, "--address", url, check=0).stdout
    assert "status:  SUCCEEDED" in st and "study:   tiny" in st
    assert "done in" in study("logs", job, "--address", url, check=0).stdout


@pytest.mark.slow
def test_stop_then_resume_on_the_cluster(cluster, tiny_folder, tmp_path):
    c, url = cluster
    spec = write_spec(tmp_path, tiny_folder, name="stopme")
    d = yaml.safe_load(spec.read_text())
    d["target_epochs"], d["scheduler"] = 6, {"type": "fifo"}
    d["backbones"] = {"scratch_cnn": {"depths": [0, 1, 2, 3]}}  # 4 cells x 1 trial
    d["search"].update(max_concurrent=1)
    spec.write_text(yaml.safe_dump(d))
    job = job_id_from(study("submit", spec, "--address", url, check=0).stdout)
    sdir = tmp_path / "storage" / "stopme"
    deadline = time.time() + 240
    while not list(sdir.glob("*/result.json")) or not any(
            f.read_text().strip() for f in sdir.glob("*/result.json")):
        assert time.time() < deadline, study("logs", job, "--address", url).stdout
        time.sleep(1)
    p = study("stop", job, "--address", url, check=0)
    assert "STOPPED" in p.stdout and f"study resume {sdir}" in p.stdout
    assert "STOPPED" in study("status", job, "--address", url, check=0).stdout
    assert not (sdir / "summary.json").exists()
    # `study resume` on a machine of the cluster joins it through RAY_ADDRESS
    r = study("resume", sdir, env={"RAY_ADDRESS": c.address}, timeout=400, check=0)
    assert f"connecting to Ray cluster at {c.address}" in r.stdout
    summary = json.loads((sdir / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["completed"] == 4, summary


def test_submit_rejects_bad_input_before_contacting_the_cluster(tiny_folder, tmp_path):
    spec = write_spec(tmp_path, tiny_folder)
    p = study("submit", spec, "--address", "http://127.0.0.1:9", "--storage", "results", check=2)
    assert "storage = 'results': must be an absolute path on the cluster or a URI" in p.stderr
    p = study("submit", spec, "--address", "127.0.0.1:8265", check=2)
    assert "--address = '127.0.0.1:8265': must be the Jobs API's http(s)://HOST:PORT" in p.stderr
    p = study("submit", spec, env={"RAY_API_SERVER_ADDRESS": "", "RAY_ADDRESS": ""}, check=2)
    assert "no cluster address" in p.stderr
    p = study("submit", spec, "--address", f"http://127.0.0.1:{free_port()}", check=1)
    assert "cannot reach the Ray Jobs API at http://127.0.0.1:" in p.stderr


def test_unknown_job_is_a_clear_error(cluster):
    _, url = cluster
    p = study("status", "study-nope-1", "--address", url, check=1)
    assert "study-nope-1" in p.stderr and "does not exist" in p.stderr
