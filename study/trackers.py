"""Experiment trackers: Ray Tune's own logger callbacks for TensorBoard, MLflow and W&B.

Every trial's config and every reported epoch go to each chosen tracker:

``tensorboard``
    ``ray.tune.logger.TBXLoggerCallback`` (needs ``tensorboardX``). Event files
    ``events.out.tfevents.*`` land where Tune puts them: in each trial's directory,
    ``<study_dir>/<trial_dir>/`` (written in the driver's staging folder and synced there with
    the rest of the trial's files). Scalars are tagged ``ray/tune/<metric>``, one step per
    reported epoch (``training_iteration``); the searched hyperparameters are written as
    TensorBoard hparams when the trial ends. View with ``tensorboard --logdir <study_dir>``.
``mlflow``
    ``ray.air.integrations.mlflow.MLflowLoggerCallback`` (needs ``mlflow`` or
    ``mlflow-skinny``). Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else a local file store
    ``file://<study_dir>/mlruns``. Experiment = the study name, one run per trial (run name =
    the trial), params = the trial's config, metrics = every epoch's numbers (step =
    ``training_iteration``). MLflow >= 3.x refuses file stores unless
    ``MLFLOW_ALLOW_FILE_STORE=true`` (its documented opt-out); that is set for this process
    when the file store is used, and readers need it too, e.g.
    ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri file://<study_dir>/mlruns``.
    For a database store set ``MLFLOW_TRACKING_URI=sqlite:///<path>/mlflow.db``.
``wandb``
    ``ray.air.integrations.wandb.WandbLoggerCallback`` (needs ``wandb``). Project = the study
    name, group = the experiment, one run per trial (config = the trial's config).
    ``WANDB_MODE`` is honoured (``offline`` works without network or API key; upload later
    with ``wandb sync``); run files go under ``$WANDB_DIR`` if set, else
    ``<study_dir>/wandb/``. ``WANDB_MODE``/``WANDB_DIR``/``WANDB_SILENT`` are passed to the
    per-trial logging actors explicitly, so they apply even if set after ``ray.init``.

Non-scalar metrics: the final report's confusion matrix (``M.TEST_CONFUSION``, a list of
lists) is kept out of every tracker (TensorBoard would turn it into a meaningless histogram of
cell counts; MLflow and W&B drop it anyway). The per-class dict (``M.TEST_PER_CLASS``) is
flattened by each callback into scalars ``test_per_class/<class>/<precision|recall|f1|support>``
(for MLflow, characters its metric names reject are replaced by ``_``). Both stay, complete,
in Tune's own ``result.json``.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from study.core import metrics as M

TRACKERS = ("tensorboard", "mlflow", "wandb")

# tracker -> (module that must import, pip package that provides it)
_REQUIREMENTS = {
    "tensorboard": ("tensorboardX", "tensorboardX"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "wandb": ("wandb", "wandb"),
}
EXTRA = "tl-study[trackers]"

# Result keys that are not scalars and mean nothing to a tracker (see the module docstring).
EXCLUDED_KEYS = (M.TEST_CONFUSION,)

_MLFLOW_BAD_CHARS = re.compile(r"[^\w.\- :/]")  # MLflow's metric-name rule, inverted


class TrackerUnavailable(ImportError):
    """A chosen tracker's Python package is not installed."""


def check_trackers(names) -> tuple[str, ...]:
    """Validate tracker names and check their packages import, without starting anything.

    Returns the names without duplicates, in the given order. Raises ``ValueError`` for an
    unknown name (the message lists the valid ones) and ``TrackerUnavailable`` (an
    ``ImportError``) naming the tracker and the pip command for a missing package."""
    if isinstance(names, str):
        names = (names,)
    out: list[str] = []
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; valid trackers: {', '.join(TRACKERS)}")
        if name not in out:
            out.append(name)
    for name in out:
        module, package = _REQUIREMENTS[name]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise TrackerUnavailable(
                f"tracker {name!r} needs the Python package {package!r}, which cannot be "
                f"imported ({e}); install it with `pip install '{EXTRA}'` "
                f"or `pip install {package}`") from e
    return tuple(out)


def _without_excluded(result: dict) -> dict:
    if not any(k in result for k in EXCLUDED_KEYS):
        return result
    return {k: v for k, v in result.items() if k not in EXCLUDED_KEYS}


def tracker_callbacks(names: tuple[str, ...], study_dir: str, study_name: str) -> list:
    """Ray Tune logger callbacks for the named trackers (see the module docstring).

    ``study_dir``: the study directory (``<storage>/<name>``; local path or URI),
    ``study_name``: the MLflow experiment / W&B project. Checks the packages first
    (``check_trackers``), so a missing one fails before any trial runs."""
    names = check_trackers(names)
    callbacks = []
    for name in names:
        if name == "tensorboard":
            callbacks.append(_tensorboard())
        elif name == "mlflow":
            callbacks.append(_mlflow(study_dir, study_name))
        elif name == "wandb":
            callbacks.append(_wandb(study_dir, study_name))
    return callbacks


# ----------------------------------------------------------------------------- tensorboard

class ScalarTBXLoggerCallback(TBXLoggerCallback):
    """Tune's TensorBoard logger without the confusion matrix."""

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, _without_excluded(result))


def _tensorboard():
    return ScalarTBXLoggerCallback()


# ----------------------------------------------------------------------------- mlflow

def local_path_of(study_dir: str) -> Path | None:
    """The local path of a study directory, or None if it is a non-file URI."""
    if study_dir.startswith("file://"):
        return Path(study_dir[len("file://"):])
    if "://" in study_dir:
        return None
    return Path(study_dir).expanduser().resolve()


def mlflow_tracking_uri(study_dir: str) -> str:
    """``$MLFLOW_TRACKING_URI``, else the file store ``file://<study_dir>/mlruns``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    local = local_path_of(study_dir)
    if local is None:
        raise ValueError(
            f"the MLflow tracker keeps a local file store under the study directory, but "
            f"{study_dir!r} is not local; set MLFLOW_TRACKING_URI to an MLflow server or "
            f"database (e.g. sqlite:///mlflow.db)")
    return (local / "mlruns").as_uri()


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def _mlflow_safe(result: dict) -> dict:
    """Drop the confusion matrix and the config (logged as params), and make the per-class
    keys valid MLflow metric names."""
    out = {k: v for k, v in _without_excluded(result).items() if k != "config"}
    per_class = out.get(M.TEST_PER_CLASS)
    if isinstance(per_class, dict):
        out[M.TEST_PER_CLASS] = {_MLFLOW_BAD_CHARS.sub("_", str(c)): v
                                 for c, v in per_class.items()}
    return out


class ScalarMLflowLoggerCallback(MLflowLoggerCallback):
    """Tune's MLflow logger without the confusion matrix, with valid metric names."""

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, _mlflow_safe(result))


def _mlflow(study_dir: str, study_name: str):
    uri = mlflow_tracking_uri(study_dir)
    if _is_file_store(uri):
        # MLflow >= 3.x raises on file stores without this documented opt-out.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return ScalarMLflowLoggerCallback(tracking_uri=uri, experiment_name=study_name,
                                      tags={"study": study_name})


# ----------------------------------------------------------------------------- wandb

def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _wandb(study_dir: str, study_name: str):
    from ray.air.integrations.wandb import WandbLoggerCallback

    # Passed to wandb.init in the per-trial logging actor: Ray workers keep the environment
    # of ray.init's time, so variables set later would not reach them otherwise.
    init_kwargs: dict = {}
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:  # wandb's legacy spellings, which its wandb.init(mode=...) does not take
        init_kwargs["mode"] = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    wandb_dir = os.environ.get("WANDB_DIR")
    if not wandb_dir:
        local = local_path_of(study_dir)
        wandb_dir = str(local) if local is not None else None  # None: the trial directory
    if wandb_dir:
        Path(wandb_dir).mkdir(parents=True, exist_ok=True)
        init_kwargs["dir"] = wandb_dir
    if _truthy(os.environ.get("WANDB_SILENT")):
        init_kwargs["settings"] = {"silent": True}
    return WandbLoggerCallback(project=study_name, excludes=list(EXCLUDED_KEYS), **init_kwargs)
