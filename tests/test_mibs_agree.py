"""The agent's MIB groups agree with the shipped MIB facts: every scalar and column a
group polls, keyed by its MIB object name, is that object at that OID in the shipped
MibIndex, in the module the group names; a group whose module is not shipped fails."""

from __future__ import annotations

import pytest

from agent.mibgroups import GROUPS, MibGroup
from enoc.mibs import MibIndex

SHIPPED = MibIndex.load()


def disagreements(group: MibGroup, mibs: MibIndex) -> list[str]:
    """What in `group` the facts contradict, one line each (empty when they agree)."""
    if group.mib not in mibs.modules:
        return [f"{group.name}: its module {group.mib} is not among the shipped MIBs"]
    out: list[str] = []
    probe = mibs.name(group.probe)
    if probe is None or probe.module != group.mib or probe.suffix:
        out.append(f"{group.name}: probe {_dotted(group.probe)} is {probe}, not a {group.mib} node")
    own = mibs.modules[group.mib]["nodes"]
    polled_as = (
        ("scalar", group.scalars, (0,)),
        ("column", group.columns, ()),
        ("column", group.labels, ()),  # walked less often, columns all the same
    )
    for kind, polled, suffix in polled_as:
        for name, oid in polled.items():
            found = mibs.name(oid)
            where = f"{group.name}: {name} at {_dotted(oid)}"
            if found is None:
                out.append(f"{where} is no object of the shipped MIBs")
                continue
            # An object another module defines (entPhysicalName beside a vendor table)
            # is held to its own module; the group's module must not define that name.
            module = group.mib if name in own else found.module
            obj = mibs.object_at(found.module, found.name)
            if (found.module, found.name, found.suffix) != (module, name, suffix):
                out.append(f"{where} is {found.module}::{found.name}{_suffix(found.suffix)}")
            elif obj.kind != kind:
                out.append(f"{where} is a {obj.kind}, polled as a {kind}")
    return out


def _dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def _suffix(suffix: tuple[int, ...]) -> str:
    return "." + _dotted(suffix) if suffix else ""


@pytest.mark.parametrize("group", list(GROUPS.values()), ids=list(GROUPS))
def test_every_mib_group_polls_the_objects_it_names(group: MibGroup) -> None:
    assert disagreements(group, SHIPPED) == []


def test_every_group_has_objects_of_its_own_module() -> None:
    for group in GROUPS.values():
        own = SHIPPED.modules[group.mib]["nodes"]
        assert any(name in own for name in (*group.scalars, *group.columns)), group.name


def test_the_check_names_each_kind_of_disagreement() -> None:
    entry = SHIPPED.oid("ENTITY-SENSOR-MIB::entPhySensorEntry")
    wrong = MibGroup(
        "wrong",
        "ENTITY-SENSOR-MIB",
        probe=SHIPPED.oid("IF-MIB::ifTable"),
        scalars={"entPhySensorValue": (*entry, 4, 0)},  # a column polled as a scalar
        columns={
            "entPhySensorScale": (*entry, 3),  # the precision column, not the scale
            "entPhySensorOperStatus": (2, 999, 1),  # outside every shipped module
            "entPhySensorType": (*entry, 1, 7),  # an instance, not the column
        },
    )
    assert disagreements(wrong, SHIPPED) == [
        "wrong: probe 1.3.6.1.2.1.2.2 is Named(module='IF-MIB', name='ifTable', suffix=()), "
        "not a ENTITY-SENSOR-MIB node",
        "wrong: entPhySensorValue at 1.3.6.1.2.1.99.1.1.1.4.0 is a column, polled as a scalar",
        "wrong: entPhySensorScale at 1.3.6.1.2.1.99.1.1.1.3 is "
        "ENTITY-SENSOR-MIB::entPhySensorPrecision",
        "wrong: entPhySensorOperStatus at 2.999.1 is no object of the shipped MIBs",
        "wrong: entPhySensorType at 1.3.6.1.2.1.99.1.1.1.1.7 is "
        "ENTITY-SENSOR-MIB::entPhySensorType.7",
    ]
    unshipped = MibGroup("vendor", "NO-SUCH-VENDOR-MIB", probe=(1, 3, 6, 1, 4, 1, 64999))
    assert disagreements(unshipped, SHIPPED) == [
        "vendor: its module NO-SUCH-VENDOR-MIB is not among the shipped MIBs"
    ]
