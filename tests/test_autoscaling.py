"""GPU workers scale from zero and back: trials that request `gpu` make Ray's autoscaler launch
GPU worker nodes (Ray's fake multi-node provider: local processes advertising GPU: 1), and the
nodes are removed when idle. Runs examples/fake-gpu-autoscaling.yaml with its own ports."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from test_jobs import free_port
from test_study_integration import tiny_spec
from study.core import metrics as M

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def _gpu_workers(address: str, env: dict) -> int:
    out = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                         env=env, timeout=60).stdout
    active = out.split("Active:", 1)[1].split("Pending:", 1)[0] if "Active:" in out else ""
    m = re.search(r"(\d+) gpu_worker", active)
    return int(m.group(1)) if m else 0


@pytest.mark.slow
def test_gpu_trials_scale_gpu_workers_up_from_zero_and_down_when_idle(tiny_folder, tmp_path):
    port = free_port()
    cfg = yaml.safe_load((REPO / "examples" / "fake-gpu-autoscaling.yaml").read_text())
    cfg["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp_path / "as.yaml").write_text(yaml.safe_dump(cfg))
    temp = Path(tempfile.mkdtemp(prefix="fk-", dir="/tmp"))  # short: socket paths
    env = dict(os.environ, RAY_FAKE_CLUSTER="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
         "--include-dashboard=false", f"--temp-dir={temp}",
         f"--autoscaling-config={tmp_path / 'as.yaml'}", "--block"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while "Active:" not in subprocess.run([RAY, "status", "--address", address],
                                              capture_output=True, text=True, env=env).stdout:
            assert time.time() < deadline and head.poll() is None, (tmp_path / "head.log").read_text()
            time.sleep(1)
        assert _gpu_workers(address, env) == 0  # starts with no GPU worker

        d = tiny_spec(tiny_folder, tmp_path / "storage", tmp_path / "cache", name="gpu",
                      target_epochs=2, resources={"cpus": 1, "gpu": 1})
        d["backbones"] = {"scratch_cnn": {"depths": [0, 2, 4]}}  # 3 cells x 1 trial
        d["search"].update(trials_per_cell=1, max_concurrent=2)
        (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(d))
        t0 = time.time()
        study = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(tmp_path / "gpu.yaml")],
                                 stdout=open(tmp_path / "study.log", "w"), stderr=subprocess.STDOUT,
                                 env=dict(env, RAY_ADDRESS=address, PYTHONUNBUFFERED="1"))
        peak, seen = 0, []
        while study.poll() is None:
            n = _gpu_workers(address, env)
            peak = max(peak, n)
            seen.append((round(time.time() - t0), n))
            assert time.time() - t0 < 400, (tmp_path / "study.log").read_text()
            time.sleep(2)
        assert study.returncode == 0, (tmp_path / "study.log").read_text()
        study_s = time.time() - t0
        summary = json.loads((tmp_path / "storage/gpu/summary.json").read_text())
        assert summary["trials"] == 3 and summary["errored"] == 0
        # the head has no CPU or GPU: every trial ran on a GPU worker the autoscaler launched
        for f in (tmp_path / "storage/gpu").glob("*/result.json"):
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            assert rows[-1][M.EPOCH] >= 1
        assert peak >= 1, seen

        t1 = time.time()
        while _gpu_workers(address, env) > 0:  # idle_timeout_minutes: 0.2
            assert time.time() - t1 < 120, "GPU workers were not removed when idle"
            time.sleep(2)
        print(f"\nfake-GPU autoscaling: peak {peak} GPU worker node(s) launched for 3 trials "
              f"(study {study_s:.0f}s); all removed "
              f"{time.time() - t1:.0f}s after the study ended; samples (s, nodes): {seen}")
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        left = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)
