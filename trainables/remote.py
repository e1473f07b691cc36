"""Shared source models when a study's storage is a URI (s3://, gs://): every node keeps a local
copy under a file lock (``sources_dir``), and the study's ``<storage>/<study>/sources/<key>/`` on
the shared storage is the copy all nodes agree on.

A node that needs a source model takes its local lock, then (1) uses its local copy, else
(2) downloads the shared copy, else (3) trains it and publishes it. Object stores have no locks
across machines, so two nodes may train the same key at the same moment; the first one published
wins (the later one is discarded, and the trial uses the published model), which keeps every
trial of a key on one source model. ``users.txt`` on the shared storage is a best-effort list
(concurrent appends from different nodes may lose a name; the local lists are exact).
"""
from __future__ import annotations

from pathlib import Path

from study.core.layout import copy_file, is_file, read_text, write_atomic

FILES = ("model.pt", "info.json")


def exists(uri_dir: str) -> bool:
    return all(is_file(f"{uri_dir}/{n}") for n in FILES)


def fetch(uri_dir: str, local_dir: Path) -> bool:
    """Download the shared copy into local_dir (each file atomically); False if there is none."""
    if not exists(uri_dir):
        return False
    for n in FILES:
        copy_file(f"{uri_dir}/{n}", str(local_dir / n))
    return True


def publish(local_dir: Path, uri_dir: str) -> None:
    """Upload model then info (info last: a reader that sees info.json sees a whole model)."""
    for n in FILES:
        copy_file(str(local_dir / n), f"{uri_dir}/{n}")


def add_user(uri_dir: str, trial_id: str) -> int:
    """Append trial_id to the shared users.txt; returns how many trials it lists."""
    f = f"{uri_dir}/users.txt"
    users = read_text(f).split() if is_file(f) else []
    if trial_id not in users:
        users.append(trial_id)
        write_atomic(f, "\n".join(users) + "\n")
    return len(users)
