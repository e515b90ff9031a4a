"""The collector's InfluxDB writer when InfluxDB says no (docs/collector.md, "What happens
when things break").

- A refusal for good (400 type conflict, 401 bad credentials, 403 not allowed, 404 no such
  database or bucket): one attempt per batch, its points counted as dropped (of a partial
  write only those the server says it dropped, the rest as written), its messages
  acknowledged, one log line per streak; 401, 403
  and 404 mark the link unhealthy. Against Debian's InfluxDB 1.6 with authentication on
  (the v1 `/write` path) and, for the v2 path, a small HTTP server standing in for
  InfluxDB 2 (real HTTP, the real influxdb-client code).
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

from agent.config import TlsConfig
from collector.config import CollectorConfig, InfluxConfig
from collector.influx import MAX_RETRY_AFTER, InfluxWriter, parse_retry_after, partial_dropped
from collector.recent import InfluxRecent
from enoc.config import ConfigError, Duration, Secret, parse_config
from enoc.localservers import HOST, InfluxDB1, Mosquitto, TlsFiles, free_port
from enoc.mqtt import TlsSetupError
from enoc.pki import Pki, make_pki
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, encode, topic

pytestmark = pytest.mark.servers
T0 = time.time() - 3600
LOGGER = "enoc.collector.influx"
REFUSED = "refused a batch for good"
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
    `then` to every further request, and records each request with its answer."""

    def __init__(
        self, answers: list[Answer | Callable[[], Answer]] | None = None, then: Answer | None = None
    ) -> None:
        self.answers = list(answers or [])
        self.then = then or Answer()
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
        answer = self.answers.pop(0) if self.answers else self.then
        if not isinstance(answer, Answer):
            answer = answer()
        self.seen.append(
            Seen(
                at,
                wall,
                request.path,
                dict(request.query),
                dict(request.headers),
                raw.decode().splitlines(),
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


@contextlib.asynccontextmanager
async def running_writer(influx: InfluxConfig) -> AsyncIterator[InfluxWriter]:
    writer = InfluxWriter(influx)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close(grace=5)


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
        await self.writer.put(body, len(batch), lambda: self.acked.append(number))
        self.writer.flush_now()


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
    async with running_writer(influx) as writer:
        batches = Batches(writer)
        await batches.put(0, lines(0, 2, "device") + lines(5, 3, "interface"))
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert writer.stats.points_dropped == 2, "the two device points InfluxDB dropped"
        assert writer.stats.points_written == 3, "and the three it wrote"
        assert writer.stats.batches_refused == 1 and writer.stats.errors["http_400"] == 1
        assert writer.healthy, "a bad batch is not a bad link"
    (line,) = refusals(caplog)
    assert "HTTP 400" in line and "field type conflict" in line and "2 of its 5" in line
    assert influx_writes(secured_influx)[-1] == ("writer", 400)
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
    async with running_writer(influx) as writer:
        batches = Batches(writer)
        await batches.put(0, batch)
        await eventually(lambda: batches.acked == [0], what="the batch")
        assert (writer.stats.points_dropped, writer.stats.points_written) == (2, 4)
        assert writer.stats.errors["http_400"] == 1 and writer.healthy
    (line,) = refusals(caplog)
    assert "unable to parse" in line and "2 of its 6 points dropped" in line
    assert stored(secured_influx, "device") == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("server", "status", "body", "dropped"),
    [
        (
            "InfluxDB 1.8",  # its /api/v2/write answers as /write does
            400,
            '{"error":"partial write: field type conflict: input field \\"cpu\\" on '
            'measurement \\"device\\" is type integer, already exists as type float dropped=3"}',
            3,
        ),
        (
            "InfluxDB 2",
            422,
            '{"code":"unprocessable entity","message":"failure writing points to database: '
            'partial write: points beyond retention policy dropped=1"}',
            1,
        ),
        (
            "InfluxDB 3",
            400,
            '{"error":"partial write of line protocol occurred","data":['
            '{"original_line":"device,device=d1 cpu=1i 1","line_number":2,'
            '"error_message":"invalid column type for column \'cpu\'"},'
            '{"original_line":"device,device=d2 cpu=2i 2","line_number":3,'
            '"error_message":"invalid column type for column \'cpu\'"}]}',
            2,
        ),
        ("InfluxDB 2, no partial write", 400, V2_PARSE_ERROR, 5),
    ],
)
async def test_v2_partial_writes_count_only_what_the_server_dropped(
    server: str, status: int, body: str, dropped: int
) -> None:
    async with (
        StandIn(then=Answer(status, body=body)) as stand_in,
        running_writer(config(stand_in.url, "v2")) as writer,
    ):
        batches = Batches(writer)
        await batches.put(0, lines(0, 5))
        await eventually(lambda: batches.acked == [0], what=f"the batch ({server})")
        assert writer.stats.points_dropped == dropped, server
        assert writer.stats.points_written == 5 - dropped, server
        assert writer.stats.batches_refused == 1 and writer.stats.retries == 0


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


@pytest.mark.parametrize("status", sorted(V2_REFUSALS))
async def test_v2_refusals_get_one_attempt_a_batch_and_one_log_line(
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
            assert writer.healthy is (status == 400)
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
        writer, ingest = coll.writer, coll.ingest
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
        assert coll.writer is not None
        assert coll.writer.stats.points_dropped == 10 and coll.writer.stats.points_written == 0
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
        assert coll.writer is not None and coll.writer.stats.points_dropped == 0
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
            assert coll.writer is not None
            await publish(mosquitto.url, range(5))
            await eventually(lambda: coll.writer.stats.retries >= 2, what="refused by TLS")
            assert coll.ingest.stats.acked == 0, "nothing acknowledged that was not written"
            assert coll.writer.stats.points_dropped == 0 and not coll.health()["influxdb"]["ok"]
            error = coll.writer.stats.last_error
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
