"""The design's rules, where they live (``study.core.design``), and that the searcher, the plan
and the analysis read them from there: change a rule and all three see the change. Pure, no Ray
cluster, a few seconds."""
import copy
import re
from pathlib import Path

import pytest

from study.core import design as D
from study.core import metrics as M
from study.core import stats
from study.core.spec import load_spec_dict

REPO = Path(__file__).resolve().parent.parent
SPEC = {"name": "rules", "data": {"root": None},
        "splits": [{"name": "ab", "source": ["airplane", "automobile"], "target": ["bird", "cat"]}],
        "backbones": {"scratch_cnn": {"depths": [0, 2, 4]}}, "inits": ["source", "scratch"],
        "lr": {"low": 0.01, "high": 0.1}, "search": {"trials_per_cell": 2, "seed": 7},
        "confirm": {"seeds": 2, "max_seeds": 5}}


def _spec(**over):
    d = copy.deepcopy(SPEC)
    d.update(over)
    return load_spec_dict(d)


def test_cell_ids_groups_and_scratch_at_depth_0():
    d = D.design_of(_spec())
    assert [c.id for c in d.cells] == ["ab/scratch_cnn/source/d0", "ab/scratch_cnn/source/d2",
                                       "ab/scratch_cnn/source/d4", "ab/scratch_cnn/scratch/d0"]
    assert d.answer_groups == {"ab/scratch_cnn/source": [c.id for c in d.cells[:3]]}
    # a config's cell: scratch trains every stage, whatever depth a config carries
    assert d.cell_of({M.SPLIT: "ab", M.BACKBONE: "scratch_cnn", M.INIT: "scratch",
                      M.FROZEN_DEPTH: 3}).id == "ab/scratch_cnn/scratch/d0"
    assert all(cfg[M.FROZEN_DEPTH] == 0 for cfg in d.tuning_configs() if cfg[M.INIT] == "scratch")
    assert D.design_of(_spec()) is d  # derived once per process per spec


def test_seeds_per_role():
    d = D.design_of(_spec())
    assert d.tune_seed == 7 and d.confirm_seeds == (8, 9) and d.ceiling_seeds == (8, 9, 10, 11, 12)
    assert {cfg[M.SEED] for cfg in d.tuning_configs()} == {7}
    src, scratch = d.cells[0], d.cells[3]
    assert d.seeds_at_most(src) == d.ceiling_seeds  # the depths the Answer compares race
    # the scratch baseline races too: its gain over transfer is what racing also decides
    assert d.gain_races and d.seeds_at_most(scratch) == d.ceiling_seeds
    counts = d.trial_counts()
    assert (counts["tuning"], counts["confirm"], counts["confirm_max"]) == (8, 8, 4 * 5)
    assert [j[3] for j in d.source_jobs()] == [7, 8, 9, 10, 11, 12]


@pytest.mark.parametrize("mode,seeds,max_seeds,want", [
    ("compare", 2, 5, (2, 5)), ("compare", 2, None, None), ("compare", 2, 2, None),
    ("compare", 0, 3, None), ("best", 2, 5, None)])
def test_when_a_study_races(mode, seeds, max_seeds, want):
    assert D.race_levels(mode, seeds, max_seeds) == want
    if want:
        assert stats.looks(*want) == want[1] - want[0] + 1


def test_a_changed_rule_changes_what_the_searcher_the_plan_and_the_analysis_see(monkeypatch):
    """Turn racing off in the one place that decides it: the searcher stops racing, the plan
    stops pricing the ceiling, the report spends alpha at one look."""
    from analysis.report import answer_alpha
    from study.plan import make_plan
    from study.space import StudySearcher

    spec = _spec()
    before = (D.design_of(spec).racing, answer_alpha(spec.to_dict())[1],
              make_plan(spec, per_class=20, flops_per_s=1e9, log=lambda m: None))
    assert before[0] and before[1] == (2, 5)
    assert before[2]["totals"]["confirm_flops_max"] > before[2]["totals"]["confirm_flops"]

    monkeypatch.setattr(D, "race_levels", lambda mode, seeds, max_seeds: None)
    D.design_of.cache_clear()
    try:
        assert not D.design_of(spec).racing
        s = StudySearcher(spec.to_dict())
        assert not s.design.racing
        assert answer_alpha(spec.to_dict())[1] is None
        plan = make_plan(spec, per_class=20, flops_per_s=1e9, log=lambda m: None)
        assert plan["totals"]["confirm_flops_max"] == pytest.approx(plan["totals"]["confirm_flops"])
        assert plan["counts"]["confirm_max"] == plan["counts"]["confirm"]
    finally:
        D.design_of.cache_clear()


def _sources():
    for top in ("study", "analysis", "trainables", "benchmarks"):
        yield from (REPO / top).rglob("*.py")


def test_one_place_builds_a_cell_id_and_one_decides_racing():
    """Measured, as the design issue asks: the places that format a cell id
    (``<split>/<backbone>/<init>/d<depth>``) and that decide whether a study races."""
    cell_fmt = re.compile(r"""/d\{""")
    races = re.compile(r"ceiling\s*>\s*(k|seeds)\b|max_seeds\s*>\s*(k|seeds)\b")
    builds = [str(p.relative_to(REPO)) for p in _sources() if cell_fmt.search(p.read_text())]
    decides = [str(p.relative_to(REPO)) for p in _sources() if races.search(p.read_text())]
    assert builds == ["study/core/design.py"]
    assert decides == ["study/core/design.py"]


def test_the_report_lists_the_designs_cells_even_before_a_trial_reached_them(tmp_path):
    """The analysis builds its cells from the design of the study's recorded spec: a cell no
    trial has reached yet is listed (0 runs), and racing is read by the design's rule."""
    import json

    import yaml

    from analysis.load import load_study
    from analysis.view import cell_view
    from test_analysis_load import _trial

    spec = _spec()
    sdir = tmp_path / "rules"
    sdir.mkdir()
    (sdir / "study.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    (sdir / "provenance.json").write_text(json.dumps({"study": "rules"}))
    cell = D.design_of(spec).cells[0]
    cfg = D.StudyDesign.config(cell, 0.03, 7, M.PHASE_TUNE)
    _trial(sdir, "t1", cfg, spec.target_epochs, target=spec.target_epochs)
    v = cell_view(load_study(sdir))
    assert list(v.coverage[M.CELL]) == sorted(c.id for c in D.design_of(spec).cells)
    assert dict(zip(v.coverage[M.CELL], v.coverage["runs"])) == {
        c.id: int(c.id == cell.id) for c in D.design_of(spec).cells}
    assert v.racing == D.design_of(spec).race_levels == (2, 5)


def test_scratch_is_depth_0_in_one_place():
    d = D.design_of(_spec())
    assert d.depths("scratch_cnn", "scratch") == [0] and d.depths("scratch_cnn", "source") == [0, 2, 4]
    assert D.depth_of("scratch", 3) == 0 and D.depth_of("source", 3) == 3
    rule = re.compile(r"""init\s*[!=]=\s*["']scratch["']""")
    found = [str(p.relative_to(REPO)) for p in _sources() if rule.search(p.read_text())]
    assert found == [], found  # everyone asks study.core.design (SCRATCH, depth_of, depths)
