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

import os
from pathlib import Path

FILES = ("model.pt", "info.json")


def _fs(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def exists(uri_dir: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = _fs(uri_dir)
    return all(fs.get_file_info(f"{p}/{n}").type == pafs.FileType.File for n in FILES)


def fetch(uri_dir: str, local_dir: Path) -> bool:
    """Download the shared copy into local_dir (each file atomically); False if there is none."""
    if not exists(uri_dir):
        return False
    fs, p = _fs(uri_dir)
    for n in FILES:
        tmp = local_dir / f"{n}.dl{os.getpid()}"
        with fs.open_input_stream(f"{p}/{n}") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        os.replace(tmp, local_dir / n)
    return True


def publish(local_dir: Path, uri_dir: str) -> None:
    """Upload model then info (info last: a reader that sees info.json sees a whole model)."""
    fs, p = _fs(uri_dir)
    fs.create_dir(p, recursive=True)
    for n in FILES:
        with open(local_dir / n, "rb") as src, fs.open_output_stream(f"{p}/{n}") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)


def add_user(uri_dir: str, trial_id: str) -> int:
    """Append trial_id to the shared users.txt; returns how many trials it lists."""
    import pyarrow.fs as pafs

    fs, p = _fs(uri_dir)
    f = f"{p}/users.txt"
    users = []
    if fs.get_file_info(f).type == pafs.FileType.File:
        with fs.open_input_stream(f) as src:
            users = src.read().decode().split()
    if trial_id not in users:
        users.append(trial_id)
        with fs.open_output_stream(f) as dst:
            dst.write(("\n".join(users) + "\n").encode())
    return len(users)
