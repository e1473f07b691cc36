"""`study plan`: what a study will run and cost, before anything runs.

Counts come from the study's design (``study.core.design.StudyDesign``: the same lists the
searcher hands out and the same source jobs the runner trains). FLOPs come from
``study.probe.FlopsPerImage`` (``trainables.train.step_flops`` on each real (backbone, stem,
depth, classes) model), rates from ``study.probe.probe_throughput``:

    source FLOPs  = source models x source.epochs x train images(source classes) x F_train(d=0)
    tuning FLOPs  = sum over cells of epochs x train images(target classes) x F_train(cell)
    confirm FLOPs = cells x seeds x target_epochs x train images x F_train(cell)

with ``seeds`` = ``confirm.seeds`` (the minimum) and, with racing, ``confirm.max_seeds`` (the
ceiling). Mode ``best`` samples (backbone, init, depth) per trial, so its tuning and
confirmation are priced at the mean over the split's cells (uniform sampling), its source
models at the repeat seeds plus, when a split's best uses a source model, its confirmation
seeds (shown as "up to").

where tuning epochs are given for FIFO (every trial to target_epochs) and for ideal synchronous
successive halving (``n m_0 + keep_0 (m_1 - m_0) + ... + keep_last (T - m_last)``): the
``halving`` rule decides the same trials as results arrive, so it spends between the two (it
stops a trial only once the results that rule it out exist). Training images per epoch are
``steps x batch_size`` (the last partial batch is dropped). Device seconds = FLOPs / throughput,
the throughput (FLOP/s) measured per backbone by a short probe on this machine (a few training
steps at depth 0), or given by the user (``--flops-per-s``). Validation passes and feature-cache
savings are not counted (so the estimate errs high for cached linear probes).
"""
from __future__ import annotations

from study import policy
from study.core.design import StudyDesign, design_of, steps_per_pass
from study.core.identity import job_id
from study.core.spec import Spec
from study.probe import FlopsPerImage, probe_throughput

CIFAR10_TRAIN_PER_CLASS = 5000  # used when no data is given (data.root null: the download)
CIFAR10_TEST_PER_CLASS = 1000


def _per_class(spec: Spec, per_class: int) -> tuple[int, int]:
    """(training, validation) images per class: capped by data.max_train_per_class, the
    validation share held out (at least one)."""
    cap = min(per_class, spec.data.max_train_per_class or per_class)
    val = max(1, round(cap * spec.data.val_fraction))
    return cap - val, val


def train_images(spec: Spec, n_classes: int, per_class: int, size: int | None = None,
                 split: str | None = None) -> int:
    """Training images per epoch of a stage over ``n_classes`` classes (val held out, batches
    of batch_size, the last partial one dropped). A target run (``split`` given) takes ``size``
    images per class (None: all) and ``passes_per_epoch`` passes (the training budget's rule,
    ``StudyDesign.passes``, as the trainable applies it)."""
    per = _per_class(spec, per_class)[0]
    if size is not None:
        per = min(per, size)
    n = n_classes * per
    passes = design_of(spec).passes(split, n) if split is not None else 1
    return steps_per_pass(n, spec.batch_size) * spec.batch_size * passes


def val_images(spec: Spec, n_classes: int, per_class: int) -> int:
    """Validation images of a stage over ``n_classes`` classes (the held-out share)."""
    return n_classes * _per_class(spec, per_class)[1]


def test_images(spec: Spec, n_classes: int, per_class: int | None) -> int:
    """Test images of ``n_classes`` classes (capped by data.max_test_per_class)."""
    per = per_class or CIFAR10_TEST_PER_CLASS
    return n_classes * min(per, spec.data.max_test_per_class or per)


def _completing(spec: Spec, n: int) -> float:
    """Tuning trials of a group of ``n`` that run to target_epochs: all under FIFO; under
    halving those the last rung keeps (``policy.keep_counts``, as ``tuning_epochs``)."""
    s = spec.scheduler
    if n == 0 or s.type == "fifo":
        return float(n)
    ms = policy.milestones(s.grace_period, s.reduction_factor, spec.target_epochs)
    return float(policy.keep_counts(n, s.reduction_factor, len(ms))[-1]) if ms else float(n)


def tuning_epochs(spec: Spec, n: int) -> tuple[int, int]:
    """(FIFO, ideal synchronous halving) target epochs of one group of n tuning trials."""
    t = spec.target_epochs
    if spec.scheduler.type == "fifo":
        return n * t, n * t
    ms = policy.milestones(spec.scheduler.grace_period, spec.scheduler.reduction_factor, t)
    keep = policy.keep_counts(n, spec.scheduler.reduction_factor, len(ms))
    epochs, alive, prev = 0, n, 0
    for m, k in zip(ms, keep):
        epochs += alive * (m - prev)
        alive, prev = k, m
    return n * t, epochs + alive * (t - prev)


def make_plan(spec: Spec, per_class: int | None = None, flops_per_s: float | None = None,
              log=print, test_per_class: int | None = None) -> dict:
    """The study's cells, trials, FLOPs per phase and estimated device seconds.

    Device seconds of a trial = epochs x (training images x training FLOPs/image + validation
    images x inference FLOPs/image) / rate + (completed trials) test images x inference
    FLOPs/image / inference rate; a source model likewise (validation every epoch, one test
    pass). Rates: the backbone's training and inference FLOP/s through the trainable's own loops
    (``probe_throughput``), or ``flops_per_s`` for both. ``per_class`` / ``test_per_class``: the data's training / test images per
    class (default CIFAR-10's 5000 / 1000)."""
    per_class = per_class or CIFAR10_TRAIN_PER_CLASS
    fpi = FlopsPerImage(spec.data.image_size)

    rates: dict = {}

    def rate(backbone, stem, which=0):
        """Training (which=0) or inference (1) FLOP/s: given, or probed once per backbone."""
        if flops_per_s:
            return flops_per_s
        if (backbone, stem) not in rates:
            rates[(backbone, stem)] = probe_throughput(backbone, stem, 10, spec)
            log(f"probe: {backbone} ({stem} stem) trains at {rates[(backbone, stem)][0] / 1e9:.1f} "
                f"GFLOP/s, infers at {rates[(backbone, stem)][1] / 1e9:.1f} GFLOP/s on "
                f"{fpi.device.type}")
        return rates[(backbone, stem)][which]

    design = design_of(spec)
    splits = {s.name: s for s in spec.splits}
    sizes = design.group_sizes
    at_most = {c.id: len(design.seeds_at_most(c)) for c in design.cells}  # racing's ceiling
    per_split = {sp: len(design.cells_of_split(sp)) for sp in splits}
    k = len(design.confirm_seeds)
    compare = design.mode == "compare"
    rows = []
    for c in design.cells:
        n_t = len(splits[c.split].target)
        imgs = train_images(spec, n_t, per_class, c.size, c.split)
        f = fpi(c.backbone, c.stem, c.depth, n_t)
        if compare:
            n, share = sizes.get(c.id, 0), 1.0
        else:  # mode best: the split's trials spread over its cells (uniform sampling)
            n, share = sizes.get(c.split, 0), 1.0 / per_split[c.split]
        fifo_e, sh_e = tuning_epochs(spec, n)
        confirm_e = k * spec.target_epochs * share
        r_ = rate(c.backbone, c.stem)
        # device seconds of one epoch (training + the validation pass) and of the test pass at
        # the end of a completed trial
        fe = fpi(c.backbone, c.stem, c.depth, n_t, 1)
        re_ = rate(c.backbone, c.stem, 1)
        epoch_s = imgs * f / r_ + val_images(spec, n_t, per_class) * fe / re_
        test_s = test_images(spec, n_t, test_per_class) * fe / re_
        # completed tuning trials (one test pass each): all of them under FIFO, the rung's
        # survivors under halving (at least one per group)
        done_fifo = n * share
        done_sh = min(done_fifo, _completing(spec, n) * share)
        rows.append({"cell": c.id, "tuning_trials": n * share, "epoch_flops": imgs * f,
                     "epoch_s": epoch_s, "test_s": test_s,
                     "tuning_s_fifo": fifo_e * share * epoch_s + done_fifo * test_s,
                     "tuning_s_halving": sh_e * share * epoch_s + done_sh * test_s,
                     "confirm_s": (confirm_e * epoch_s + k * share * test_s),
                     "confirm_s_max": at_most[c.id] * share
                     * (spec.target_epochs * epoch_s + test_s),
                     "tuning_flops_fifo": fifo_e * share * imgs * f,
                     "tuning_flops_halving": sh_e * share * imgs * f,
                     "confirm_trials": k * share, "confirm_flops": confirm_e * imgs * f,
                     "confirm_flops_max": at_most[c.id] * share
                     * spec.target_epochs * imgs * f})
    jobs = design.source_jobs()  # trained up front, up to the racing ceiling's seeds
    def src_cost(job):
        """(training FLOPs, device seconds: training, a validation pass per epoch, the test
        pass) of one source model."""
        split, backbone, stem, _ = job
        n_s = len(splits[split].source)
        imgs = train_images(spec, n_s, per_class)
        flops = spec.source.epochs * imgs * fpi(backbone, stem, 0, n_s)
        fe = fpi(backbone, stem, 0, n_s, 1)
        evals = spec.source.epochs * val_images(spec, n_s, per_class) + test_images(
            spec, n_s, test_per_class)
        return flops, flops / rate(backbone, stem) + evals * fe / rate(backbone, stem, 1)
    costs = [src_cost(j) for j in jobs]
    source_jobs = [{"job": j, "flops": c[0], "seconds": c[1]} for j, c in zip(jobs, costs)]
    src_flops, src_s = sum(c[0] for c in costs), sum(c[1] for c in costs)
    tot = {"source_models": len(jobs), "source_flops": src_flops,
           "tuning_flops_fifo": sum(r["tuning_flops_fifo"] for r in rows),
           "tuning_flops_halving": sum(r["tuning_flops_halving"] for r in rows),
           "confirm_flops": sum(r["confirm_flops"] for r in rows),
           "confirm_flops_max": sum(r["confirm_flops_max"] for r in rows)}
    dev_s = {ph: src_s + sum(r[f"tuning_s_{ph}"] + r["confirm_s"] for r in rows)
             for ph in ("fifo", "halving")}
    dev_s["ceiling"] = dev_s["fifo"] + sum(r["confirm_s_max"] - r["confirm_s"] for r in rows)
    return {"counts": design.trial_counts(), "racing": design.racing, "cells": rows,
            "totals": tot, "device_s": dev_s, "max_concurrent": spec.search.max_concurrent,
            "throughput": "given" if flops_per_s else "probed", "per_class": per_class,
            "source_jobs": source_jobs}


def format_plan(spec: Spec, plan: dict) -> str:
    def g(x):
        return f"{x / 1e12:.2f} TFLOP" if x >= 1e11 else f"{x / 1e9:.2f} GFLOP"

    c, t = plan["counts"], plan["totals"]
    racing = (f", racing up to {c['confirm_max']} confirmation = {c['total_max']} trials"
              if plan["racing"] else "")
    lines = [f"study {spec.name!r} (mode {spec.search.mode}): {c['cells']} cells, "
             f"{c['tuning']} tuning + {c['confirm']} confirmation trials = {c['total']} trials"
             f"{racing}, {t['source_models']} source models; "
             f"{min(plan['per_class'], spec.data.max_train_per_class or plan['per_class'])} "
             f"training images per class before the validation split"
             + (f" (target stage: {', '.join(map(str, spec.data.target_train_per_class))} "
                f"per class after it, each size at least "
                f"{design_of(spec).min_steps(spec.splits[0].name)} optimizer steps)"
                if spec.data.target_train_per_class else ""),
             "",
             f"{'cell':<44} {'tune':>4} {'confirm':>7} {'FLOP/epoch':>12} {'tuning (halving..FIFO)':>26}"]
    for r in plan["cells"]:
        lines.append(f"{r['cell']:<44} {r['tuning_trials']:>4.3g} {r['confirm_trials']:>7.3g} "
                     f"{g(r['epoch_flops']):>12} {g(r['tuning_flops_halving']):>12} .. "
                     f"{g(r['tuning_flops_fifo']):>11}")
    total_h = t["source_flops"] + t["tuning_flops_halving"] + t["confirm_flops"]
    total_f = t["source_flops"] + t["tuning_flops_fifo"] + t["confirm_flops"]
    lines += ["",
              f"source models:  {t['source_models']} x {spec.source.epochs} epochs = "
              f"{g(t['source_flops'])}" + (" (up to racing's ceiling seeds)" if plan["racing"] else ""),
              f"tuning:         {g(t['tuning_flops_halving'])} (ideal successive halving) .. "
              f"{g(t['tuning_flops_fifo'])} (FIFO); expected early-stopping saving "
              f"{1 - t['tuning_flops_halving'] / max(t['tuning_flops_fifo'], 1):.0%} at most",
              f"confirmation:   {g(t['confirm_flops'])}"
              + (f" .. {g(t['confirm_flops_max'])} (racing ceiling)" if plan["racing"] else ""),
              f"total:          {g(total_h)} .. {g(total_f + (t['confirm_flops_max'] - t['confirm_flops'] if plan['racing'] else 0))}",
              f"device time:    {plan['device_s']['halving'] / 3600:.2f} .. "
              f"{plan['device_s']['ceiling' if plan['racing'] else 'fifo'] / 3600:.2f} device-hours ({plan['throughput']} "
              f"throughput); wall >= {plan['device_s']['halving'] / 3600 / plan['max_concurrent']:.2f} h "
              f"with {plan['max_concurrent']} trials at once (training, validation and test "
              f"passes; start-up and scheduling not included)"]
    return "\n".join(lines)


def schedule_costs(design: StudyDesign, sim: dict | None = None) -> dict:
    """What the study's order of work goes by (``study.space.StudySearcher`` and
    ``study.sources.SourceModels``): the expected device cost of one complete trial of each
    cell and of each source model, relative within the study.

        cell cost   = target_epochs x (epoch's training + validation) + test pass
        source cost = its training, validation and test passes (``make_plan``'s source seconds)

    A rehearsal's own simulated seconds (``sim``, ``study.rehearsal.build_simulation``), else
    ``make_plan`` at 1 FLOP/s (FLOPs: every backbone priced at the same rate, which orders the
    work without a probe; about 20 s of FLOP counting on a 2-core CPU for the 112 cells of
    examples/cifar10.yaml, under 0.2 s for the small examples).

    Returns {"cells": {cell id: cost}, "sources": {job id ("split/backbone/stem/seed"): cost}}."""
    t = design.target_epochs
    if sim is not None:
        return {"cells": {c: t * s + sim["test_s"].get(c, 0.0) for c, s in sim["epoch_s"].items()},
                "sources": dict(sim["source_s"])}
    plan = make_plan(design.spec, flops_per_s=1.0, log=lambda *a: None)
    return {"cells": {r["cell"]: t * r["epoch_s"] + r["test_s"] for r in plan["cells"]},
            "sources": {job_id(j["job"]): j["seconds"] for j in plan["source_jobs"]}}


def source_order(design: StudyDesign, jobs: list, costs: dict) -> list:
    """``jobs`` (source jobs) longest chain first: a job's chain is its own cost plus what must
    run after it, at least one complete trial of its longest cell for each phase still to come
    (the tuning seed's model: the cell's tuning, then its confirmation; a confirmation seed's:
    the confirmation). Critical-path-first list scheduling: the models whose cells would
    otherwise end the study last start first. Ties keep ``jobs``' order (tuning seed first)."""
    # job -> its longest cell's complete-trial cost
    longest = {job: max(costs["cells"].get(c.id, 0.0) for c in cells)
               for job, cells in design.source_users.items()}

    def chain(job) -> float:
        phases = 2 if job[3] == design.tune_seed else 1
        return costs["sources"].get(job_id(job), 0.0) + phases * longest.get(job, 0.0)

    return sorted(jobs, key=lambda j: -chain(j))  # stable: ties keep the given order
