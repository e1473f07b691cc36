"""Plain output when stdout is not a terminal: no ANSI colour codes from Ray in redirected logs.

Ray's driver prints every worker line as ``(<task or actor> pid=..., ip=...) <line>``. In Ray
2.60 (``ray._private.worker.print_worker_logs``) the prefix is wrapped in colour codes
(``ESC[36m ... ESC[0m``) unconditionally -- whether or not the output is a terminal -- unless
the environment variable ``RAY_COLOR_PREFIX=0`` (documented in Ray's "Configuring Logging"
guide: "Turn color logging off ... when outputting logs to a file") is set; Ray reads it each
time it prints, so setting it any time before the output matters.

Ray's log deduplication adds a suffix ``[repeated Nx across cluster] (...)`` in green, and that
is not covered by ``RAY_COLOR_PREFIX``; the documented way to avoid it is ``RAY_DEDUP_LOGS=0``
(every line printed as it comes, which is what a log file wants anyway). Ray reads that one
when ``ray`` is first imported, so ``configure_output`` must run *before* ``import ray`` for it
to take effect.
"""
from __future__ import annotations

import os
import sys

# What configure_output sets (unless already set) when the output is not a terminal.
PLAIN_ENV = {
    "RAY_COLOR_PREFIX": "0",  # no colour around the (pid=..., ip=...) prefixes
    "RAY_DEDUP_LOGS": "0",  # no green "[repeated Nx across cluster]" suffixes
}


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def configure_output(stream=None) -> dict[str, str]:
    """If ``stream`` (default: ``sys.stdout`` at call time) is not a TTY, or ``NO_COLOR`` is
    set, make Ray print worker output without ANSI escape codes; call before ``ray.init`` and
    preferably before ``import ray`` (see the module docstring). Values already in the
    environment are kept (e.g. ``RAY_COLOR_PREFIX=1`` to keep colours for ``less -R``).
    Returns the variables it set."""
    stream = sys.stdout if stream is None else stream
    if is_terminal(stream) and not os.environ.get("NO_COLOR"):
        return {}
    changed = {}
    for key, value in PLAIN_ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            changed[key] = value
    return changed
