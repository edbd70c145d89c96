"""What the address space reads of the state: the job whose part waits on an uncleared bed."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import create_engine, insert

from mes.opcua.farm_state import read_farm, read_statuses
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import metadata, printer_status
from tests.shard_helpers import do, place

FILE = "c" * 64


class Farm:
    """A state machine with one spool and printers placed on a node, driven by the commands
    the workers and users send."""

    def __init__(self, printers: Iterable[str]) -> None:
        self.machine = StateMachine()
        do(self.machine, Op.FILAMENT_CREATE, id="s", type="PLA", color="red",
           total_weight_in_grams=1000)
        do(self.machine, Op.FILE_REGISTER, id=FILE, name="part.gcode", size=10)
        self.epochs: dict[str, int] = {}
        for printer in printers:
            do(self.machine, Op.PRINTER_CREATE, id=printer, api="Mock", worker=True,
               filament_id="s")
            self.epochs[printer] = place(self.machine, printer)

    def claim(self, job_id: str, printer: str) -> None:
        do(self.machine, Op.JOB_CREATE, id=job_id, filament_id="s", file_id=FILE,
           printer_id=printer, print_weight_in_grams=1)
        do(self.machine, Op.JOB_CLAIM, epoch=self.epochs[printer], job_id=job_id,
           printer_id=printer, printer_filename=f"mes-{job_id}.gcode")

    def start(self, job_id: str, printer: str) -> None:
        self.claim(job_id, printer)
        do(self.machine, Op.JOB_STARTED, epoch=self.epochs[printer], job_id=job_id,
           printer_id=printer)

    def finish(self, job_id: str, printer: str) -> None:
        do(self.machine, Op.JOB_FINISHED, epoch=self.epochs[printer], job_id=job_id,
           printer_id=printer)

    def clear(self, printer: str) -> None:
        do(self.machine, Op.PRINTER_BED_CLEARED, id=printer)

    def on_beds(self) -> dict[str, tuple[str, str, bool]]:
        """Each printer's CurrentJob as the address space shows it: job id, status, and the
        printer's bed-clear flag (one read, as the mirror's)."""
        state = self.machine.read(read_farm)
        return {pid: (view.job["id"] if view.job else "", view.job["status"] if view.job else "",
                      bool(view.printer["bed_clear"]))
                for pid, view in state.printers.items()}


def test_the_part_on_the_bed_is_the_print_that_ended_there_last() -> None:
    farm = Farm(["done", "canceled", "lost", "failed", "stray", "cleared", "printing"])
    for printer in farm.epochs:  # an older print, finished and taken off, on every printer
        farm.start(f"{printer}-old", printer)
        farm.finish(f"{printer}-old", printer)
        farm.clear(printer)
    farm.start("done-1", "done")
    farm.finish("done-1", "done")
    farm.start("canceled-1", "canceled")  # a user cancels while it prints
    do(farm.machine, Op.JOB_SET_STATUS, id="canceled-1", status="Canceled")
    farm.start("lost-1", "lost")  # the printer restarted mid-print
    do(farm.machine, Op.JOB_LOST, epoch=farm.epochs["lost"], job_id="lost-1",
       printer_id="lost", cause="printer restarted")
    farm.claim("failed-1", "failed")  # the start never reached the printer: nothing printed
    do(farm.machine, Op.JOB_START_FAILED, epoch=farm.epochs["failed"], job_id="failed-1",
       printer_id="failed", reason="connection refused")
    do(farm.machine, Op.PRINTER_ATTENTION, epoch=farm.epochs["stray"], id="stray",
       reason="a print that is not the farm's was cancelled")
    farm.start("cleared-1", "cleared")
    farm.finish("cleared-1", "cleared")
    farm.clear("cleared")
    farm.start("printing-1", "printing")
    assert farm.on_beds() == {
        "done": ("done-1", "Done", False),
        "canceled": ("canceled-1", "Canceled", False),  # not the older Done job at 100 %
        "lost": ("lost-1", "Canceled", False),
        "failed": ("", "", True),  # back in the queue, the bed untouched
        "stray": ("", "", False),  # the part on the bed is no job of ours
        "cleared": ("", "", True),
        "printing": ("printing-1", "Running", True),
    }


def test_a_job_canceled_before_it_started_does_not_count_as_left_on_the_bed() -> None:
    farm = Farm(["p"])
    farm.start("printed", "p")
    farm.finish("printed", "p")
    do(farm.machine, Op.JOB_CREATE, id="never", filament_id="s", filepath="n.gcode",
       printer_id="p", print_weight_in_grams=1)
    do(farm.machine, Op.JOB_SET_STATUS, id="never", status="Canceled")
    assert farm.on_beds() == {"p": ("printed", "Done", False)}


def test_read_statuses_leaves_out_printers_without_one() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(printer_status), [{"printer_id": "a", "state": "printing",
                                               "observed_at": 1.0}])
        found = read_statuses(conn, ["a", "b"])
    assert list(found) == ["a"] and found["a"]["state"] == "printing"


def test_the_active_program_follows_the_job_and_the_printer() -> None:
    from mes.opcua.address_space import PROGRAM_STATES, program_state
    from mes.opcua.farm_state import PrinterView

    def view(job_status: str | None, state: str = "printing") -> PrinterView:
        job = {"id": "j", "status": job_status} if job_status else None
        return PrinterView({"id": "p"}, {"state": state}, job)

    assert program_state(view(None, "idle")) is None
    assert program_state(view("Queued", "idle")) == "Initializing"  # claimed, being sent
    assert program_state(view("Running")) == "Running"
    assert program_state(view("Running", "paused")) == "Interrupted"
    assert program_state(view("Done", "finished")) == "Ended"
    assert program_state(view("Canceled", "idle")) == "Aborted"
    # StateNumbers as OPC 40501-1 numbers them.
    assert {name: number for name, (_, number) in PROGRAM_STATES.items()} == {
        "Initializing": 0, "Running": 1, "Ended": 2, "Interrupted": 3, "Aborted": 4}
