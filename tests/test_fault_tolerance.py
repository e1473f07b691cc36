"""Fault tolerance with real processes: a worker node lost mid-study, the driver SIGKILLed
mid-study, and trials that keep failing. Every Ray process stays on 127.0.0.1.
Marked slow (about 3 min together on 2 cores); `.ci/run` runs them."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from test_study_integration import tiny_spec
from study.core import metrics as M

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
FAULTS = [sys.executable, str(TESTS / "faults.py")]
STUDY = [sys.executable, "-m", "study.cli"]


def _run(cmd, env=None, timeout=400):
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    assert p.returncode == 0, f"{cmd}\nrc={p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def _trials(sdir: Path) -> dict:
    """trial id -> list of result rows (one per reported epoch)."""
    out = {}
    for f in sorted(sdir.glob("*/result.json")):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def _record_trials(sdir: Path) -> dict:
    """trial id -> its result events in the study's own record (``trials.jsonl``: one line per
    event, written as it happens, so a killed driver loses at most the line being written; Tune's
    result.json may lose its last lines), each with the trial's config."""
    from study.core.record import parse

    f = sdir / "trials.jsonl"
    out, config = {}, {}
    for e in parse(f.read_text()) if f.exists() else []:
        if e.get("event") == "start":
            config[e["trial_id"]] = e["config"]
        elif e.get("event") == "result":
            out.setdefault(e["trial_id"], []).append({**e, "config": config[e["trial_id"]]})
    return out


def _config(row) -> tuple:
    c = row["config"]
    return tuple(c[k] for k in (M.SPLIT, M.BACKBONE, M.INIT, M.FROZEN_DEPTH, M.LR))


def _alive(pid: int) -> bool:
    """Running (a killed child not yet reaped is a zombie: dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _write(tmp: Path, d: dict, name: str) -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


# ----------------------------------------------------------------------------- worker node lost

@pytest.fixture(scope="module")
def three_nodes():
    """Head (no CPUs: it runs the drivers, never a trial) + two 1-CPU worker nodes."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    head_raylet = c.head_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    yield c, head_raylet, workers
    c.shutdown()


def _node_spec(data, tmp, name):
    return tiny_spec(data, tmp / "storage", tmp / "cache", name=name,
                     backbones={"scratch_cnn": {"frozen_depth": [0, 3]}},
                     lr={"low": 0.05, "high": 0.05, "grid": [0.05]},
                     search={"algorithm": "grid", "max_concurrent": 2, "seed": 5},
                     scheduler={"type": "fifo"}, max_failures=2)


def test_worker_node_lost_mid_study(three_nodes, tiny_folder, tmp_path):
    cluster, head_raylet, _ = three_nodes
    env = {"RAY_ADDRESS": cluster.address}
    _run([*FAULTS, _write(tmp_path, _node_spec(tiny_folder, tmp_path, "calm"), "calm")], env)
    marker = tmp_path / "killed.json"
    t0 = time.time()
    out = _run([*FAULTS, _write(tmp_path, _node_spec(tiny_folder, tmp_path, "hit"), "hit"),
                "--fault", "kill-node", "--epoch", "2", "--head-raylet", str(head_raylet),
                "--marker", marker], env)
    print(f"\nnode-loss study: {time.time() - t0:.0f}s")
    assert marker.exists(), "the worker node was never killed:\n" + out.stdout[-3000:]
    killed = json.loads(marker.read_text())
    assert killed["worker"] in killed["killed"]
    assert not any(_alive(pid) for pid in killed["killed"])  # the node is really gone

    calm_s = json.loads((tmp_path / "storage/calm/summary.json").read_text())
    hit_s = json.loads((tmp_path / "storage/hit/summary.json").read_text())
    assert hit_s["trials"] == calm_s["trials"] == 4
    assert hit_s["completed"] == calm_s["completed"] == 4 and hit_s["errored"] == 0  # 0 lost
    calm, hit = _trials(tmp_path / "storage/calm"), _trials(tmp_path / "storage/hit")
    # the killed trial resumed from its epoch-2 checkpoint in a new process: epochs 1..4 once
    rows = hit[killed["trial_id"]]
    assert [r[M.EPOCH] for r in rows] == [1, 2, 3, 4], [r[M.EPOCH] for r in rows]
    assert rows[1]["pid"] == killed["worker"] and rows[2]["pid"] != killed["worker"]
    # ... and every trial ends exactly where the undisturbed run ends (same seeds, CPU)
    by_cfg = {_config(r[-1]): r[-1] for r in calm.values()}
    for r in hit.values():
        ref = by_cfg[_config(r[-1])]
        for key in (M.VAL_ACC, M.TEST_ACC, M.TARGET_FLOPS):
            assert r[-1][key] == ref[key], (key, _config(r[-1]))
    print(f"node loss: trial {killed['trial_id']} resumed; trials lost: "
          f"{calm_s['completed'] - hit_s['completed']}")


# ----------------------------------------------------------------------------- driver killed

def _ray_pids_of(session_marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", session_marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_driver_killed_in_the_confirmation_phase_then_resumed(tiny_folder, tmp_path):
    """2 cells x 3 learning rates (halving), then each cell's best with 2 more seeds; the driver
    is SIGKILLed once a confirmation trial has reported, then `study resume` finishes it."""
    d = tiny_spec(tiny_folder, tmp_path / "storage", tmp_path / "cache", name="drv",
                  target_epochs=4, max_failures=1, backbones={"scratch_cnn": {"depths": [0, 2]}},
                  confirm={"seeds": 2})
    d["search"].update(trials_per_cell=3, max_concurrent=2, seed=11)
    spec = _write(tmp_path, d, "drv")
    sdir = tmp_path / "storage" / "drv"
    # this driver's own Ray temp dir, to find its processes afterwards (short: socket paths)
    temp = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TMPDIR=str(temp))
    log = open(tmp_path / "run.log", "w")
    driver = subprocess.Popen([*STUDY, "run", str(spec)], stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    deadline = time.time() + 300
    while True:  # kill once a confirmation trial has reported (tuning has ended in its cell)
        trials = _record_trials(sdir)
        if any(rows[0]["config"][M.PHASE] == M.PHASE_CONFIRM for rows in trials.values()):
            break
        assert driver.poll() is None, (tmp_path / "run.log").read_text()
        assert time.time() < deadline, (tmp_path / "run.log").read_text()
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _record_trials(sdir)
    from study.core.record import fold, parse
    ended = {t for t, v in fold(parse((sdir / "trials.jsonl").read_text()), 4).items()
             if v["ended"] and v["status"] == "completed"}
    finished_before = {t: rows for t, rows in before.items() if t in ended}
    sources = {p: p.stat().st_mtime_ns for p in sdir.glob("sources/*/model.pt")}
    assert sources
    assert not (sdir / "summary.json").exists()

    # nothing of the killed run's Ray may keep running
    deadline = time.time() + 30
    while _ray_pids_of(str(temp)) and time.time() < deadline:
        time.sleep(1)
    left = _ray_pids_of(str(temp))
    for pid in left:  # clean up before failing, so later tests are not disturbed
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes outlived the killed driver: {left}"

    res = _run([*STUDY, "resume", str(sdir)])
    print(f"\ndriver kill: {len(finished_before)} trials finished before the kill, "
          f"{len(before)} started")
    assert "rung records restored (epoch 1:" in res.stdout, res.stdout[-3000:]
    # source models trained before the kill are reused, not retrained
    for p, mtime in sources.items():
        assert p.stat().st_mtime_ns == mtime, p
    summary = json.loads((sdir / "summary.json").read_text())
    assert summary["trials"] == 10 and summary["errored"] == 0, summary
    assert summary["cells_completed"] == 2
    # a trial the searcher created after that save was created again: its first id is left out
    after = {t: rows for t, rows in _record_trials(sdir).items() if t not in summary["recreated"]}
    for t, rows in finished_before.items():  # not lost, not rerun: a trial that finished after
        # Tune's last experiment save before the kill reports its last results again, untrained
        assert [r for r in after[t] if not r.get(M.REPLAYED)] == rows, t
    replayed = sum(bool(r.get(M.REPLAYED)) for rows in after.values() for r in rows)
    for t, rows in after.items():  # every epoch reported, in order, none skipped; epochs
        # reported after the trial's last checkpoint before the kill are trained again
        epochs = [r[M.EPOCH] for r in rows]
        assert epochs[0] == 1 and all(b <= a + 1 for a, b in zip(epochs, epochs[1:])), (t, epochs)
        assert epochs[-1] == max(epochs), (t, epochs)
    confirm = [rows for rows in after.values() if rows[0]["config"][M.PHASE] == M.PHASE_CONFIRM]
    assert len(confirm) == 4 and all(rows[-1][M.EPOCH] == 4 for rows in confirm)
    for cell in {rows[0]["config"][M.CELL] for rows in confirm}:
        got = [rows[0]["config"] for rows in confirm if rows[0]["config"][M.CELL] == cell]
        assert sorted(c[M.SEED] for c in got) == [12, 13] and len({c[M.LR] for c in got}) == 1
    print(f"driver kill: trials lost 0, finished trials rerun 0, results replayed {replayed}, "
          f"recreated {len(summary['recreated'])}, summary {summary['completed']} completed / "
          f"{summary['stopped']} stopped")


# ----------------------------------------------------------------------------- failing trials

def test_failing_trials_are_retried_then_errored_and_reported(tiny_folder, tmp_path, capsys):
    from analysis.load import load_study
    from analysis.report import make_report

    d = tiny_spec(tiny_folder, tmp_path / "storage", tmp_path / "cache", name="flaky",
                  splits=[{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]},
                          {"name": "cd_ab", "source": ["c", "d"], "target": ["a", "b"]}],
                  backbones={"scratch_cnn": {"frozen_depth": [1, 2]}},
                  lr={"low": 0.05, "high": 0.05, "grid": [0.05]},
                  search={"algorithm": "grid", "max_concurrent": 1, "seed": 2},
                  scheduler={"type": "fifo"}, target_epochs=2, max_failures=1)
    marker = tmp_path / "corrupted.json"
    _run([*FAULTS, _write(tmp_path, d, "flaky"), "--fault", "corrupt-source",
          "--marker", marker])
    bad = json.loads(marker.read_text())["split"]
    sdir = tmp_path / "storage" / "flaky"
    summary = json.loads((sdir / "summary.json").read_text())
    rows = summary["trial_rows"]
    assert summary["trials"] == 4
    errored = [r for r in rows if r["status"] == "errored"]
    assert errored and all(r[M.SPLIT] == bad for r in errored)
    assert all(r["status"] == "completed" for r in rows if r[M.SPLIT] != bad)
    # each errored trial was tried 1 + max_failures times (Tune's experiment state)
    (state,) = sdir.glob("experiment_state-*.json")
    failures = {}
    for trial_json, meta in json.loads(state.read_text())["trial_data"]:
        failures[json.loads(trial_json)["trial_id"]] = json.loads(meta)["num_failures"]
    assert {failures[r["trial_id"]] for r in errored} == {2}, failures
    # the report lists them
    trials = load_study(sdir).trials
    assert set(trials.loc[trials.status == "errored", "trial_id"]) == {r["trial_id"] for r in errored}
    make_report(str(sdir), str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    for r in errored:
        assert r["trial_id"] in md
