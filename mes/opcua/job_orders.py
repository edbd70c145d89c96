"""ISA-95 job orders (ISA95JobOrderDataType) read as our print jobs.

A job order names the job (`JobOrderID`) and what it needs, either in ISA-95's own
requirement fields or as named parameters; both may be used, and a field given twice must
agree:

| our job field | ISA-95 field | or JobOrderParameters ID |
|---|---|---|
| filament (spool) id | MaterialRequirements[0].MaterialLotID | FilamentId |
| grams | MaterialRequirements[0].Quantity (EngineeringUnits gram or none) | PrintWeightInGrams |
| printer id (optional) | EquipmentRequirements[0].ID | PrinterId |
| G-code file (optional) | WorkMasterID[0].ID (the SHA-256 of a stored file) | FileId |

Pure functions over the decoded structure: nothing here touches the farm.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from mes.files.store import SHA256_PATTERN
from mes.state.args import ID_PATTERN, MAX_GRAMS

# UNECE code of the gram in EUInformation.UnitId ("GRM"), as OPC UA encodes it.
GRAM_UNIT_ID = (ord("G") << 16) | (ord("R") << 8) | ord("M")
PARAMETERS = ("FilamentId", "PrintWeightInGrams", "PrinterId", "FileId")


class JobOrderInvalid(ValueError):
    """The job order cannot be read as a print job (the message says which field)."""


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _text(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise JobOrderInvalid(f"{field}: not a string")
    return value


def _grams(quantity: Any, field: str) -> int | None:
    """Whole grams from a DecimalString or a number, rounded up (a spool is charged whole grams)."""
    if quantity is None or quantity == "":
        return None
    if isinstance(quantity, bool):
        raise JobOrderInvalid(f"{field}: not a number")
    try:
        value = Decimal(str(quantity))
    except InvalidOperation:
        raise JobOrderInvalid(f"{field}: not a number") from None
    if not value.is_finite() or value <= 0:
        raise JobOrderInvalid(f"{field}: must be a positive number of grams")
    grams = math.ceil(value)
    if grams > MAX_GRAMS:
        raise JobOrderInvalid(f"{field}: at most {MAX_GRAMS} grams")
    return int(grams)


def _unit_is_gram(units: Any) -> bool:
    """Grams: UnitId GRM, or no unit code and a display name of "g" or none."""
    if units is None:
        return True
    unit_id = getattr(units, "UnitId", 0)
    name = getattr(getattr(units, "DisplayName", None), "Text", None)
    return bool(unit_id == GRAM_UNIT_ID or (unit_id in (0, -1) and name in (None, "", "g")))


def _from_requirements(order: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    material = _first(getattr(order, "MaterialRequirements", None))
    if material is not None:
        found["FilamentId"] = _text(getattr(material, "MaterialLotID", None),
                                    "MaterialRequirements.MaterialLotID")
        quantity = getattr(material, "Quantity", None)
        if quantity not in (None, "") and not _unit_is_gram(getattr(material, "EngineeringUnits",
                                                                    None)):
            raise JobOrderInvalid("MaterialRequirements.EngineeringUnits: grams only (GRM)")
        found["PrintWeightInGrams"] = _grams(quantity, "MaterialRequirements.Quantity")
    equipment = _first(getattr(order, "EquipmentRequirements", None))
    if equipment is not None:
        found["PrinterId"] = _text(getattr(equipment, "ID", None), "EquipmentRequirements.ID")
    work_master = _first(getattr(order, "WorkMasterID", None))
    if work_master is not None:
        found["FileId"] = _text(getattr(work_master, "ID", None), "WorkMasterID.ID")
    return {key: value for key, value in found.items() if value is not None}


def _from_parameters(order: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for parameter in getattr(order, "JobOrderParameters", None) or []:
        name = getattr(parameter, "ID", None)
        if name not in PARAMETERS:
            raise JobOrderInvalid(f"JobOrderParameters: unknown parameter {name!r} "
                                  f"(known: {', '.join(PARAMETERS)})")
        value = getattr(parameter, "Value", None)
        value = getattr(value, "Value", value)  # a Variant or its value
        field = f"JobOrderParameters.{name}"
        found[name] = (_grams(value, field) if name == "PrintWeightInGrams"
                       else _text(value, field))
    return {key: value for key, value in found.items() if value is not None}


def job_args(order: Any) -> dict[str, Any]:
    """The job.create arguments a job order asks for (owner and approval are the caller's)."""
    if order is None or not hasattr(order, "JobOrderID"):
        raise JobOrderInvalid("JobOrder: an ISA95JobOrderDataType is required")
    job_id = _text(order.JobOrderID, "JobOrderID")
    if job_id is None or not ID_PATTERN.match(job_id):
        raise JobOrderInvalid("JobOrderID: 1-64 letters, digits, '.', '_' or '-'")
    native, named = _from_requirements(order), _from_parameters(order)
    for key in native.keys() & named.keys():
        if native[key] != named[key]:
            raise JobOrderInvalid(f"{key}: the requirement and the parameter disagree")
    wanted = {**native, **named}
    filament = wanted.get("FilamentId")
    if filament is None or not ID_PATTERN.match(filament):
        raise JobOrderInvalid("FilamentId: the spool's id is required "
                              "(MaterialRequirements[0].MaterialLotID)")
    grams = wanted.get("PrintWeightInGrams")
    if grams is None:
        raise JobOrderInvalid("PrintWeightInGrams: required (MaterialRequirements[0].Quantity)")
    args: dict[str, Any] = {"id": job_id, "filament_id": filament,
                            "print_weight_in_grams": grams}
    printer = wanted.get("PrinterId")
    if printer is not None:
        if not ID_PATTERN.match(printer):
            raise JobOrderInvalid("PrinterId: not a printer id")
        args["printer_id"] = printer
    file_id = wanted.get("FileId")
    if file_id is not None:
        if not SHA256_PATTERN.match(file_id):
            raise JobOrderInvalid("FileId: the SHA-256 of a stored file")
        args["file_id"] = file_id
    return args
