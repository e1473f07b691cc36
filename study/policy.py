"""Early-stopping policy as pure functions on plain data (no Ray): rungs and the two stopping
rules. ``study.scheduler`` applies them inside Tune; ``benchmarks/cell_scheduling.py`` replays
them on known learning curves (its ``simulate``).

Rungs are at ``grace * rf**k`` epochs below ``max_t`` (as in Tune's ASHA). A trial's score at a
rung is its metric at the first report at or after the rung's epoch. Records are kept *per group*
(a cell, or a split in mode best), so no trial is ever compared with another group's trials.

* ``halving`` (successive halving, decided as results arrive): a group of n trials keeps
  ``keep[0] = max(1, n // rf)`` at the first rung, ``keep[i+1] = max(1, keep[i] // rf)`` after;
  a trial is stopped as soon as ``keep[i]`` trials of its group that are sure to survive the
  earlier rungs have a strictly better score at a rung it reached (``halving_stops``). Every
  trial it stops would be stopped by synchronous successive halving, so the survivors of
  synchronous halving (in particular its final winner) are never stopped: every group completes
  at least one run, whatever the arrival order. Nobody is paused: a trial runs on until the
  results that rule it out exist, so it spends between synchronous halving and FIFO.
* ``asha`` (asynchronous successive halving, Li et al. 2020, Tune's rule): a trial reaching a
  rung is stopped if its score is below the (1 - 1/rf) quantile of the scores recorded there
  *before* it. The first arrival is always promoted: with few trials per group the outcome
  depends on the arrival order.
"""
from __future__ import annotations

import math

import numpy as np


def milestones(grace: int, rf: float, max_t: int) -> list[int]:
    out, m = [], float(grace)
    while m < max_t:
        out.append(int(math.ceil(m - 1e-9)))
        m *= rf
    return sorted(set(out))


def keep_counts(n: int, rf: float, rungs: int) -> list[int]:
    out, k = [], n
    for _ in range(rungs):
        k = max(1, int(k // rf))
        out.append(k)
    return out


def record(rungs: dict, trial_id: str, epoch: int, score: float, ms: list[int]) -> None:
    """Record ``score`` at every rung of ``ms`` that ``epoch`` has reached and ``trial_id`` has no
    score at yet. ``rungs``: {milestone: {trial_id: score}} of one group (mutated)."""
    for m in ms:
        if epoch >= m and trial_id not in rungs.setdefault(m, {}):
            rungs[m][trial_id] = score


def certain_survivors(rungs: dict, keep: list[int], ms: list[int], n: int) -> list[set]:
    """Per rung i, the trials sure to be among synchronous halving's survivors of rungs 0..i,
    whatever the results still to come: at every rung up to i, the trials already better plus
    the ``n - recorded`` that have not reported there yet are fewer than ``keep``."""
    out, prev = [], None
    for i, m in enumerate(ms):
        rec = rungs.get(m, {})
        missing = max(0, n - len(rec))
        sure = {t for t, s in rec.items()
                if (prev is None or t in prev)
                and sum(1 for u, v in rec.items() if u != t and v > s) + missing < keep[i]}
        out.append(sure)
        prev = sure
    return out


def halving_stops(rungs: dict, trial_id: str, keep: list[int], ms: list[int], n: int) -> bool:
    """True if, at a rung i that ``trial_id`` reached, ``keep[i]`` trials that are sure to
    survive rungs 0..i-1 (``certain_survivors``; at rung 0: any trial) have a strictly better
    score: synchronous successive halving would stop it there, whatever arrives later. Counting
    only sure survivors matters when curves cross: a trial that leads at epoch 3 but will be cut
    at epoch 1 must not rule anyone out at epoch 3."""
    sure = certain_survivors(rungs, keep, ms, n)
    for i, m in enumerate(ms):
        rec = rungs.get(m, {})
        if trial_id not in rec:
            break
        mine = rec[trial_id]
        rivals = rec if i == 0 else {t: s for t, s in rec.items() if t in sure[i - 1]}
        if sum(1 for t, s in rivals.items() if t != trial_id and s > mine) >= keep[i]:
            return True
    return False


def asha_stops(recorded_before: dict, score: float, rf: float) -> bool:
    """Tune's ASHA cutoff: below the (1 - 1/rf) quantile of the scores already at the rung."""
    if not recorded_before:
        return False
    cutoff = np.nanpercentile(list(recorded_before.values()), (1 - 1 / rf) * 100)
    return bool(score < cutoff)
