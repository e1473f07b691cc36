"""A trial's status: one rule, used by the study's record (trials.jsonl), summary.json, the
progress lines and the reports (plain function, no Ray).

  completed    reached target_epochs: a complete run, whatever happened after its last epoch
               (an error while saving or testing after the final epoch does not undo the run)
  stopped      ended before target_epochs by the study's early-stopping rule, without error
  errored      ended before target_epochs with an error (retries spent)
  interrupted  the study was interrupted (Ctrl-C, driver killed) before the trial ended:
               `study resume` continues it
  running      not ended and the study is still running
"""
from __future__ import annotations

COMPLETED = "completed"
STOPPED = "stopped"
ERRORED = "errored"
INTERRUPTED = "interrupted"
RUNNING = "running"
STATUSES = (COMPLETED, STOPPED, ERRORED, INTERRUPTED, RUNNING)
# what a report counts: a study's reader sees an interrupted trial as not ended, i.e. running
REPORTED = (COMPLETED, STOPPED, ERRORED, RUNNING)


def trial_status(epochs: int | None, target_epochs: int, *, ended: bool, error: bool,
                 study_running: bool = False) -> str:
    """The status of a trial that reported ``epochs`` epochs (None or 0: none).

    ``ended``: the trial's last event was its end (Tune completed or failed it for good);
    ``error``: that end was an error; ``study_running``: the study has not stopped (so a trial
    that has not ended is running, not interrupted). The order matters and is written once:
    a complete run counts first, then how it ended."""
    if (epochs or 0) >= target_epochs:
        return COMPLETED
    if ended:
        return ERRORED if error else STOPPED
    return RUNNING if study_running else INTERRUPTED
