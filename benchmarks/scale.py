"""Full-scale rehearsal: a study spec (default: examples/cifar10.yaml, 112 cells, 672 trials, 36
source models) run with ``study run --simulate`` on a local multi-node Ray cluster of logical
GPUs, to measure the control plane at the size a user will meet on a real cluster.

    python benchmarks/scale.py [--spec examples/cifar10.yaml] [--nodes 4] [--gpus-per-node 4]
        [--slots 32] [--flops-per-s 25e12] [--ideal-s 420] [--kill-at 0.5] [--out DIR]

The cluster: a head with no CPU or GPU (the driver runs there) and ``--nodes`` worker nodes
with ``--gpus-per-node`` logical GPUs (nothing touches a GPU) and the CPUs their trials ask for
(``resources.cpus`` x trials per node), all on 127.0.0.1 (Ray's fake multi-node provider). The spec is run as written except ``search.max_concurrent`` (= ``--slots``) and
``storage``. Each epoch lasts its planned FLOPs / ``--flops-per-s`` / compression, the
compression chosen so that the plan's expected slot-seconds / slots = ``--ideal-s``.

Printed (name=value, headline last):
- ``wall_over_ideal``: the study's wall time (Tune's start to its end) / (simulated slot-seconds
  of every trial and source task / slots). What a perfect scheduler with zero overhead needs.
- ``driver_cpu_s_per_trial`` (the ``study run`` process's user+system CPU / trials) and
  ``driver_peak_rss_mib``; ``experiment_state_kib`` (Tune's experiment state at the end).
- ``plan_over_actual``: ``study plan``'s device-seconds (expected, with early stopping) at the
  same throughput / the simulated study's slot-seconds x compression.
- ``cells_completed`` of ``cells``.
- with ``--kill-at F``: a second run of the same study whose driver is SIGKILLed once a fraction
  F of the first run's trials have ended, then ``study resume`` (``resume_check``): trials that
  had ended before the kill and were lost (``resumed_lost``) or trained again
  (``resumed_ended_then_trained``; those that ended after Tune's last experiment snapshot report
  their last results again, untrained: ``resumed_results_replayed``), trials created twice
  (``resumed_recreated``),
  epochs redone by the trials running at the kill and how many restarted from epoch 1,
  ``resumed_same_completed`` (completed configurations shared with the uninterrupted run) and
  ``resumed_identical_answer`` (1 when report.json's Answer equals the uninterrupted run's,
  numbers included) and ``resumed_same_decisions`` (answer groups whose best, answer and
  verdicts equal the uninterrupted run's).

Stops its cluster on every exit path (SIGTERM included: ``study_timing.stop_on_sigterm``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from study_timing import stop_on_sigterm  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
           RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head (0 CPU, 0 GPU: the driver runs there) and ``nodes`` worker nodes with logical
    GPUs, all on 127.0.0.1: Ray's fake multi-node provider (as examples/fake-gpu-autoscaling.yaml
    and tests/test_autoscaling.py) with ``min_workers = max_workers = nodes``, so the autoscaler
    starts every node up front. (Worker nodes ``ray start``ed by hand would need
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, which binds them to the network address.)"""

    def __init__(self, nodes: int, cpus: int, gpus: int, log):
        self.temp = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # short: socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.log = log
        cfg = yaml.safe_load((REPO / "examples" / "fake-gpu-autoscaling.yaml").read_text())
        cfg["provider"]["gcs_address"] = self.address
        cfg["max_workers"] = nodes
        cfg["idle_timeout_minutes"] = 60
        w = cfg["available_node_types"]["gpu_worker"]
        w.update(resources={"CPU": cpus, "GPU": gpus}, min_workers=nodes, max_workers=nodes)
        (self.temp / "cluster.yaml").write_text(yaml.safe_dump(cfg))
        self.procs.append(subprocess.Popen(
            [RAY, "start", "--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
             "--include-dashboard=false", f"--temp-dir={self.temp / 'ray'}",
             f"--autoscaling-config={self.temp / 'cluster.yaml'}", "--block"],
            env=dict(ENV, RAY_FAKE_CLUSTER="1"), stdout=open(self.temp / "head.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True))
        try:
            self._wait(nodes * gpus)
        except BaseException:
            self.stop()
            raise

    def _wait(self, gpus: int, timeout: float = 300) -> None:
        """Until the cluster reports ``gpus`` GPUs in total."""
        import re
        t0 = time.time()
        while True:
            out = subprocess.run([RAY, "status", "--address", self.address], capture_output=True,
                                 text=True, env=ENV).stdout
            m = re.search(r"/(\d+(?:\.\d+)?) GPU", out)
            if m and float(m.group(1)) >= gpus:
                return
            if time.time() - t0 > timeout or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"cluster did not start ({self.temp}): {out[-2000:]}")
            time.sleep(2)

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        left = subprocess.run(["pgrep", "-f", str(self.temp)], capture_output=True,
                              text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def run_cli(args: list[str], address: str, log_file: Path, kill_when=None) -> dict:
    """Run ``study ARGS`` against the cluster; returns rc, wall, the child's CPU seconds and
    peak RSS (from wait4). ``kill_when()``: polled every second; True -> SIGKILL the driver."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=REPO,
                         env=dict(ENV, RAY_ADDRESS=address), stdout=open(log_file, "w"),
                         stderr=subprocess.STDOUT)
    killed = None
    try:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and killed is None and kill_when():
                os.kill(p.pid, signal.SIGKILL)
                killed = time.time()
            time.sleep(1)
    except BaseException:  # SIGTERM / Ctrl-C of the benchmark: the driver must not outlive it
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        raise
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": time.time() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mib": ru.ru_maxrss / 1024, "killed_at": killed}


def resume_check(sdir: Path, kill_t: float, target_epochs: int) -> dict:
    """From the study's record, split at the kill: trials that had ended before it and end with
    another status (or not at all) after the resume (``lost``); those that trained again after
    the resume (``ended_then_trained``; a trial that ended after Tune's last experiment snapshot
    is restored as running and only reports its last results again, untrained:
    ``results_replayed`` over all trials, trainables/resume.py); trials created twice
    (``recreated``: the searcher created them after the last snapshot); and for the trials
    running at the kill the epochs trained again (``epochs_redone``: after their last
    checkpoint) and how many restarted from epoch 1 (no checkpoint yet: spec
    checkpoint_every)."""
    from study.core import metrics as M
    from study.core.record import fold, recreated
    from study.recorder import read_record

    ev = read_record(str(sdir))
    pre = [e for e in ev if e["t"] < kill_t]
    post = [e for e in ev if e["t"] >= kill_t]
    trained = [e for e in post if e.get("event") == "result" and not e.get(M.REPLAYED)]
    ended = {e["trial_id"]: e.get("status") for e in pre if e.get("event") == "end"}
    final = fold(ev, target_epochs)
    again_ids = set(recreated(ev))
    lost = sum((t not in final and t not in again_ids) or (t in final and final[t]["status"] != st)
               for t, st in ended.items())
    ended_trained = len({e["trial_id"] for e in trained} & set(ended))
    running = {e["trial_id"] for e in pre if e.get("event") == "start"} - set(ended)
    last: dict = {}
    for e in pre:
        if e.get("event") == "result":
            last[e["trial_id"]] = max(last.get(e["trial_id"], 0), e.get("epoch") or 0)
    first: dict = {}
    for e in trained:
        first.setdefault(e["trial_id"], e.get("epoch") or 1)
    redone = sum(max(0, last.get(t, 0) - (first[t] - 1)) for t in running if t in first)
    scratch = sum(first.get(t) == 1 and last.get(t, 0) >= 1 for t in running)
    return {"ended_before_kill": len(ended), "lost": lost, "ended_then_trained": ended_trained,
            "results_replayed": sum(e.get("event") == "result" and bool(e.get(M.REPLAYED))
                                    for e in post),
            "recreated": len(again_ids), "running_at_kill": len(running),
            "epochs_redone": redone, "restarted_from_epoch_1": scratch}


def ended_trials(sdir: Path) -> int:
    from study.recorder import read_record
    try:
        return sum(e.get("event") == "end" for e in read_record(str(sdir)))
    except (OSError, ValueError):
        return 0


def measure(sdir: Path, slots: int) -> dict:
    """Slot-seconds of the simulated work, the wall time of Tune, the plan's estimate."""
    from study.core.record import fold
    from study.core.spec import load_spec
    from study.recorder import read_record
    from trainables.simulate import read_simulation

    spec = load_spec(sdir / "study.yaml")
    sim = read_simulation(str(sdir))
    events = read_record(str(sdir))
    table = fold(events, spec.target_epochs)
    trial_s = 0.0
    for t in table.values():
        cell = (t.get("config") or {}).get("cell")
        trial_s += (t.get("epoch") or 0) * sim["epoch_s"].get(cell, 0.0)
    source_s = sum(sim["source_s"].values())
    starts = [e["t"] for e in events if e.get("event") == "start"]
    end = [e["t"] for e in events if e.get("event") == "study"]
    wall = (end[-1] if end else max(e["t"] for e in events)) - min(starts)
    ideal = (trial_s + source_s) / slots
    summary = json.loads((sdir / "summary.json").read_text())
    state = sorted(sdir.glob("experiment_state-*.json"))
    return {"trials": len(table), "trial_slot_s": trial_s, "source_slot_s": source_s,
            "ideal_s": ideal, "tune_wall_s": wall, "wall_over_ideal": wall / ideal,
            "cells": summary["cells"], "cells_completed": summary["cells_completed"],
            "completed": summary["completed"], "stopped": summary["stopped"],
            "errored": summary["errored"],
            "experiment_state_kib": (state[-1].stat().st_size / 1024) if state else float("nan"),
            "device_s_at_rate": (trial_s + source_s) * sim["compression"]}


def answer_of(sdir: Path, out: Path) -> dict:
    from analysis.report import make_report
    o, _ = make_report(sdir, out, force=True)
    return json.loads((o / "report.json").read_text())["answer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(REPO / "examples" / "cifar10.yaml"))
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus-per-node", type=int, default=4)
    ap.add_argument("--slots", type=int, default=32, help="search.max_concurrent")
    ap.add_argument("--flops-per-s", type=float, default=25e12,
                    help="modelled device throughput (default 25 TFLOP/s: a data-centre GPU "
                    "training small CNNs in mixed precision)")
    ap.add_argument("--ideal-s", type=float, default=420.0,
                    help="choose the compression so that the plan's slot-seconds / slots is this")
    ap.add_argument("--splits", type=int, default=0, help="keep only the first N splits (0: all)")
    ap.add_argument("--checkpoint-every", type=int, default=None,
                    help="override the spec's checkpoint_every (target epochs per checkpoint)")
    ap.add_argument("--kill-at", type=float, default=0.0,
                    help="also run a second copy, SIGKILL its driver after this fraction of the "
                    "first run's trials ended, resume it, compare (0: skip)")
    ap.add_argument("--out", default=None, help="where the studies go (default: a temp dir)")
    args = ap.parse_args()
    stop_on_sigterm()
    log = lambda *a: print(*a, flush=True)  # noqa: E731

    from study.core.spec import load_spec_dict
    from study.plan import make_plan

    raw = yaml.safe_load(Path(args.spec).read_text())
    raw.setdefault("search", {})["max_concurrent"] = args.slots
    if args.checkpoint_every:
        raw["checkpoint_every"] = args.checkpoint_every
    if args.splits:
        raw["splits"] = raw["splits"][:args.splits]
    out = Path(args.out or tempfile.mkdtemp(prefix="scale-"))
    out.mkdir(parents=True, exist_ok=True)
    raw["storage"] = str(out)
    spec = load_spec_dict(raw)
    plan = make_plan(spec, flops_per_s=args.flops_per_s, log=lambda *a: None)
    plan_s = plan["device_s"]["halving"]
    compression = plan_s / args.slots / args.ideal_s
    gpu = spec.resources.gpu or 1
    per_node = int(round(args.gpus_per_node / gpu))
    cpus = int(max(1, spec.resources.cpus) * per_node)
    log(f"spec {args.spec}: {plan['counts']['cells']} cells, {plan['counts']['total']} trials "
        f"(+ {plan['totals']['source_models']} source models); plan at "
        f"{args.flops_per_s:.3g} FLOP/s: {plan_s / 3600:.2f} device-hours (halving) -> "
        f"compression {compression:.4g} for {args.ideal_s:.0f} s ideal on {args.slots} slots")
    log(f"cluster: head (0 CPU) + {args.nodes} nodes x {args.gpus_per_node} logical GPUs, "
        f"{cpus} CPUs ({per_node} trials of gpu {gpu:g} each) = "
        f"{args.nodes * per_node} trial slots")

    cluster = Cluster(args.nodes, cpus, args.gpus_per_node, log)
    try:
        runs = {}
        for name in (["full"] + (["killed"] if args.kill_at else [])):
            r = dict(raw, name=name)
            f = out / f"{name}.yaml"
            f.write_text(yaml.safe_dump(r))
            cmd = ["run", str(f), "--simulate", "--flops-per-s", str(args.flops_per_s),
                   "--compression", str(compression)]
            sdir = out / name
            kill = None
            if name == "killed":
                at = int(args.kill_at * runs["full"]["trials"])
                kill = lambda: ended_trials(sdir) >= at  # noqa: E731
            log(f"[{time.strftime('%H:%M:%S')}] study {name}: {' '.join(cmd)}")
            res = run_cli(cmd, cluster.address, out / f"{name}.log", kill)
            if name == "killed":
                log(f"  driver SIGKILLed after {ended_trials(sdir)} trials ended (rc {res['rc']}); "
                    "study resume")
                res2 = run_cli(["resume", str(sdir)], cluster.address, out / "resume.log")
                if res2["rc"] != 0:
                    raise SystemExit(f"resume failed (rc {res2['rc']}): see {out / 'resume.log'}")
                res["resume"] = res2
            elif res["rc"] != 0:
                raise SystemExit(f"study failed (rc {res['rc']}): see {out / f'{name}.log'}")
            m = measure(sdir, args.slots)
            runs[name] = {**res, **m}
            log(f"  {m['trials']} trials ({m['completed']} completed, {m['stopped']} stopped, "
                f"{m['errored']} errored), cells {m['cells_completed']}/{m['cells']}; Tune wall "
                f"{m['tune_wall_s']:.0f} s vs ideal {m['ideal_s']:.0f} s; driver CPU "
                f"{res['cpu_s']:.0f} s, peak RSS {res['peak_rss_mib']:.0f} MiB")
    finally:
        cluster.stop()

    full = runs["full"]
    lines = {}
    if "killed" in runs:
        k = runs["killed"]
        a, b = answer_of(out / "full", out / "report-full"), answer_of(out / "killed", out / "report-killed")
        for key, v in resume_check(out / "killed", k["killed_at"], spec.target_epochs).items():
            lines[f"resumed_{key}"] = v
        cfg_full, cfg_k = _configs(out / "full"), _configs(out / "killed")
        # the same completed (cell, lr, seed, phase) as the uninterrupted run; early stopping
        # decides as results arrive, so two uninterrupted runs can differ too
        lines["resumed_same_completed"] = f"{len(cfg_full & cfg_k)}/{len(cfg_full | cfg_k)}"
        lines["resumed_identical_answer"] = int(_strip(a) == _strip(b))
        same = sum(_decisions(x) == _decisions(y) for x, y in zip(a["groups"], b["groups"]))
        lines["resumed_same_decisions"] = f"{same}/{max(len(a['groups']), len(b['groups']))}"
    answer_of(out / "full", out / "report-full")
    log(f"report: {out / 'report-full' / 'report.html'}")
    lines.update({
        "trials": full["trials"], "slots": args.slots, "cells": full["cells"],
        "cells_completed": full["cells_completed"],
        "compression": round(compression, 4),
        "ideal_s": round(full["ideal_s"], 1), "tune_wall_s": round(full["tune_wall_s"], 1),
        "run_wall_s": round(full["wall_s"], 1),
        "driver_cpu_s": round(full["cpu_s"], 1),
        "driver_peak_rss_mib": round(full["peak_rss_mib"], 1),
        "experiment_state_kib": round(full["experiment_state_kib"], 1),
        "driver_cpu_s_per_trial": round(full["cpu_s"] / max(1, full["trials"]), 3),
        "plan_over_actual": round(plan_s / full["device_s_at_rate"], 3),
        "wall_over_ideal": round(full["wall_over_ideal"], 3),
    })
    for k_, v in lines.items():
        print(f"{k_}={v}", flush=True)


def _configs(sdir: Path) -> set:
    """Every completed trial's (cell, lr, seed, phase): what the study ran, whatever its ids."""
    s = json.loads((sdir / "summary.json").read_text())
    return {(r["cell"], round(float(r["lr"]), 12), r["seed"], r["phase"])
            for r in s["trial_rows"] if r["status"] == "completed"}


def _decisions(g: dict) -> dict:
    """What an answer group decides: the depth shown best, the possible bests, the answer,
    whether it is decided, what is open, and every comparison's verdict (not the accuracies:
    early stopping decides as results arrive, so a cell's best learning rate can differ between
    two runs, uninterrupted or not)."""
    return {"best": g.get("best"), "answer": g.get("answer"),
            "possible_best": g.get("possible_best"), "decided": g.get("decided"),
            "open": g.get("open"),
            "verdicts": [(c.get("cell"), c.get("verdict")) for c in g.get("comparisons", [])]}


def _strip(a: dict) -> dict:
    """The Answer without what names trials (ids differ between two runs)."""
    return json.loads(json.dumps(a, sort_keys=True))


if __name__ == "__main__":
    main()
