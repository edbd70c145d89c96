"""Network partitions on loopback with iptables rules that the test adds and removes itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def iptables_unavailable() -> str | None:
    """Why iptables cannot be used here, or None when it can."""
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables)"
    if os.geteuid() != 0:
        return "iptables needs root"
    probe = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"iptables does not work here: {probe.stderr.strip()}"
    return None


class Partition:
    """DROP rules on the loopback INPUT chain, each removed again by `heal`."""

    def __init__(self) -> None:
        self._rules: list[list[str]] = []

    def isolate_port(self, port: int) -> None:
        """Drop every TCP segment to or from `port`: its connections hear nothing both ways."""
        for direction in ("--dport", "--sport"):
            rule = ["INPUT", "-i", "lo", "-p", "tcp", direction, str(port), "-j", "DROP"]
            subprocess.run(["iptables", "-I", *rule], check=True)
            self._rules.append(rule)

    def heal(self) -> None:
        """Remove every rule this partition added."""
        while self._rules:
            rule = self._rules.pop()
            subprocess.run(["iptables", "-D", *rule], check=False)


@pytest.fixture
def partition() -> Iterator[Partition]:
    """A Partition whose rules are removed after the test, whatever happens."""
    reason = iptables_unavailable()
    if reason is not None:
        pytest.skip(reason)
    made = Partition()
    try:
        yield made
    finally:
        made.heal()
