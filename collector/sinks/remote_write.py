"""The `remote_write` sink: Prometheus remote write (protocol 1.0) into VictoriaMetrics,
Prometheus, Mimir, Thanos or Cortex.

It takes the same lines as the InfluxDB sink and makes one sample per numeric field of
each: the series is named `<measurement>_<field>` and labelled with the point's tags,
as VictoriaMetrics names the lines it receives on its InfluxDB endpoints, so a dashboard
reads the same series whichever way they came in. Names and label names are made to
Prometheus's rules (`metric_name`, `label_name`); a string field has no sample (a
Prometheus sample is a number) and a boolean is 1 or 0.

The request is a `WriteRequest` message built with protobuf (its four messages declared
below: prometheus/prompb's remote.proto and types.proto, the fields a sample needs) and
compressed with snappy's block format (cramjam), the one encoding the protocol names and
the only one VictoriaMetrics 1.79 takes on /api/v1/write (zstd and no compression:
"snappy: corrupt input", 400). The lines are read back with line-protocol-parser.

Errors as the protocol says: 5xx and 429 are retried (the buffer's backoff, or the
server's Retry-After), any other 4xx refuses the batch for good (counted, logged once
per streak; 401, 403 and 404 mark the sink unhealthy until a write succeeds). A line
that cannot be read back is counted by device and left out; the rest of its batch goes.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from line_protocol_parser import LineFormatError, parse_line

from collector.config_sinks import RemoteWriteConfig
from collector.sinks.base import BufferedSink, WriteFailed, WriteRefused
from collector.sinks.influx import line_device
from enoc import __version__
from enoc.logs import get_logger
from enoc.mqtt import tls_context
from enoc.retry import http_status_retryable, parse_retry_after

log = get_logger("enoc.collector.remote_write")

_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_NOT_IN_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_CACHE_LIMIT = 100_000  # names kept made; emptied when full (a fleet's names fit many times)
_names: dict[str, str] = {}
_labels: dict[str, str] = {}
_series: dict[tuple[bytes, str], bytes] = {}  # (line head, field) -> its labels, encoded
_HEAD_END = re.compile(rb"(?<!\\) ")  # a line's first unescaped space ends its head


def _write_request() -> Any:
    """The WriteRequest message class, declared in code (no protoc step in the build)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="enoc/prometheus_remote.proto", package="prometheus", syntax="proto3"
    )
    once, many = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    shapes: dict[str, list[tuple[str, int, int, int, str]]] = {
        "Label": [
            ("name", 1, field.TYPE_STRING, once, ""),
            ("value", 2, field.TYPE_STRING, once, ""),
        ],
        "Sample": [
            ("value", 1, field.TYPE_DOUBLE, once, ""),
            ("timestamp", 2, field.TYPE_INT64, once, ""),  # milliseconds since the epoch
        ],
        "TimeSeries": [
            ("labels", 1, field.TYPE_MESSAGE, many, ".prometheus.Label"),
            ("samples", 2, field.TYPE_MESSAGE, many, ".prometheus.Sample"),
        ],
        "WriteRequest": [("timeseries", 1, field.TYPE_MESSAGE, many, ".prometheus.TimeSeries")],
    }
    for name, fields in shapes.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            one = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                one.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request()
_TimeSeries = type(WriteRequest().timeseries.add())


_SITE_TAG = re.compile(rb",site=((?:\\.|[^,\\])*)")
_ESCAPED = re.compile(rb"\\(.)")


def forget_series(keep: Callable[[str], bool]) -> int:
    """Drop the labels kept for every series whose `site` tag `keep` refuses (a site
    another replica owns now: collector/partition.py); how many were dropped."""
    gone = []
    for head, key in _series:
        found = _SITE_TAG.search(head)
        site = _ESCAPED.sub(rb"\1", found.group(1)).decode(errors="replace") if found else ""
        if found and not keep(site):
            gone.append((head, key))
    for entry in gone:
        del _series[entry]
    return len(gone)


def metric_name(text: str) -> str:
    """`text` as a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, each other character
    an underscore, a leading digit after one."""
    name = _names.get(text)
    if name is None:
        name = _NOT_IN_NAME.sub("_", text)
        if not name or name[0].isdigit():
            name = "_" + name
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        _names[text] = name
    return name


def label_name(text: str) -> str:
    """`text` as a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, each other character an
    underscore, a leading digit after one; a name that would begin with `__` (reserved
    for Prometheus's own) gets `tag` before it."""
    name = _labels.get(text)
    if name is None:
        name = _NOT_IN_LABEL.sub("_", text)
        if not name or name[0].isdigit():
            name = "_" + name
        if name.startswith("__"):
            name = "tag" + name
        if len(_labels) >= _CACHE_LIMIT:
            _labels.clear()
        _labels[text] = name
    return name


def tag_labels(point: dict[str, Any]) -> list[tuple[str, str]]:
    """A parsed line's tags as labels: names made to the rules, of two that read alike the
    first by key."""
    tags: dict[str, str] = {}
    for key, value in sorted(point["tags"].items()):
        tags.setdefault(label_name(key), value)
    return list(tags.items())


def series_labels(tags: list[tuple[str, str]], measurement: str, key: str) -> bytes:
    """The labels of one field's series, sorted by name as the protocol asks, as the bytes
    of a TimeSeries that holds only them."""
    series = _TimeSeries()
    for name, value in sorted([*tags, ("__name__", metric_name(f"{measurement}_{key}"))]):
        series.labels.add(name=name, value=value)
    return bytes(series.SerializeToString())


def encode(data: bytes) -> tuple[bytes, list[bytes]]:
    """Line protocol as a snappy-compressed WriteRequest, and the lines it could not read.

    A series' labels are made once and kept by the line's head (its measurement and tags,
    up to the first unescaped space) and field: a poll's lines repeat the last poll's."""
    request = WriteRequest()
    series = request.timeseries
    unread: list[bytes] = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            point = parse_line(line.decode())
        except (LineFormatError, UnicodeDecodeError, ValueError):
            unread.append(line)
            continue
        head = _HEAD_END.split(line, 1)[0]
        at = int(point["time"])
        tags: list[tuple[str, str]] | None = None
        for key, value in point["fields"].items():
            if isinstance(value, str):
                continue
            labels = _series.get((head, key))
            if labels is None:
                if tags is None:
                    tags = tag_labels(point)
                labels = series_labels(tags, point["measurement"], key)
                if len(_series) >= _CACHE_LIMIT:
                    _series.clear()
                _series[head, key] = labels
            one = series.add()
            one.MergeFromString(labels)
            one.samples.add(value=float(value), timestamp=at)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString())), unread


class RemoteWriteSink(BufferedSink):
    """A `sinks:` entry of kind remote_write (see the module's docstring)."""

    what = "the remote-write server"
    link = "remote writes"

    def __init__(self, config: RemoteWriteConfig, name: str = "remote_write") -> None:
        super().__init__(name, config, log)
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        """Raises `TlsSetupError` when the TLS files cannot be used."""
        c = self.config
        context: ssl.SSLContext | None = None
        if c.url.startswith("https://"):
            context = tls_context(c.tls, what=f"remote write {self.name}")
        headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"enoc-collector/{__version__}",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        if c.token is not None:
            headers["Authorization"] = f"Bearer {c.token.reveal()}"
        elif c.username and c.password is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(c.username, c.password.reveal())
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=float(c.timeout)),
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context) if context is not None else None,
        )

    async def _shut(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _deliver(self, data: bytes, points: int) -> None:
        body, unread = encode(data)
        if unread:  # our own lines: a bug, not the server's answer; counted, not retried
            self.stats.points_dropped += len(unread)
            for line in unread:
                self.stats.lines_refused[line_device(line)] += 1
            self._outage.failed(
                "remote write: reading lines back", f"{len(unread)} unreadable", url=self.url
            )
        try:
            await self._send_until_answered(body)
            self._accepted(points - len(unread))
            self.stats.batches_written += 1
        except WriteRefused as exc:
            self._refused(exc, points - len(unread))

    async def _send(self, body: bytes) -> None:
        assert self._session is not None
        try:
            async with self._session.post(self.config.url, data=body) as response:
                status = response.status
                if 200 <= status < 300:
                    self.stats.bytes_sent += len(body)
                    return
                text = (await response.text(errors="replace"))[:300]
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientSSLError as exc:
            raise WriteFailed(f"TLS with remote-write sink {self.name} failed: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WriteFailed(f"{type(exc).__name__}: {exc}") from None
        if http_status_retryable(status):
            raise WriteFailed(f"HTTP {status}: {text[:200]}", parse_retry_after(retry_after))
        raise WriteRefused(status, text)
