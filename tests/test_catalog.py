"""The fleet catalog: built from a fleet, serialisable, enough to place and describe machines."""

from __future__ import annotations

import json

import pytest

from simulation import Fleet, FleetSpec, MachineSpec, UnknownMachineError
from simulation.catalog import CatalogError, FleetCatalog
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES
from simulation.spec import COMMANDS, LABELS


def interleaved_fleet(count: int) -> FleetSpec:
    types = ("conveyor_belt", "robotic_arm", "cnc_mill")
    return FleetSpec(tuple(MachineSpec(f"m{i:03d}", types[i % 3]) for i in range(count)))


def test_the_catalog_places_machines_as_the_fleet_does() -> None:
    fleet = Fleet(interleaved_fleet(30), seed=5, dt_s=0.1, fault_rate_per_h=1.5)
    catalog = fleet.catalog
    assert dict(catalog.placement) == dict(fleet.placement)
    assert [t.name for t in catalog.types] == [m.TYPE_NAME for m in fleet.models]
    for slot, model in enumerate(fleet.models):
        assert catalog.columns[slot] == model.machine_ids
    assert catalog.dt_s == 0.1
    assert catalog.seed == 5
    assert catalog.fault_rate_per_h == 1.5
    assert catalog.size == 30


def test_each_type_carries_the_models_vocabulary() -> None:
    catalog = Fleet(default_fleet(), seed=1, dt_s=0.1).catalog
    for machine_type in catalog.types:
        model = MODEL_TYPES[machine_type.name]
        assert machine_type.sensors == model.SENSORS
        assert machine_type.physical_faults == model.PHYSICAL_FAULTS
        assert machine_type.fault_kinds == model.fault_kinds()
        assert machine_type.commands == COMMANDS
    assert catalog.labels == LABELS
    assert catalog.machine_type("cnc_01").name == "cnc_mill"


def test_the_catalog_round_trips_through_json_exactly() -> None:
    catalog = Fleet(interleaved_fleet(300), seed=9, dt_s=0.25, repair_after_s=600).catalog
    text = catalog.to_json()
    again = FleetCatalog.from_json(text)
    assert again == catalog
    assert dict(again.placement) == dict(catalog.placement)
    assert again.to_json() == text
    assert FleetCatalog.from_json(text.encode()) == catalog


def test_an_unknown_machine_is_one_error_naming_it() -> None:
    catalog = Fleet(default_fleet(), seed=1, dt_s=0.1).catalog
    with pytest.raises(UnknownMachineError) as caught:
        catalog.locate("robot_99")
    assert caught.value.field == "machine_id"
    assert "robot_99" in str(caught.value)
    assert "GET" not in str(caught.value)
    assert "robot_99" not in catalog


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        json.dumps({"catalog_version": 99}),
        json.dumps({"catalog_version": 1, "types": []}),
    ],
)
def test_a_bad_catalog_document_is_a_clear_error(document: str) -> None:
    with pytest.raises(CatalogError):
        FleetCatalog.from_json(document)


def test_machines_of_undeclared_types_are_refused() -> None:
    catalog = Fleet(default_fleet(), seed=1, dt_s=0.1).catalog
    document = json.loads(catalog.to_json())
    document["machine_types"][0] = 7
    with pytest.raises(CatalogError):
        FleetCatalog.from_json(json.dumps(document))
