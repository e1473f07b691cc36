"""benchmarks/scale.py stops everything it started when it is stopped itself (SIGTERM, as a CI
timeout or ``kill`` sends): its cluster and the ``study run`` driver it launched against it. (The
driver used to outlive the benchmark, running on against a stopped cluster.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults import pids_naming

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sigterm_stops_the_cluster_and_the_study_driver(tmp_path):
    before = set(Path("/tmp").glob("sc-*"))
    out = tmp_path / "studies"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    bench = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--spec",
         str(REPO / "examples" / "quick.yaml"), "--nodes", "1", "--gpus-per-node", "2",
         "--slots", "2", "--ideal-s", "120", "--out", str(out)],
        cwd=REPO, env=env, stdout=open(tmp_path / "bench.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not pids_naming(f"study.cli run {out}"):  # the driver is running the study
            assert bench.poll() is None, (tmp_path / "bench.log").read_text()
            assert time.time() < deadline, "the study driver never started"
            time.sleep(1)
        time.sleep(5)
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode != 0
    assert pids_naming(str(out)) == []  # the driver is gone
    started = [d for d in Path("/tmp").glob("sc-*") if d not in before]
    for d in started:
        assert pids_naming(str(d)) == []  # the cluster's processes are gone ...
    assert started == []  # ... and its temp dir is removed (Cluster.stop)
