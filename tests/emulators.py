"""`mock-printer` emulator processes for tests: started on free loopback ports, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.polling import wait_for
from tests.ports import free_ports

__all__ = ["Emulator", "StartEmulator", "free_ports", "start_emulator"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Emulator:
    """A running ``mock-printer`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    count: int
    log: Path

    def url(self, index: int = 0) -> str:
        """Base URL of printer ``index``."""
        return f"http://127.0.0.1:{self.port + index}"

    def client(self, index: int = 0, headers: dict[str, str] | None = None) -> httpx.Client:
        """An httpx client for printer ``index``."""
        return httpx.Client(base_url=self.url(index), headers=headers, timeout=5.0)

    def status(self, index: int = 0) -> dict[str, Any]:
        """``GET /emulator/status`` of printer ``index``."""
        body: dict[str, Any] = httpx.get(f"{self.url(index)}/emulator/status", timeout=5).json()
        return body

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process and wait for it; kill it after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
            except BaseException:  # Ctrl-C while it shuts down: it must not outlive the run
                self.proc.kill()
                self.proc.wait(timeout)
                raise
        return self.proc.returncode


StartEmulator = Callable[..., Emulator]


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[StartEmulator]:
    """Factory starting emulator subprocesses; all are stopped at teardown."""
    started: list[Emulator] = []

    def start(api: str, count: int = 1, job_time: float = 1.5,
              heat_time: float = 0.0, api_key: str | None = None) -> Emulator:
        port = free_ports(count)
        log = tmp_path / f"emulator-{port}.log"
        cmd = [sys.executable, "-m", "mes.emulator.cli", "--api", api, "--port", str(port)]
        cmd += ["--count", str(count), "--job-time", str(job_time), "--host", "127.0.0.1"]
        cmd += ["--heat-time", str(heat_time)]
        if api_key is not None:
            cmd += ["--api-key", api_key]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        emulator = Emulator(proc, port, count, log)
        started.append(emulator)

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"emulator exited early: {log.read_text()}")
            try:
                for index in range(count):
                    emulator.status(index)
            except httpx.TransportError:
                return False
            return True

        wait_for(ready, timeout=30, what="the emulator to listen")
        return emulator

    yield start
    try:
        for emulator in started:
            emulator.stop()
    finally:
        for emulator in started:  # a stop that raised (a second Ctrl-C) leaves none running
            if emulator.proc.poll() is None:
                emulator.proc.kill()
                emulator.proc.wait(10)


