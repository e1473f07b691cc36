"""What the study's searcher decides: pure functions over the design, the queues and the record
(no Tune, no Ray, no state of their own). ``study.space.StudySearcher`` holds the state Tune
saves and calls these; ``tests/test_decide.py`` tests them on plain data.

* ``pick``: which queued trial goes next (the order of work).
* ``confirmation``: when a group's best configuration is known, and which trial it is.
* ``racing_seeds``: which cells get which further confirmation seeds at one racing look.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from study.core import metrics as M
from study.core import stats


def pick(queue: list[dict], ok: Callable[[dict], bool], *, kind: str, mode: str,
         costs: Optional[dict], round_robin: bool, epoch_s: dict) -> Optional[int]:
    """Index of the next config of ``queue`` to hand out (``ok``: its source model is ready),
    None when none can go.

    The study's length is set by its longest chains: a cell's confirmation can start only once
    all its tuning trials have ended, so a long cell started late leaves slots idle at the
    study's end. So, with the cells' expected costs (``costs``: cell -> cost of one complete
    trial) and no time budget (``round_robin`` False), the tuning queue (``kind`` "tune", mode
    compare) goes longest cell first (critical path first: all of a cell's trials together, so
    its rungs decide and its survivors start early; ties keep the queue's round-robin order),
    and the confirmation queue (``kind`` "confirm") longest first.

    With a time budget (or no costs) the tuning queue goes round by round instead, so a budget
    cuts all cells alike: cells with the most trials still to hand out first, so every cell
    gets its k-th trial before any its (k+1)-th; inside a round, the cells whose trials
    measured the longest epochs so far first (``epoch_s``: cell -> mean epoch seconds; cells
    not yet measured keep the queue's order ahead of measured ones). Other queues: FIFO."""
    idx = [i for i, cfg in enumerate(queue) if ok(cfg)]
    if not idx:
        return None
    if costs and kind == "confirm":
        return max(idx, key=lambda i: (costs.get(queue[i].get(M.CELL), 0.0), -i))
    if kind != "tune" or mode != "compare":
        return idx[0]
    left: dict[str, int] = {}
    for cfg in queue:
        left[cfg[M.CELL]] = left.get(cfg[M.CELL], 0) + 1
    if not round_robin:
        return max(idx, key=lambda i: (costs.get(queue[i][M.CELL], 0.0), left[queue[i][M.CELL]], -i))
    return max(idx, key=lambda i: (left[queue[i][M.CELL]], epoch_s.get(queue[i][M.CELL], math.inf),
                                   -i))


def confirmation(ended: dict, running: list[str], size: int):
    """Whether a group's confirmation can be queued, and from which configuration.

    ``ended``: trial id -> (outcome, config), outcome (val_acc, test_acc, target FLOPs) of a
    complete run or None; ``running``: the group's tuning trials still running; ``size``: its
    tuning trials in all. Returns:

    * ("best", config, flops): every tuning trial has ended; the completed one with the best
      validation accuracy (the test split never selects);
    * ("early", trial id): all but one have ended without completing (stopped early or
      errored): the one still running is then the only possible best, so its confirmation can
      start beside it (the study's critical path: source model, tuning, confirmation);
    * ("none",): every tuning trial ended and none completed: nothing to confirm;
    * None: not yet."""
    early = (len(ended) == size - 1 and len(running) == 1 and size > 1
             and all(v is None for v, _ in ended.values()))
    if early:
        return ("early", running[0])
    if len(ended) < size:
        return None
    done = [(v, cfg) for v, cfg in ended.values() if v is not None and cfg]
    if not done:
        return ("none",)
    (_, _, flops), best = max(done, key=lambda x: x[0][0])
    return ("best", best, flops)


def racing_seeds(design, group: str, chosen: set, runs: dict, flops: dict,
                 asked: dict) -> dict[str, list]:
    """One racing look at answer group ``group`` (the caller looks once every cell of it has
    ended its tuning and its confirmation trials): cell -> the confirmation seeds to queue.

    ``chosen``: the cells whose best configuration is known (a cell whose tuning trials all
    errored has none and takes no part); ``runs``: cell -> {seed: test accuracy} of its
    completed confirmation runs; ``flops``: cell -> target FLOPs of one run (cheapness);
    ``asked``: cell -> the seeds handed out or queued.
    Every cell ``stats.next_seeds`` names (the cells that can still change the Answer) gets
    every seed up to the group's next level it lacks (so comparisons stay paired on all
    seeds). With ``design.gain_races``, while the transfer gain at the group's size is
    undecided (``stats.transfer_gain``), the scratch baseline and every depth whose interval
    still reaches +tolerance get the next level too. Empty: the group is finished (decided, or
    at the ceiling)."""
    if design.race_levels is None:
        return {}
    k, ceiling = design.race_levels
    report = design.spec.report
    tol = report.tolerance / 100
    cells = [c for c in design.answer_groups[group] if c in chosen]
    rows = [{"cell": c, "depth": design.cell(c).depth, "flops": flops.get(c),
             "accs": {s: a for s, a in runs.get(c, {}).items() if a is not None}}
            for c in cells]
    want = stats.next_seeds(rows, tol, report.alpha, k, ceiling) if rows else []
    race = [c for c in design.race_cells[group] if c in chosen]
    base = [c for c in race if c not in cells]
    if base and rows:
        z = {s: a for s, a in runs.get(base[0], {}).items() if a is not None}
        at = max([len(r["accs"]) for r in rows] + [len(z)])
        g = stats.transfer_gain(rows, z, tol, report.alpha, sizes=len(design.sizes),
                                racing=(k, ceiling))
        if not g["decided"] and at < ceiling:
            more = [c for c, d in g["depths"].items() if d["hi"] is None or d["hi"] >= tol]
            want = list(dict.fromkeys([*want, *more, base[0]]))
    level = max((sum(sd in asked.get(c, set()) for sd in design.ceiling_seeds) for c in race),
                default=0)
    out = {}
    for c in want:
        missing = [sd for sd in design.ceiling_seeds[:level + 1] if sd not in asked.get(c, set())]
        if missing:
            out[c] = missing
    return out
