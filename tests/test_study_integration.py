"""A real Ray Tune study (local Ray, ASHA, Optuna TPE) on tiny generated images, in seconds."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.cli import main
from study.core.layout import PROVENANCE_FILE, STUDY_FILE, SUMMARY_FILE
from study.runner import StudyExistsError, run_study
from study.core.spec import load_spec, load_spec_dict
from study.core import metrics as M

from conftest import make_image_folder


def tiny_spec(data_root: Path, storage: Path, cache: Path, **over) -> dict:
    """A tiny compare-mode study: one split, scratch_cnn at depths 0..4 (5 cells), 2 learning
    rates per cell, no confirmation seeds."""
    d = {
        "name": "tiny",
        "data": {"root": str(data_root), "cache_dir": str(cache), "image_size": 16,
                 "val_fraction": 0.25},
        "splits": [{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]}],
        "backbones": {"scratch_cnn": {"frozen_depth": [0, 4]}},
        "inits": ["source"],
        "lr": {"low": 0.001, "high": 0.3},
        "batch_size": 16,
        "target_epochs": 4,
        "source": {"epochs": 2, "lr": 0.05},
        "search": {"trials_per_cell": 2, "max_concurrent": 2, "seed": 1},
        "confirm": {"seeds": 0},
        "scheduler": {"type": "halving", "grace_period": 1, "reduction_factor": 2},
        "storage": str(storage),
        "max_failures": 0,
    }
    d.update(over)
    return d


def two_task_folder(root: Path) -> Path:
    """The tiny learnable classes a-d plus two classes of pure noise (e, f): split ab_cd is easy,
    split ab_ef cannot be learnt (chance, 50 %)."""
    from PIL import Image

    make_image_folder(root)
    rng = np.random.default_rng(1)
    for split, n in (("train", 24), ("test", 8)):
        for c in ("e", "f"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)).save(
                    root / split / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, ray_local):
    """Two splits of very different difficulty, scratch_cnn at depths 0 and 4 + scratch: 6
    cells x 2 learning rates, then each cell's best once more with another seed."""
    base = tmp_path_factory.mktemp("study")
    data = two_task_folder(base / "data")
    spec = load_spec_dict(tiny_spec(
        data, base / "storage", base / "cache",
        splits=[{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]},
                {"name": "ab_ef", "source": ["a", "b"], "target": ["e", "f"]}],
        backbones={"scratch_cnn": {"depths": [0, 4]}}, inits=["source", "scratch"],
        confirm={"seeds": 1}))
    summary = run_study(spec)
    return spec, Path(summary["results"]), summary


def _results(study_dir: Path) -> list[list[dict]]:
    out = []
    for f in sorted(study_dir.glob("*/result.json")):
        out.append([json.loads(line) for line in f.read_text().splitlines() if line.strip()])
    return out


def test_every_cell_of_both_splits_completes_and_is_confirmed(tiny_study):
    spec, sdir, summary = tiny_study
    assert summary["trials"] == 12 + 6 and summary["errored"] == 0
    assert summary["cells"] == summary["cells_completed"] == 6
    trials = _results(sdir)
    assert len(trials) == 18
    by_cell: dict = {}
    for rows in trials:
        cfg = rows[0]["config"]
        by_cell.setdefault(cfg[M.CELL], []).append((cfg, rows))
    assert set(by_cell) == {f"{s}/scratch_cnn/{i}/d{d}" for s in ("ab_cd", "ab_ef")
                            for i, d in (("source", 0), ("source", 4), ("scratch", 0))}
    for cell, runs in by_cell.items():
        tune = [(c, r) for c, r in runs if c[M.PHASE] == M.PHASE_TUNE]
        confirm = [(c, r) for c, r in runs if c[M.PHASE] == M.PHASE_CONFIRM]
        assert len(tune) == 2 and len(confirm) == 1, cell
        done = [(c, r) for c, r in tune if r[-1][M.EPOCH] == spec.target_epochs]
        assert done, f"{cell}: no tuning trial completed"
        top = max(r[-1][M.VAL_ACC] for _, r in done)
        (cc, cr), = confirm
        assert cc[M.LR] in {c[M.LR] for c, r in done if r[-1][M.VAL_ACC] == top}
        assert cc[M.SEED] == spec.search.seed + 1
        assert cr[-1][M.EPOCH] == spec.target_epochs  # confirmation runs are never stopped
    # the noise split is near chance, the easy one is learnt: compared only within their cells
    final = {c: max(r[-1][M.VAL_ACC] for _, r in v) for c, v in by_cell.items()}
    easy = [v for c, v in final.items() if c.startswith("ab_cd")]
    hard = [v for c, v in final.items() if c.startswith("ab_ef")]
    assert sum(hard) / len(hard) < sum(easy) / len(easy), final
    for rows in trials:
        assert [r[M.EPOCH] for r in rows] == list(range(1, len(rows) + 1))
        for r in rows:
            for key in M.PER_EPOCH:
                assert key in r, key
            assert 0 <= r[M.VAL_ACC] <= 1
        flops = [r[M.TARGET_FLOPS] for r in rows]
        assert all(b > a for a, b in zip(flops, flops[1:])), "target_flops must be cumulative"
        last = rows[-1]
        if last[M.EPOCH] == spec.target_epochs:
            assert last[M.DONE] is True and 0 <= last[M.TEST_ACC] <= 1
            cm = last[M.TEST_CONFUSION]
            assert len(cm) == 2 and sum(map(sum, cm)) == 16  # 2 target classes x 8 test images
        else:
            assert M.TEST_ACC not in last, "test split must only be used when a trial finishes"


def test_one_source_model_per_split_and_seed(tiny_study):
    spec, sdir, _ = tiny_study
    models = sorted(sdir.glob("sources/*/model.pt"))
    # splits ab_cd and ab_ef share source classes but are different keys; seeds 1 (tuning) and 2
    assert len(models) == 4, models
    for m in models:
        info = json.loads((m.parent / "info.json").read_text())
        users = (m.parent / "users.txt").read_text().split()
        # trained once, by its own Ray task before the trials (not by a trial holding a slot)
        assert info["flops"] > 0 and info["trained_by"] == "source-task"
        assert len(users) == (4 if "-s1-" in m.parent.name else 2), (m.parent.name, users)
    keys = {rows[-1][M.SOURCE_KEY] for rows in _results(sdir) if rows[0]["config"][M.INIT] == "source"}
    assert keys == {m.parent.name for m in models}


def test_frozen_depth_respected_and_cheaper(tiny_study):
    _, sdir, _ = tiny_study
    per_epoch = {}
    for rows in _results(sdir):
        cfg = rows[0]["config"]
        if cfg[M.SPLIT] == "ab_cd":
            per_epoch[cfg[M.FROZEN_DEPTH]] = rows[0][M.TARGET_FLOPS]
        assert rows[0][M.TRAINABLE_PARAMS] <= rows[0][M.TOTAL_PARAMS]
    assert per_epoch[0] > per_epoch[4]


def test_provenance_and_resolved_spec_saved(tiny_study):
    spec, sdir, _ = tiny_study
    assert load_spec(sdir / STUDY_FILE) == spec
    prov = json.loads((sdir / PROVENANCE_FILE).read_text())
    assert prov["code_version"] and prov["packages"]["torch"] and prov["packages"]["ray"]
    assert len(prov["data"]["fingerprint"]) == 64 and prov["seed"] == 1
    assert prov["data"]["splits"]["ab_cd"] == {"source": ["a", "b"], "target": ["c", "d"]}
    summary = json.loads((sdir / SUMMARY_FILE).read_text())
    assert summary["completed"] == sum(r["status"] == "completed" for r in summary["trial_rows"])
    assert set(summary["completed_per_cell"]) == {r[M.CELL] for r in summary["trial_rows"]}


def test_existing_study_is_not_overwritten(tiny_study):
    spec, sdir, _ = tiny_study
    before = sorted(p.name for p in sdir.iterdir())
    with pytest.raises(StudyExistsError, match="study resume"):
        run_study(spec)
    assert sorted(p.name for p in sdir.iterdir()) == before


def test_resume_of_a_finished_study_reruns_nothing(tiny_study):
    spec, sdir, summary = tiny_study
    before = _results(sdir)
    assert main(["resume", str(sdir)]) == 0
    after = _results(sdir)
    assert [[r[M.EPOCH] for r in rows] for rows in after] == [[r[M.EPOCH] for r in rows] for rows in before]
    assert [rows[-1][M.VAL_ACC] for rows in after] == [rows[-1][M.VAL_ACC] for rows in before]


def test_report_answers_for_every_cell(tiny_study, tmp_path):
    assert main(["report", str(tiny_study[1]), "-o", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.index("Answer") < md.index("Cells")
    for split in ("ab_cd", "ab_ef"):
        assert f"{split}/scratch_cnn/source/d4" in md


def test_cli_unknown_class_is_bad_input(tiny_folder, tmp_path, capsys):
    d = tiny_spec(tiny_folder, tmp_path / "s", tmp_path / "c",
                  splits=[{"name": "x", "source": ["a", "zebra"], "target": ["c"]}])
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "splits[0].source[1] = 'zebra': unknown class; the data's classes are a, b, c, d" in err
    assert not (tmp_path / "s").exists(), "nothing may be written for bad input"
