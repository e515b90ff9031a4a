"""Hostile input, as properties (Hypothesis) and as `enoc bench fuzz` at small size.

The property on every surface: a handler accepts an input or refuses it with the
surface's documented error (WireError, SnmpError, a counted bad trap,
ConfigError, an HTTP 4xx); anything else (RecursionError, OverflowError, a 500,
a dropped connection, a fast path that disagrees with the general one) escapes.
Each surface's check is the bench's own (enoc.bench.fuzz.surfaces), here fed by
Hypothesis with a bounded, derandomised number of examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchkit import bench_processes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enoc.bench.fuzz import SurfaceResult, messages, run_in_process
from enoc.bench.fuzz.http import (
    COLLECTOR_BODIES,
    COLLECTOR_ROUTES,
    CONTROL_BODIES,
    CONTROL_ROUTES,
    CollectorApi,
    HttpInput,
    SimulatorControl,
)
from enoc.bench.fuzz.mutate import _RAW, BerMutator, JsonMutator, Mutated, _paths
from enoc.bench.fuzz.surfaces import (
    ConfigInput,
    Configs,
    FastPath,
    GeneralPath,
    Incidents,
    SnmpInput,
    SnmpResponses,
    Surface,
    TrapInput,
    Traps,
    WireInput,
)
from enoc.wire import KINDS, Kind
from testbed.servers import Mosquitto

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ------------------------------------------------------------------ strategies

NOW = 1_796_000_000.0  # a fixed time: Hypothesis replays an example byte for byte

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


# written into the JSON text as they are: what json.dumps would not write
def raw_tokens(max_depth: int = 5000) -> st.SearchStrategy[str]:
    return (
        st.integers(min_value=1, max_value=max_depth).map(lambda d: "[" * d + "]" * d)
        | st.integers(min_value=1, max_value=max_depth).map(lambda d: '{"a":' * d + "0" + "}" * d)
        | st.integers(min_value=-(10**400), max_value=10**400).map(str)
        | st.sampled_from(
            ["1e309", "-1e400", "5e-400", "NaN", "Infinity", '"\\u0000"', '"\\ud800"']
        )
    )


@st.composite
def mutated_json(draw: st.DrawFn, valid: Any, max_depth: int = 5000) -> Mutated:
    """`valid` with one to three places replaced by a JSON value or a raw token, or
    removed; the text sometimes cut; or random bytes."""
    if draw(st.integers(0, 19)) == 0:
        data = draw(st.binary(max_size=2000))
        return Mutated(data, f"random bytes ({len(data)})")
    raws: list[str] = []
    notes: list[str] = []
    valid = copy.deepcopy(valid)  # the caller's stays valid
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(valid, ""))
        path, _node, parent, key = places[draw(st.integers(0, len(places) - 1))]
        how = draw(st.sampled_from(["value", "raw", "remove"]))
        if how == "remove" and parent is not None:
            del parent[key]
            notes.append(f"{path}: removed")
            continue
        if how == "raw":
            raws.append(draw(raw_tokens(max_depth)))
            replacement: Any = _RAW.format(len(raws) - 1)
            notes.append(f"{path or '$'}: raw {raws[-1][:30]}")
        else:
            replacement = draw(json_values)
            notes.append(f"{path or '$'}: {json.dumps(replacement)[:40]}")
        if parent is None:
            valid = replacement
        else:
            parent[key] = replacement
    text = json.dumps(valid)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw, 1)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
        notes.append(f"cut at {cut}")
    return Mutated(data, "; ".join(notes))


@st.composite
def wire_inputs(draw: st.DrawFn, kinds: tuple[Kind, ...] = KINDS) -> WireInput:
    kind = draw(st.sampled_from(kinds))
    valid = messages.valid_json(kind, random.Random(draw(st.integers(0, 2**32))), now=NOW)
    return WireInput(kind, draw(mutated_json(valid)))


@st.composite
def ber_inputs(draw: st.DrawFn, valid: bytes) -> Mutated:
    """A valid message mutated in its structure (a seeded BerMutator), spliced, cut, or
    random bytes."""
    how = draw(st.sampled_from(["structure", "splice", "cut", "random"]))
    if how == "structure":
        return BerMutator(random.Random(draw(st.integers(0, 2**32)))).mutate(valid)
    if how == "splice":
        i = draw(st.integers(0, len(valid)))
        j = draw(st.integers(i, len(valid)))
        middle = draw(st.binary(max_size=64))
        return Mutated(valid[:i] + middle + valid[j:], f"bytes {i}:{j} -> {middle.hex()}")
    if how == "cut":
        cut = draw(st.integers(0, len(valid)))
        return Mutated(valid[:cut], f"cut at {cut}")
    data = draw(st.binary(max_size=1500))
    return Mutated(data, "random bytes")


# ------------------------------------------------------------------ running a surface


@contextlib.contextmanager
def opened(surface: Surface) -> Iterator[Callable[[Any], str | None]]:
    """The surface opened on its own event loop, and a function feeding it one input."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(surface.open())
    try:
        yield lambda item: loop.run_until_complete(surface.feed(item))
    finally:
        loop.run_until_complete(surface.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ------------------------------------------------------------------ wire payloads


@PROPERTY
@given(item=wire_inputs())
def test_wire_payloads_decode_or_are_refused_with_wire_error(item: WireInput) -> None:
    escaped = asyncio.run(GeneralPath().feed(item))
    assert escaped is None, (escaped, item.what, item.data[:300])


@PROPERTY
@given(item=wire_inputs(("metrics",)))
def test_the_fast_path_agrees_with_the_general_path_or_leaves_the_payload(
    item: WireInput,
) -> None:
    escaped = asyncio.run(FastPath().feed(item))
    assert escaped is None, (escaped, item.what, item.data[:300])


def test_incident_engine_takes_every_events_and_status_message_that_decodes() -> None:
    with opened(Incidents()) as feed:

        @PROPERTY
        @given(item=wire_inputs(("events", "status")))
        def check(item: WireInput) -> None:
            escaped = feed(item)
            assert escaped is None, (escaped, item.what, item.data[:300])

        check()


def test_the_checks_see_an_escape() -> None:
    """The property can fail: a payload nested past the stack, through a handler that
    lets RecursionError out, is an escape; a WireError is not."""

    def recursive(value: Any) -> int:
        return 1 + max((recursive(v) for v in value), default=0) if isinstance(value, list) else 0

    class Escaping(GeneralPath):
        async def feed(self, item: WireInput) -> str | None:
            try:
                recursive(json.loads(item.data))
            except RecursionError as exc:
                return f"RecursionError: {exc}"
            return None

    deep = WireInput("events", Mutated(b"[" * 5000 + b"]" * 5000, "nested 5000 deep"))
    assert asyncio.run(Escaping().feed(deep)).startswith("RecursionError")  # type: ignore[union-attr]
    bad = WireInput("events", Mutated(b"{}", "empty object"))
    assert asyncio.run(GeneralPath().feed(bad)) is None  # a WireError: refused, not escaped


# ------------------------------------------------------------------ SNMP and traps


@st.composite
def trap_inputs(draw: st.DrawFn, v3: messages.V3Traps) -> TrapInput:
    version = draw(st.sampled_from(["1", "2c", "3"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    valid = {"1": messages.trap_v1, "2c": messages.trap_v2c, "3": v3.trap}[version](rng)
    mutated = draw(ber_inputs(valid))
    return TrapInput(mutated.data, f"v{version}: {mutated.what}")


def test_trap_datagrams_are_delivered_or_counted_as_bad() -> None:
    surface = Traps(random.Random(1))
    with opened(surface) as feed:

        @PROPERTY
        @given(item=trap_inputs(surface.v3))
        def check(item: TrapInput) -> None:
            escaped = feed(item)
            assert escaped is None, (escaped, item.what, item.data.hex())

        check()
        # every input was either a trap or a counted bad one, and valid ones got through
        assert surface.receiver.stats.received > 0
        assert sum(surface.receiver.stats.bad.values()) > 0


def test_snmp_answers_are_decoded_or_refused_with_snmp_error() -> None:
    surface = SnmpResponses(random.Random(1))
    with opened(surface) as feed:

        @PROPERTY
        @given(
            op=st.sampled_from(["get", "walk"]),
            v3=st.booleans(),
            seed=st.integers(0, 2**32),
        )
        def check(op: str, v3: bool, seed: int) -> None:
            surface.responder.rng = surface.responder.mutator.rng = random.Random(seed)
            item = SnmpInput(op, v3)
            escaped = feed(item)
            assert escaped is None, (escaped, item.what, item.data.hex())

        check()
        assert surface.client.stats.responses > 0  # valid answers followed the mutated ones


# ------------------------------------------------------------------ configuration files


@st.composite
def config_inputs(draw: st.DrawFn, tmp: str) -> ConfigInput:
    agent = draw(st.booleans())
    schema = Configs.schema_of(agent)
    base = (messages.agent_config if agent else messages.collector_config)(tmp)
    how = draw(st.sampled_from(["yaml", "flow", "spice", "text"]))
    if how == "spice":
        what, spice = draw(st.sampled_from(messages.YAML_SPICE + messages.DEEP_YAML))
        text = yaml.safe_dump(base) + spice
        return ConfigInput(text.encode("utf-8", "surrogatepass"), schema, what)
    if how == "text":
        text = draw(st.text(max_size=300))
        return ConfigInput(text.encode("utf-8", "surrogatepass"), schema, "random text")
    # PyYAML composes in Python: past some 300 levels the stack is gone, and deeper is slow
    mutated = draw(mutated_json(base, max_depth=600))
    if how == "yaml":
        try:
            text = yaml.safe_dump(json.loads(mutated.data))
            return ConfigInput(text.encode("utf-8", "surrogatepass"), schema, mutated.what)
        except (ValueError, RecursionError):
            pass
    return ConfigInput(mutated.data, schema, f"flow: {mutated.what}")


def test_config_files_load_or_raise_config_error() -> None:
    surface = Configs(random.Random(1))
    with opened(surface) as feed:

        @PROPERTY
        @given(item=config_inputs(str(surface.tmp)))
        def check(item: ConfigInput) -> None:
            escaped = feed(item)
            assert escaped is None, (escaped, item.what, item.data[:300])

        check()


# ------------------------------------------------------------------ HTTP


@st.composite
def http_inputs(
    draw: st.DrawFn,
    routes: list[tuple[str, str]],
    bodies: dict[str, list[Any]],
    tokens: list[str],
) -> HttpInput:
    method, path = draw(st.sampled_from(routes))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]))
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if segment.startswith("{"):
            segments[i] = urllib.parse.quote(draw(st.text(min_size=1, max_size=30)), safe="")
    path = "/".join(segments)
    query = draw(
        st.dictionaries(
            st.sampled_from(["limit", "since", "until", "state", "site", "severity", "last_id"]),
            st.text(max_size=20),
            max_size=3,
        )
    )
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["token", "none", "junk"]))
    if auth == "token" and tokens:
        headers["Authorization"] = "Bearer " + draw(st.sampled_from(tokens))
    elif auth == "junk":
        headers["Authorization"] = draw(
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
        )
    body = b""
    for suffix, valid in bodies.items():
        if path.split("?")[0].endswith(suffix) and method == "POST":
            body = draw(mutated_json(draw(st.sampled_from(valid)))).data
            headers["Content-Type"] = "application/json"
    return HttpInput(method, path, headers, body, f"{method} {path[:80]}")


def test_simulator_control_api_answers_4xx_to_what_it_refuses() -> None:
    surface = SimulatorControl(random.Random(1))
    with opened(surface) as feed:
        routes = [(m, p.replace("{name}", "fuzz-pe-1")) for m, p in CONTROL_ROUTES[:3]]

        @PROPERTY
        @given(item=http_inputs(routes + CONTROL_ROUTES, CONTROL_BODIES, []))
        def check(item: HttpInput) -> None:
            escaped = feed(item)
            assert escaped is None, (escaped, item.what, item.body[:300])

        check()


def test_simulator_control_refuses_a_body_nested_past_the_stack_with_400() -> None:
    surface = SimulatorControl(random.Random(1))

    async def post(body: bytes) -> tuple[int, str]:
        await surface.open()
        try:
            assert surface.session is not None
            async with surface.session.post(
                surface.base + "/devices/fuzz-pe-1/faults", data=body
            ) as response:
                return response.status, await response.text()
        finally:
            await surface.close()

    status, text = asyncio.run(post(b"[" * 5000 + b"]" * 5000))
    assert status == 400 and "body must be a JSON object" in text


@pytest.mark.servers
def test_collector_api_answers_4xx_to_what_it_refuses(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "mosquitto").start() as broker:
        surface = CollectorApi(random.Random(1), broker.url)
        with opened(surface) as feed:

            @PROPERTY
            @given(
                item=http_inputs(COLLECTOR_ROUTES, COLLECTOR_BODIES, list(surface.tokens.values()))
            )
            def check(item: HttpInput) -> None:
                escaped = feed(item)
                assert escaped is None, (escaped, item.what, item.body[:300])

            check()


# ------------------------------------------------------------------ the harness


def test_the_bench_counts_each_escape_and_keeps_a_reproducer_per_kind() -> None:
    class Broken:
        """A surface whose handler lets KeyError out of every third input."""

        name = "broken"
        fed = 0

        async def open(self) -> None:
            return None

        async def close(self) -> None:
            return None

        def generate(self, rng: random.Random) -> Mutated:
            return Mutated(rng.randbytes(4), "four random bytes")

        async def feed(self, item: Mutated) -> str | None:
            self.fed += 1
            return "KeyError: 'x'" if self.fed % 3 == 0 else None

    result = asyncio.run(run_in_process("broken", 30, random.Random(1), surface=Broken()))
    assert (result.inputs, result.escaped) == (30, 10)
    (escape,) = result.escapes
    assert escape.count == 10 and escape.error == "KeyError: 'x'" and escape.input_b64
    assert result.slowest and result.slowest_s >= 0


def test_the_mutators_are_seeded_and_reach_every_hazard() -> None:
    def descriptions(seed: int) -> list[str]:
        rng = random.Random(seed)
        mutator = JsonMutator(rng)
        # at one fixed time: a message's length (and so where a cut falls, and how much
        # randomness the cut draws) varies with the clock's digits
        at = 1_790_000_000.25
        return [mutator.mutate(messages.valid_json("events", rng, at)).what for _ in range(2000)]

    first = descriptions(7)
    assert first == descriptions(7)  # a run is repeated by its seed
    text = "\n".join(first)
    for hazard in ("nested", "number 2**64", "NUL", "random bytes", "cut at", "removed"):
        assert hazard in text, hazard


def test_surface_result_groups_escapes_by_kind() -> None:
    result = SurfaceResult("x")
    for error in ("RecursionError: deep", "RecursionError: deep", "OverflowError: big"):
        result.escape(error, Mutated(b"data", "what"))
    assert result.escaped == 3
    assert [(e.error, e.count) for e in result.escapes] == [
        ("RecursionError: deep", 2),
        ("OverflowError: big", 1),
    ]


# ------------------------------------------------------------------ the bench, small


@pytest.mark.servers
@pytest.mark.timeout(900)
def test_bench_fuzz_small_has_no_escape_and_no_stopped_lane(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "fuzz"),
            *("--inputs", "300", "--seed", "5", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lanes stopped" in proc.stdout
    (written,) = tmp_path.glob("bench-fuzz-*.json")
    result = json.loads(written.read_text())
    surfaces = {s["name"]: s for s in result["surfaces"]}
    assert set(surfaces) == {
        "wire",
        "fastpath",
        "incidents",
        "snmp",
        "traps",
        "config",
        "http",
        "control",
        "live",
    }
    for name, surface in surfaces.items():
        assert surface["inputs"] == 300, name
        assert surface["slowest"], name
    escapes = {n: s["escapes"] for n, s in surfaces.items() if s["escaped"]}
    stopped = {n: s["stopped"] for n, s in surfaces.items() if s["stopped_lanes"] or s["stopped"]}
    assert result["escaped"] == 0, escapes
    assert result["stopped_lanes"] == 0 and not stopped, stopped
    # every message the contract refuses was counted, dead-lettered and seen on its topic
    live = surfaces["live"]["notes"]
    assert live["rejected"] == live["dead_lettered"] == live["rejected_expected"] > 0
    assert live["dead_letters_seen"] >= live["dead_lettered"]
    # the probes not counted; one over the collector's Maximum Packet Size is never sent
    assert live["received"] + live["rejected"] + live["over_packet_size"] == 300
    assert live["received"] == live["received_expected"] > 0  # every good message landed
    assert bench_processes("enoc-bench-fuzz-") == []
