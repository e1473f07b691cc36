"""A trial whose worker dies mid-study resumes from its checkpoint and ends exactly where an
undisturbed run ends (same seed, CPU): nothing is retrained from scratch, the source model is
not retrained."""
import json
from pathlib import Path

import ray
from ray.tune import Callback

from study.runner import run_study
from study.core.spec import load_spec_dict
from study.core import metrics as M

from test_study_integration import tiny_spec


class KillWorkerAtEpoch(Callback):
    """Kills the trial's worker process (a real actor death) once, after it reports `epoch`."""

    def __init__(self, epoch: int):
        self.epoch, self.killed = epoch, False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result[M.EPOCH] == self.epoch:
            self.killed = True
            ray.kill(trial.temporary_state.ray_actor, no_restart=True)


def _one_trial_spec(data, base: Path, name: str):
    return load_spec_dict(tiny_spec(
        data, base / name, base / "cache", name=name, inits=["source"],
        backbones={"scratch_cnn": {"frozen_depth": 1}},
        lr={"low": 0.05, "high": 0.05, "grid": [0.05]},
        search={"algorithm": "grid", "max_concurrent": 1, "seed": 3},
        scheduler={"type": "fifo"}, max_failures=2))


def _rows(study_dir: Path):
    (f,) = study_dir.glob("*/result.json")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def test_killed_trial_resumes_from_checkpoint_and_matches_undisturbed_run(tiny_folder, tmp_path, ray_local):
    calm = run_study(_one_trial_spec(tiny_folder, tmp_path, "calm"))
    hit = run_study(_one_trial_spec(tiny_folder, tmp_path, "hit"), callbacks=[KillWorkerAtEpoch(2)])
    assert calm["completed"] == hit["completed"] == 1 and hit["errored"] == 0
    a, b = _rows(Path(calm["results"])), _rows(Path(hit["results"]))
    epochs = [r[M.EPOCH] for r in b]
    assert epochs[:2] == [1, 2] and epochs[-1] == 4 and 1 not in epochs[2:], epochs  # no restart
    for key in (M.VAL_ACC, M.VAL_LOSS, M.TEST_ACC, M.TARGET_FLOPS):
        assert a[-1][key] == b[-1][key], key
    users = list(Path(hit["results"]).glob("sources/*/users.txt"))
    assert len(users) == 1 and len(users[0].read_text().split()) == 1


def test_a_cut_off_experiment_state_is_restored_from_its_last_complete_copy(tmp_path):
    """Tune writes experiment_state-*.json in place; a driver killed mid-write leaves it cut off.
    The backup keeps only complete copies, and resume puts the last one back."""
    from study.state import STATE_BACKUP_SUFFIX, backup_experiment_state, restore_cut_experiment_state

    state = tmp_path / "experiment_state-2026-12-02_15-03-20.json"
    good = '{"trial_data": [["{}", "{}"]], "runner_data": {}}'
    state.write_text(good)
    backup_experiment_state(str(tmp_path))
    state.write_text(good[:17])  # a later save, cut off by the kill
    backup_experiment_state(str(tmp_path))  # a cut-off file is never copied over a good one
    assert (tmp_path / (state.name + STATE_BACKUP_SUFFIX)).read_text() == good
    logs = []
    assert restore_cut_experiment_state(str(tmp_path), logs.append)
    assert state.read_text() == good and "restored its last complete copy" in logs[0]
    assert not restore_cut_experiment_state(str(tmp_path), logs.append)  # complete: untouched
