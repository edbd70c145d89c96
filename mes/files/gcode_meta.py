"""What a slicer wrote into a G-code file's comments: estimated time, filament, material,
nozzle, layer height, printer model, bed temperature and the embedded thumbnails.

Only the head and the tail of the file are read, never the whole file: PrusaSlicer,
SuperSlicer, OrcaSlicer and Bambu Studio put thumbnails and a summary at the top and their
settings at the end (`; key = value`); Cura puts `;KEY:value` lines at the top. Each
thumbnail is a block of base64 lines (`; thumbnail begin WxH LENGTH` ... `; thumbnail end`,
`thumbnail_QOI` and `thumbnail_JPG` for other formats).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How much of each end is read: thumbnails can take a few hundred KiB at the top.
HEAD_BYTES = 2 * 1024 * 1024
TAIL_BYTES = 256 * 1024
MAX_THUMBNAILS = 8
MAX_THUMBNAIL_BYTES = 1024 * 1024

_THUMB_BEGIN = re.compile(r"^;\s*thumbnail(?:_(QOI|JPG|PNG))?\s+begin\s+(\d+)x(\d+)\s+(\d+)",
                          re.IGNORECASE)
_THUMB_END = re.compile(r"^;\s*thumbnail(?:_(?:QOI|JPG|PNG))?\s+end", re.IGNORECASE)
_KEY_VALUE = re.compile(r"^;\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$")
_DURATION = re.compile(r"(?:(\d+)d\s*)?(?:(\d+)h\s*)?(?:(\d+)m\s*)?(?:(\d+)s)?")
MEDIA_TYPES = {"PNG": "image/png", "QOI": "image/qoi", "JPG": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """One embedded picture: its format, size and where its base64 text lies."""

    format: str  # PNG, QOI or JPG
    width: int
    height: int
    lines: tuple[str, ...] = field(repr=False)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def data(self) -> bytes:
        """The picture's bytes; ValueError if its text is not base64."""
        try:
            return base64.b64decode("".join(self.lines), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the thumbnail is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class GcodeMeta:
    """The facts a slicer wrote (None where it wrote nothing we understand)."""

    slicer: str | None = None
    estimated_seconds: int | None = None
    filament_grams: float | None = None
    filament_mm: float | None = None
    filament_type: str | None = None
    nozzle_diameter: float | None = None
    layer_height: float | None = None
    printer_model: str | None = None
    bed_temperature: float | None = None
    thumbnails: tuple[Thumbnail, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the API (thumbnails as their format and size)."""
        return {"slicer": self.slicer, "estimated_seconds": self.estimated_seconds,
                "filament_grams": self.filament_grams, "filament_mm": self.filament_mm,
                "filament_type": self.filament_type, "nozzle_diameter": self.nozzle_diameter,
                "layer_height": self.layer_height, "printer_model": self.printer_model,
                "bed_temperature": self.bed_temperature,
                "thumbnails": [{"format": t.format, "width": t.width, "height": t.height}
                               for t in self.thumbnails]}

    @property
    def weight_grams(self) -> int | None:
        """The filament weight rounded up to whole grams (None when unknown)."""
        if self.filament_grams is None or self.filament_grams <= 0:
            return None
        return math.ceil(self.filament_grams)


def read_metadata(path: Path) -> GcodeMeta:
    """The metadata of the G-code file at `path`, from its head and tail only."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
        size = file.seek(0, 2)
        tail = b""
        if size > len(head):
            file.seek(max(len(head), size - TAIL_BYTES))
            tail = file.read(TAIL_BYTES)
    return parse(_lines(head, cut_end=size > len(head)), _lines(tail, cut_start=True))


def _lines(data: bytes, cut_start: bool = False, cut_end: bool = False) -> list[str]:
    lines = data.decode("utf-8", errors="replace").splitlines()
    if cut_start and lines:
        lines = lines[1:]  # the first line may start in the middle
    if cut_end and lines:
        lines = lines[:-1]
    return lines


def parse(head: list[str], tail: list[str]) -> GcodeMeta:
    """The metadata in the comment lines of a file's head and tail."""
    values: dict[str, str] = {}
    thumbnails: list[Thumbnail] = []
    slicer = None
    for lines in (head, tail):
        block: tuple[str, int, int, list[str]] | None = None
        for raw in lines:
            line = raw.strip()
            if not line.startswith(";"):
                continue
            if block is not None:
                if _THUMB_END.match(line):
                    if len(thumbnails) < MAX_THUMBNAILS:
                        thumbnails.append(Thumbnail(block[0], block[1], block[2],
                                                    tuple(block[3])))
                    block = None
                elif sum(map(len, block[3])) < MAX_THUMBNAIL_BYTES * 4 // 3 + 4:
                    block[3].append(line.lstrip(";").strip())
                continue
            begin = _THUMB_BEGIN.match(line)
            if begin:
                block = ((begin.group(1) or "PNG").upper(), int(begin.group(2)),
                         int(begin.group(3)), [])
                continue
            slicer = slicer or _slicer(line)
            match = _KEY_VALUE.match(line)
            if match:
                values.setdefault(match.group(1).strip().lower(), match.group(2))
    return GcodeMeta(
        slicer=slicer,
        estimated_seconds=_seconds(values),
        filament_grams=_first_number(values, "filament used [g]", "total filament weight [g]",
                                     "filament_weight", "total filament used [g]"),
        filament_mm=_filament_mm(values),
        filament_type=_text(values, "filament_type", "filament type", "material"),
        nozzle_diameter=_first_number(values, "nozzle_diameter", "nozzle diameter",
                                      "machine_nozzle_size"),
        layer_height=_first_number(values, "layer_height", "layer height"),
        printer_model=_text(values, "printer_model", "target_machine.name", "printer_settings_id",
                            "machine_name"),
        bed_temperature=_first_number(values, "first_layer_bed_temperature",
                                      "bed_temperature", "hot_plate_temp",
                                      "material_bed_temperature"),
        thumbnails=tuple(thumbnails))


def _slicer(line: str) -> str | None:
    """The slicer named by a header line (`; generated by PrusaSlicer 2.7`, `; BambuStudio
    01.09`, `;Generated with Cura_SteamEngine 5.6`)."""
    text = line.lstrip(";").strip().lower()
    if text.startswith("generated with cura"):
        return "Cura"
    for name in ("PrusaSlicer", "SuperSlicer", "OrcaSlicer", "BambuStudio"):
        if text.startswith(("generated by " + name.lower(), name.lower())):
            return name
    return None


def _first(values: dict[str, str], *keys: str) -> str | None:
    for key in keys:
        value = values.get(key)
        if value:
            # Several extruders write "1.2, 0.0": the first one prints
            return value.split(";")[0].split(",")[0].strip().strip('"')
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.match(r"^-?\d+(?:\.\d+)?", text)
    if match is None:
        return None
    value = float(match.group(0))
    return value if math.isfinite(value) else None


def _first_number(values: dict[str, str], *keys: str) -> float | None:
    return _number(_first(values, *keys))


def _text(values: dict[str, str], *keys: str) -> str | None:
    value = _first(values, *keys)
    if not value:
        return None
    cleaned = re.sub(r"[^\x20-\x7e]", "", value)[:100]
    return cleaned or None


def _seconds(values: dict[str, str]) -> int | None:
    """Cura's `TIME` (seconds), PrusaSlicer's `1h 2m 3s`, Orca's and Bambu Studio's `total
    estimated time: 1h 5m` (on one line with the model's own printing time)."""
    cura = _number(values.get("time"))
    if cura is not None and cura >= 0:
        return int(cura)
    text = _first(values, "estimated printing time (normal mode)", "estimated printing time")
    if text is None:
        for value in values.values():
            found = re.search(r"total estimated time:\s*([0-9dhms ]+)", value)
            if found:
                text = found.group(1)
                break
    text = text or _first(values, "model printing time")
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _filament_mm(values: dict[str, str]) -> float | None:
    mm = _first_number(values, "filament used [mm]", "total filament length [mm]")
    if mm is not None:
        return mm
    cura = values.get("filament used")  # Cura: "1.2345m"
    if cura and cura.strip().endswith("m"):
        metres = _number(cura.strip())
        return None if metres is None else round(metres * 1000, 2)
    return None
