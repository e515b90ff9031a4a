"""The collector's InfluxDB writer when InfluxDB says no (docs/collector.md, "What happens
when things break").

- A refusal of the link (401 bad credentials, 403 not allowed, 404 no such database or
  bucket): one attempt per batch, its points counted as dropped, its messages
  acknowledged, one log line per streak, the link unhealthy.
- A refusal of lines (400: a line that does not parse, a field type conflict): the lines
  the answer names, then by halving, are found, dead-lettered and counted by device; the
  rest of the batch, every other device's lines, written. Against a stand-in that refuses
  chosen lines (the pattern controlled) and against InfluxDB 1.6's real type conflicts.
- Against Debian's InfluxDB 1.6 with authentication on (the v1 `/write` path) and, for
  the v2 path, a small HTTP server standing in for InfluxDB 2 (real HTTP, the real
  influxdb-client code).
- 503 and 429: retried after the server's Retry-After (seconds or an HTTP date), which
  is a bound the writer promises, then written once, nothing lost; without it, backoff.
  No real InfluxDB can be made to answer those: the stand-in does.
- A full buffer (`max_buffer_points`) while InfluxDB 1.6 is down: consumption stops,
  the messages wait unacknowledged in Mosquitto, and all are written once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import itertools
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from collectorkit import TOKENS, collector_config, eventually, running_collector

from collector.config import CollectorConfig, CollectorMqttConfig
from collector.config_sinks import InfluxConfig
from collector.recent import InfluxRecent
from collector.sinks import MqttDeadLetters
from collector.sinks.influx import (
    DEAD_LETTER_REASON,
    ISOLATION_REQUESTS,
    InfluxWriter,
    line_device,
    named_lines,
    partial_dropped,
)
from enoc.config import ConfigError, Duration, Secret, TlsConfig, parse_config
from enoc.mqtt import TlsSetupError
from enoc.pki import Pki, make_pki
from enoc.retry import MAX_RETRY_AFTER, parse_retry_after
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, encode, topic
from testbed.servers import HOST, InfluxDB1, Mosquitto, TlsFiles, free_port

pytestmark = pytest.mark.servers
T0 = time.time() - 3600
LOGGER = "enoc.collector.influx"
REFUSED = "for good"
AGAIN = "accepts writes again"


# ---------------------------------------------------------------- an InfluxDB that says no


@dataclass
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass
class Seen:
    at: float  # time.monotonic()
    wall: float  # time.time()
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    lines: list[str]
    answer: Answer


class StandIn:
    """An HTTP server in place of InfluxDB (1.x `/write`, 2.x `/api/v2/write`): it answers
    `answers` in turn (an answer or a function making one when the request comes), then
    `then` to every further request, and records each request with its answer. `judge`,
    when given, answers instead: a function of the request's lines."""

    def __init__(
        self,
        answers: list[Answer | Callable[[], Answer]] | None = None,
        then: Answer | None = None,
        judge: Callable[[list[str]], Answer] | None = None,
    ) -> None:
        self.answers = list(answers or [])
        self.then = then or Answer()
        self.judge = judge
        self.seen: list[Seen] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def __aenter__(self) -> StandIn:
        app = web.Application()
        app.router.add_post("/write", self._write)
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _write(self, request: web.Request) -> web.Response:
        at, wall = time.monotonic(), time.time()
        raw = await request.read()  # aiohttp inflates a gzip body by itself
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        lines = raw.decode().splitlines()
        if self.judge is not None:
            answer = self.judge(lines)
        else:
            next_one = self.answers.pop(0) if self.answers else self.then
            answer = next_one if isinstance(next_one, Answer) else next_one()
        self.seen.append(
            Seen(
                at,
                wall,
                request.path,
                dict(request.query),
                dict(request.headers),
                lines,
                answer,
            )
        )
        return web.Response(
            status=answer.status,
            headers=answer.headers,
            text=answer.body or None,
            content_type="application/json" if answer.body else None,
        )


def config(url: str, api: str, **extra: Any) -> InfluxConfig:
    if api == "v2":
        base: dict[str, Any] = {"org": "enoc", "bucket": "enoc", "token": Secret("t0ken-for-tests")}
    else:
        base = {"database": "enoc"}
    base.update(extra)
    return InfluxConfig(url=url, api=api, flush_interval=Duration(0.05), **base)  # type: ignore[arg-type]


class Letters:
    """A dead letter sink that keeps what it is given."""

    def __init__(self) -> None:
        self.letters: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, reason: str, letters: list[dict[str, Any]]) -> int:
        self.letters += [(reason, letter) for letter in letters]
        return len(letters)


@contextlib.asynccontextmanager
async def running_writer(
    influx: InfluxConfig, letters: Letters | None = None
) -> AsyncIterator[InfluxWriter]:
    writer = InfluxWriter(influx, letters)
    await writer.start()
    loop = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        await writer.close(grace=5)
        await loop


def lines(first: int, count: int, measurement: str = "device") -> list[str]:
    return [
        f"{measurement},device=d{i} cpu={i}i {round((T0 + i) * 1000)}"
        for i in range(first, first + count)
    ]


class Batches:
    """Puts batches of lines into a writer and records which were acknowledged, in order."""

    def __init__(self, writer: InfluxWriter) -> None:
        self.writer = writer
        self.acked: list[int] = []

    async def put(self, number: int, batch: list[str]) -> None:
        body = "".join(line + "\n" for line in batch).encode()
        await self.writer.write(body, len(batch), lambda: self.acked.append(number))
        self.writer.flush()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and REFUSED in r.getMessage()
    ]


def recoveries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and AGAIN in r.getMessage()]


# ---------------------------------------------------------------- refused for good


@pytest.fixture
def secured_influx(tmp_path: Path) -> Any:
    """InfluxDB 1.6 with authentication: admin, `writer` (WRITE on enoc), `reader` (READ)."""
    with InfluxDB1(tmp_path / "influxdb", admin=("admin", "admin-pw-1"), log_requests=True) as s:
        s.create_database("enoc")
        s.query("CREATE USER writer WITH PASSWORD 'writer-pw-1'")
        s.query("GRANT WRITE ON enoc TO writer")
        s.query("CREATE USER reader WITH PASSWORD 'reader-pw-1'")
        s.query("GRANT READ ON enoc TO reader")
        yield s


def influx_writes(server: InfluxDB1) -> list[tuple[str, int]]:
    """(user, status) of every POST /write influxd logged, in order."""
    out = []
    for line in server.log_tail(100_000).splitlines():
        if '"POST /write?' in line and "[httpd]" in line:
            user = line.split(" - ", 1)[1].split(" ", 1)[0]
            status = int(line.split('HTTP/1.1" ', 1)[1].split(" ", 1)[0])
            out.append((user, status))
    return out


def stored(server: InfluxDB1, measurement: str) -> list[int]:
    body = server.query(f'SELECT cpu FROM "{measurement}"', "enoc")
    series = body["results"][0].get("series", [])
    return sorted(int(row[1]) for s in series for row in s["values"])


@pytest.mark.parametrize(
    ("case", "status", "login", "database"),
    [
        ("wrong password", 401, ("writer", "not-the-password"), "enoc"),
        ("read-only user", 403, ("reader", "reader-pw-1"), "enoc"),
        ("missing database", 404, ("writer", "writer-pw-1"), "missing"),
    ],
)
async def test_influxdb_1_6_refusing_the_link_gets_one_attempt_a_batch_and_one_log_line(
    secured_influx: InfluxDB1,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    status: int,
    login: tuple[str, str],
    database: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    user, password = login
    influx = config(
        secured_influx.url, "v1", database=database, username=user, password=Secret(password)
    )
    async with running_writer(influx) as writer:
        batches = Batches(writer)
        for n in range(3):
            await batches.put(n, lines(10 * n, 4))
            await eventually(lambda n=n: len(batches.acked) == n + 1, what=f"batch {n} {case}")
        assert batches.acked == [0, 1, 2], "refused batches are acknowledged, in order"
        assert writer.stats.points_dropped == 12 and writer.stats.points_written == 0
        assert writer.stats.batches_refused == 3 and writer.stats.retries == 0
        assert writer.stats.errors[f"http_{status}"] == 3
        assert not writer.healthy, f"{case}: the link is not working"
        assert f"HTTP {status}" in writer.stats.last_error
    assert influx_writes(secured_influx) == [(user, status)] * 3, "one attempt per batch"
    (line,) = refusals(caplog)
    assert f"HTTP {status}" in line and "4 of its 4 points dropped" in line
    assert stored(secured_influx, "device") == []


async def test_a_refusal_streak_logs_once_and_its_end_once_and_a_new_streak_again(
    secured_influx: InfluxDB1, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's password is changed under it (401), set right, then changed again."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    influx = config(
        secured_influx.url, "v1", username="writer", password=Secret("the-new-password")
    )
    async with running_writer(influx) as writer:
        batches = Batches(writer)
        number = 0

        async def batch(expect_written: bool) -> None:
            nonlocal number
            written = writer.stats.points_written
            await batches.put(number, lines(10 * number, 2))
            number += 1
            await eventually(lambda: len(batches.acked) == number, what=f"batch {number}")
            assert (writer.stats.points_written == written + 2) is expect_written

        for _ in range(3):
            await batch(False)
        assert (len(refusals(caplog)), len(recoveries(caplog))) == (1, 0)
        assert not writer.healthy
        await asyncio.to_thread(
            secured_influx.query, "SET PASSWORD FOR writer = 'the-new-password'"
        )
        for _ in range(2):
            await batch(True)
        assert writer.healthy
        (again,) = recoveries(caplog)
        assert "after 3 refused batches" in again
        await asyncio.to_thread(secured_influx.query, "SET PASSWORD FOR writer = 'changed-again'")
        for _ in range(2):
            await batch(False)
    assert (len(refusals(caplog)), len(recoveries(caplog))) == (2, 1), "a new streak: a line"
    assert [s for _u, s in influx_writes(secured_influx)] == [401] * 3 + [204] * 2 + [401] * 2
    assert writer.stats.points_dropped == 10 and writer.stats.points_written == 4
    assert stored(secured_influx, "device") == [30, 31, 40, 41]


async def test_a_type_conflict_drops_only_what_influxdb_1_6_dropped_and_keeps_the_link_up(
    secured_influx: InfluxDB1, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    # a field's type is kept per shard (a week): the string goes in the same one
    secured_influx.write("enoc", f'device,device=old cpu="a string" {int(T0)}', precision="s")
    influx = config(secured_influx.url, "v1", username="writer", password=Secret("writer-pw-1"))
    letters = Letters()
    batch = lines(0, 2, "device") + lines(5, 3, "interface")
    async with running_writer(influx, letters) as writer:
        batches = Batches(writer)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert writer.stats.points_dropped == 2, "the two device points InfluxDB dropped"
        assert writer.stats.points_written == 3, "and the three it wrote"
        assert writer.stats.batches_refused == 1 and writer.stats.errors["http_400"] == 1
        assert writer.stats.lines_refused == {"d0": 1, "d1": 1}
        assert writer.healthy, "a bad batch is not a bad link"
    (line,) = refusals(caplog)
    assert "HTTP 400" in line and "field type conflict" in line and "2 of its 5" in line
    assert [(r, x["line"]) for r, x in letters.letters] == [
        (DEAD_LETTER_REASON, b) for b in batch[:2]
    ]
    assert all("field type conflict" in x["error"] for _r, x in letters.letters)
    # the batch, its first half (both device lines), each alone, then its second half
    writes = [status for user, status in influx_writes(secured_influx) if user == "writer"]
    assert writes == [400, 400, 400, 400, 204]
    assert stored(secured_influx, "interface") == [5, 6, 7], "the rest of the batch landed"


V2_PARSE_ERROR = '{"code":"invalid","message":"unable to parse \'x\': missing fields"}'


async def test_lines_influxdb_1_6_cannot_parse_are_the_dropped_ones_of_its_partial_write(
    secured_influx: InfluxDB1, caplog: pytest.LogCaptureFixture
) -> None:
    """InfluxDB 1.x writes the lines that parse and answers 400 `partial write: unable to
    parse '...': ... dropped=0`, one `unable to parse` per line it could not: those are the
    dropped ones, not 0 of them, and not the whole batch."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    influx = config(secured_influx.url, "v1", username="writer", password=Secret("writer-pw-1"))
    batch = [*lines(0, 2), "device,device=x cpu= 1", "not line protocol", *lines(2, 2)]
    letters = Letters()
    async with running_writer(influx, letters) as writer:
        batches = Batches(writer)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert (writer.stats.points_dropped, writer.stats.points_written) == (2, 4)
        assert writer.stats.errors["http_400"] == 1 and writer.healthy
        assert writer.stats.lines_refused == {"x": 1, "": 1}
    (line,) = refusals(caplog)
    assert "unable to parse" in line and "2 of its 6 lines" in line
    assert [x["line"] for _r, x in letters.letters] == batch[2:4], "named by the answer"
    assert [x["error"] for _r, x in letters.letters] == [
        "unable to parse: missing field value",
        "unable to parse: invalid field format",
    ]
    # the named lines set apart, the rest sent again once: no halving
    assert [s for _u, s in influx_writes(secured_influx)] == [400, 204]
    assert stored(secured_influx, "device") == [0, 1, 2, 3]


def device_lines(devices: int, each: int) -> list[str]:
    """`each` lines of each of `devices` devices, interleaved as a batch mixes them."""
    return [
        f"interface,device=dev-{d},ifIndex={i} in_bps={d * 100 + i}i {round(T0 * 1000)}"
        for i in range(each)
        for d in range(devices)
    ]


def refusing(bad: set[str], body: Callable[[list[str]], str]) -> Callable[[list[str]], Answer]:
    """A stand-in's judge: 400 with `body(the bad lines sent)` for a request holding any
    line of `bad`, else 204."""

    def judge(sent: list[str]) -> Answer:
        refused = [line for line in sent if line in bad]
        return Answer(400, body=body(refused)) if refused else Answer()

    return judge


def accepted(stand_in: StandIn) -> set[str]:
    return {line for s in stand_in.seen if s.answer.status == 204 for line in s.lines}


# What servers answer for part of a batch: InfluxDB 1.x when the batch conflicts in
# itself (nothing written), InfluxDB 2's parse error (no line written), VictoriaMetrics.
UNNAMED_BODIES = {
    "InfluxDB 1.x conflict": lambda _bad: '{"error":"field type conflict"}',
    "InfluxDB 2 parse error": lambda _bad: (
        '{"code":"invalid","message":"failure writing points to database: partial write: '
        'field type conflict dropped=1"}'
    ),
    "VictoriaMetrics": lambda _bad: "cannot parse line: unexpected tag value",
}


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("server", sorted(UNNAMED_BODIES))
async def test_a_refused_batch_costs_only_its_refused_lines_found_by_halving(
    api: str, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three devices' lines in one batch; the stand-in refuses two lines of dev-1 (and
    every request holding one), naming none: the writer halves until each stands alone."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    batch = device_lines(3, 20)
    bad = {batch[7], batch[40]}
    assert {line_device(line.encode()) for line in bad} == {"dev-1"}
    letters = Letters()
    judge = refusing(bad, UNNAMED_BODIES[server])
    async with (
        StandIn(judge=judge) as stand_in,
        running_writer(config(stand_in.url, api), letters) as writer,
    ):
        batches = Batches(writer)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch acknowledged")
        assert accepted(stand_in) == set(batch) - bad, "every other line, every device's"
        assert writer.stats.lines_refused == {"dev-1": 2}
        assert (writer.stats.points_written, writer.stats.points_dropped) == (58, 2)
        assert writer.stats.batches_refused == 1 and writer.stats.errors["http_400"] == 1
        assert writer.healthy and writer.stats.retries == 0
        # halving: about 2 log2(60) requests a refused line, far fewer than one a line
        assert len(stand_in.seen) <= 1 + 2 * 2 * 6
        # the next batch is written whole, and says so
        await batches.put(1, device_lines(3, 2))
        await eventually(lambda: batches.acked == [0, 1], what="the next batch")
    assert sorted(x["line"] for _r, x in letters.letters) == sorted(bad)
    assert {(r, x["device"]) for r, x in letters.letters} == {(DEAD_LETTER_REASON, "dev-1")}
    assert all(str(400) in x["error"] for _r, x in letters.letters)
    (line,) = refusals(caplog)
    assert "2 of its 60 lines" in line
    assert len(recoveries(caplog)) == 1


async def test_lines_the_answer_names_are_set_apart_without_halving() -> None:
    """InfluxDB 1.x names each line it cannot parse (and writes the others): the named
    lines are dead-lettered, the rest sent once more (a point written twice is one)."""
    batch = device_lines(2, 10)
    bad = {batch[3], batch[12]}

    def body(refused: list[str]) -> str:
        named = "\\n".join(f"unable to parse '{line}': invalid tag format" for line in refused)
        return f'{{"error":"partial write: {named} dropped=0"}}'

    letters = Letters()
    async with (
        StandIn(judge=refusing(bad, body)) as stand_in,
        running_writer(config(stand_in.url, "v1"), letters) as writer,
    ):
        batches = Batches(writer)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert [s.answer.status for s in stand_in.seen] == [400, 204]
        assert stand_in.seen[1].lines == [line for line in batch if line not in bad]
        assert writer.stats.lines_refused == {"dev-1": 1, "dev-0": 1}
    assert [x["error"] for _r, x in letters.letters] == ["unable to parse: invalid tag format"] * 2


async def test_refused_lines_beyond_the_isolation_budget_are_dropped_not_retried_forever() -> None:
    """A stand-in that refuses every line: at most ISOLATION_REQUESTS writes, then the rest
    is dropped and counted; the batch is acknowledged and the writer goes on."""
    batch = device_lines(1, 400)
    async with StandIn(then=Answer(400, body='{"error":"field type conflict"}')) as stand_in:
        async with running_writer(config(stand_in.url, "v1")) as writer:
            batches = Batches(writer)
            await batches.put(0, batch)
            await eventually(lambda: batches.acked == [0], what="the batch", timeout=60)
            assert writer.stats.points_dropped == 400 and writer.stats.points_written == 0
            assert writer.stats.lines_refused == {"dev-0": 400}
        assert len(stand_in.seen) == 1 + ISOLATION_REQUESTS


async def test_a_batch_refused_whole_and_written_in_halves_costs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """InfluxDB 1.x refuses a whole batch whose lines conflict with each other (a field an
    integer in one, a float in another), then takes them apart: nothing is refused."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    batch = device_lines(2, 4)
    answers: list[Answer | Callable[[], Answer]] = [Answer(400, body='{"error":"conflict"}')]
    async with StandIn(answers) as stand_in, running_writer(config(stand_in.url, "v1")) as w:
        batches = Batches(w)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert accepted(stand_in) == set(batch) and len(stand_in.seen) == 3
        assert (w.stats.points_written, w.stats.points_dropped) == (8, 0)
        assert not w.stats.lines_refused and w.stats.batches_refused == 0
    assert refusals(caplog) == []


async def test_a_link_refusal_while_halving_stops_it() -> None:
    """The password changed while the writer looked for the refused lines: 401, the rest of
    the batch dropped (no retry storm), the link unhealthy."""
    batch = device_lines(2, 8)
    answers: list[Answer | Callable[[], Answer]] = [Answer(400, body='{"error":"x"}')]
    async with StandIn(answers, then=Answer(401, body='{"error":"authorization failed"}')) as s:
        async with running_writer(config(s.url, "v1")) as writer:
            batches = Batches(writer)
            await batches.put(0, batch)
            await eventually(lambda: batches.acked == [0], what="the batch")
            assert writer.stats.points_dropped == 16 and not writer.healthy
            assert writer.stats.errors["http_401"] == 1
        assert [x.answer.status for x in s.seen] == [400, 401], "no request after the 401"


@pytest.mark.parametrize(
    ("line", "device"),
    [
        ("interface,agent_host=127.0.0.1,device=core-1,ifIndex=1 in_bps=1 1", "core-1"),
        ("device,device=core\\ 1\\,\\=x,site=nyc cpu=1 1", "core 1,=x"),
        ("device,agent_host=a,device=last cpu=1 1", "last"),
        ('incident,change=opened,device=d1 title="device=not this" 1', "d1"),
        ("enoc_agent,agent=a1,site=nyc health=1 1", ""),
        ('incident,change=opened title="a,device=not this" 1', ""),
        ("device,device=\\A\\ EDICION-1/ cpu=1 1", "\\A EDICION-1/"),
    ],
)
def test_a_lines_device_is_its_device_tag(line: str, device: str) -> None:
    assert line_device(line.encode()) == device


def test_the_lines_an_answer_names_are_read_with_their_reasons() -> None:
    message = (
        "partial write: unable to parse 'a b=': missing field value\n"
        "unable to parse 'x,t=\\\\ f=1i 2': invalid tag format dropped=0"
    )
    assert named_lines(message) == {
        "a b=": "missing field value",
        "x,t=\\\\ f=1i 2": "invalid tag format",
    }
    assert named_lines("field type conflict") == {}


async def test_dead_letters_reach_the_broker(mosquitto: Mosquitto) -> None:
    """Through Mosquitto: the writer's refused line, its reason and device, on
    enoc/deadletter/v1/influx_refused."""
    batch = device_lines(2, 3)
    bad = {batch[1]}
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    sink = MqttDeadLetters(CollectorMqttConfig(url=mosquitto.url, client_id="writer-test"))
    received: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client(host, int(port), identifier="dead-letter-reader") as reader:
        await reader.subscribe("enoc/deadletter/v1/#", qos=1)
        judge = refusing(bad, lambda _b: '{"error":"field type conflict"}')
        async with StandIn(judge=judge) as stand_in:
            writer = InfluxWriter(config(stand_in.url, "v1"), sink)
            await writer.start()
            loop = asyncio.create_task(writer.run())
            try:
                await Batches(writer).put(0, batch)
                async with asyncio.timeout(20):
                    async for message in reader.messages:
                        assert isinstance(message.payload, bytes)
                        received.append((message.topic.value, json.loads(message.payload)))
                        break
                await eventually(lambda: writer.stats.dead_lettered == 1, what="its PUBACK")
            finally:
                await writer.close(grace=5)
                await loop
                await sink.close()
    ((where, letter),) = received
    assert where == "enoc/deadletter/v1/influx_refused"
    assert letter["line"] == batch[1] and letter["device"] == "dev-1"
    assert "field type conflict" in letter["error"] and letter["reason"] == "influx_refused"


async def test_the_collector_writes_every_other_device_and_counts_the_refused_one(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Through Mosquitto and the collector: one device's interface line is refused; the
    message's other points are written, the refusal counted on /metrics by device and
    dead-lettered, the message acknowledged."""
    samples = [
        DeviceSample(
            name,
            "127.0.0.9",
            T0,
            fields={"cpu": 1.0},
            interfaces=[InterfaceSample(1, "ge-0/0/1", "", alias, {"in_bps": 5.0})],
        )
        for name, alias in [("arista-1", "\\A EDICION-1\\"), ("cisco-1", "uplink")]
    ]
    message = MetricsMessage("agent-1", "lab", "emea", 1, T0, samples=samples)

    def judge(sent: list[str]) -> Answer:
        bad = [x for x in sent if x.startswith("interface") and "arista-1" in x]
        return Answer(400, body='{"error":"field type conflict"}') if bad else Answer()

    async with StandIn(judge=judge) as stand_in:
        influx = {"influxdb": {"url": stand_in.url, "api": "v1", "database": "enoc"}}
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with (
            aiomqtt.Client(host, int(port), identifier="dead-letter-reader") as reader,
            running_collector(collector_config(tmp_path, mosquitto.url, extra=influx)) as coll,
        ):
            await reader.subscribe("enoc/deadletter/v1/#", qos=1)
            async with aiomqtt.Client(host, int(port), identifier="agent-1") as agent:
                await agent.publish(topic("lab", "agent-1", "metrics"), encode(message), qos=1)
            await eventually(lambda: coll.ingest.stats.acked == 1, what="the message acked")
            async with asyncio.timeout(20):
                async for letter in reader.messages:
                    assert isinstance(letter.payload, bytes)
                    dead = json.loads(letter.payload)
                    break
            counters = coll.counters()
    written = accepted(stand_in)
    assert {line.split(",", 1)[0] + " " + line_device(line.encode()) for line in written} == {
        "device arista-1",
        "device cisco-1",
        "interface cisco-1",
    }
    assert "ifAlias=\\A\\ EDICION-1/," in dead["line"] and dead["device"] == "arista-1"
    assert counters["lines_refused.arista-1"] == 1 and "lines_refused.cisco-1" not in counters
    assert counters["lines_dead_lettered"] == 1 and counters["points_written"] == 3


@pytest.mark.parametrize(
    ("body", "dropped"),
    [
        # InfluxDB 1.6's own answers (tests/test_collector_influx.py's servers), as it sends them
        (
            '{"error":"partial write: field type conflict: input field \\"x\\" on measurement '
            '\\"m\\" is type float, already exists as type integer dropped=2"}',
            2,
        ),
        (
            '{"error":"partial write: unable to parse \'bad line here\': invalid field format'
            "\\nunable to parse 'm x= 1796157617': missing field value dropped=0\"}",
            2,
        ),
        ('{"error":"unable to parse \'x\': missing fields"}', None),  # nothing written
        ('{"error":"database not found: \\"enoc\\""}', None),
        ('{"error":"partial write of line protocol occurred","data":[{"line_number":1}]}', 1),
        ('{"error":"partial write of line protocol occurred"}', None),
        ("partial write, and not JSON", None),
        ("", None),
    ],
)
def test_partial_dropped_reads_what_the_server_says(body: str, dropped: int | None) -> None:
    assert partial_dropped(body) == dropped


V2_REFUSALS = {
    400: V2_PARSE_ERROR,
    401: '{"code":"unauthorized","message":"unauthorized access"}',
    403: '{"code":"forbidden","message":"insufficient permissions for write"}',
    404: '{"code":"not found","message":"bucket \\"enoc\\" not found"}',
}


@pytest.mark.parametrize("status", sorted(set(V2_REFUSALS) - {400}))
async def test_v2_refusals_of_the_link_get_one_attempt_a_batch_and_one_log_line(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with StandIn(then=Answer(status, body=V2_REFUSALS[status])) as server:
        async with running_writer(config(server.url, "v2")) as writer:
            batches = Batches(writer)
            for n in range(3):
                await batches.put(n, lines(10 * n, 4))
                await eventually(lambda n=n: len(batches.acked) == n + 1, what=f"batch {n}")
            assert writer.stats.points_dropped == 12 and writer.stats.retries == 0
            assert not writer.healthy
        seen = server.seen
    assert [s.path for s in seen] == ["/api/v2/write"] * 3, "one attempt per batch"
    assert [s.lines for s in seen] == [lines(0, 4), lines(10, 4), lines(20, 4)]
    assert {s.query["bucket"] for s in seen} == {"enoc"}
    assert {s.headers["Authorization"] for s in seen} == {"Token t0ken-for-tests"}
    (line,) = refusals(caplog)
    assert f"HTTP {status}" in line


# ---------------------------------------------------------------- retried: 5xx and 429


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(503, "1"), (429, "1.5"), (429, "date"), (503, None)],
)
async def test_503_and_429_are_retried_after_retry_after_and_written_once(
    api: str, status: int, retry_after: str | None
) -> None:
    """Two refusals, then the write is taken. Retry-After is a lower bound the writer
    keeps (and it does not wait much longer); without one, the backoff's own floor
    (0.5 s, then 1 s, less 20 % jitter) spaces the attempts."""

    def refusal() -> Answer:
        if retry_after is None:
            return Answer(status)
        if retry_after == "date":  # whole seconds: two from now is 1 to 2 s away
            return Answer(status, {"Retry-After": http_date(time.time() + 2)})
        return Answer(status, {"Retry-After": retry_after})

    async with StandIn([refusal, refusal]) as server:
        async with running_writer(config(server.url, api)) as writer:
            batches = Batches(writer)
            await batches.put(0, lines(0, 5))
            await eventually(lambda: batches.acked == [0], what="written after the retries")
            assert writer.stats.retries == 2 and writer.stats.points_written == 5
            assert writer.stats.points_dropped == 0 and writer.healthy
        seen = server.seen
    assert [s.answer.status for s in seen] == [status, status, 204]
    assert all(s.lines == lines(0, 5) for s in seen), "the same batch each time, written once"
    for before, retry in itertools.pairwise(seen):
        gap = retry.at - before.at
        header = before.answer.headers.get("Retry-After")
        if header is None:
            floor = 0.8 * (0.5 if before is seen[0] else 1.0)
            assert gap >= floor - 0.02, f"backoff {gap:.3f} s, at least {floor} s"
        elif retry_after == "date":
            due = email.utils.parsedate_to_datetime(header).timestamp()
            assert due - 0.05 <= retry.wall < due + 1.5, f"{retry.wall - due:+.3f} s from due"
        else:
            assert float(header) - 0.05 <= gap < float(header) + 1.5, f"{gap:.3f} s"


def test_retry_after_is_seconds_or_an_http_date_and_at_most_a_minute() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("2", lambda: now) == 2.0
    assert parse_retry_after("0", lambda: now) == 0.0
    assert parse_retry_after("-3", lambda: now) == 0.0
    assert parse_retry_after("3600", lambda: now) == MAX_RETRY_AFTER == 60.0
    assert parse_retry_after(http_date(now + 7), lambda: now) == pytest.approx(7.0)
    assert parse_retry_after(http_date(now - 7), lambda: now) == 0.0
    for useless in (None, "", "soon", "nan"):
        assert parse_retry_after(useless, lambda: now) is None


# ---------------------------------------------------------------- backpressure, end to end


def metrics(seq: int) -> MetricsMessage:
    """Two points: one `device` line, one `interface` line."""
    sample = DeviceSample(
        "dev-1",
        "127.0.0.9",
        T0 + seq,
        fields={"cpu": float(seq)},
        interfaces=[InterfaceSample(1, "ge-0/0/1", fields={"in_bps": float(seq) * 10})],
    )
    return MetricsMessage("agent-1", "lab", "emea", seq, T0 + seq, samples=[sample])


async def publish(url: str, seqs: range) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="influx-test-publisher") as client:
        for seq in seqs:
            await client.publish(topic("lab", "agent-1", "metrics"), encode(metrics(seq)), qos=1)


class StoreCount:
    """Mosquitto's `$SYS/broker/store/messages/count`: the messages it holds (queued for or in
    flight to a client and not yet acknowledged, and retained ones, $SYS's own among them)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.values: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StoreCount:
        self._task = asyncio.create_task(self._run())
        await eventually(lambda: bool(self.values), what="the broker's $SYS store count")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        host, port = self.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="influx-test-sys") as client:
            await client.subscribe("$SYS/broker/store/messages/count")
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.values.append(int(message.payload))

    async def reaches(self, check: Callable[[int], bool], what: str) -> None:
        """Until the broker's latest count (published each second when it changes) passes."""
        await eventually(lambda: check(self.values[-1]), what=f"{what} ({self.values[-8:]})")


@pytest.fixture
def sys_mosquitto(tmp_path: Path) -> Any:
    with Mosquitto(
        tmp_path / "mosquitto", config_extra="sys_interval 1\nautosave_interval 1\n"
    ) as broker:
        yield broker


async def test_a_full_buffer_pauses_consumption_while_influxdb_is_down_and_loses_nothing(
    tmp_path: Path, sys_mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    influxdb1.create_database("enoc")
    v1 = {
        "influxdb": {
            "url": influxdb1.url,
            "api": "v1",
            "database": "enoc",
            "batch_size": 10,
            "max_buffer_points": 20,  # ten messages of two points
            "flush_interval": "0.1s",
        }
    }
    total = 80
    async with (
        StoreCount(sys_mosquitto.url) as store,
        running_collector(collector_config(tmp_path, sys_mosquitto.url, extra=v1)) as coll,
    ):
        writer, ingest = coll.sinks["influxdb"], coll.ingest
        assert writer is not None
        idle = store.values[-1]  # nothing published yet
        await publish(sys_mosquitto.url, range(10))
        await eventually(lambda: ingest.stats.acked == 10, what="the first ten written")
        await asyncio.to_thread(influxdb1.stop)
        await publish(sys_mosquitto.url, range(10, total))
        await eventually(lambda: writer.stats.retries >= 2, what="writes failing")
        taken = ingest.stats.received["metrics"]
        await asyncio.sleep(2.0)  # a while down: nothing more is taken
        assert ingest.stats.received["metrics"] == taken <= 10 + 10 + 1, (
            "consumption stopped: the buffer's ten messages and the one waiting for room"
        )
        assert writer.stats.buffer_points <= 20
        assert ingest.stats.acked == 10, "nothing acknowledged while InfluxDB is down"
        await store.reaches(
            lambda held: held - idle >= total - 10,
            "every unacknowledged message held by the broker",
        )
        assert not coll.health()["influxdb"]["ok"]
        await asyncio.to_thread(influxdb1.start)
        await eventually(lambda: ingest.stats.acked == total, what="all acknowledged", timeout=60)
        assert ingest.stats.received["metrics"] == total
        assert writer.stats.points_written == 2 * total and writer.stats.points_dropped == 0
        # (retained $SYS topics only add to the count: a fall is messages let go)
        peak = max(store.values)
        await store.reaches(lambda now: peak - now >= total - 10, "the broker letting them go")
    cpu = influxdb1.query('SELECT cpu FROM "device"', "enoc")["results"][0]["series"][0]
    assert sorted(int(v) for _t, v in cpu["values"]) == list(range(total)), "each once"
    bps = influxdb1.query('SELECT count(in_bps) FROM "interface"', "enoc")["results"][0]
    assert bps["series"][0]["values"][0][1] == total


async def test_the_collector_on_influxdb_1_6_with_authentication_right_and_wrong_password(
    tmp_path: Path, mosquitto: Mosquitto, secured_influx: InfluxDB1
) -> None:
    """Through Mosquitto and the collector: with a wrong password every batch is refused
    once, its points dropped and its messages acknowledged (consumption goes on), and
    /healthz says why; with the right one the same collector session's next messages land."""
    password = tmp_path / "influx-password"

    def collector(name: str, secret: str) -> Path:
        password.write_text(secret + "\n")
        v1 = {
            "influxdb": {
                "url": secured_influx.url,
                "api": "v1",
                "database": "enoc",
                "username": "writer",
                "password_file": str(password),
                "flush_interval": "0.1s",
            }
        }
        return collector_config(tmp_path, mosquitto.url, name="collector", extra=v1)

    async with running_collector(collector("wrong", "not-the-password")) as coll:
        await publish(mosquitto.url, range(5))
        await eventually(lambda: coll.ingest.stats.acked == 5, what="refused, acknowledged")
        assert (
            coll.sinks["influxdb"].stats.points_dropped == 10
            and coll.sinks["influxdb"].stats.points_written == 0
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://{HOST}:{coll.http_port}/healthz",
                headers={"Authorization": f"Bearer {TOKENS['viewer1']}"},  # details: logged in
            ) as response,
        ):
            assert response.status == 503
            health = await response.json()
        assert not health["influxdb"]["ok"] and health["store"]["ok"] and health["mqtt"]["ok"]
        assert "HTTP 401 (bad credentials)" in health["influxdb"]["last_error"]
    assert {u for u, _s in influx_writes(secured_influx)} == {"writer"}
    assert {s for _u, s in influx_writes(secured_influx)} == {401}
    async with running_collector(collector("right", "writer-pw-1")) as coll:
        await publish(mosquitto.url, range(5, 10))
        await eventually(lambda: coll.ingest.stats.acked == 5, what="written")
        assert coll.sinks["influxdb"].stats.points_dropped == 0
        assert coll.health()["influxdb"]["ok"]
    assert stored(secured_influx, "device") == [5, 6, 7, 8, 9]


# ---------------------------------------------------------------- TLS


def pki_pair(tmp_path: Path) -> tuple[Pki, Pki]:
    """enoc's CA with a certificate for 127.0.0.1 and a client `collector`; another CA."""
    ours = make_pki(tmp_path / "pki", server_names=[HOST], clients=["collector"])
    other = make_pki(tmp_path / "other-pki", server_names=[HOST], clients=[], ca_name="other")
    return ours, other


async def test_https_to_influxdb_1_6_trusts_its_ca_and_with_a_wrong_one_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """InfluxDB 1.6 serving https with a certificate from enoc.pki. A collector given
    another CA writes nothing, acknowledges nothing and says why; stopped and started
    again with the right CA (the same MQTT session), it writes every point once."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    ours, other = pki_pair(tmp_path)
    https = TlsFiles(ours.ca_cert, ours.server_cert, ours.server_key)
    with InfluxDB1(tmp_path / "influxdb", https=https) as server:
        server.create_database("enoc")
        assert server.url.startswith("https://")

        def collector(ca: Path) -> Path:
            v1 = {
                "influxdb": {
                    "url": server.url,
                    "api": "v1",
                    "database": "enoc",
                    "tls": {"ca_file": str(ca)},
                    "flush_interval": "0.1s",
                }
            }
            return collector_config(tmp_path, mosquitto.url, extra=v1)

        async with running_collector(collector(other.ca_cert)) as coll:
            await publish(mosquitto.url, range(5))
            await eventually(
                lambda: coll.sinks["influxdb"].stats.retries >= 2, what="refused by TLS"
            )
            assert coll.ingest.stats.acked == 0, "nothing acknowledged that was not written"
            assert (
                coll.sinks["influxdb"].stats.points_dropped == 0
                and not coll.health()["influxdb"]["ok"]
            )
            error = coll.sinks["influxdb"].stats.last_error
            assert f"not trusted by influxdb.tls.ca_file {other.ca_cert}" in error, error
            assert "certificate verify failed" in error
        failing = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
        assert len(failing) == 1 and "TLS: the certificate of InfluxDB at 127.0.0.1" in failing[0]
        assert stored(server, "device") == []

        async with running_collector(collector(ours.ca_cert)) as coll:
            await eventually(lambda: coll.ingest.stats.acked == 5, what="all written over https")
            assert coll.health()["influxdb"]["ok"]
            # the device page's InfluxQL reads trust the same CA (a day's window: T0 is old)
            assert coll.config.influxdb is not None
            reads = InfluxRecent(coll.config.influxdb, coll.config.recent, window=86400)
            try:
                page = await reads.device("lab", "dev-1")
            finally:
                await reads.close()
            assert page is not None and page["source"] == "influxdb", reads.failures
        assert stored(server, "device") == [0, 1, 2, 3, 4], "every point once"


class HttpsStandIn(StandIn):
    """The stand-in behind TLS that asks for a client certificate from enoc's CA (as a TLS
    proxy in front of InfluxDB may)."""

    def __init__(self, pki: Pki) -> None:
        super().__init__()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        context.verify_mode = ssl.CERT_REQUIRED
        self.context = context

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    async def __aenter__(self) -> HttpsStandIn:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port, ssl_context=self.context).start()
        return self


async def test_a_client_certificate_for_influxdb_and_tls_files_that_cannot_be_used(
    tmp_path: Path,
) -> None:
    ours, _other = pki_pair(tmp_path)
    cert, key = ours.clients["collector"]
    async with HttpsStandIn(ours) as server:
        with_cert = TlsConfig(ca_file=ours.ca_cert, cert_file=cert, key_file=key)
        async with running_writer(config(server.url, "v2", tls=with_cert)) as writer:
            batches = Batches(writer)
            await batches.put(0, lines(0, 3))
            await eventually(lambda: batches.acked == [0], what="written with the client cert")
        assert [s.lines for s in server.seen] == [lines(0, 3)]
        without = TlsConfig(ca_file=ours.ca_cert)
        async with running_writer(config(server.url, "v2", tls=without)) as writer:
            batches = Batches(writer)
            await batches.put(1, lines(10, 3))
            await eventually(lambda: writer.stats.retries >= 1, what="refused without one")
            assert batches.acked == [] and not writer.healthy
        assert len(server.seen) == 1, "nothing got through without a certificate"
    missing = TlsConfig(ca_file=tmp_path / "no-such-ca.pem")
    with pytest.raises(TlsSetupError, match=r"cannot use the InfluxDB TLS files .*no-such-ca"):
        await InfluxWriter(config("https://127.0.0.1:9", "v1", tls=missing)).start()
    with pytest.raises(ConfigError, match=r"influxdb\.tls needs an https:// url"):
        parse_config(
            "influxdb: {url: 'http://127.0.0.1:8086', api: v1, database: enoc,"
            " tls: {ca_file: ca.pem}}\n",
            CollectorConfig,
        )
