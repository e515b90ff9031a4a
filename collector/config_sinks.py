"""The collector's metrics sinks' settings: the `influxdb` section and `sinks:` entries.

Its own module so that the collector's config (collector/config.py) stays one screen per
section; collector/config.py imports these names, which stay the contract's there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from enoc.config import Duration, Secret, TlsConfig
from enoc.logs import redact


@dataclass(frozen=True)
class InfluxConfig:
    url: str  # https:// checks the server's certificate against tls.ca_file or the system CAs
    api: Literal["v2", "v1"] = "v2"
    # For an https:// url: {ca_file, cert_file, key_file}, the CA that issued InfluxDB's
    # certificate (a private one) and an optional client certificate for a TLS proxy that
    # asks for one. collector.sinks.influx.ssl_context builds the context from it.
    tls: TlsConfig | None = None
    org: str = ""
    bucket: str = ""
    token: Secret | None = None
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: Secret | None = None
    batch_size: int = 5000  # lines per write (InfluxData's advice)
    flush_interval: Duration = Duration(1)
    max_buffer_points: int = 200_000  # then consumption pauses (backpressure)
    timeout: Duration = Duration(10)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f'influxdb.url must start with http:// or https://, got "{redact(self.url)}"'
            )
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("influxdb.tls needs an https:// url")
        if self.tls is not None and self.tls.key_file and not self.tls.cert_file:
            raise ValueError("influxdb.tls.key_file needs cert_file")
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("influxdb api v2 needs org and bucket (and token or token_file)")
        if self.api == "v1" and not self.database:
            raise ValueError("influxdb api v1 needs database")


@dataclass(frozen=True)
class InfluxSinkConfig(InfluxConfig):
    """A `sinks:` entry's `influxdb`: the keys of the `influxdb` section, and a name."""

    name: str = ""  # in /healthz and the counters; default the kind


@dataclass(frozen=True)
class RemoteWriteConfig:
    """A `sinks:` entry's `remote_write`: Prometheus remote write (collector/sinks/
    remote_write.py), e.g. VictoriaMetrics' `http://HOST:8428/api/v1/write`."""

    url: str
    name: str = ""  # in /healthz and the counters; default the kind
    tls: TlsConfig | None = None  # for an https:// url, as influxdb.tls
    username: str = ""  # HTTP basic authentication, with password
    password: Secret | None = None
    token: Secret | None = None  # sent as "Authorization: Bearer <token>"
    batch_size: int = 5000  # lines per write
    flush_interval: Duration = Duration(1)
    max_buffer_points: int = 200_000  # then consumption pauses (backpressure)
    timeout: Duration = Duration(10)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f'url must start with http:// or https://, got "{redact(self.url)}"')
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls needs an https:// url")
        if self.tls is not None and self.tls.key_file and not self.tls.cert_file:
            raise ValueError("tls.key_file needs cert_file")
        if self.token is not None and (self.username or self.password is not None):
            raise ValueError("token is a login of its own: give it or username and password")
        if (self.password is not None) != bool(self.username):
            raise ValueError("password and username go together")
        if self.batch_size < 1 or self.max_buffer_points < 1:
            raise ValueError("batch_size and max_buffer_points must be at least 1")


@dataclass(frozen=True)
class SinkConfig:
    """One `sinks:` entry: a single key, the sink's kind, whose value is that kind's
    settings (`- remote_write: {url: ...}`). A kind is a field here and an entry of
    collector.sinks.SINKS, the registry."""

    influxdb: InfluxSinkConfig | None = None
    remote_write: RemoteWriteConfig | None = None

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            kinds = ", ".join(f.name for f in fields(self))
            raise ValueError(
                f"a sinks entry names one kind ({kinds}), got {', '.join(given) or 'none'}"
            )

    @property
    def kind(self) -> str:
        """The kind given ("" in an entry that gives none, which __post_init__ refuses)."""
        return next((f.name for f in fields(self) if getattr(self, f.name) is not None), "")

    @property
    def settings(self) -> InfluxSinkConfig | RemoteWriteConfig:
        settings: InfluxSinkConfig | RemoteWriteConfig = getattr(self, self.kind)
        return settings


RESERVED_SINK_NAMES = {"mqtt", "nats", "store"}  # the other links of /healthz


def sink_name(sink: SinkConfig | None) -> str:
    """A sink's name: its `name`, else its kind; the `influxdb:` section (None) is
    `influxdb`."""
    if sink is None:
        return "influxdb"
    return sink.settings.name or sink.kind
