"""Checks that run before anything starts (no Ray, no torch): a study's storage.

``check_storage(path)`` raises :class:`StorageError` (``study`` exit status 2) with one line
naming the path and the cause when results could not be written there:

* a local path (or ``file://``): a component that exists but is not a directory, a path that is
  a file, or a nearest existing directory that refuses a write (probed by creating and removing
  a temporary file in it, so read-only mounts, permissions, ACLs and full disks all count).
  Nothing is left behind: the directories are created later, by the run.
* a URI (``s3://``, ``gs://``, ...): through ``pyarrow.fs`` as the study writes it
  (``study.core.layout.filesystem``): the path must not be a file, and a small probe object is
  written under it and deleted. The probe runs in a child process with a time limit, so an
  unreachable endpoint fails in seconds instead of hanging in the S3 client's retries.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from study.core.layout import is_uri, local_path

URI_TIMEOUT_S = 20.0


class StorageError(ValueError):
    """Results cannot be written to the storage path: the message names the path and why."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def check_storage(path: str, timeout_s: float = URI_TIMEOUT_S) -> None:
    """Raise StorageError (one line: the path and the cause) unless a study can write under
    ``path`` (a directory, created later if missing, or a URI). Writes nothing that stays."""
    path = str(path)
    if is_uri(path):
        _check_uri(path, timeout_s)
    else:
        _check_local(path)


def _check_local(path: str) -> None:
    p = Path(local_path(path)).expanduser().absolute()
    # Walk down from the root: the first missing component ends the existing part; every
    # existing one must be a directory.
    existing = Path(p.anchor)
    for part in p.parts[1:]:
        nxt = existing / part
        try:
            st = os.stat(nxt)
        except FileNotFoundError:
            break
        except OSError as e:
            raise StorageError(f"storage {path}: cannot access {nxt}: {_reason(e)}") from None
        if not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else "not a directory"
            raise StorageError(f"storage {path}: {nxt} is {what}, not a directory")
        existing = nxt
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".study-write-probe-")
    except OSError as e:
        raise StorageError(f"storage {path}: cannot write in {existing}: {_reason(e)}") from None
    os.close(fd)
    os.unlink(probe)


# The URI probe, run in a child process: "ok", or one line "error: <cause>" on stdout.
_PROBE = r"""
import sys, uuid
import pyarrow.fs as pafs
from study.core.layout import filesystem
uri = sys.argv[1]
try:
    fs, p = filesystem(uri)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        print("error: it is a file, not a directory"); sys.exit(0)
    probe = p.rstrip("/") + "/.study-write-probe-" + uuid.uuid4().hex
    with fs.open_output_stream(probe) as f:
        f.write(b"probe")
    fs.delete_file(probe)
    print("ok")
except Exception as e:
    msg = " ".join(str(e).split()) or type(e).__name__
    print("error: " + msg[:400])
"""


def _check_uri(uri: str, timeout_s: float) -> None:
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE, uri], capture_output=True, text=True,
                           timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise StorageError(f"storage {uri}: unreachable (no answer within {timeout_s:.0f} s)") \
            from None
    lines = p.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if last == "ok":
        return
    if last.startswith("error: "):
        raise StorageError(f"storage {uri}: {last[len('error: '):]}")
    err = " ".join(p.stderr.strip().splitlines()[-1:]) or f"the check exited with {p.returncode}"
    raise StorageError(f"storage {uri}: cannot check it: {err}")
