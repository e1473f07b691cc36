"""Which source model a trial uses: one key for everything that determines it. The trainable,
the runner (which trains each key once, up front) and the reports all use this function."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from study.core import metrics as M
from study.core.spec import resolve_stem


def source_key(spec, fingerprint: str, source_classes: list[int], split: str, backbone: str,
               stem: str, seed: int) -> str:
    """``<backbone>-<split>-s<seed>-<12 hex>``: the hash covers the data (fingerprint, validation
    split, subsampling, image size), the source classes, backbone, stem, the source stage's
    hyperparameters and optimiser, batch size and seed. Trials with equal keys share one model."""
    blob = json.dumps({
        "data": fingerprint, "val_fraction": spec.data.val_fraction,
        "max_train_per_class": spec.data.max_train_per_class, "image_size": spec.data.image_size,
        "source_classes": list(source_classes), "backbone": backbone, "stem": stem,
        "source": dataclasses.asdict(spec.source), "optimizer": dataclasses.asdict(spec.optimizer),
        "batch_size": spec.batch_size, "seed": seed, "version": 1,
    }, sort_keys=True)
    return f"{backbone}-{split}-s{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def trial_seed(config: dict, default_seed: int) -> int:
    """A trial's seed: the config's seed (the study's ``search.seed`` if absent) plus its repeat
    index (repeats of one sampled configuration differ only in their seed)."""
    return int(config.get(M.SEED, default_seed)) + int(config.get(M.REPEAT, 0))


def job_id(job) -> str:
    """A source job (split, backbone, stem, seed) as a JSON-able key: ``split/backbone/stem/seed``
    (the plan's costs, the schedule's order and the rehearsal's model keys use it)."""
    return "/".join(map(str, job))


def source_job(spec, config: dict) -> tuple[str, str, str, int] | None:
    """(split, backbone, stem, seed) of the source model a trial config needs, or None when its
    init is not 'source'. The runner trains each job once, up front; the trainable loads it."""
    if config.get(M.INIT) != "source":
        return None
    b = config[M.BACKBONE]
    return (config[M.SPLIT], b, resolve_stem(spec, b, "source"), trial_seed(config, spec.search.seed))
