"""Racing in a real study (local Ray, tiny images): confirmation seeds go only where the paired
comparison is still open, and a driver killed while racing resumes without losing anything.

Each check replays the racing rule (``study.core.stats``) on the per-seed test accuracies the
study recorded and asserts that the study ran exactly the seeds the rule asked for."""
import json
from pathlib import Path

import pytest
import yaml

from study.core import metrics as M
from study.core import stats
from study.core.design import StudyDesign
from study.core.record import fold, seed_runs
from study.core.spec import load_spec_dict
from study.core.status import COMPLETED
from study.recorder import read_record
from study.runner import run_study

from faults import kill_driver_then_resume
from test_study_integration import tiny_spec, two_task_folder


def _racing_spec(base: Path, name: str) -> dict:
    """3 depths of the small CNN (one answer group) on a target task of a learnable class
    against pure noise (test accuracies scatter by an image or two, so comparisons stay open;
    two noise classes made every depth predict one class, exactly 50 %, on every seed), 2
    learning rates per cell, 1 confirmation seed (1 measuring run: no bound, so the first look
    races) then racing up to 3; tolerance 0: no cheaper depth can be shown within tolerance
    unless shown the best, so racing runs until the group is decided or at the ceiling; alpha
    0.001 (spent over the looks)."""
    two_task_folder(base / "data")
    d = tiny_spec(base / "data", base / "storage", base / "cache", name=name,
                  splits=[{"name": "ab_ce", "source": ["a", "b"], "target": ["c", "e"]}],
                  backbones={"scratch_cnn": {"depths": [0, 2, 4]}}, target_epochs=2,
                  confirm={"seeds": 1, "max_seeds": 3}, report={"tolerance": 0.0, "alpha": 0.001})
    d["search"].update(trials_per_cell=2, max_concurrent=2, seed=5)
    return d


def _runs(sdir: Path, target: int) -> dict:
    """cell -> {seed: test_acc} of the runs the Answer compares, from the study's record."""
    table = fold(read_record(str(sdir)), target)
    runs = seed_runs(table)
    n = sum(1 for t in table.values() if t["status"] == COMPLETED
            and (t["config"] or {}).get(M.PHASE) == M.PHASE_CONFIRM)
    assert n == sum(len(r) for r in runs.values()), "a seed ran twice"
    return runs


def _replay(design: StudyDesign, runs: dict) -> dict:
    """The seeds racing should have run, given the accuracies each seed produced: the first
    ``confirm.seeds``, then one look per level (``stats.next_seeds``), every open cell brought
    to the group's next seed."""
    spec = design.spec
    tol, alpha = spec.report.tolerance / 100, spec.report.alpha
    k, ceiling = design.race_levels
    asked = {c: set(design.confirm_seeds) for c in runs}
    while True:
        rows = [{"cell": c, "depth": design.cell(c).depth, "flops": 1.0 / (1 + design.cell(c).depth),
                 "accs": {s: a for s, a in runs[c].items() if s in asked[c]}} for c in runs]
        want = stats.next_seeds(rows, tol, alpha, k, ceiling)
        level = max(len(a) for a in asked.values())
        added = False
        for c in want:
            new = set(design.ceiling_seeds[:level + 1]) - asked[c]
            asked[c] |= new
            added = added or bool(new)
        if not added:
            return {c: sorted(s) for c, s in asked.items()}


def _check_racing(spec_dict: dict, sdir: Path) -> dict:
    design = StudyDesign(load_spec_dict(spec_dict))
    runs = _runs(sdir, design.target_epochs)
    assert set(runs) == {c.id for c in design.cells}
    ran = {c: sorted(r) for c, r in runs.items()}
    assert ran == _replay(design, runs), "racing ran other seeds than the rule asks for"
    for c, seeds in ran.items():  # never past the ceiling
        assert len(seeds) <= len(design.ceiling_seeds)
    return ran


@pytest.mark.slow  # ~1 min on 2 cores: keeps the default suite under 8 minutes
def test_racing_adds_seeds_only_to_open_comparisons(tmp_path, ray_local):
    d = _racing_spec(tmp_path, "race")
    summary = run_study(load_spec_dict(d))
    assert summary["errored"] == 0 and summary["cells_completed"] == 3
    ran = _check_racing(d, Path(summary["results"]))
    print("\nracing: runs per cell", {c: len(s) for c, s in ran.items()})
    assert max(len(s) for s in ran.values()) > 1, "no comparison was raced"


@pytest.mark.slow
def test_driver_killed_while_racing_then_resumed(tmp_path):
    """SIGKILL the driver once a racing seed (beyond confirm.seeds) has reported; `study
    resume` continues the racing: no finished trial lost or rerun, and the seeds run are still
    exactly the ones the rule asks for."""
    d = _racing_spec(tmp_path, "racekill")
    d["max_failures"] = 1
    spec = tmp_path / "racekill.yaml"
    spec.write_text(yaml.safe_dump(d))
    sdir = tmp_path / "storage" / "racekill"
    design = StudyDesign(load_spec_dict(d))
    racing_seeds = set(design.ceiling_seeds) - set(design.confirm_seeds)
    r = kill_driver_then_resume(
        spec, sdir, design.target_epochs, tmp_path / "run.log",
        lambda table: any((t["config"] or {}).get(M.SEED) in racing_seeds and t["epoch"]
                          for t in table.values()))
    if not r["killed"]:  # every comparison decided at the first look: nothing to race here
        pytest.skip("the study decided without racing; nothing to kill during racing")
    res, after = r["resume"], r["after"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for t, v in r["finished"].items():  # not lost, not rerun
        assert after[t]["status"] == COMPLETED and after[t][M.TEST_ACC] == v[M.TEST_ACC], t
    summary = json.loads((sdir / "summary.json").read_text())
    assert summary["errored"] == 0 and summary["interrupted"] == 0, summary
    _check_racing(d, sdir)
