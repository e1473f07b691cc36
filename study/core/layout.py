"""Names of the files a study directory holds beside Tune's experiment (no heavy imports:
the analysis package reads studies without importing Ray or torch)."""
from pathlib import Path

STUDY_FILE = "study.yaml"  # the resolved spec
PROVENANCE_FILE = "provenance.json"  # code/package versions, data fingerprint, seed, command
SUMMARY_FILE = "summary.json"  # written when a run ends
SOURCES_DIR = "sources"  # shared source models: sources/<key>/{model.pt,info.json,users.txt}

RECORD_FILE = "trials.jsonl"  # the study's own record: one line per trial event (study.recorder)
# In a checkpoint `study resume` put in place of a deleted one (study.state): the trial reports
# that checkpoint's epoch again before it goes on, as Tune never received it.
REPORT_AGAIN_FILE = "report_again"


# ----------------------------------------------------------------------------- storage
# One local-or-URI path for every study file: pyarrow.fs for URIs (s3://, gs://, ...) and for
# local paths alike, and one atomic write. Imports pyarrow only when called.

def is_uri(path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path) -> str:
    """A ``file://`` URI as a plain path; anything else unchanged."""
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def filesystem(path):
    """(pyarrow FileSystem, path inside it) for a URI or a local path."""
    import pyarrow.fs as pafs

    path = local_path(path)
    if is_uri(path):
        return pafs.FileSystem.from_uri(path.rstrip("/"))
    return pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def read_bytes(path) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path) -> str:
    return read_bytes(path).decode()


def write_atomic(path, data) -> None:
    """Write a whole file so that a reader sees the old file or the new one, never a part:
    a local file is written beside and renamed; an object store's PUT is atomic per object.
    ``data``: bytes or str."""
    data = data.encode() if isinstance(data, str) else data
    path = local_path(path)
    if is_uri(path):
        fs, p = filesystem(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(p) as f:
            f.write(data)
        return
    import os
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_file(src, dst) -> None:
    """Copy one file between any two of local paths and URIs (``pyarrow.fs.copy_files``); the
    destination appears whole (local: copied beside, then renamed)."""
    import pyarrow.fs as pafs

    sfs, sp = filesystem(src)
    dst = local_path(dst)
    if is_uri(dst):
        dfs, dp = filesystem(dst)
        dfs.create_dir(dp.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(sp, dp, source_filesystem=sfs, destination_filesystem=dfs)
        return
    import os

    tmp = f"{dst}.dl{os.getpid()}"
    pafs.copy_files(sp, tmp, source_filesystem=sfs, destination_filesystem=pafs.LocalFileSystem())
    os.replace(tmp, dst)


def is_file(path) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.File
