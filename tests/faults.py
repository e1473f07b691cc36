"""Real faults for the fault-tolerance tests, as Tune callbacks in a study's driver, and a driver
entry point (``python tests/faults.py SPEC --fault ...``) that runs a study with one of them.

Callbacks are pickled with the study (tuner.pkl), so they hold only plain values (paths, pids).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from ray.tune import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from study.core import metrics as M  # noqa: E402


def kill_driver_then_resume(spec_file: Path, sdir: Path, target_epochs: int, log_file: Path,
                            kill_when, timeout_s: float = 600) -> dict:
    """`study run SPEC` in its own process group, SIGKILLed once ``kill_when(table)`` holds for
    the study's record folded while it runs (trial id -> trial), then `study resume SDIR`.
    Returns {killed, finished (the trials completed before the kill), resume (the
    CompletedProcess), after (the record folded at the end)}; fails if the study neither ended
    nor was killed within ``timeout_s``."""
    import subprocess
    import time

    from study.core.record import fold
    from study.core.status import COMPLETED
    from study.recorder import read_record

    repo = Path(__file__).resolve().parent.parent
    study = [sys.executable, "-m", "study.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed = False
    with open(log_file, "w") as log:
        driver = subprocess.Popen([*study, "run", str(spec_file)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env, cwd=repo,
                                  start_new_session=True)
        deadline = time.time() + timeout_s
        while driver.poll() is None and time.time() < deadline:
            table = fold(read_record(str(sdir)), target_epochs, study_running=True) \
                if (sdir / "trials.jsonl").exists() else {}
            if kill_when(table):
                os.killpg(driver.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
        driver.wait(timeout=60)
    assert time.time() < deadline, log_file.read_text()[-3000:]
    before = fold(read_record(str(sdir)), target_epochs)
    finished = {t: v for t, v in before.items() if v["status"] == COMPLETED}
    res = None
    if killed:
        res = subprocess.run([*study, "resume", str(sdir)], capture_output=True, text=True,
                             env=env, cwd=repo, timeout=900)
    after = fold(read_record(str(sdir)), target_epochs)
    return {"killed": killed, "finished": finished, "resume": res, "after": after}


def parent_pid(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def pids_naming(text) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text`` (a Ray temp or
    session directory: Ray's processes carry it in theirs), other than this one."""
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(text) in cmd and state != "Z":
            out.append(int(d.name))
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                children.setdefault(parent_pid(int(d.name)), []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class KillNodeAtEpoch(Callback):
    """Loses the worker node running a trial, once, after that trial reports `epoch`: SIGKILL to
    the node's raylet and every process under it (its workers, agents), as when a machine dies.
    It strikes once the epoch's checkpoint is registered, so the trial must resume from it."""

    def __init__(self, epoch: int, head_raylet_pid: int, marker: str):
        self.epoch, self.head, self.marker = epoch, head_raylet_pid, marker

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        result = trial.last_result
        if Path(self.marker).exists() or result.get(M.EPOCH) != self.epoch:
            return
        raylet = parent_pid(result["pid"])
        assert process_name(raylet) == "raylet", process_name(raylet)
        if raylet == self.head:  # never the head: it holds the driver's cluster state
            return
        tree = process_tree(raylet)
        Path(self.marker).write_text(json.dumps({"trial_id": trial.trial_id, "raylet": raylet,
                                                 "worker": result["pid"], "killed": tree}))
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class CorruptSourceAfterTrial(Callback):
    """When the first trial finishes, overwrites its split's shared source model with garbage
    (a truncated file on disk): every later trial of that split fails loading it."""

    def __init__(self, study_dir: str, marker: str):
        self.study_dir, self.marker = study_dir, marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if Path(self.marker).exists():
            return
        split = trial.config[M.SPLIT]
        (model,) = Path(self.study_dir).glob(f"sources/*-{split}-s*/model.pt")
        model.write_bytes(b"not a torch file")
        Path(self.marker).write_text(json.dumps({"trial_id": trial.trial_id, "split": split}))


def main(argv=None) -> int:
    from study.runner import run_study, study_dir
    from study.core.spec import load_spec

    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--fault", choices=["kill-node", "corrupt-source", "none"], default="none")
    p.add_argument("--epoch", type=int, default=2)
    p.add_argument("--head-raylet", type=int, default=0)
    p.add_argument("--marker", default="")
    a = p.parse_args(argv)
    spec = load_spec(a.spec)
    cb = {"kill-node": lambda: [KillNodeAtEpoch(a.epoch, a.head_raylet, a.marker)],
          "corrupt-source": lambda: [CorruptSourceAfterTrial(study_dir(spec), a.marker)],
          "none": lambda: []}[a.fault]()
    summary = run_study(spec, callbacks=cb)
    return 0 if summary["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
