"""Provenance: what produced a study's numbers (``provenance.json``): code version, package
versions, data fingerprint and splits, seed, command, host, and whether it was simulated."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from study.core.layout import PROVENANCE_FILE, write_atomic
from study.core.spec import Spec


def code_version() -> str:
    """git describe of this checkout; a submitted job carries its submitter's (the job runs from a
    copy of the packages without .git)."""
    if os.environ.get("STUDY_CODE_VERSION"):
        return os.environ["STUDY_CODE_VERSION"]
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode == 0 and rev.stdout.strip():
            return f"git:{rev.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    from study import __version__
    return f"tl-study {__version__}"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow", "pyyaml"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(path: str, spec: Spec, data, extra: dict | None = None) -> dict:
    splits = {k: {"source": [data.classes[i] for i in v[0]],
                  "target": [data.classes[i] for i in v[1]]} for k, v in data.splits.items()}
    about = {"fingerprint": data.fingerprint, "classes": data.classes, "origin": data.origin}
    if getattr(data, "sim", None) is None:  # a rehearsal (trainables.simulate) reads no images
        about.update({
            "train_images": int(len(data.train_idx)), "val_images": int(len(data.val_idx)),
            "target_train_per_class": (None if spec.data.target_train_per_class is None
                                       else list(spec.data.target_train_per_class)),
            "test_images": int(len(data.test_idx)), "mean": data.mean, "std": data.std})
    prov = {
        "study": spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "packages": package_versions(),
        "seed": spec.search.seed,
        "data": {**about, "splits": splits},
        "command": sys.argv,
        "host": platform.node(),
    }
    prov.update(extra or {})
    write_atomic(f"{path}/{PROVENANCE_FILE}", json.dumps(prov, indent=1))
    return prov
