"""A real Ray Tune study (local Ray, ASHA, Optuna TPE) on tiny generated images, in seconds."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from study.cli import main
from study.runner import PROVENANCE_FILE, STUDY_FILE, SUMMARY_FILE, StudyExistsError, run_study
from study.spec import load_spec, load_spec_dict
from trainables import metrics as M


def tiny_spec(data_root: Path, storage: Path, cache: Path, **over) -> dict:
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
        "search": {"algorithm": "tpe", "num_samples": 8, "max_concurrent": 2, "seed": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "storage": str(storage),
        "max_failures": 0,
    }
    d.update(over)
    return d


@pytest.fixture(scope="module")
def tiny_study(tiny_folder, tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("study")
    spec = load_spec_dict(tiny_spec(tiny_folder, base / "storage", base / "cache"))
    summary = run_study(spec)
    return spec, Path(summary["results"]), summary


def _results(study_dir: Path) -> list[list[dict]]:
    out = []
    for f in sorted(study_dir.glob("*/result.json")):
        out.append([json.loads(line) for line in f.read_text().splitlines() if line.strip()])
    return out


def test_study_runs_asha_stops_some_and_all_metrics_reported(tiny_study):
    spec, sdir, summary = tiny_study
    assert summary["trials"] == 8 and summary["errored"] == 0
    assert summary["stopped"] >= 1, "ASHA stopped nothing"
    assert summary["finished"] >= 1
    trials = _results(sdir)
    assert len(trials) == 8
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
            assert last[M.DONE] is True
            assert 0 <= last[M.TEST_ACC] <= 1
            cm = last[M.TEST_CONFUSION]
            assert len(cm) == 2 and sum(map(sum, cm)) == 16  # 2 target classes x 8 test images
            assert set(last[M.TEST_PER_CLASS]) == {"c", "d"}
        else:
            assert M.TEST_ACC not in last, "test split must only be used when a trial finishes"


def test_source_model_trained_once_and_shared(tiny_study):
    spec, sdir, _ = tiny_study
    models = list((sdir / "sources").glob("*/model.pt"))
    assert len(models) == 1, models
    users = (models[0].parent / "users.txt").read_text().split()
    assert len(users) == 8 and len(set(users)) == 8
    info = json.loads((models[0].parent / "info.json").read_text())
    assert info["flops"] > 0 and info["trained_by"] in users
    # every trial reports the same source cost, and how many trials share it (so far)
    trials = _results(sdir)
    assert {rows[-1][M.SOURCE_FLOPS] for rows in trials} == {info["flops"]}
    assert max(rows[-1][M.SOURCE_SHARED_BY] for rows in trials) == 8


def test_frozen_depth_respected_and_cheaper(tiny_study):
    _, sdir, _ = tiny_study
    per_epoch = {}
    for rows in _results(sdir):
        cfg = rows[0]["config"]
        assert 0 <= cfg[M.FROZEN_DEPTH] <= 4
        per_epoch[cfg[M.FROZEN_DEPTH]] = rows[0][M.TARGET_FLOPS]
        assert rows[0][M.TRAINABLE_PARAMS] <= rows[0][M.TOTAL_PARAMS]
    depths = sorted(per_epoch)
    assert all(per_epoch[a] > per_epoch[b] for a, b in zip(depths, depths[1:]))


def test_provenance_and_resolved_spec_saved(tiny_study):
    spec, sdir, _ = tiny_study
    assert load_spec(sdir / STUDY_FILE) == spec
    prov = json.loads((sdir / PROVENANCE_FILE).read_text())
    assert prov["code_version"] and prov["packages"]["torch"] and prov["packages"]["ray"]
    assert len(prov["data"]["fingerprint"]) == 64 and prov["seed"] == 1
    assert prov["data"]["splits"]["ab_cd"] == {"source": ["a", "b"], "target": ["c", "d"]}
    summary = json.loads((sdir / SUMMARY_FILE).read_text())
    assert summary["best"][M.VAL_ACC] == max(
        r[M.VAL_ACC] for r in summary["trial_rows"] if r["status"] == "finished")


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


def test_cli_unknown_class_is_bad_input(tiny_folder, tmp_path, capsys):
    d = tiny_spec(tiny_folder, tmp_path / "s", tmp_path / "c",
                  splits=[{"name": "x", "source": ["a", "zebra"], "target": ["c"]}])
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "splits[0].source[1] = 'zebra': unknown class; the data's classes are a, b, c, d" in err
    assert not (tmp_path / "s").exists(), "nothing may be written for bad input"
