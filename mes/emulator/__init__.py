"""Emulator of networked 3D printers (OctoPrint and PrusaLink v1) for tests and load runs.

Run ``mock-printer --api OctoPrint --port 5000 --count 10`` (or
``python -m mes.emulator.cli ...``) to serve independent emulated printers on consecutive
loopback ports. Every port also answers ``GET /emulator/status`` without authentication.
"""

from mes.emulator.printer import Printer, PrinterError

__all__ = ["Printer", "PrinterError"]
