"""The README's quick start, run as written against a real server process."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.cluster
README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_script() -> str:
    text = README.read_text()
    block = re.search(r"<!-- quickstart:begin -->\n```shell\n(.*?)```\n<!-- quickstart:end -->",
                      text, re.S)
    assert block, "the README has no quick start block"
    return block.group(1)


def test_the_readme_quick_start_prints_a_job(tmp_path: Path) -> None:
    cluster = Cluster(1, tmp_path / "node", LOG_LEVEL="INFO", LOG_FORMAT="json").start()
    try:
        node = cluster.nodes[0]
        work = tmp_path / "user"
        work.mkdir()
        result = subprocess.run(
            ["bash", "-e", "-c", quickstart_script()], cwd=work, capture_output=True,
            text=True, timeout=120, stdin=subprocess.DEVNULL,
            env={**os.environ, "MES": f"http://127.0.0.1:{node.http_port}"})
        assert result.returncode == 0, result.stdout + result.stderr
        job = node.client.get("/print_jobs/cube-1").json()
        assert job["status"] == "Done", job
        history = [h["to_status"] for h in node.client.get("/print_jobs/cube-1/history").json()]
        assert history == ["Queued", "Running", "Done"]
        spool = node.client.get("/filaments/pla-black").json()
        assert spool["remaining_weight_in_grams"] == 985
        assert spool["reserved_weight_in_grams"] == 0
        assert node.client.get("/printers/mock-1").json()["bed_clear"] is True
        assert '"remaining_weight_in_grams":985' in result.stdout
        # the log tells the farm's story, one JSON object per line
        node.stop()
        lines = [json.loads(line) for line in node.log_path.read_text().splitlines()
                 if line.strip()]
        messages = [entry["message"] for entry in lines]
        assert "job cube-1 is Queued (printer -, job.create)" in messages
        assert any(m.startswith("job cube-1 is Running (printer mock-1") for m in messages)
        assert any(m.startswith("job cube-1 is Done (printer mock-1") for m in messages)
        assert "spool pla-black charged 15 g for job cube-1" in messages
        assert "printer mock-1: bed cleared" in messages
        assert not [m for m in messages if m.startswith("HTTP Request")]
    finally:
        cluster.stop()
