"""One poll of one device: a GET for every scalar, then one GETBULK walk of every column."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.mibgroups import Column, Labels, MibGroup, Reading
from agent.profiles import COLUMNS, SYSTEM_SCALARS, VALUE_TYPES, Profile, polled_groups
from enoc.snmp import ber
from enoc.snmp.ber import Oid
from enoc.snmp.client import SnmpClient, Target

MISSING_TAGS = (ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW, ber.NULL)


@dataclass
class RawPoll:
    """What a device answered, by the names of its MIB objects; rows keyed by index."""

    at: float  # wall time the poll started: the sample's timestamp
    response_ms: float  # round trip of the scalar GET
    scalars: dict[str, object] = field(default_factory=dict)
    tables: dict[str, dict[Oid, tuple[int, object]]] = field(default_factory=dict)
    varbinds: int = 0
    wrong_types: dict[str, int] = field(default_factory=dict)  # object -> values of a wrong type
    mib_groups: tuple[MibGroup, ...] = ()  # polled, in precedence order (agent.mibgroups)
    readings: dict[str, Reading] = field(default_factory=dict)  # by MIB group name


async def collect(
    client: SnmpClient,
    target: Target,
    choose: Callable[[Oid | None], Profile],
    max_repetitions: int,
    guess: Profile | None = None,
    found: frozenset[str] = frozenset(),
    labels: Labels | None = None,
) -> RawPoll:
    """Poll one device; `choose` picks the profile from the sysObjectID the GET returned.

    `guess` is the profile expected before the GET (named for the device, or chosen from
    its last sysObjectID): its scalars ride in that one GET. Only when the choice differs
    (the first poll, a device replaced by another model) do the missing scalars cost a
    second GET. `found` names the groups capability discovery found on the device: with
    the profile's pins and exclusions they add poll groups and MIB groups
    (agent.profiles.polled_groups), whose scalars and columns ride in the same requests.
    `labels` keeps the groups' label columns between polls (walked every poll without).
    Raises SnmpError (SnmpTimeout for silence, SnmpUndecodable,
    SnmpMisaddressed) when the device gives no usable answer.
    """
    at = time.time()
    names: dict[str, Oid] = dict(SYSTEM_SCALARS)
    if guess is not None:
        names.update(guess.scalars)
        for group in polled_groups(guess, found)[1]:
            names.update(group.scalars)
    started = time.monotonic()
    answer = await client.get(target, list(names.values()))
    raw = RawPoll(at=at, response_ms=(time.monotonic() - started) * 1000)
    by_oid = {oid: name for name, oid in names.items()}
    for oid, tag, value in answer:
        name = by_oid.get(oid)
        if name is not None and tag not in MISSING_TAGS:
            raw.scalars[name] = value
    raw.varbinds = len(answer)
    sys_object_id = raw.scalars.get("sysObjectID")
    profile = choose(sys_object_id if isinstance(sys_object_id, tuple) else None)
    poll_groups, raw.mib_groups = polled_groups(profile, found)
    wanted: dict[str, Oid] = dict(profile.scalars)
    for group in raw.mib_groups:
        wanted.update(group.scalars)
    for name in [n for n in raw.scalars if n not in SYSTEM_SCALARS and n not in wanted]:
        del raw.scalars[name]  # the guess's, not this profile's: the device changed model
    missing = {k: v for k, v in wanted.items() if names.get(k) != v}
    if missing:
        for oid, tag, value in await client.get(target, list(missing.values())):
            name = next((k for k, v in missing.items() if v == oid), None)
            if name is not None and tag not in MISSING_TAGS:
                raw.scalars[name] = value
    columns = {name: oid for g in poll_groups for name, oid in COLUMNS[g].items()}
    label_oids: dict[str, Oid] = {}
    for group in raw.mib_groups:
        columns.update(group.columns)
        label_oids.update(group.labels)
    due = set(label_oids) if labels is None else labels.due(label_oids, at)
    columns.update({name: label_oids[name] for name in due})
    if columns:
        await _walk(client, target, columns, max_repetitions, raw)
    # the label columns as walked now, or as the device's labels keep them
    known: Mapping[str, Column] = raw.tables if labels is None else labels.columns
    if labels is not None:
        labels.keep({n: raw.tables[n] for n in due}, at)
        again = _uncovered(raw, labels, due)
        if again:  # a row the labels did not cover (a module inserted): walk them now
            await _walk(client, target, {n: label_oids[n] for n in again}, max_repetitions, raw)
            labels.keep({n: raw.tables[n] for n in again}, at)
            _uncovered(raw, labels, again)
    for group in raw.mib_groups:  # the group's own, out of the profile's scalars and tables
        raw.readings[group.name] = Reading(
            {n: raw.scalars[n] for n in group.scalars if n in raw.scalars},
            {
                **{n: known[n] for n in group.labels if n in known},
                **{n: raw.tables[n] for n in group.columns if n in raw.tables},
            },
        )
    for group in raw.mib_groups:  # after all: two groups may share a column (entPhysicalName)
        for name in group.scalars:
            raw.scalars.pop(name, None)
        for name in (*group.columns, *group.labels):
            raw.tables.pop(name, None)
    raw.wrong_types = wrong_types(raw)
    if raw.wrong_types:
        which = ", ".join(f"{n} x{c}" for n, c in sorted(raw.wrong_types.items())[:4])
        client.note_bad("wrong_type", f"{target.host} answered values of the wrong type: {which}")
    return raw


async def _walk(
    client: SnmpClient,
    target: Target,
    columns: dict[str, Oid],
    max_repetitions: int,
    raw: RawPoll,
) -> None:
    walked = await client.walk(target, list(columns.values()), max_repetitions)
    for name, column in columns.items():
        rows = walked.get(column, [])
        raw.tables[name] = {index: (tag, value) for index, tag, value in rows}
        raw.varbinds += len(rows)


def _uncovered(raw: RawPoll, labels: Labels, walked: set[str]) -> set[str]:
    """The label columns of the groups with a row their labels have not seen; a group whose
    labels were walked in this poll covers the rows it has now."""
    again: set[str] = set()
    for group in raw.mib_groups:
        if not group.labels:
            continue
        rows = frozenset(i for n in group.columns for i in raw.tables.get(n, {}))
        if walked & set(group.labels) or group.name not in labels.covered:
            labels.covered[group.name] = rows
        elif not rows <= labels.covered[group.name]:
            again.update(group.labels)
    return again


def wrong_types(raw: RawPoll) -> dict[str, int]:
    """How many values of each known object came with a type the object cannot have
    (a Counter64 sent as an OCTET STRING); vendor scalars are taken as they come."""
    out: dict[str, int] = {}
    for name, value in raw.scalars.items():
        kind = VALUE_TYPES.get(name)
        if kind is not None and not isinstance(value, kind):
            out[name] = 1
    for name, rows in raw.tables.items():
        kind = VALUE_TYPES.get(name)
        if kind is None:
            continue
        wrong = sum(
            1
            for tag, value in rows.values()
            if tag not in MISSING_TAGS and not isinstance(value, kind)
        )
        if wrong:
            out[name] = wrong
    return out
