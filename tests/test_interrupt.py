"""Ctrl-C (SIGINT) ends a test run with pytest's summary, not a traceback (tests/interrupt.py).

Each case runs pytest on a small test file of its own, in a process of its own, with only the
plugin of tests/interrupt.py loaded; the file sends SIGINT to its own process at the moment
that used to go wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^=+ (no tests ran|\d+ passed) in [\d.]+s", re.M)

INTERRUPTED_SET_UP = '''
import os, signal, time

import pytest


@pytest.fixture
def being_set_up(tmp_path):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the test is being set up
    time.sleep(10)


def test_interrupted(being_set_up):
    pass
'''

SWALLOWED_CANCELLATION = '''
import asyncio, os, signal


async def swallows_its_cancellation():
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass  # as Python 3.11's asyncio.wait_for does when its future is done already


def test_interrupted():
    asyncio.run(swallows_its_cancellation())


def test_never_run():
    pass
'''


def run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_ctrl_c.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.interrupt",
         "-o", "addopts=", "test_ctrl_c.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)


def test_ctrl_c_while_a_test_using_tmp_path_is_set_up_keeps_the_summary(
        tmp_path: Path) -> None:
    result = run_pytest(tmp_path, INTERRUPTED_SET_UP)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output  # pytest's "interrupted"
    assert "KeyboardInterrupt" in output
    assert SUMMARY.search(result.stdout), output
    assert "Traceback" not in output and "KeyError" not in output, output


def test_ctrl_c_in_a_coroutine_that_swallows_its_cancellation_still_ends_the_run(
        tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SWALLOWED_CANCELLATION)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert SUMMARY.search(result.stdout), output
    assert "1 passed" not in output and "2 passed" not in output, output
