"""Experiment trackers (study/trackers.py) on a real local Ray and a real Tune run.

No mocks, no network: TensorBoard event files are read back with tensorboard's own reader,
MLflow through ``MlflowClient`` on the file store under the study directory, W&B in offline
mode from its run directory.
"""
import os

# Before any ray.init of the session (this module is imported at collection): Ray workers,
# e.g. the W&B logging actors, keep the environment of that moment. Trackers stay offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import glob  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from study import trackers  # noqa: E402
from study.trackers import (  # noqa: E402
    TRACKERS, TrackerUnavailable, check_trackers, tracker_callbacks)
from study.core import metrics as M  # noqa: E402

VAL = [0.25, 0.5, 0.75]  # val_acc of the 3 epochs
FLOPS = [1e9, 2e9, 3e9]
CONFUSION = [[3, 1], [0, 4]]
PER_CLASS = {"cat": {"precision": 1.0, "recall": 0.75, "f1": 0.857, "support": 4},
             "dog (big)": {"precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4}}
CONFIG = {M.LR: 0.01, M.BACKBONE: "resnet18", M.FROZEN_DEPTH: 2, M.SEED: 7}


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


HAVE_WANDB = _have("wandb")


@pytest.fixture(scope="module")
def tracked_study(ray_local, tmp_path_factory):
    """One tiny Tune run with every tracker that is installed; yields (study_dir, name, grid)."""
    from ray import tune

    def three_epochs(config):  # local, so Ray pickles it by value (tests/ is not importable)
        for e in range(3):
            r = {M.EPOCH: e + 1, M.VAL_ACC: VAL[e], M.TARGET_FLOPS: FLOPS[e]}
            if e == 2:
                r.update({M.TEST_ACC: 0.875, M.TEST_CONFUSION: CONFUSION,
                          M.TEST_PER_CLASS: PER_CLASS, M.DONE: True})
            tune.report(r)

    root = tmp_path_factory.mktemp("trackers")
    name = "tracked"
    study_dir = root / name
    names = ("tensorboard", "mlflow") + (("wandb",) if HAVE_WANDB else ())
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: file store in the study
        mp.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", str(root / "wandb_dir"))
        callbacks = tracker_callbacks(names, str(study_dir), name)
        assert len(callbacks) == len(names)
        tuner = tune.Tuner(
            three_epochs, param_space=dict(CONFIG),
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(name=name, storage_path=str(root), callbacks=callbacks,
                                      verbose=0))
        grid = tuner.fit()
    assert not grid.errors, grid.errors
    yield study_dir, name, grid, root


def test_tensorboard_event_files(tracked_study):
    from tensorboard.backend.event_processing import event_accumulator

    study_dir, _, grid, _ = tracked_study
    trial_dir = Path(grid[0].path)
    assert trial_dir.parent == study_dir  # Tune's trial directory inside the study
    files = glob.glob(str(trial_dir / "events.out.tfevents.*"))
    assert files, list(trial_dir.iterdir())
    acc = event_accumulator.EventAccumulator(str(trial_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    series = acc.Scalars(f"ray/tune/{M.VAL_ACC}")
    assert [s.step for s in series] == [1, 2, 3]
    assert [s.value for s in series] == pytest.approx(VAL)
    assert [s.value for s in acc.Scalars(f"ray/tune/{M.TARGET_FLOPS}")] == pytest.approx(FLOPS)
    assert [s.value for s in acc.Scalars(f"ray/tune/{M.TEST_ACC}")] == pytest.approx([0.875])
    # the per-class dict becomes scalars; the confusion matrix is not logged at all
    assert f"ray/tune/{M.TEST_PER_CLASS}/cat/recall" in tags
    assert not [t for t in tags if M.TEST_CONFUSION in t]
    assert not [t for t in acc.Tags()["histograms"] if M.TEST_CONFUSION in t]


def test_mlflow_file_store(tracked_study):
    from mlflow.tracking import MlflowClient

    study_dir, name, grid, _ = tracked_study
    store = study_dir / "mlruns"
    assert store.is_dir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x: file stores are opt-in
        client = MlflowClient(tracking_uri=store.as_uri())
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1
        run = runs[0]
        assert run.info.status == "FINISHED"
        params = run.data.params
        for k, v in CONFIG.items():
            assert params[k] == str(v)
        history = client.get_metric_history(run.info.run_id, M.VAL_ACC)
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(VAL)
        metrics = run.data.metrics
        assert metrics[M.TEST_ACC] == pytest.approx(0.875)
        assert metrics[f"{M.TEST_PER_CLASS}/cat/recall"] == pytest.approx(0.75)
        # "dog (big)": parentheses are not valid in MLflow names and were replaced
        assert metrics[f"{M.TEST_PER_CLASS}/dog _big_/precision"] == pytest.approx(0.8)
        assert not [k for k in metrics if M.TEST_CONFUSION in k or k.startswith("config/")]


@pytest.mark.skipif(not HAVE_WANDB, reason="wandb not installed")
def test_wandb_offline_run(tracked_study):
    study_dir, name, grid, root = tracked_study
    runs = glob.glob(str(root / "wandb_dir" / "wandb" / "offline-run-*"))
    assert len(runs) == 1, runs
    run = Path(runs[0])
    assert run.name.endswith(grid[0].metrics["trial_id"])  # run id = trial id
    records = list(run.glob("*.wandb"))
    assert records and records[0].stat().st_size > 0
    history, config, project = [], {}, None
    for rec in wandb_records(records[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
        elif kind == "run":
            project = rec.run.project
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    assert project == name
    assert config[M.LR] == CONFIG[M.LR] and config[M.BACKBONE] == CONFIG[M.BACKBONE]
    vals = [h[M.VAL_ACC] for h in history if M.VAL_ACC in h]
    assert vals == pytest.approx(VAL)
    assert history[-1][M.TEST_ACC] == pytest.approx(0.875)
    assert history[-1][f"{M.TEST_PER_CLASS}/dog (big)/recall"] == pytest.approx(1.0)
    assert not [k for h in history for k in h if M.TEST_CONFUSION in k]


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``).

    The format is LevelDB's log format (the one wandb's datastore writes): a 7-byte file
    header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a
    7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B" and struct.unpack("<H", raw[4:6])[0] == 0xBEE1, raw[:7]
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # too little room left in the block for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding at the end
            break
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


def test_unknown_tracker():
    with pytest.raises(ValueError) as e:
        check_trackers(("tensorboard", "neptune"))
    msg = str(e.value)
    assert "neptune" in msg and all(t in msg for t in TRACKERS)
    with pytest.raises(ValueError):
        tracker_callbacks(("comet",), "/tmp/x", "x")


def test_no_trackers_and_duplicates():
    assert tracker_callbacks((), "/tmp/x", "x") == []
    assert check_trackers(("tensorboard", "tensorboard")) == ("tensorboard",)


@pytest.mark.parametrize("tracker,module", [("mlflow", "mlflow"), ("wandb", "wandb"),
                                            ("tensorboard", "tensorboardX")])
def test_missing_package(monkeypatch, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(TrackerUnavailable) as e:
        check_trackers((tracker,))
    msg = str(e.value)
    assert repr(tracker) in msg and "pip install 'tl-study[trackers]'" in msg
    assert isinstance(e.value, ImportError)
    with pytest.raises(TrackerUnavailable):  # before any callback is built
        tracker_callbacks(("tensorboard", tracker), "/tmp/x", "x")


def test_mlflow_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trackers.mlflow_tracking_uri(str(tmp_path / "s")) == (tmp_path / "s" / "mlruns").as_uri()
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        trackers.mlflow_tracking_uri("s3://bucket/studies/s")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "m.db"))
    assert trackers.mlflow_tracking_uri("s3://bucket/studies/s").startswith("sqlite:///")
