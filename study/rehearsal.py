"""The driver's side of a rehearsal (``study run --simulate``): the durations from the plan and
the stand-in for the study data. The trainable, the source task and the cost model are in
``trainables.simulate`` (what runs on the workers)."""
from __future__ import annotations

from study.core.identity import job_id
from trainables.simulate import MODEL_VERSION


class SimData:
    """What a rehearsal has instead of ``trainables.trainable.StudyData``: the class names, the
    splits as class indices, a fingerprint naming the simulation, and the durations."""

    def __init__(self, classes: list[str], splits: dict, sim: dict):
        self.classes, self.splits, self.sim = list(classes), splits, sim
        self.fingerprint = f"simulated-v{MODEL_VERSION}"
        self.origin = "simulated (trainables/simulate.py): no images were read"
        self.mean = self.std = (0.0, 0.0, 0.0)


def build_simulation(spec, classes: list[str], splits: dict, *, flops_per_s: float | None,
                     compression: float, per_class: int | None = None,
                     test_per_class: int | None = None) -> dict:
    """The rehearsal's durations, from ``study plan``'s FLOPs: per cell the epoch's FLOPs and
    seconds, per source job its FLOPs and seconds, and each job's source key."""
    from study.core import identity
    from study.core.catalog import facts
    from study.plan import make_plan

    if not compression > 0:
        raise ValueError(f"--compression {compression}: must be > 0")
    plan = make_plan(spec, per_class=per_class, flops_per_s=flops_per_s,
                     test_per_class=test_per_class)
    targets = {s: [classes[i] for i in splits[s][1]] for s in splits}
    sim = {"version": MODEL_VERSION, "flops_per_s": flops_per_s, "compression": compression,
           "throughput": plan["throughput"], "targets": targets,
           "max_depth": {b.name: facts(b.name).num_stages for b in spec.backbones},
           "epoch_flops": {}, "epoch_s": {}, "test_s": {}, "source_flops": {}, "source_s": {},
           "source_keys": {}, "rates": {}}
    for r in plan["cells"]:
        sim["epoch_flops"][r["cell"]] = r["epoch_flops"]
        sim["epoch_s"][r["cell"]] = r["epoch_s"] / compression  # training + validation
        sim["test_s"][r["cell"]] = r["test_s"] / compression
    for j in plan["source_jobs"]:
        jid = job_id(j["job"])
        split, backbone, stem, seed = j["job"]
        sim["source_flops"][jid] = j["flops"]
        sim["source_s"][jid] = j["seconds"] / compression
        sim["source_keys"][jid] = identity.source_key(
            spec, f"simulated-v{MODEL_VERSION}", list(splits[split][0]), split, backbone, stem,
            seed)
    return sim
