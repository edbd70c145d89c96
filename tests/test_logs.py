"""Log output: one format, JSON lines on request, no line per HTTP poll at INFO."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from mes.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("httpx", "httpcore", "asyncua", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger(name).disabled = False


def test_json_lines_and_no_poll_lines_at_info(restore_logging: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("mes.workers").info("job %s done on %s", "j1", "p1",
                                          extra={"job_id": "j1"})
    logging.getLogger("httpx").info('HTTP Request: GET http://printer/api/job "200 OK"')
    logging.getLogger("uvicorn.access").info("GET /api/v1/health 200")
    # asyncua's address-space chatter (about 1,100 lines at a server start) stays out
    logging.getLogger("asyncua.server.address_space").info("add_node: while adding node ...")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["message"] == "job j1 done on p1" and entry["level"] == "INFO"
    assert entry["logger"] == "mes.workers" and entry["job_id"] == "j1"
    assert entry["time"].endswith("Z")


def test_access_log_and_debug_when_asked(restore_logging: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "text", access_log=True)
    logging.getLogger("httpx").debug("HTTP Request: GET http://printer/api/job")
    logging.getLogger("uvicorn.access").info("GET /api/v1/health 200")
    err = capsys.readouterr().err
    assert "HTTP Request" in err and "GET /api/v1/health 200" in err
    assert " INFO uvicorn.access: " in err


def test_a_printer_going_offline_and_back_is_logged_once_each(
        caplog: pytest.LogCaptureFixture) -> None:
    from mes.printers.base import PrinterStatus
    from mes.workers.printer_worker import PrinterWorker

    worker = PrinterWorker("p1", None, None, 1)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="mes.workers.printer_worker")
    for status in [PrinterStatus(state="idle"), PrinterStatus(state="idle"),
                   PrinterStatus(state="offline", error="HTTP 403: invalid API key"),
                   PrinterStatus(state="offline", error="HTTP 403: invalid API key"),
                   PrinterStatus(state="printing")]:
        worker._log_reachability(status)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("INFO", "printer p1 is online (idle)"),
                     ("WARNING", "printer p1 is offline: HTTP 403: invalid API key"),
                     ("INFO", "printer p1 is online (printing)")]
