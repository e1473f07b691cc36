"""study/terminal.py: no ANSI colour codes from Ray in redirected (piped) output.

Each check runs a real Ray driver in a subprocess with its stdout/stderr piped, so Ray sees a
non-terminal just as under ``study run > log``. The control run (no configure_output) shows
that Ray 2.60 does colour the worker prefixes (and the dedup suffix) in a pipe, so the
assertion on the configured run means something.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.terminal import PLAIN_ENV, configure_output, is_terminal

REPO = Path(__file__).resolve().parent.parent
ESC = "\x1b["

DRIVER = textwrap.dedent("""
    import os, sys, time
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    if sys.argv[1] == "configured":
        from study.terminal import configure_output
        print("configured:", sorted(configure_output()), flush=True)

    import ray

    ray.init(num_cpus=1, include_dashboard=False)

    @ray.remote
    def task():
        print("line-from-a-task", flush=True)

    @ray.remote(num_cpus=0)
    class Echo:
        def say(self):
            print("the same line from several actors", flush=True)

    ray.get(task.remote())
    actors = [Echo.remote() for _ in range(3)]  # 3 processes print the same line: dedup
    ray.get([a.say.remote() for a in actors])
    time.sleep(3)  # let the log monitor forward everything
    ray.shutdown()  # flushes what deduplication still holds
""")


def run_driver(tmp_path: Path, mode: str) -> str:
    script = tmp_path / f"driver_{mode}.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items()
           if k not in (*PLAIN_ENV, "NO_COLOR", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "line-from-a-task" in out, out
    return out


@pytest.mark.slow
def test_piped_output_has_colour_codes_without_configure_output(tmp_path):
    """The control: Ray colours the (pid=...) prefix even when stdout is a pipe."""
    out = run_driver(tmp_path, "plain")
    assert ESC in out, out
    task_line = next(line for line in out.splitlines() if "line-from-a-task" in line)
    assert task_line.startswith(ESC), task_line  # ESC[36m(task pid=...)ESC[0m line-from-a-task


@pytest.mark.slow
def test_configure_output_removes_colour_codes(tmp_path):
    out = run_driver(tmp_path, "configured")
    assert "configured: ['RAY_COLOR_PREFIX', 'RAY_DEDUP_LOGS']" in out, out
    assert ESC not in out, out
    task_line = next(line for line in out.splitlines() if "line-from-a-task" in line)
    assert task_line.startswith("(task pid="), task_line
    assert task_line.endswith(") line-from-a-task"), task_line
    # without deduplication every actor's line is printed (and none gets the green suffix)
    assert out.count("the same line from several actors") == 3, out
    assert "repeated" not in out


def test_terminal_left_alone(monkeypatch):
    for k in (*PLAIN_ENV, "NO_COLOR"):
        monkeypatch.delenv(k, raising=False)
    master, slave = os.openpty()  # a real terminal
    with os.fdopen(slave, "w") as tty:
        try:
            assert is_terminal(tty)
            assert configure_output(tty) == {}
            assert not any(k in os.environ for k in PLAIN_ENV)
            monkeypatch.setenv("NO_COLOR", "1")  # https://no-color.org: honoured on a terminal too
            assert configure_output(tty) == PLAIN_ENV
        finally:
            os.close(master)


def test_existing_values_kept(monkeypatch, tmp_path):
    for k in (*PLAIN_ENV, "NO_COLOR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")  # the user asked for colours
    with open(tmp_path / "log.txt", "w") as f:
        assert not is_terminal(f)
        assert configure_output(f) == {"RAY_DEDUP_LOGS": "0"}
    assert os.environ["RAY_COLOR_PREFIX"] == "1"
    closed = open(tmp_path / "other.txt", "w")
    closed.close()
    assert not is_terminal(closed)
    assert not is_terminal(object())


@pytest.fixture(autouse=True)
def _restore_env():
    """configure_output writes os.environ; undo that after each test."""
    keys = (*PLAIN_ENV, "NO_COLOR")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
