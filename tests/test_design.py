"""The study's design (one value built from the spec), the one status rule, and the study's own
record: what `study plan` prices is what the run does; a trial's status is the same in
summary.json, trials.jsonl and the report."""
import json
import os
import signal
from pathlib import Path

import pytest
from ray.tune import Callback

from analysis.load import load_study
from study.core import metrics as M
from study.core.design import StudyDesign, cell_id
from study.core.record import fold, parse, recreated
from study.core.spec import load_spec_dict
from study.core.status import COMPLETED, ERRORED, INTERRUPTED, RUNNING, STOPPED, trial_status
from study.plan import make_plan
from study.runner import run_study

from test_study_integration import tiny_spec


def _spec(tmp_path, **over):
    return load_spec_dict(tiny_spec(tmp_path / "data", tmp_path / "s", tmp_path / "c", **over))


# ----------------------------------------------------------------------------- pure

def test_status_rule_order():
    assert trial_status(4, 4, ended=True, error=True) == COMPLETED  # complete run first
    assert trial_status(2, 4, ended=True, error=True) == ERRORED
    assert trial_status(2, 4, ended=True, error=False) == STOPPED
    assert trial_status(2, 4, ended=False, error=False, study_running=True) == RUNNING
    assert trial_status(2, 4, ended=False, error=False) == INTERRUPTED
    assert trial_status(None, 4, ended=False, error=False) == INTERRUPTED


def test_record_fold_last_attempt_wins_and_study_end_closes_open_trials():
    ev = [{"event": "start", "trial_id": "a", "config": {"x": 1}},
          {"event": "result", "trial_id": "a", "epoch": 1, "val_acc": 0.5},
          {"event": "end", "trial_id": "a", "epoch": 1, "error": "boom"},
          {"event": "start", "trial_id": "b"},
          {"event": "result", "trial_id": "b", "epoch": 2},
          {"event": "study", "interrupted": True}]
    t = fold(ev, 3)
    assert t["a"]["status"] == ERRORED and t["b"]["status"] == INTERRUPTED
    # resumed: a retried and completed, b resumed and stopped early, c started and not ended
    ev += [{"event": "start", "trial_id": "a"}, {"event": "result", "trial_id": "a", "epoch": 3},
           {"event": "end", "trial_id": "a", "epoch": 3, "error": None},
           {"event": "start", "trial_id": "b"}, {"event": "end", "trial_id": "b", "epoch": 2},
           {"event": "start", "trial_id": "c"}]
    t = fold(ev, 3, study_running=True)
    assert (t["a"]["status"], t["b"]["status"], t["c"]["status"]) == (COMPLETED, STOPPED, RUNNING)
    assert t["a"]["config"] == {"x": 1}
    t = fold(ev + [{"event": "study", "interrupted": False}], 3)
    assert t["c"]["status"] == STOPPED  # Tune ended it (e.g. time budget): not interrupted
    # a cut-off last line (driver killed mid-write) is skipped
    assert parse('{"event": "start", "trial_id": "a"}\n{"event": "res') == [
        {"event": "start", "trial_id": "a"}]


def test_record_fold_leaves_out_a_trial_created_again_on_resume():
    # the driver stopped after the searcher created "a" and before Tune's next snapshot: on
    # resume the searcher hands a's configuration out again, as "a2"
    cfg = {"cell": "s/b/source/d1", "lr": 0.1, "seed": 0, "phase": "tune"}
    ev = [{"event": "start", "trial_id": "a", "config": dict(cfg)},
          {"event": "result", "trial_id": "a", "epoch": 1},
          {"event": "start", "trial_id": "b", "config": {**cfg, "seed": 1}},
          {"event": "start", "trial_id": "b", "config": {**cfg, "seed": 1}},  # b resumed
          {"event": "start", "trial_id": "a2", "config": dict(reversed(list(cfg.items())))},
          {"event": "end", "trial_id": "a2", "epoch": 3},
          {"event": "end", "trial_id": "b", "epoch": 3}]
    assert recreated(ev) == ["a"]
    t = fold(ev, 3)
    assert sorted(t) == ["a2", "b"] and t["a2"]["status"] == t["b"]["status"] == COMPLETED


def test_design_cells_seeds_and_sources(tmp_path):
    spec = _spec(tmp_path, backbones={"scratch_cnn": {"depths": [0, 2]}},
                 inits=["source", "scratch"], confirm={"seeds": 2}, search={"seed": 5, "trials_per_cell": 2})
    d = StudyDesign(spec)
    assert [c.id for c in d.cells] == ["ab_cd/scratch_cnn/source/d0", "ab_cd/scratch_cnn/source/d2",
                                       "ab_cd/scratch_cnn/scratch/d0"]
    assert d.answer_groups == {"ab_cd/scratch_cnn/source": ["ab_cd/scratch_cnn/source/d0",
                                                            "ab_cd/scratch_cnn/source/d2"]}
    assert d.confirm_seeds == (6, 7) and d.tune_seed == 5
    # one source model per seed a source cell's trials use (tuning + confirmation)
    assert [j[3] for j in d.source_jobs()] == [5, 6, 7]
    assert cell_id("ab", "x", "scratch", 3) == "ab/x/scratch/d0"
    best = d.tuning_configs()[1]
    assert [c[M.SEED] for c in d.confirm_configs(best)] == [6, 7]
    assert all(c[M.PHASE] == M.PHASE_CONFIRM and c[M.CELL] == best[M.CELL]
               for c in d.confirm_configs(best))
    assert d.trial_counts()["total"] == 3 * 2 + 3 * 2


def test_plan_prices_mode_best(tmp_path):
    """`study plan` on mode best: tuning and confirmation FLOPs are not zero, and the source
    models it counts are the ones the runner trains (repeat seeds + the best's seeds)."""
    spec = _spec(tmp_path, search={"mode": "best", "algorithm": "random", "num_samples": 4,
                                   "repeats": 2, "seed": 1, "max_concurrent": 2},
                 confirm={"seeds": 2})
    plan = make_plan(spec, per_class=40, flops_per_s=1e9, log=lambda m: None)
    t = plan["totals"]
    assert t["tuning_flops_halving"] > 0 and t["confirm_flops"] > 0
    d = StudyDesign(spec)
    # repeat seeds 1, 2 and confirmation seeds 2, 3 (2 is a repeat seed already), all up front
    assert t["source_models"] == len(d.source_jobs()) == 3
    assert plan["counts"]["total"] == 4 * 2 + 2


@pytest.mark.usefixtures("ray_local")
def test_plan_counts_the_source_models_a_mode_best_run_trains(tiny_folder, tmp_path):
    spec = load_spec_dict(tiny_spec(
        tiny_folder, tmp_path / "storage", tmp_path / "cache", name="best",
        backbones={"scratch_cnn": {"depths": [0, 3]}}, target_epochs=2,
        search={"mode": "best", "algorithm": "random", "num_samples": 2, "repeats": 1,
                "seed": 1, "max_concurrent": 2}, confirm={"seeds": 1},
        scheduler={"type": "fifo"}))
    plan = make_plan(spec, per_class=40, flops_per_s=1e9, log=lambda m: None)
    summary = run_study(spec)
    trained = list(Path(summary["results"]).glob("sources/*/model.pt"))
    t = plan["totals"]
    # every model a trial may need is trained up front: the repeat and the confirmation seed
    assert len(trained) == t["source_models"] == 2
    assert summary["trials"] == plan["counts"]["total"] == 3


# ----------------------------------------------------------------------------- one status

class KillWorkerAfterFinalEpoch(Callback):
    """SIGKILLs the worker of the first trial that reports its final epoch, right after that
    report: the trial has a complete run, then Tune records an error for it (no retries)."""

    def __init__(self, target: int, marker: str):
        self.target, self.marker = target, marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(M.EPOCH) == self.target and not Path(self.marker).exists():
            Path(self.marker).write_text(trial.trial_id)
            os.kill(result["pid"], signal.SIGKILL)


@pytest.mark.usefixtures("ray_local")
def test_a_trial_that_errors_after_its_last_epoch_has_one_status_everywhere(tiny_folder, tmp_path):
    spec = load_spec_dict(tiny_spec(
        tiny_folder, tmp_path / "storage", tmp_path / "cache", name="errafter",
        backbones={"scratch_cnn": {"depths": [0]}}, inits=["scratch"], target_epochs=2,
        search={"trials_per_cell": 2, "max_concurrent": 1, "seed": 1},
        scheduler={"type": "fifo"}))
    marker = tmp_path / "killed"
    summary = run_study(spec, callbacks=[KillWorkerAfterFinalEpoch(2, str(marker))])
    tid = marker.read_text()
    sdir = Path(summary["results"])
    events = parse((sdir / "trials.jsonl").read_text())
    ends = [e for e in events if e.get("trial_id") == tid and e["event"] == "end"]
    assert ends and ends[-1]["error"], "Tune did not record an error for the killed trial"
    rows = {r["trial_id"]: r for r in summary["trial_rows"]}
    report = load_study(sdir).trials.set_index("trial_id")
    assert rows[tid]["status"] == fold(events, 2)[tid]["status"] == report.loc[tid, "status"] == COMPLETED
    assert json.loads((sdir / "summary.json").read_text())["completed"] == 2
