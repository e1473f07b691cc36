"""Ctrl-C during a study: tell an interrupted ``Tuner.fit()`` from one that ended by itself.

Ray Tune 2.60 catches the first SIGINT itself (``ray.tune.tune._setup_signal_catching``): it
ends the experiment gracefully (a last experiment checkpoint; running trials are stopped and
get status TERMINATED, without ``on_trial_complete``), ``fit()`` *returns*, and nothing in the
returned ``ResultGrid`` says that it was interrupted; Tune only logs its own hint
``Resume experiment with: Tuner.restore(path=..., trainable=...)``, which is not how a study is
continued. Tune installs that handler when ``fit()`` starts and before it calls the callbacks'
``setup``; it calls none of them on SIGINT.

So :class:`InterruptWatch`, a public ``ray.tune.Callback``, chains a handler in front of Tune's
in ``setup``: on SIGINT (or SIGUSR1, which Tune treats the same) it records the interruption,
writes one line of its own and calls Tune's handler, which ends the run as before (a second
Ctrl-C then raises ``KeyboardInterrupt`` at once, as Tune intends). The record is
process-wide, not on the callback: Tune pickles its callbacks with the experiment and
``Tuner.restore`` brings back *its* copy, so the runner reads the flag through
:func:`fit_watched`, whichever copy saw the signal.

:func:`fit_watched` runs ``tuner.fit()`` and returns whether it was interrupted. Around the fit
it (1) drops Tune's own interruption messages (a ``logging.Filter`` on Tune's logger: the
"Stop signal received" line, replaced by the watch's line, and the ``Tuner.restore`` hint),
(2) installs a fallback handler before the fit, for an experiment without a watch among its
callbacks (a study started before the watch existed, then resumed): Tune keeps that handler as
the one to restore and puts it back only when its own handler ran, i.e. on SIGINT/SIGUSR1, and
(3) afterwards puts back the SIGINT/SIGUSR1 handlers from before the fit (Tune leaves its own
installed after a normal end, which would swallow the next Ctrl-C).

The runner then raises :class:`StudyInterrupted` (after the study's record and summary are
written); ``study`` maps it to exit status 130 with a line naming ``study resume <dir>``.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading

from ray.tune import Callback

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command ended by Ctrl-C

# Set by any watch (or fit_watched's fallback handler) when the signal arrives during a fit.
_INTERRUPTED = threading.Event()
# Set when a watch's setup chained its handler during the current fit.
_WATCHING = threading.Event()

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGUSR1", None))
                 if s is not None)

NOTICE = ("interrupt: ending the study after saving its state (Ctrl-C again to stop at once; "
          "`study resume` continues it)\n")

# Tune's own messages about the interruption (ray/tune/tune.py, logger "ray.tune.tune").
_TUNE_LOGGER = "ray.tune.tune"
_TUNE_STOP = "Stop signal received"
_TUNE_HINTS = ("Experiment has been interrupted", "Training has been interrupted")


class StudyInterrupted(RuntimeError):
    """A study ended by Ctrl-C after its state was saved; ``study resume <study_dir>`` continues
    it. Raised by the runner after the study's record and summary.json are written."""

    def __init__(self, study_dir: str, summary: dict | None = None):
        self.study_dir, self.summary = study_dir, summary
        super().__init__(resume_line(study_dir))


def resume_line(study_dir: str) -> str:
    """The one line ``study`` prints when a study was interrupted."""
    return f"interrupted: continue with study resume {shlex.quote(str(study_dir))}"


class _DropTuneHints(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        if msg.startswith(_TUNE_STOP):  # replaced by the watch's own line, if there is a watch
            return not _WATCHING.is_set()
        return not msg.startswith(_TUNE_HINTS)


_FILTER = _DropTuneHints()


def _write_notice() -> None:
    # From a signal handler: os.write, not print (print may re-enter a half-written buffer).
    try:
        os.write(sys.stderr.fileno(), NOTICE.encode())
    except (OSError, ValueError, AttributeError):
        pass


def _chain(previous):
    """A handler that records the interruption and then runs ``previous`` (Tune's handler,
    which ends the fit gracefully and re-installs the handler it replaced)."""

    def on_signal(signum, frame):
        first = not _INTERRUPTED.is_set()
        _INTERRUPTED.set()
        if first:
            _write_notice()
        previous(signum, frame)

    on_signal.study_interrupt_watch = True
    return on_signal


class InterruptWatch(Callback):
    """Records a Ctrl-C (SIGINT, or SIGUSR1) that ends a Tune run; read it with
    :func:`fit_watched` (or :func:`interrupted`). Holds no state of its own, so it pickles with
    the experiment and works again after ``Tuner.restore``."""

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        _INTERRUPTED.clear()  # a new fit (Tune calls setup once per fit, run or restore)
        if threading.current_thread() is not threading.main_thread():
            return  # Tune installs no handler off the main thread either
        logging.getLogger(_TUNE_LOGGER).addFilter(_FILTER)
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            if not callable(previous) or getattr(previous, "study_interrupt_watch", False):
                continue  # nothing to chain to (ignored / default), or already watched
            signal.signal(signum, _chain(previous))
        _WATCHING.set()

    @property
    def interrupted(self) -> bool:
        return interrupted()


def interrupted() -> bool:
    """Whether the last watched fit in this process ended by Ctrl-C."""
    return _INTERRUPTED.is_set()


def _fallback(previous):
    """Installed before the fit; Tune keeps it as the handler it restores, and restores it only
    when its own handler ran. Called directly (Tune installed nothing, e.g.
    TUNE_DISABLE_SIGINT_HANDLER=1, or after Tune's first Ctrl-C), it records and then behaves
    like the handler it replaced."""

    def on_signal(signum, frame):
        _INTERRUPTED.set()
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT and previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    on_signal.study_fallback = True
    return on_signal


def _tune_sigint_disabled() -> bool:
    """Tune's documented switch: with TUNE_DISABLE_SIGINT_HANDLER=1 it installs no handler."""
    try:
        return bool(int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0")))
    except ValueError:
        return False


def fit_watched(tuner) -> bool:
    """Run ``tuner.fit()``; True if Ctrl-C (SIGINT/SIGUSR1) ended it (Tune then saved the
    experiment and returned). Exceptions from the fit propagate; a second Ctrl-C raises
    ``KeyboardInterrupt`` as usual. See the module docstring for what it changes meanwhile."""
    _INTERRUPTED.clear()
    _WATCHING.clear()
    main = threading.current_thread() is threading.main_thread()
    before: dict = {}
    fallback: dict = {}
    if main:
        for signum in _SIGNALS:
            before[signum] = signal.getsignal(signum)
            if signum == signal.SIGINT:  # SIGUSR1 keeps its default (ends the process) if no Tune
                fallback[signum] = _fallback(before[signum])
                signal.signal(signum, fallback[signum])
    tune_logger = logging.getLogger(_TUNE_LOGGER)
    tune_logger.addFilter(_FILTER)
    try:
        tuner.fit()
    finally:
        tune_logger.removeFilter(_FILTER)
        restored_by_tune = (main and not _tune_sigint_disabled()
                            and signal.getsignal(signal.SIGINT) is fallback.get(signal.SIGINT))
        if main:
            for signum, handler in before.items():
                # None: installed outside Python; leave whatever is there
                if handler is not None:
                    signal.signal(signum, handler)
    if not _WATCHING.is_set() and restored_by_tune:
        # No watch among the callbacks: Tune put the fallback back, which its handler alone
        # does (ray 2.60; tests/test_interrupt.py checks both ways).
        _INTERRUPTED.set()
    return _INTERRUPTED.is_set()
