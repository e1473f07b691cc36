"""A study rehearsal: the real driver, searcher, scheduler, source tasks, checkpoints, storage,
progress, record, resume and report, with a cost model in place of training (``study run SPEC
--simulate``). Nothing here imports torch: a simulated trial is a sleep and a formula.

**Time.** A target epoch of a cell, its test pass and a source model last the device seconds
``study plan`` prices them at / ``compression`` (``study.plan.make_plan``: training images per
epoch x training FLOPs per image of the model at its frozen depth, plus the validation and test
images x inference FLOPs per image, over ``rate``), ``rate`` the backbone's device throughput in FLOP/s
(``--flops-per-s``, or the plan's probe of this machine), ``compression`` how much faster than
that the rehearsal runs (``--compression``). The durations are computed once, in the driver, and
written to ``<study>/simulation.json`` (``study resume`` reads them back).

**Accuracy** (a documented, plausible shape; not a prediction). For a trial of split s,
backbone b, init i, frozen depth d of D stages, learning rate lr and seed k, the final accuracy is

    chance  = 1 / n_target
    top     = chance + (CEILING[b] - chance) * (1 - HARDNESS[s])
    init    = INIT_GAIN[i] - (FREEZE_COST[i] * (d / D) ** 2 if i != scratch else 0)
    lr_fit  = LR_COST * log10(lr / LR_BEST[b] * (1 + 3 * d / D)) ** 2
    final   = top + init - lr_fit + noise_seed(s, b, i, k) + noise_trial(cell, k, lr)

clipped to [chance, 0.99]. ``HARDNESS[s]`` is a fixed function of the split's target classes
(0 to 0.15); the freezing cost grows with the square of the frozen share (early stages are
generic, late ones specific to the source task; ImageNet features transfer better than a
5-class source model's); frozen models prefer a larger learning rate (fewer parameters move).
The seed noise (sd ``SEED_SD``) is shared by every depth of one split x backbone x init with
that seed, like the real trials' common random numbers (same source model, head, batches), so
paired comparisons see less noise than unpaired ones, as on real runs; the trial noise (sd
``TRIAL_SD``) is not shared. Every draw is a hash of its arguments: the same study gives the same
numbers on every run and after a resume. The validation curve rises as
``chance + (final - chance) * (1 - exp(-3 e / E)) / (1 - exp(-3))`` over epochs e = 1..E with a
small per-epoch wobble, so early stopping has something to rank; the test accuracy is the final
accuracy plus a small test-split draw.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

from study.core import metrics as M
from study.core.design import SCRATCH, cell_id
from study.core.identity import job_id
from study.core.layout import write_atomic
from trainables.resume import restore, write_meta

SIMULATION_FILE = "simulation.json"  # in the study directory: durations and the model's version
MODEL_VERSION = 1

CEILING = {"scratch_cnn": 0.82, "mobilenet_v2": 0.88, "resnet18": 0.91}  # best accuracy, 5 classes
DEFAULT_CEILING = 0.85
INIT_GAIN = {"scratch": 0.0, "source": 0.015, "imagenet": 0.04}  # points/100 over scratch at d0
FREEZE_COST = {"source": 0.12, "imagenet": 0.06}  # lost at full freeze (d = D)
LR_BEST = {"scratch_cnn": 0.05, "mobilenet_v2": 0.03, "resnet18": 0.02}  # at d = 0
LR_COST = 0.06  # accuracy lost per (decade away from the best learning rate) ** 2
SEED_SD = 0.008  # shared by a seed's depths (common random numbers)
TRIAL_SD = 0.003  # each trial's own
EPOCH_SD = 0.004  # the validation curve's wobble per epoch
TEST_SD = 0.002  # the test split's draw


def _unit(*key) -> float:
    """A uniform draw in (0, 1) that is a fixed function of ``key``."""
    h = hashlib.sha256(json.dumps(key, default=str).encode()).digest()
    return (int.from_bytes(h[:8], "big") + 0.5) / 2**64


def _normal(*key) -> float:
    """A standard normal draw that is a fixed function of ``key`` (Box-Muller)."""
    u, v = _unit("u", *key), _unit("v", *key)
    return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * v)


def hardness(target_classes) -> float:
    """How much harder than the backbone's ceiling a split's target task is: 0 .. 0.15."""
    return 0.15 * _unit("hardness", sorted(map(str, target_classes)))


def final_accuracy(split: str, target_classes, backbone: str, init: str, depth: int,
                   max_depth: int, lr: float, seed: int) -> float:
    """The trial's accuracy after its last epoch (module docstring)."""
    n = max(2, len(target_classes))
    chance = 1.0 / n
    top = chance + (CEILING.get(backbone, DEFAULT_CEILING) - chance) * (1 - hardness(target_classes))
    share = depth / max(1, max_depth) if init != SCRATCH else 0.0
    gain = INIT_GAIN.get(init, 0.0) - FREEZE_COST.get(init, 0.0) * share ** 2
    best_lr = LR_BEST.get(backbone, 0.03) * (1 + 3 * share)
    lr_fit = LR_COST * math.log10(max(lr, 1e-12) / best_lr) ** 2
    cell = cell_id(split, backbone, init, depth)
    noise = (SEED_SD * _normal("seed", split, backbone, init, seed)
             + TRIAL_SD * _normal("trial", cell, seed, round(lr, 12)))
    return min(0.99, max(chance, top + gain - lr_fit + noise))


def curve(final: float, chance: float, epoch: int, epochs: int, *key) -> float:
    """Validation accuracy after ``epoch`` of ``epochs`` (module docstring)."""
    rise = (1 - math.exp(-3 * epoch / epochs)) / (1 - math.exp(-3))
    wobble = EPOCH_SD * _normal("epoch", epoch, *key) if epoch < epochs else 0.0
    return min(0.99, max(0.0, chance + (final - chance) * rise + wobble))


def read_simulation(study_dir: str) -> dict | None:
    """``simulation.json`` of a study directory (None: not simulated)."""
    from study.core.layout import read_text

    try:
        return json.loads(read_text(f"{study_dir}/{SIMULATION_FILE}"))
    except (OSError, ValueError, FileNotFoundError):
        return None


# ----------------------------------------------------------------------------- Ray entry points

def simulated_trainable(config: dict, *, spec_dict: dict, sim: dict, sources_dir: str):
    """Ray Tune function trainable of a rehearsal: the real trainable's reports (same metric
    names, one per target epoch, a checkpoint every ``checkpoint_every`` epochs and with the
    last, the test metrics with the last), its time a sleep per epoch (``sim["epoch_s"][cell]``)
    and for the test pass, its accuracies ``final_accuracy``."""
    from ray import tune

    from study.core import identity
    from study.core.spec import load_spec_dict

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per checkpoint
    spec = load_spec_dict(spec_dict)
    cfg = dict(config)
    cfg[M.SEED] = identity.trial_seed(cfg, spec.search.seed)
    # the design's cell and depth, as the searcher wrote them (scratch cells are d0)
    split, backbone, init, depth = cfg[M.SPLIT], cfg[M.BACKBONE], cfg[M.INIT], cfg[M.FROZEN_DEPTH]
    cell = cfg[M.CELL]
    target = sim["targets"][split]
    chance = 1.0 / max(2, len(target))
    final = final_accuracy(split, target, backbone, init, depth, sim["max_depth"][backbone],
                           cfg[M.LR], cfg[M.SEED])
    epoch_s, epoch_flops = sim["epoch_s"][cell], sim["epoch_flops"][cell]
    source = {"flops": 0.0, "key": "", "shared_by": 0, "val_acc": float("nan")}
    job = identity.source_job(spec, cfg)
    if job is not None:
        key = sim["source_keys"][job_id(job)]
        info = Path(sources_dir) / key / "info.json"
        users = Path(sources_dir) / key / "users.txt"
        if info.exists():
            source.update(json.loads(info.read_text()), key=key)
            ctx = tune.get_context()
            with open(users, "a") as f:  # one line per use; shared_by counts distinct trials
                f.write(f"{ctx.get_trial_id() if ctx else 'local'}\n")
            source["shared_by"] = len(set(users.read_text().split()))
    start, wall, history = 0, 0.0, []
    ckpt = tune.get_checkpoint()
    if ckpt:  # from the newest checkpoint on storage, missed results reported again (resume.py)
        st, history = restore(ckpt, lambda d: json.loads((d / "state.json").read_text()))
        start, wall = st["epoch"], st["wall_s"]
    epochs = spec.target_epochs
    for epoch in range(start + 1, epochs + 1):
        time.sleep(epoch_s)
        wall += epoch_s
        val = curve(final, chance, epoch, epochs, cell, cfg[M.SEED], cfg[M.LR])
        loss = -math.log(max(val, 1e-3))
        result = {M.EPOCH: epoch, M.VAL_ACC: val, M.VAL_LOSS: loss, M.TRAIN_LOSS: loss * 0.9,
                  M.TARGET_FLOPS: epoch * epoch_flops, M.SOURCE_FLOPS: source["flops"],
                  M.SOURCE_KEY: source["key"], M.SOURCE_SHARED_BY: source["shared_by"],
                  M.SOURCE_VAL_ACC: source["val_acc"], M.WALL_S: wall, M.EPOCH_S: epoch_s,
                  M.TRAINABLE_PARAMS: 0, M.TOTAL_PARAMS: 0, M.DONE: epoch == epochs,
                  M.SEED: cfg[M.SEED], M.WORKER_RSS_MIB: _rss_mib(), M.FEATURE_CACHE: False,
                  M.FEATURE_CACHE_VIEWS: 0, M.FEATURE_CACHE_S: 0.0, "simulated": True}
        if epoch == epochs:
            test_s = sim["test_s"].get(cell, 0.0)
            time.sleep(test_s)
            acc = min(0.99, max(0.0, final + TEST_SD * _normal("test", cell, cfg[M.SEED], cfg[M.LR])))
            result.update({M.TEST_ACC: acc, M.TEST_PRECISION: acc, M.TEST_RECALL: acc,
                           M.TEST_F1: acc, M.TEST_S: test_s})
        history.append(result)
        if epoch % spec.checkpoint_every and epoch != epochs:
            tune.report(result)  # no checkpoint this epoch (spec checkpoint_every)
            continue
        with tempfile.TemporaryDirectory() as cd:
            (Path(cd) / "state.json").write_text(json.dumps(
                {"epoch": epoch, "wall_s": wall, "result": result}))
            write_meta(cd, epoch, history)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(cd))


def simulated_source_task(spec_dict: dict, data, split: str, backbone: str, stem: str, seed: int,
                          sources_dir: str, sources_uri: str | None = None,
                          retry_failed: bool = True) -> dict:
    """A source model's Ray task in a rehearsal: sleeps its simulated training time and writes
    the model's ``info.json`` (no weights) where trials look for it. Returns the status dict of
    ``trainables.trainable.train_source_task``."""
    sim = data.sim
    jid = job_id((split, backbone, stem, seed))
    key = sim["source_keys"][jid]
    d = Path(sources_dir) / key
    d.mkdir(parents=True, exist_ok=True)
    info = d / "info.json"
    if info.exists():
        return {"key": key, "ok": True, "trained": False, **json.loads(info.read_text())}
    t = sim["source_s"][jid]
    time.sleep(t)
    n = len(data.splits[split][0])
    acc = final_accuracy(split, [f"src{i}" for i in range(n)], backbone, "scratch", 0, 1,
                         LR_BEST.get(backbone, 0.03), seed)
    out = {"flops": sim["source_flops"][jid], "val_acc": acc, "train_s": t, "simulated": True}
    write_atomic(info, json.dumps(out))
    return {"key": key, "ok": True, "trained": True, **out}


def _rss_mib() -> float:
    try:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")
