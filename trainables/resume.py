"""Where a restored trial picks up: the newest checkpoint its trial directory holds, and the
results Tune has to be told again (torch-free: the real and the simulated trainable share it).

Tune restores a trial from the checkpoint its last *experiment snapshot* names. The snapshot can
be behind the trial: Tune keeps ``num_to_keep`` checkpoints per trial and forces a snapshot only
once a trial has checkpointed that many times since the last one (``study.runner``'s
``CHECKPOINTS_KEPT``), and a driver may be stopped or killed between a checkpoint and the next
snapshot. Training again from the snapshot's checkpoint would redo epochs that are already on
storage, and a trial that had *finished* after the snapshot would run its last epochs again.

So every checkpoint also holds ``meta.json``: its epoch and every result the trial reported up
to it. On restore, :func:`resume_point` looks at the checkpoint directories beside the one Tune
hands over (public ``Checkpoint.path`` / ``Checkpoint.filesystem``: local disk or an object
store alike) and, if a newer one exists, returns it together with the results after the handed
checkpoint's epoch: the trainable reports those again (marked ``M.REPLAYED``; no training), so
the restored Tune, its scheduler and the searcher see every epoch once more in order, and then
trains on from the newer checkpoint. A trial that had finished replays its last results and
ends without training. Anything unreadable falls back to Tune's checkpoint (the trial then
trains those epochs again, as without this module).
"""
from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path

from study.core import metrics as M

META_FILE = "meta.json"  # in every checkpoint: {"epoch": int, "results": [result, ...]}
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")

log = logging.getLogger(__name__)


def write_meta(checkpoint_dir, epoch: int, results: list[dict]) -> None:
    """Write ``meta.json`` into a checkpoint being made: its epoch and the trial's results up to
    it (JSON; values JSON cannot hold are written as text)."""
    (Path(checkpoint_dir) / META_FILE).write_text(
        json.dumps({"epoch": int(epoch), "results": results}, default=str))


def read_history(checkpoint_dir) -> list[dict]:
    """The results stored in a local checkpoint directory's ``meta.json`` ([] if none): the
    trial's results so far, which its later checkpoints carry on."""
    try:
        return list(json.loads((Path(checkpoint_dir) / META_FILE).read_text())["results"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _read_meta(fs, path: str) -> dict | None:
    try:
        with fs.open_input_stream(posixpath.join(path, META_FILE)) as f:
            meta = json.loads(f.read().decode())
        return meta if isinstance(meta.get("epoch"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def resume_point(ckpt):
    """``(checkpoint, results)``: the checkpoint to load (``ckpt`` itself or a newer one beside
    it) and the results after ``ckpt``'s epoch up to that checkpoint's, to report again before
    training on (empty if ``ckpt`` is the newest). See the module docstring."""
    import pyarrow.fs as pafs
    from ray import tune

    try:
        fs, path = ckpt.filesystem, str(ckpt.path).rstrip("/")
        here = _read_meta(fs, path)
        if here is None:
            return ckpt, []
        infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(path)))
        dirs = sorted(((int(m.group(1)), i.path) for i in infos
                       if i.type == pafs.FileType.Directory
                       and (m := _CHECKPOINT_DIR.fullmatch(i.base_name))), reverse=True)
        for _, other in dirs:
            if other.rstrip("/") == path:
                continue
            meta = _read_meta(fs, other)
            if meta is not None and meta["epoch"] > here["epoch"]:
                again = [r for r in meta["results"]
                         if here["epoch"] < int(r.get(M.EPOCH, 0)) <= meta["epoch"]]
                return tune.Checkpoint(other, filesystem=fs), again
        return ckpt, []
    except Exception as e:  # a listing that fails must not fail the trial: train again instead
        log.warning("resume: checkpoints beside %s not read (%s: %s); resuming from it",
                    getattr(ckpt, "path", ckpt), type(e).__name__, e)
        return ckpt, []


def restore(ckpt, load):
    """``(state, history)`` of a restored trial: ``load(directory)`` applied to the checkpoint
    to resume from (``resume_point``), and the results it holds so far. Before returning, reports
    again what the restored Tune has not received: the results after Tune's checkpoint up to a
    newer one, or the result saved in a checkpoint ``study resume`` repaired
    (``study.state.repair_dangling_checkpoints`` marks it with ``REPORT_AGAIN_FILE``)."""
    from study.core.layout import REPORT_AGAIN_FILE

    ckpt, again = resume_point(ckpt)
    with ckpt.as_directory() as cd:
        state = load(Path(cd))
        if not again and (Path(cd) / REPORT_AGAIN_FILE).exists() and "result" in state:
            again = [state["result"]]
        history = read_history(cd)
    replay(again)
    return state, history


def replay(results: list[dict]) -> None:
    """Report ``results`` again (see the module docstring), each marked ``M.REPLAYED``."""
    from ray import tune

    for r in results:
        tune.report({**r, M.REPLAYED: True})
