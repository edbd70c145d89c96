"""OPCUA_MODE (embedded, external, off) and the older form it replaces: OPCUA_SERVER_URL
containing "mock" (embedded) or not (external), OPCUA_ENABLED=false (off); the older form
still works and the server says once in its log that it is deprecated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mes.config import Settings, load_settings
from tests.cluster import ServerProcess
from tests.polling import wait_for


def settings(tmp_path: Path, **values: Any) -> Settings:
    return load_settings(_env_file=None, data_dir=tmp_path, **values)


@pytest.mark.parametrize(("values", "mode"), [
    ({"opcua_mode": "embedded"}, "embedded"),
    ({"opcua_mode": "off"}, "off"),
    ({"opcua_mode": "external", "opcua_server_url": "opc.tcp://lab:4840"}, "external"),
    # an explicit mode wins over what the URL would have selected
    ({"opcua_mode": "embedded", "opcua_server_url": "opc.tcp://lab:4840"}, "embedded"),
    ({"opcua_mode": "off", "opcua_server_url": "opc.tcp://mock-lab:4840"}, "off"),
])
def test_the_mode_is_what_opcua_mode_says(tmp_path: Path, values: dict[str, object],
                                          mode: str) -> None:
    config = settings(tmp_path, opcua_enabled=True, **values)
    assert config.opcua.mode == mode
    assert config.opcua_embedded is (mode == "embedded")
    assert config.deprecations() == []


@pytest.mark.parametrize(("values", "mode", "deprecated"), [
    ({}, "embedded", False),  # the defaults: nothing to say
    ({"opcua_server_url": "opc.tcp://mock-server:4840"}, "embedded", True),
    ({"opcua_server_url": "opc.tcp://lab.example:4840"}, "external", True),
    ({"opcua_enabled": False}, "off", False),
    ({"opcua_enabled": False, "opcua_server_url": "opc.tcp://lab.example:4840"}, "off", False),
])
def test_the_older_form_still_selects_the_mode(tmp_path: Path, values: dict[str, object],
                                               mode: str, deprecated: bool) -> None:
    config = settings(tmp_path, **{"opcua_enabled": True, **values})
    assert config.opcua.mode == mode
    lines = config.deprecations()
    if deprecated:
        assert lines == [lines[0]] and f"OPCUA_MODE={mode}" in lines[0]
        assert "deprecated" in lines[0]
    else:
        assert lines == []


def test_external_mode_needs_the_lab_server_url(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="OPCUA_SERVER_URL"):
        settings(tmp_path, opcua_mode="external")


def test_each_component_gets_only_its_group(tmp_path: Path) -> None:
    config = settings(tmp_path, quota_jobs=7, sse_window=55, webhook_timeout=3.5,
                      job_retention_days=9, opcua_endpoint="opc.tcp://127.0.0.1:4999/x/",
                      printer_worker_interval=0.25, raft_write_timeout=2.5)
    assert config.quotas.jobs == 7
    assert config.events.window == 55
    assert config.notify.webhook_timeout == 3.5
    assert config.retention.job_days == 9
    assert config.opcua.endpoint == "opc.tcp://127.0.0.1:4999/x/"
    assert config.printers.worker_interval == 0.25
    assert config.raft.write_timeout == 2.5
    with pytest.raises(AttributeError):
        config.quotas.jobs = 8  # type: ignore[misc]  # frozen: a component cannot change it


def test_the_server_logs_the_deprecation_once(tmp_path: Path) -> None:
    node = ServerProcess(0, tmp_path, {"OPCUA_ENABLED": "true",
                                       "OPCUA_SERVER_URL": "opc.tcp://mock-lab:4840"})
    node.data_dir.mkdir(parents=True)
    try:
        node.start()
        line = wait_for(lambda: next((x for x in node.log_tail().splitlines()
                                      if "OPCUA_MODE=embedded" in x), None), 30,
                        "the deprecation line in the log")
        assert "deprecated" in line
        assert node.log_tail().count("OPCUA_MODE=embedded") == 1
    finally:
        node.stop()
        node.client.close()
