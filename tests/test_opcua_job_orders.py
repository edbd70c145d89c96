"""ISA-95 job orders read as print jobs: both ways of naming what a job needs, and refusals."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mes.opcua.job_orders import GRAM_UNIT_ID, JobOrderInvalid, job_args

SHA = "a" * 64


def order(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {"JobOrderID": "j1", "MaterialRequirements": None,
                            "EquipmentRequirements": None, "WorkMasterID": None,
                            "JobOrderParameters": None}
    return SimpleNamespace(**{**base, **fields})


def material(lot: Any = "pla", quantity: Any = "12", units: Any = None) -> SimpleNamespace:
    return SimpleNamespace(MaterialLotID=lot, Quantity=quantity, EngineeringUnits=units)


def parameter(name: str, value: Any) -> SimpleNamespace:
    return SimpleNamespace(ID=name, Value=SimpleNamespace(Value=value))


def test_requirements_map_to_a_job() -> None:
    args = job_args(order(MaterialRequirements=[material(quantity="12.2")],
                          EquipmentRequirements=[SimpleNamespace(ID="m1")],
                          WorkMasterID=[SimpleNamespace(ID=SHA)]))
    assert args == {"id": "j1", "filament_id": "pla", "print_weight_in_grams": 13,
                    "printer_id": "m1", "file_id": SHA}


def test_parameters_map_to_a_job_and_may_repeat_a_requirement() -> None:
    args = job_args(order(JobOrderParameters=[parameter("FilamentId", "pla"),
                                              parameter("PrintWeightInGrams", 40),
                                              parameter("PrinterId", "m2")]))
    assert args == {"id": "j1", "filament_id": "pla", "print_weight_in_grams": 40,
                    "printer_id": "m2"}
    same = job_args(order(MaterialRequirements=[material()],
                          JobOrderParameters=[parameter("FilamentId", "pla")]))
    assert same["filament_id"] == "pla" and same["print_weight_in_grams"] == 12


def test_grams_by_unit_code_or_name() -> None:
    grams = SimpleNamespace(UnitId=GRAM_UNIT_ID, DisplayName=SimpleNamespace(Text="g"))
    assert job_args(order(MaterialRequirements=[material(units=grams)]))[
        "print_weight_in_grams"] == 12
    kilograms = SimpleNamespace(UnitId=(ord("K") << 16) | (ord("G") << 8) | ord("M"),
                                DisplayName=SimpleNamespace(Text="kg"))
    with pytest.raises(JobOrderInvalid, match="grams only"):
        job_args(order(MaterialRequirements=[material(units=kilograms)]))


@pytest.mark.parametrize(("fields", "message"), [
    ({"JobOrderID": "bad id!", "MaterialRequirements": [material()]}, "JobOrderID"),
    ({"JobOrderID": "", "MaterialRequirements": [material()]}, "JobOrderID"),
    ({"JobOrderID": 7, "MaterialRequirements": [material()]}, "JobOrderID"),
    ({}, "FilamentId"),
    ({"MaterialRequirements": [material(quantity=None)]}, "PrintWeightInGrams"),
    ({"MaterialRequirements": [material(quantity="-1")]}, "positive"),
    ({"MaterialRequirements": [material(quantity="NaN")]}, "positive"),
    ({"MaterialRequirements": [material(quantity="12 g")]}, "not a number"),
    ({"MaterialRequirements": [material(quantity="1000001")]}, "at most"),
    ({"MaterialRequirements": [material(lot="../etc")]}, "FilamentId"),
    ({"MaterialRequirements": [material()], "WorkMasterID": [SimpleNamespace(ID="x")]},
     "FileId"),
    ({"MaterialRequirements": [material()],
      "EquipmentRequirements": [SimpleNamespace(ID="no such/printer")]}, "PrinterId"),
    ({"MaterialRequirements": [material()],
      "JobOrderParameters": [parameter("PrintWeightInGrams", 99)]}, "disagree"),
    ({"MaterialRequirements": [material()],
      "JobOrderParameters": [parameter("Color", "red")]}, "unknown parameter"),
    ({"JobOrderParameters": [parameter("FilamentId", 5)]}, "not a string"),
])
def test_refused_orders_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(JobOrderInvalid, match=message):
        job_args(order(**fields))


def test_not_a_job_order() -> None:
    for value in (None, "j1", 5, SimpleNamespace(Other=1)):
        with pytest.raises(JobOrderInvalid, match="ISA95JobOrderDataType"):
            job_args(value)
