"""Batched, acknowledged writes to InfluxDB.

`put(chunk, points, on_written)` queues a message's lines (line protocol
bytes, each line ending in a newline) in a bounded buffer and waits while the
buffer is full (backpressure). One writer task sends batches (by size, by
time, or at once on `flush_now`), gzip-compressed, and calls each message's
`on_written` only after the server accepted its lines: the collector
acknowledges the MQTT message then, so a crash never loses an acknowledged
point.

Gzip is ISA-L's (`isal.igzip`, level 1): about 3x less CPU than zlib at
level 1 for slightly smaller output (a 2.6 MB batch: 0.035 s against 0.11 s).

Errors: connection errors, TLS failures, 5xx and 429 are retried with
backoff (0.5 s doubling to 30 s, with jitter) forever, or after the
server's Retry-After (seconds or an HTTP date, at most 60 s) when it sends
one: the batch stays in the buffer, the buffer fills, `put` waits and
consumption pauses, so nothing is acknowledged that is not written. Any
other 4xx can never succeed: 400 (a type conflict, a line the server
refuses), 401 (bad token or password), 403 (not allowed to write), 404
(missing bucket or database), 413... The batch gets one attempt, is
dropped and its messages acknowledged: redelivering them would block every
later message behind them. Its points count as dropped, or, of a partial
write (the server wrote the rest), only those the server says it dropped
(`partial_dropped`), the rest as written. One line is logged per
streak of refusals (and per new status within it) and one when writes are
accepted again. 401, 403 and 404 also mark the InfluxDB link unhealthy
(`/healthz`) until a write succeeds.

APIs: v2 (InfluxDB 2.x/3.x/1.8+, VictoriaMetrics) through influxdb-client's
async client; v1 (InfluxDB before 1.8) through `/write?db=&rp=` with aiohttp.
Both over https:// with the context `ssl_context` builds (enoc.mqtt's verifying
client context: `influxdb.tls.ca_file` or the system CAs, an optional client
certificate); a certificate that does not verify is a retried failure whose
error names the CA file, so nothing is acknowledged and nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from isal import igzip

from collector.config import InfluxConfig
from collector.lineproto import PRECISION, zero_upper
from enoc.logs import StateLogger, get_logger
from enoc.mqtt import tls_context

log = get_logger("enoc.collector.influx")

MAX_RETRY_AFTER = 60.0  # a longer Retry-After is cut to this
# Refusals that say the link itself is wrong (credentials, permissions, bucket or database),
# not one batch's content: InfluxDB is reported unhealthy until a write succeeds.
LINK_REFUSALS = {
    401: "bad credentials",
    403: "not allowed to write",
    404: "no such bucket or database",
}
_PARTIAL = re.compile(r"\bdropped=(\d+)")
_UNPARSED = re.compile(r"unable to parse \\?'")


def gzip(data: bytes) -> bytes:
    """ISA-L's gzip at level 1, then the AVX registers' upper halves cleared: ISA-L returns
    from its AVX-512 code without `vzeroupper` (intel/isa-l#24), and until something
    clears them every legacy SSE instruction of the process pays for it (the collector's
    metrics pass ran 3.4x slower after one compress on this Xeon)."""
    body = igzip.compress(data, compresslevel=1)
    zero_upper()
    return body


def partial_dropped(body: str) -> int | None:
    """How many points a refusal says the server dropped when it wrote the rest of the
    batch (a partial write); None when it does not say so (then none was written).

    InfluxDB 1.x and 2.x end the message with `dropped=N`: the points the storage refused
    (a field type conflict, beyond the retention policy). InfluxDB 1.x writes the lines
    that parse and names each one that does not, `unable to parse '<line>': <why>`, with
    dropped=0: those are dropped too. InfluxDB 3 answers `{"error": "partial write of line
    protocol occurred", "data": [...]}`, one entry per rejected line (at most 100)."""
    partial = _PARTIAL.search(body)
    if partial is not None:
        return int(partial.group(1)) + len(_UNPARSED.findall(body))
    if "partial write" not in body:
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    rejected = answer.get("data") if isinstance(answer, dict) else None
    return len(rejected) if isinstance(rejected, list) and rejected else None


class WriteRefused(Exception):
    """The server refused a batch for good (4xx other than 429); `dropped` is the number of
    points a partial write says it dropped (None: the whole batch)."""

    def __init__(self, status: int, message: str, dropped: int | None = None) -> None:
        hint = LINK_REFUSALS.get(status)
        super().__init__(f"HTTP {status}{f' ({hint})' if hint else ''}: {message}")
        self.status = status
        self.dropped = dropped


class WriteFailed(Exception):
    """A failure worth retrying (connection error, 5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class WriterStats:
    points_written: int = 0
    batches_written: int = 0
    bytes_sent: int = 0
    retries: int = 0
    points_dropped: int = 0
    batches_refused: int = 0
    overflow_dropped: int = 0  # put_nowait points refused by a full buffer
    buffer_points: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class InfluxWriter:
    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self.stats = WriterStats()
        self.max_buffer = max(config.max_buffer_points, config.batch_size)
        self._buffer: deque[tuple[bytes, int, Callable[[], None] | None]] = deque()
        self._space = asyncio.Condition()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: object | None = None
        self._outage = StateLogger(log)
        self._refusals = 0  # batches refused since the last accepted write
        self._refused_status = 0  # the status of the last refusal logged
        self.healthy = True

    # ---------------------------------------------------------------- producers

    async def put(
        self, chunk: bytes, points: int, on_written: Callable[[], None] | None = None
    ) -> None:
        """Queue `points` lines (`chunk`, each line ending in a newline); waits while full."""
        if not points:
            if on_written is not None:
                on_written()
            return
        stats = self.stats
        if stats.buffer_points + points > self.max_buffer and self._buffer:
            async with self._space:
                await self._space.wait_for(
                    lambda: stats.buffer_points + points <= self.max_buffer or not self._buffer
                )
        self._buffer.append((chunk, points, on_written))
        stats.buffer_points += points
        if stats.buffer_points >= self.config.batch_size:
            self._wake.set()

    def put_nowait(self, chunk: bytes, points: int) -> bool:
        """Buffer without waiting (for callers that must not block, such as an operator's
        request); refused and counted beyond 10 % over the buffer's limit."""
        if self.stats.buffer_points + points > self.max_buffer * 1.1:
            self.stats.overflow_dropped += points
            return False
        self._buffer.append((chunk, points, None))
        self.stats.buffer_points += points
        if self.stats.buffer_points >= self.config.batch_size:
            self._wake.set()
        return True

    def flush_now(self) -> None:
        self._wake.set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Raises `TlsSetupError` when the TLS files cannot be used."""
        c = self.config
        timeout = aiohttp.ClientTimeout(total=float(c.timeout))
        context = ssl_context(c)
        if c.api == "v1":
            headers = {}
            if c.username and c.password is not None:
                headers["Authorization"] = aiohttp.encode_basic_auth(
                    c.username, c.password.reveal()
                )
            connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
            self._session = aiohttp.ClientSession(
                timeout=timeout, headers=headers, connector=connector
            )
        else:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            self._client = InfluxDBClientAsync(
                url=c.url,
                token=c.token.reveal() if c.token is not None else "",
                org=c.org,
                timeout=int(float(c.timeout) * 1000),
                # We gzip ourselves at level 1: the client's level 9 cost 3.5x the CPU of
                # level 1 for 20 % less bytes, and was the collector's largest cost.
                enable_gzip=False,
                ssl_context=context,
            )
        self._task = asyncio.create_task(self._run())

    async def close(self, grace: float = 10.0) -> None:
        """Write what is buffered (within `grace` seconds), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        if self._client is not None:
            await self._client.close()  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- the writer task

    async def _run(self) -> None:
        interval = float(self.config.flush_interval)
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                if not self._buffer:
                    continue
            elif not self._closing and self.stats.buffer_points < self.config.batch_size:
                # wait for more, up to the flush interval, unless woken
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
            await self._write_batch()

    def _take(self) -> tuple[list[bytes], int, list[Callable[[], None] | None]]:
        chunks: list[bytes] = []
        points = 0
        callbacks: list[Callable[[], None] | None] = []
        limit = self.config.batch_size
        for chunk, count, callback in self._buffer:
            if chunks and points + count > limit:
                break
            chunks.append(chunk)
            points += count
            callbacks.append(callback)
        return chunks, points, callbacks

    async def _write_batch(self) -> None:
        chunks, points, callbacks = self._take()
        body = gzip(b"".join(chunks))
        delay = 0.5
        while True:
            try:
                await self._send(body)
                self.stats.points_written += points
                self.stats.batches_written += 1
                self.healthy = True
                self._outage.ok("InfluxDB writes", url=self.config.url)
                if self._refusals:
                    log.info(
                        "InfluxDB accepts writes again, after %d refused batches",
                        self._refusals,
                        url=self.config.url,
                    )
                    self._refusals = self._refused_status = 0
                break
            except WriteRefused as exc:
                self._refused(exc, points)
                break
            except WriteFailed as exc:
                self.healthy = False
                self.stats.retries += 1
                self.stats.errors["retryable"] += 1
                self.stats.last_error = str(exc)
                self._outage.failed("InfluxDB writes", exc, url=self.config.url)
                if exc.retry_after is not None:
                    wait = exc.retry_after
                else:
                    wait = delay * random.uniform(0.8, 1.2)
                    delay = min(30.0, delay * 2)
                await asyncio.sleep(wait)
        for _ in callbacks:
            self._buffer.popleft()
        self.stats.buffer_points -= points
        for callback in callbacks:
            if callback is not None:
                callback()
        async with self._space:
            self._space.notify_all()

    def _refused(self, exc: WriteRefused, points: int) -> None:
        """A batch refused for good: count, log once per streak (and per new status)."""
        dropped = points if exc.dropped is None else min(points, exc.dropped)
        self.stats.points_dropped += dropped
        self.stats.points_written += points - dropped  # a partial write's rest
        self.stats.batches_refused += 1
        self.stats.errors[f"http_{exc.status}"] += 1
        self.stats.last_error = str(exc)
        if exc.status in LINK_REFUSALS:
            self.healthy = False
        if exc.status != self._refused_status:
            log.error(
                "InfluxDB refused a batch for good (%s): %d of its %d points dropped and "
                "acknowledged, not retried; further refusals are only counted until a write "
                "is accepted",
                exc,
                dropped,
                points,
                url=self.config.url,
                status=exc.status,
            )
            self._refused_status = exc.status
        self._refusals += 1

    async def _send(self, data: bytes) -> None:
        """POST one gzip-compressed batch."""
        try:
            if self.config.api == "v1":
                await self._send_v1(data)
            else:
                await self._send_v2(data)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise WriteFailed(self._untrusted(exc)) from None
        except aiohttp.ClientSSLError as exc:
            raise WriteFailed(f"TLS with {self._where()} failed: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WriteFailed(f"{type(exc).__name__}: {exc}") from None
        self.stats.bytes_sent += len(data)

    async def _send_v1(self, data: bytes) -> None:
        c = self.config
        assert self._session is not None
        params = {"db": c.database, "precision": PRECISION}
        if c.retention_policy:
            params["rp"] = c.retention_policy
        async with self._session.post(
            c.url.rstrip("/") + "/write",
            params=params,
            data=data,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        ) as response:
            text = await response.text()
            self._check(response.status, text, response.headers.get("Retry-After"))

    async def _send_v2(self, data: bytes) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.rest import ApiException
        from influxdb_client.service.write_service import WriteService

        c = self.config
        assert self._client is not None
        try:
            service = WriteService(self._client.api_client)  # type: ignore[attr-defined,no-untyped-call]
            await service.post_write_async(  # type: ignore[no-untyped-call]
                org=c.org,
                bucket=c.bucket,
                body=data,
                precision=PRECISION,
                content_encoding="gzip",
                content_type="text/plain; charset=utf-8",
            )
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
            self._check(int(exc.status or 0), str(exc.message or exc.reason), exc.retry_after, body)
        except InfluxDBError as exc:
            raise WriteFailed(str(exc)) from None

    def _where(self) -> str:
        parts = urlsplit(self.config.url)
        return f"InfluxDB at {parts.hostname}:{parts.port or 443}"

    def _untrusted(self, exc: aiohttp.ClientConnectorCertificateError) -> str:
        tls = self.config.tls
        ca = f"influxdb.tls.ca_file {tls.ca_file}" if tls and tls.ca_file else "the system CAs"
        return (
            f"TLS: the certificate of {self._where()} is not trusted by {ca} "
            f"(set influxdb.tls.ca_file to the CA that issued it): {exc.certificate_error}"
        )

    @staticmethod
    def _check(status: int, text: str, retry_after: str | None, body: object = "") -> None:
        """`text`: the server's message; `body`: its whole answer when that is more."""
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500 or status == 0:
            raise WriteFailed(f"HTTP {status}: {text[:200]}", parse_retry_after(retry_after))
        whole = body if isinstance(body, str) and body else text
        raise WriteRefused(status, text[:300], partial_dropped(whole))


def ssl_context(config: InfluxConfig) -> ssl.SSLContext | None:
    """The TLS context of an https:// InfluxDB URL (None for http://): the server's
    certificate must chain to `influxdb.tls.ca_file` (or the system CAs) and name the host;
    `cert_file`/`key_file` are the collector's own. For every client of the collector's
    InfluxDB (the writer, the device page's InfluxQL reads). Raises `TlsSetupError`
    naming the files when they cannot be used."""
    if not config.url.startswith("https://"):
        return None
    return tls_context(config.tls, what="InfluxDB")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), at most
    `MAX_RETRY_AFTER`; None without a usable one."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))
