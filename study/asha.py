"""ASHA's rung records, kept across a driver restart.

Tune pickles the scheduler once, when a study starts (``tuner.pkl``), and does not save it with
the experiment state: a resumed study would get an ASHA with empty rungs, so trials reaching a
rung after the restart would be compared only with each other. ``RungState`` is a Tune callback
whose state (saved by Tune with every experiment checkpoint, restored by ``Tuner.restore`` before
any trial is re-queued) is the scheduler's rung records, so ASHA's decisions after a resume use
every result from before it.

The rung state is plain data (``rung_state`` / ``load_rung_state``, tested without Ray)::

    {"brackets": [[[milestone, {trial_id: score, ...}], ...], ...],
     "trial_bracket": {trial_id: bracket index}, "num_stopped": int}
"""
from __future__ import annotations

from ray.tune import Callback


def rung_state(scheduler) -> dict:
    """ASHA's (``AsyncHyperBandScheduler``) rung records as plain data."""
    brackets = scheduler._brackets
    return {
        "brackets": [[[m, dict(rec)] for m, rec in b._rungs] for b in brackets],
        "trial_bracket": {t: next(i for i, b in enumerate(brackets) if b is br)
                          for t, br in scheduler._trial_info.items()},
        "num_stopped": scheduler._num_stopped,
    }


def load_rung_state(scheduler, state: dict) -> None:
    """Restore records saved by ``rung_state`` into a freshly built scheduler with the same
    settings (same milestones: a spec's scheduler section cannot change on resume)."""
    brackets = scheduler._brackets
    if [[m for m, _ in b._rungs] for b in brackets] != [[m for m, _ in b] for b in state["brackets"]]:
        raise ValueError("saved ASHA rungs do not match this scheduler's milestones")
    for b, saved in zip(brackets, state["brackets"]):
        for (_, rec), (_, saved_rec) in zip(b._rungs, saved):
            rec.clear()
            rec.update(saved_rec)
    for t, i in state["trial_bracket"].items():
        scheduler._trial_info.setdefault(t, brackets[i])
    scheduler._num_stopped = state["num_stopped"]


class RungState(Callback):
    """Saves ASHA's rung records with Tune's experiment state and restores them on resume."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.restored: dict | None = None  # what a resume loaded (for logs and tests)

    def get_state(self) -> dict | None:
        return {"asha": rung_state(self.scheduler)}

    def set_state(self, state: dict) -> None:
        load_rung_state(self.scheduler, state["asha"])
        self.restored = state["asha"]
        rungs = ", ".join(f"epoch {m:g}: {len(rec)}" for b in state["asha"]["brackets"]
                          for m, rec in reversed(b) if rec)
        print(f"ASHA rung records restored ({rungs or 'none yet'})", flush=True)
