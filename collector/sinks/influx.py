"""The `influxdb` sink: batched, acknowledged writes to InfluxDB (v2 or v1 API).

The buffer, batching, backpressure and retries are `collector.sinks.base.BufferedSink`'s:
a message's `on_written` is called only after the server accepted its lines (or refused
them for good), and the collector acknowledges the MQTT message then, so a crash never
loses an acknowledged point.

Gzip is ISA-L's (`isal.igzip`, level 1): a fraction of zlib's CPU at level 1
for slightly smaller output (docs/performance.md has the figures).

Errors: connection errors, TLS failures, 5xx and 429 (`WriteFailed`) are retried with
backoff (0.5 s doubling to 30 s, with jitter) forever, or after the server's Retry-After
(seconds or an HTTP date, at most 60 s: `enoc.retry.parse_retry_after`) when it sends
one: the batch stays in the buffer, the buffer fills, `write` waits and consumption
pauses, so nothing is acknowledged that is not written.

A refusal of lines (400, 413, 422: a line that does not parse, a field type
conflict, a line too large, a point beyond the retention) costs only the lines
refused: those the answer names (`unable to parse '<line>'`) are set apart, the
rest is sent again, and what is still refused is halved until each refused
line stands alone (at most ISOLATION_REQUESTS writes a batch). A refused line
is dead-lettered with the server's reason (`enoc/deadletter/v1/influx_refused`,
through `dead_letters`) and counted by device (`SinkStats.lines_refused`);
every other line of the batch, whatever its device, is written. Writing a line
again is harmless: a point is its series and time, written twice it is the same.

Any other 4xx can never succeed: 401 (bad token or password), 403 (not allowed
to write), 404 (missing bucket or database)... The batch gets one attempt, is
dropped and its messages acknowledged: redelivering them would block every
later message behind them. Its points count as dropped. One line is logged per
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

import json
import re
import ssl
import time
from urllib.parse import urlsplit

import aiohttp
from isal import igzip

from collector.config_sinks import InfluxConfig
from collector.lineproto import PRECISION, zero_upper
from collector.sinks.base import (
    BufferedSink,
    WriteFailed,
    WriteRefused,
)
from collector.sinks.deadletters import DeadLetters
from enoc.logs import get_logger
from enoc.mqtt import tls_context
from enoc.retry import http_status_retryable, parse_retry_after

log = get_logger("enoc.collector.influx")

_PARTIAL = re.compile(r"\bdropped=(\d+)")
_UNPARSED = re.compile(r"unable to parse \\?'")
# Refusals of some lines of a batch, found and set apart; the rest is written.
LINE_REFUSALS = {400, 413, 422}
ISOLATION_REQUESTS = 256  # writes spent finding a batch's refused lines, at most
DEAD_LETTER_REASON = "influx_refused"  # enoc/deadletter/v1/<this>
_NAMED = "unable to parse '"


def gzip(data: bytes) -> bytes:
    """ISA-L's gzip at level 1, then the AVX registers' upper halves cleared: ISA-L returns
    from its AVX-512 code without `vzeroupper` (intel/isa-l#24), and until something
    clears them every legacy SSE instruction of the process pays for it, the collector's
    metrics pass among them (docs/performance.md)."""
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


def server_message(body: str) -> str:
    """The error text of a refusal: InfluxDB 1.x's `error`, 2.x's `message`, else the body."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if isinstance(answer, dict):
        for key in ("error", "message"):
            if isinstance(answer.get(key), str):
                return str(answer[key])
    return body


def named_lines(message: str) -> dict[str, str]:
    """The lines an error names as not parsing (InfluxDB 1.x and 2.x: `unable to parse
    '<line>': <why>`, one a line), each with its reason."""
    named = {}
    for part in message.split("\n"):
        start = part.find(_NAMED)
        if start < 0:
            continue
        line, sep, why = part[start + len(_NAMED) :].rpartition("': ")
        if sep:
            named[line] = _PARTIAL.sub("", why).strip()
    return named


def line_device(line: bytes) -> str:
    """The `device` tag of a line ("" without one). Sanitised tag values hold no backslash
    before a separator (lineproto.sanitise_tag_value), so an unescaped one is the end."""
    head_end = 0
    while True:
        head_end = line.find(b" ", head_end + 1)
        if head_end < 0 or line[head_end - 1] != 0x5C:  # a backslash
            break
    head = line if head_end < 0 else line[:head_end]
    start = head.find(b",device=")
    if start < 0:
        return ""
    start += len(b",device=")
    end = start
    while True:
        end = head.find(b",", end + 1)
        if end < 0 or head[end - 1] != 0x5C:
            break
    value = head[start:] if end < 0 else head[start:end]
    text = value.decode(errors="replace")
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


class InfluxWriter(BufferedSink):
    """The `influxdb` sink: InfluxDB's v2 or v1 write API (see the module's docstring)."""

    what = "InfluxDB"
    link = "InfluxDB writes"

    def __init__(
        self, config: InfluxConfig, dead_letters: DeadLetters | None = None, name: str = "influxdb"
    ) -> None:
        super().__init__(name, config, log)
        self.config = config
        self.dead_letters = dead_letters
        self._session: aiohttp.ClientSession | None = None
        self._client: object | None = None

    async def _open(self) -> None:
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
                # We gzip ourselves at level 1: the client's level 9 costs several times
                # the CPU for little fewer bytes (docs/performance.md).
                enable_gzip=False,
                ssl_context=context,
            )

    async def _shut(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()  # type: ignore[attr-defined]

    async def _deliver(self, data: bytes, points: int) -> None:
        try:
            await self._send_until_answered(gzip(data))
            self._accepted(points)
            self.stats.batches_written += 1
        except WriteRefused as exc:
            if exc.status in LINE_REFUSALS:
                await self._isolate(data, exc)
            else:
                self._refused(exc, points)

    async def _isolate(self, data: bytes, first: WriteRefused) -> None:
        """A batch the server refused lines of: the refused lines found (those the answer
        names, then by halving what is still refused), dead-lettered and counted; the
        rest written."""
        lines = data.split(b"\n")[:-1]
        named = named_lines(server_message(first.body))
        refused: list[tuple[bytes, str]] = []
        undecided: list[bytes] = []
        for line in lines:
            why = named.get(line.decode(errors="replace")) if named else None
            if why is not None:
                refused.append((line, f"unable to parse: {why}"))
            else:
                undecided.append(line)
        # The whole batch is known refused unless the answer named lines: then try the rest.
        parts: list[tuple[list[bytes], WriteRefused | None]] = [
            (undecided, None if refused else first)
        ]
        written = 0
        budget = ISOLATION_REQUESTS
        link: WriteRefused | None = None
        while parts:
            part, known = parts.pop()
            if not part:
                continue
            if known is None:
                if budget == 0 or link is not None:
                    why = "not written: " + (
                        str(link) if link is not None else "the batch's refused lines not found"
                    )
                    refused += [(line, why) for line in part]
                    continue
                budget -= 1
                self.stats.isolation_requests += 1
                try:
                    await self._send_until_answered(gzip(b"".join(x + b"\n" for x in part)))
                    written += len(part)
                    continue
                except WriteRefused as exc:
                    if exc.status not in LINE_REFUSALS:  # the link: nothing more goes in
                        link = exc
                        refused += [(line, str(exc)) for line in part]
                        continue
                    known = exc
            if len(part) == 1:
                refused.append((part[0], str(known)))
                continue
            half = len(part) // 2
            parts += [(part[half:], None), (part[:half], None)]
        if not refused:  # refused together, written apart (a conflict within the batch)
            self._accepted(written)
            return
        self.stats.points_written += written
        await self._refused_lines(refused, len(lines), link or first)

    async def _refused_lines(
        self, refused: list[tuple[bytes, str]], lines: int, exc: WriteRefused
    ) -> None:
        """Lines refused for good: counted by device, dead-lettered, logged once per
        streak."""
        stats = self.stats
        stats.points_dropped += len(refused)
        first = self._count_refusal(exc)
        letters = []
        received = time.time()
        for line, why in refused:
            device = line_device(line)
            stats.lines_refused[device] += 1
            letters.append(
                {
                    "reason": DEAD_LETTER_REASON,
                    "error": why,
                    "device": device,
                    "line": line[:65536].decode(errors="replace"),
                    "received": received,
                }
            )
        if letters and self.dead_letters is not None:
            stats.dead_lettered += await self.dead_letters(DEAD_LETTER_REASON, letters)
        if first:
            log.error(
                "InfluxDB refused lines of a batch for good (%s): %d of its %d lines "
                "dead-lettered to enoc/deadletter/v1/%s and counted by device, the rest "
                "written; further refusals are only counted until a batch is written whole",
                exc,
                len(refused),
                lines,
                DEAD_LETTER_REASON,
                url=self.config.url,
                status=exc.status,
            )

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
        if http_status_retryable(status):
            raise WriteFailed(f"HTTP {status}: {text[:200]}", parse_retry_after(retry_after))
        whole = body if isinstance(body, str) and body else text
        raise WriteRefused(status, text[:300], partial_dropped(whole), whole)


def ssl_context(config: InfluxConfig) -> ssl.SSLContext | None:
    """The TLS context of an https:// InfluxDB URL (None for http://): the server's
    certificate must chain to `influxdb.tls.ca_file` (or the system CAs) and name the host;
    `cert_file`/`key_file` are the collector's own. For every client of the collector's
    InfluxDB (the writer, the device page's InfluxQL reads). Raises `TlsSetupError`
    naming the files when they cannot be used."""
    if not config.url.startswith("https://"):
        return None
    return tls_context(config.tls, what="InfluxDB")
