"""Loading study directories (hand-written, no Ray): statuses, amortised source cost, partial and
unreadable results, URIs."""
import json
from pathlib import Path

import pytest

from analysis.load import SOURCE_FLOPS_AMORTISED, TOTAL_FLOPS, ReportError, load_study
from study.core import metrics as M
from study.core.stats import VERDICTS
from study.core.status import COMPLETED, ERRORED, RUNNING, STOPPED


def _trial(sdir: Path, tid: str, cfg: dict, epochs: int, target: int = 3, src_flops=0.0,
           error: bool = False, test_acc: float = 0.5, epoch_flops: float = 100.0):
    d = sdir / f"{tid}_{cfg[M.SPLIT]}_{cfg[M.BACKBONE]}_{cfg[M.INIT]}_d{cfg[M.FROZEN_DEPTH]}"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(cfg))
    lines = []
    for e in range(1, epochs + 1):
        r = {M.EPOCH: e, M.VAL_ACC: 0.1 * e + cfg[M.LR], M.VAL_LOSS: 1.0 / e, M.TRAIN_LOSS: 1.0,
             M.TARGET_FLOPS: epoch_flops * e, M.SOURCE_FLOPS: src_flops, M.SOURCE_SHARED_BY: 1,
             M.SOURCE_VAL_ACC: 0.5, M.WALL_S: 2.0 * e, M.EPOCH_S: 2.0, M.TRAINABLE_PARAMS: 10,
             M.TOTAL_PARAMS: 20, M.DONE: e == target, M.SEED: cfg.get(M.SEED, 0),
             "trial_id": tid, "config": cfg}
        if e == target:
            r.update({M.TEST_ACC: test_acc, M.TEST_CONFUSION: [[1, 0], [0, 1]],
                      M.TEST_PER_CLASS: {"c": {"precision": 1, "recall": 1, "f1": 1, "support": 1}}})
        lines.append(json.dumps(r))
    (d / "result.json").write_text("".join(x + "\n" for x in lines))
    if error:
        (d / "error.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    return d


def make_study(root: Path, finished: bool = True) -> Path:
    s = root / "fake"
    s.mkdir(parents=True)
    (s / "study.yaml").write_text("name: fake\ntarget_epochs: 3\n")
    (s / "provenance.json").write_text(json.dumps({"study": "fake", "created": "2026-01-01T00:00:00",
                                                   "data": {"splits": {"x": {"target": ["c", "d"]}}}}))
    cfg = lambda init, d, lr: {M.SPLIT: "x", M.BACKBONE: "scratch_cnn", M.INIT: init,  # noqa: E731
                               M.FROZEN_DEPTH: d, M.LR: lr, M.SEED: 0}
    _trial(s, "aaa", cfg("source", 1, 0.01), 3, src_flops=600.0)
    _trial(s, "bbb", cfg("source", 2, 0.02), 1, src_flops=600.0)
    _trial(s, "ccc", cfg("scratch", 0, 0.03), 1)
    _trial(s, "ddd", cfg("source", 3, 0.04), 2, src_flops=600.0, error=True)
    src = s / "sources" / "scratch_cnn-x-s0-abc"
    src.mkdir(parents=True)
    (src / "info.json").write_text(json.dumps({"flops": 600.0, "train_s": 30.0}))
    (src / "users.txt").write_text("aaa\nbbb\nddd\n")
    if finished:
        (s / "summary.json").write_text(json.dumps({"trials": 4}))
    return s


def test_statuses_metrics_and_amortised_source(tmp_path):
    s = load_study(make_study(tmp_path))
    t = s.trials.set_index("trial_id")
    assert t["status"].to_dict() == {"aaa": COMPLETED, "bbb": STOPPED, "ccc": STOPPED, "ddd": ERRORED}
    assert "boom" in t.loc["ddd", "error"]
    assert t.loc["aaa", SOURCE_FLOPS_AMORTISED] == 200.0  # 600 FLOPs / 3 users
    assert t.loc["aaa", TOTAL_FLOPS] == 300.0 + 200.0
    assert t.loc["ccc", SOURCE_FLOPS_AMORTISED] == 0.0 and t.loc["ccc", TOTAL_FLOPS] == 100.0
    assert t.loc["aaa", "total_device_s"] == pytest.approx(6.0 + 10.0)
    assert t.loc["aaa", M.TEST_ACC] == 0.5 and t.loc["bbb", M.TEST_ACC] != t.loc["bbb", M.TEST_ACC]
    assert t.loc["aaa", "best_val_acc"] == pytest.approx(0.31) and t.loc["aaa", "best_epoch"] == 3
    assert len(s.epochs) == 3 + 1 + 1 + 2 and set(s.epochs["status"]) == {COMPLETED, STOPPED, ERRORED}
    assert s.target_classes("x") == ["c", "d"] and not t["incomplete"].any()


def test_old_study_derives_cell_and_phase(tmp_path):
    s = load_study(make_study(tmp_path))
    t = s.trials.set_index("trial_id")
    assert t.loc["aaa", M.CELL] == "x/scratch_cnn/source/d1"
    assert t.loc["ccc", M.CELL] == "x/scratch_cnn/scratch/d0"
    assert set(t[M.PHASE]) == {M.PHASE_TUNE} and set(s.epochs[M.PHASE]) == {M.PHASE_TUNE}
    e = s.epochs[s.epochs["trial_id"] == "ddd"]
    assert set(e[M.CELL]) == {"x/scratch_cnn/source/d3"}


def make_cell_study(root: Path) -> Path:
    """A study with cells: per cell, lr tuned (tune), then the best lr again with new seeds
    (confirm). The scratch config carries a frozen_depth it does not use."""
    s = root / "cells"
    s.mkdir(parents=True)
    (s / "study.yaml").write_text("name: cells\ntarget_epochs: 3\nsearch: {mode: compare, "
                                  "trials_per_cell: 2}\nconfirm: {seeds: 2}\n"
                                  "report: {tolerance: 1.0}\n")
    (s / "provenance.json").write_text(json.dumps({"study": "cells", "created": "2026-02-01"}))

    def cfg(init, d, lr, seed, phase):
        dd = 0 if init == "scratch" else d
        return {M.SPLIT: "x", M.BACKBONE: "resnet18", M.INIT: init, M.FROZEN_DEPTH: d, M.LR: lr,
                M.SEED: seed, M.CELL: f"x/resnet18/{init}/d{dd}", M.PHASE: phase}
    tune, conf = M.PHASE_TUNE, M.PHASE_CONFIRM
    _trial(s, "t01", cfg("imagenet", 2, 0.01, 0, tune), 3, test_acc=0.70)
    _trial(s, "t02", cfg("imagenet", 2, 0.3, 0, tune), 1)  # stopped inside its cell
    _trial(s, "c01", cfg("imagenet", 2, 0.01, 1, conf), 3, test_acc=0.72)
    _trial(s, "c02", cfg("imagenet", 2, 0.01, 2, conf), 3, test_acc=0.74)
    _trial(s, "t03", cfg("scratch", 3, 0.1, 0, tune), 3, test_acc=0.60)
    _trial(s, "c03", cfg("scratch", 3, 0.1, 1, conf), 2)  # a confirm run that did not finish
    (s / "summary.json").write_text(json.dumps({"trials": 6}))
    return s


def test_cells_and_phases_in_trials_and_epochs(tmp_path):
    from analysis import cells as C

    s = load_study(make_cell_study(tmp_path))
    t = s.trials.set_index("trial_id")
    assert t.loc["t01", M.CELL] == t.loc["c02", M.CELL] == "x/resnet18/imagenet/d2"
    assert t.loc["t03", M.CELL] == "x/resnet18/scratch/d0" and t.loc["t03", M.FROZEN_DEPTH] == 0
    assert t[M.PHASE].to_dict() == {"t01": M.PHASE_TUNE, "t02": M.PHASE_TUNE,
                                    "c01": M.PHASE_CONFIRM, "c02": M.PHASE_CONFIRM,
                                    "t03": M.PHASE_TUNE, "c03": M.PHASE_CONFIRM}
    assert t.loc["c02", M.SEED] == 2 and t.loc["t02", "status"] == STOPPED
    e = s.epochs
    assert {M.CELL, M.PHASE} <= set(e.columns) and len(e) == 3 + 1 + 3 + 3 + 3 + 2
    assert set(e.loc[e["trial_id"] == "c01", M.PHASE]) == {M.PHASE_CONFIRM}
    assert set(e.loc[e["trial_id"] == "t03", M.CELL]) == {"x/resnet18/scratch/d0"}
    # the loaded frame feeds the cell statistics directly
    runs = C.cell_runs(s.trials)  # the tune run t01 selected: it never measures
    assert sorted(runs["trial_id"]) == ["c01", "c02", "t03"]
    summ = C.cell_summary(runs).set_index(M.CELL)
    assert summ.loc["x/resnet18/imagenet/d2", "n"] == 2
    assert summ.loc["x/resnet18/imagenet/d2", "mean"] == pytest.approx(0.73)
    assert summ.loc["x/resnet18/scratch/d0", "n"] == 1


def test_interrupted_study_marks_incomplete_and_tolerates_partial_line(tmp_path):
    sdir = make_study(tmp_path, finished=False)
    rj = next(sdir.glob("bbb_*")) / "result.json"
    rj.write_text(rj.read_text() + '{"epoch": 2, "val_a')  # a line being written
    s = load_study(sdir)
    t = s.trials.set_index("trial_id")
    assert t.loc["bbb", "status"] == RUNNING and t.loc["bbb", "epochs"] == 1
    assert t.loc["aaa", "status"] == COMPLETED and t.loc["bbb", "incomplete"]


def test_an_epoch_trained_again_after_a_resume_counts_once(tmp_path):
    """A trial resumed from a checkpoint older than its last report (Ctrl-C or a driver kill
    between a report and Tune's save) reports those epochs again: the last report wins."""
    sdir = make_study(tmp_path)
    rj = next(sdir.glob("aaa_*")) / "result.json"
    lines = rj.read_text().splitlines()
    again = json.loads(lines[1])
    again[M.VAL_ACC] = 0.99
    rj.write_text("\n".join(lines[:2] + [json.dumps(again)] + lines[2:]) + "\n")
    s = load_study(sdir)
    e = s.epochs[s.epochs["trial_id"] == "aaa"]
    assert list(e[M.EPOCH]) == [1, 2, 3] and e[M.VAL_ACC].iloc[1] == 0.99
    assert s.trials.set_index("trial_id").loc["aaa", "status"] == COMPLETED


def test_sources_folder_missing_infers_users(tmp_path):
    sdir = make_study(tmp_path)
    import shutil
    shutil.rmtree(sdir / "sources")
    t = load_study(sdir).trials.set_index("trial_id")
    assert t.loc["aaa", SOURCE_FLOPS_AMORTISED] == 200.0  # 3 trials report that source


def test_uri_storage(tmp_path):
    sdir = make_study(tmp_path)
    s = load_study(f"file://{sdir}")
    assert len(s.trials) == 4 and s.name == "fake"


@pytest.mark.parametrize("case", ["missing", "not_study", "empty", "bad_line", "bad_yaml"])
def test_bad_inputs_name_the_path(tmp_path, case):
    sdir = make_study(tmp_path)
    target = sdir
    if case == "missing":
        target = tmp_path / "nope"
    elif case == "not_study":
        target = tmp_path / "plain"
        target.mkdir()
    elif case == "empty":
        target = tmp_path / "empty"
        target.mkdir()
        (target / "study.yaml").write_text("name: empty\n")
    elif case == "bad_line":
        rj = next(sdir.glob("aaa_*")) / "result.json"
        rj.write_text("{not json\n" + rj.read_text())
        target = rj
    elif case == "bad_yaml":
        (sdir / "study.yaml").write_text("[unclosed\n")
        target = sdir / "study.yaml"
    with pytest.raises(ReportError) as e:
        load_study(sdir if case in ("bad_line", "bad_yaml") else target)
    assert str(target) in str(e.value)


def test_reports_render_from_fake_studies_without_ray(tmp_path):
    """make_report / make_compare on hand-written study folders: a cell study with confirm runs
    and an old one (no cells, n=1, errored trial); sections in order, tolerance from the spec."""
    from analysis.compare import make_compare
    from analysis.report import make_report, tolerance_points

    cells, old = make_cell_study(tmp_path / "a"), make_study(tmp_path / "b")
    out, text = make_report(cells, tmp_path / "r1")
    md = (out / "report.md").read_text()
    heads = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert [h.split(".")[0] for h in heads] == [str(i) for i in range(1, 10)]
    assert heads[0].startswith("1. Answer") and heads[1].startswith("2. When transfer pays")
    assert heads[2].startswith("3. Cells")
    assert "73.0% ± 12.7 (n=2)" in md  # imagenet d2: confirmation runs [.72, .74]
    assert "x/resnet18/imagenet/d2 | 2 | 1 | 1 | 0 | 0 | 2 / 2 | 2" in md  # coverage row
    assert "could be the best lies above −1 points" in md and "tolerance 1 point" in text
    assert "POST HOC" not in md
    for f in ("depth.png", "gain.png", "cell_frontier_x.png", "frontier_x.png",
              "early_stopping.png", "answer_forest.png"):
        assert (out / f).stat().st_size > 0, f
    data = json.loads((out / "report.json").read_text())  # the Answer as data
    assert data["answer"]["tolerance_points"] == 1.0 and data["answer"]["alpha"] == 0.05
    groups = data["answer"]["groups"]
    assert groups and all({"leader", "best", "possible_best", "answer", "decided", "open",
                           "comparisons"} <= set(g) for g in groups)
    assert all(c["verdict"] in VERDICTS and "accs" in c
               for g in groups for c in g["comparisons"])
    out, _ = make_report(old, tmp_path / "r2", tolerance=0.5)
    md = (out / "report.md").read_text()
    assert "50.0% ± – (n=1)" in md and "ddd" in md and "written before cells" in md
    assert "could be the best lies above −0.5 points" in md
    # a tolerance chosen after the results: said on the first screen
    assert md.index("POST HOC: this Answer uses a tolerance of 0.5 point(s)") < md.index("Metric:")
    assert json.loads((out / "report.json").read_text())["answer"]["post_hoc"] is True
    out, _ = make_compare([cells, old], tmp_path / "c")
    md = (out / "report.md").read_text()
    assert "## 2. Answer per study" in md and (out / "compare_depth_x.png").stat().st_size > 0
    assert tolerance_points({"report": {"tolerance": 2.5}}) == 2.5
    assert tolerance_points({}) == tolerance_points({"report": {"tolerance": "x"}}) == 1.0
    with pytest.raises(ReportError):
        make_report(cells, tmp_path / "r3", tolerance=-1)
    assert not (tmp_path / "r3").exists()


@pytest.mark.parametrize("scheduler, label", [(None, "successive halving"),  # the spec default
                                              ("halving", "successive halving"),
                                              ("asha", "ASHA"), ("fifo", "none (FIFO)")])
def test_report_names_the_early_stopping_that_ran(tmp_path, scheduler, label):
    """Every sentence about early stopping names the study's scheduler.type."""
    from analysis.report import make_report

    s = make_cell_study(tmp_path)
    if scheduler:
        with open(s / "study.yaml", "a") as f:
            f.write(f"scheduler: {{type: {scheduler}}}\n")
    out, text = make_report(s, tmp_path / "r")
    md = (out / "report.md").read_text().split("## 9. Provenance")[0]  # not the spec's own text
    assert f"## 8. Early-stopping accounting: {label}" in md
    assert f"; early stopping: {label}. Cells:" in md and f"early stopping: {label};" in text
    assert (out / "early_stopping.png").stat().st_size > 0
    others = {"successive halving", "ASHA"} - {label}
    assert not any(o in md or o in text for o in others), others
    if scheduler == "fifo":
        assert "stopped by" not in md and "Under FIFO, the trials ran" in md
        assert "hollow: incomplete;" in md
    else:
        assert f"stopped by {label}" in md and f"Under {label}, the trials ran" in md


def test_spec_defaults_come_from_the_spec_schema():
    from analysis.report import confirm_seeds, spec_default, tolerance_points
    from study.core.spec import ConfirmSpec, ReportSpec, SchedulerSpec

    assert spec_default("report.tolerance") == ReportSpec().tolerance
    assert spec_default("confirm.seeds") == ConfirmSpec().seeds
    assert spec_default("scheduler.type") == SchedulerSpec().type
    assert tolerance_points({}) == spec_default("report.tolerance")
    assert confirm_seeds({"confirm": {}}) == spec_default("confirm.seeds")
    assert confirm_seeds({"confirm": {"seeds": 1}}) == 1
    assert confirm_seeds({}) == 0  # a study written before the confirm phase


def test_a_raced_study_decides_at_the_racing_alpha_and_says_what_racing_saved(tmp_path):
    from analysis.report import make_report

    sdir = make_cell_study(tmp_path)
    (sdir / "study.yaml").write_text((sdir / "study.yaml").read_text().replace(
        "confirm: {seeds: 2}", "confirm: {seeds: 2, max_seeds: 4}"))
    out, _ = make_report(sdir, tmp_path / "r")
    md = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())["answer"]
    assert data["racing"] == [2, 4] and data["alpha"] == 0.05
    # 2 runs per cell: the first of 3 looks, alpha * 2^2 / (2^2 + 3^2 + 4^2)
    assert data["groups"][0]["alpha_look"] == pytest.approx(0.05 * 4 / 29)
    assert "spent over the racing's 3 looks (2 to 4 runs per cell) in proportion to n²" in md
    # the one compared cell (imagenet d2) ran 2 confirmation runs of a ceiling of 4
    assert ("Racing: 2 confirmation runs in the 1 compared cells, against 4 if every cell had got "
            "the ceiling of 4 seeds: 50 % of that confirmation compute saved") in md
    assert data["racing_counts"] == {"cells": 1, "ceiling": 4, "confirm_runs": 2,
                                     "ceiling_runs": 4, "flops_run": 600.0,
                                     "flops_ceiling": 1200.0, "saved": 0.5,
                                     "fixed_runs": {"x/resnet18/imagenet": 2}}


# per seed 0..3: (init, backbone, depth) -> test accuracies; the seeds move every cell alike
PAIRED = {("source", "resnet18", 0): [0.80, 0.84, 0.78, 0.82],  # best
          ("source", "resnet18", 2): [0.798, 0.836, 0.7775, 0.8165],  # −0.3 ± 0.1: within
          ("source", "resnet18", 3): [0.754, 0.787, 0.732, 0.77],  # −4.9: worse
          ("scratch", "resnet18", 0): [0.61, 0.63, 0.584, 0.62],
          ("source", "cnn", 0): [0.70, 0.72, 0.69, 0.73],  # best
          ("source", "cnn", 1): [0.695, 0.70, 0.69, 0.71],  # −1.1 ± 1.2: undecided
          ("source", "cnn", 2): [0.60, 0.61, 0.60, 0.62]}  # −10.2: worse
FLOPS = {0: 400., 1: 300., 2: 200., 3: 100.}


def make_paired_study(root: Path) -> Path:
    """Two answer groups with 4 paired confirmation runs per cell (seeds 0..3):
    resnet18 decided (d2 within tolerance, d3 worse), cnn undecided (d1 open, d2 worse)."""
    s = root / "paired"
    s.mkdir(parents=True)
    (s / "study.yaml").write_text("name: paired\ntarget_epochs: 3\nsearch: {mode: compare}\n"
                                  "confirm: {seeds: 3}\nscheduler: {type: halving}\n"
                                  "report: {tolerance: 1.0}\n")
    (s / "provenance.json").write_text(json.dumps({"study": "paired", "created": "2026-02-02"}))
    n = 0
    for (init, bb, d), vals in PAIRED.items():
        for seed, acc in enumerate(vals):
            n += 1
            cfg = {M.SPLIT: "x", M.BACKBONE: bb, M.INIT: init, M.FROZEN_DEPTH: d, M.LR: 0.01,
                   M.SEED: seed, M.CELL: f"x/{bb}/{init}/d{d}",
                   M.PHASE: M.PHASE_CONFIRM}
            _trial(s, f"t{n:02d}", cfg, 3, test_acc=acc, epoch_flops=FLOPS[d] / 3)
    (s / "summary.json").write_text(json.dumps({"trials": n}))
    return s


def test_the_answer_decided_and_undecided_in_table_forest_and_report_json(tmp_path):
    from analysis.report import make_report

    out, text = make_report(make_paired_study(tmp_path), tmp_path / "r")
    md = (out / "report.md").read_text()
    answer = md.split("## 2. When transfer pays")[0]
    data = json.loads((out / "report.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in report.json"))["answer"]
    assert (data["tolerance_points"], data["tolerance"], data["alpha"]) == (1.0, 0.01, 0.05)
    assert data["racing"] is None and data["post_hoc"] is False
    g = {x["backbone"]: x for x in data["groups"]}
    # decided: d0 shown the most accurate, d2 within a point of it and cheaper, d3 worse
    r = g["resnet18"]
    assert (r["leader"]["depth"], r["best"]["depth"], r["answer"]["depth"]) == (0, 0, 2)
    assert r["decided"] and r["open"] == [] and r["compute_saved"] == pytest.approx(0.5)
    assert [c["verdict"] for c in r["comparisons"]] == ["best (shown)", "within tolerance", "worse"]
    assert r["alpha_bound"] == pytest.approx(0.05 / 2)  # 3 depths: 2 rivals of the unknown best
    assert "| x | resnet18 | source | d0 (shown) |" in answer
    assert ("freeze 2 stages: 50 % less compute than d0 (the most accurate observed), within −1 "
            "points of the best, shown (lower bound −0.4") in answer
    # undecided: d0 leads d1 by 1.1 points but neither is shown the best, and d1 (cheaper)
    # is neither within a point of d0 nor worse: the answer so far is d0, d1 is open
    u = g["cnn"]
    assert (u["leader"]["depth"], u["best"], u["answer"]["depth"]) == (0, None, 0)
    assert [p["depth"] for p in u["possible_best"]] == [1, 0]
    assert not u["decided"] and [o["depth"] for o in u["open"]] == [1, 0]
    c1 = {c["depth"]: c for c in u["comparisons"]}[1]
    assert (c1["verdict"], c1["test"], c1["n"], c1["n_pairs"]) == ("undecided", "paired t", 4, 4)
    assert c1["lo"] < -0.01 < c1["hi"] and c1["diff"] == pytest.approx(-0.01125)
    assert c1["accs"] == {str(i): v for i, v in enumerate(PAIRED[("source", "cnn", 1)])}
    assert "UNDECIDED: d1 not yet shown within tolerance or worse" in answer
    assert "UNDECIDED" in text
    assert "Decided: 1 of 2 group(s). Undecided: x / cnn / source (d1,d0 open)." in answer
    # every depth with its simultaneous bounds and test; the forest plot right after the table
    assert ("| x / cnn / source | d1 | 4 | 69.9% | undecided | yes | −1.1 vs d0 | [−2.8, +0.5] "
            "| paired t |") in answer
    assert ("| x / resnet18 / source | d3 | 4 | 76.1% | worse | no | −4.9 vs d0 | [−5.4, −4.4] "
            "| paired t |") in answer
    assert answer.index("How much to freeze") < answer.index("answer_forest.png")
    assert (out / "answer_forest.png").stat().st_size > 0
    # the transfer gain over scratch is paired too, at the Answer's depth (d2, not the
    # most accurate d0)
    assert "| x | resnet18 | source | d2 |" in md and "paired t (4 seeds)" in md
