"""Where a restored trial picks up (trainables/resume.py): the newest checkpoint beside the one
Tune's (possibly older) experiment snapshot names, and the results to report again."""
import json

from ray import tune

from study.core import metrics as M
from trainables.resume import META_FILE, read_history, resume_point, write_meta


def _checkpoint(trial_dir, index: int, epoch: int, meta: bool = True):
    d = trial_dir / f"checkpoint_{index:06d}"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"epoch": epoch}))
    if meta:
        write_meta(d, epoch, [{M.EPOCH: e, M.VAL_ACC: e / 10} for e in range(1, epoch + 1)])
    return d


def test_a_newer_checkpoint_beside_the_snapshots_is_used_and_its_results_replayed(tmp_path):
    old = _checkpoint(tmp_path, 1, 4)
    newer = _checkpoint(tmp_path, 2, 8)
    (tmp_path / "result.json").write_text("")  # other files of the trial directory are ignored
    ckpt, again = resume_point(tune.Checkpoint(str(old)))
    assert ckpt.path == str(newer)
    assert [r[M.EPOCH] for r in again] == [5, 6, 7, 8]
    assert [r[M.EPOCH] for r in read_history(newer)] == list(range(1, 9))


def test_the_newest_checkpoint_or_one_without_meta_resumes_as_tune_says(tmp_path):
    a = _checkpoint(tmp_path / "t1", 1, 4)
    _checkpoint(tmp_path / "t1", 0, 2)  # older ones are never picked
    ckpt, again = resume_point(tune.Checkpoint(str(a)))
    assert (ckpt.path, again) == (str(a), [])
    b = _checkpoint(tmp_path / "t2", 1, 4, meta=False)  # written before meta.json existed
    _checkpoint(tmp_path / "t2", 2, 8)
    ckpt, again = resume_point(tune.Checkpoint(str(b)))
    assert (ckpt.path, again) == (str(b), [])
    c = _checkpoint(tmp_path / "t3", 1, 4)
    (_checkpoint(tmp_path / "t3", 2, 8) / META_FILE).write_text("{cut off")  # unreadable
    assert resume_point(tune.Checkpoint(str(c)))[0].path == str(c)
