"""`nats`: the collector's ingest from NATS JetStream instead of `mqtt` (collector/nats_ingest.py).

Its own module so that the collector's config stays one screen per section; the
collector's config (collector/config.py) holds it as `nats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enoc.config import (
    Checked,
    ConfigIssue,
    Duration,
    Secret,
    TlsConfig,
    check_tls_files,
    skipping_unread,
)
from enoc.logs import redact
from enoc.mqtt import MAX_MESSAGE_SIZE

# Where the NATS MQTT gateway stores every QoS 1 PUBLISH before its PUBACK (server/mqtt.go,
# mqttProcessPub: jsa.storeMsg under "$MQTT.msgs.<subject>"), and that prefix.
MQTT_STREAM = "$MQTT_msgs"
MQTT_PREFIX = "$MQTT.msgs."
NATS_OR_MQTT = "nats and mqtt: the collector ingests from one; give nats or mqtt, not both"


@dataclass(frozen=True)
class NatsConfig:
    """`nats`: where the collector replicas consume, as one group, what agents publish over
    MQTT to the NATS cluster's MQTT gateway (docs/collector.md, "NATS JetStream")."""

    servers: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # The stream consumed. `$MQTT_msgs` (the default): the one the MQTT gateway stores each
    # QoS 1 message in before it sends the PUBACK; any other name: a stream of the
    # collector's own over `subjects`, which NATS fills after the PUBACK (see the docs).
    stream: str = MQTT_STREAM
    # The durable pull consumers all replicas share: `<consumer>-metrics`, `<consumer>-events`.
    consumer: str = "enoc-collectors"
    # The subjects of enoc's MQTT topics: enoc/v1/<site>/<agent>/<kind> is published by
    # the gateway as enoc.v1.<site>.<agent>.<kind> (in `$MQTT_msgs` under "$MQTT.msgs.").
    subjects: list[str] = field(default_factory=lambda: ["enoc.v1.>"])
    replicas: int = 3  # nodes the stream (and consumers) are replicated on
    # Messages handed out and not yet acknowledged, per lane, shared by every replica (the
    # consumer's window): back-pressure. N replicas hold about 1/N of it each, so it is
    # sized for several (enoc bench scale: 100 held 4 replicas to 0.48 times one).
    max_ack_pending: int = 1000
    ack_wait: Duration = Duration(30)  # then the server hands a message to another replica
    nak_delay: Duration = Duration(5)  # a message the store could not commit comes again after
    batch: int = 20  # messages a fetch asks for
    name: str = "enoc-collector"  # this replica, as the servers list its connection
    tls: TlsConfig | None = None  # with tls:// servers
    credentials_file: Path | None = None  # a NATS .creds file (JWT and NKey seed)
    username: str | None = None
    password: Secret | None = None  # or password_file (a Secret's file)
    # Bytes: a larger payload is dead-lettered without being decoded.
    max_message_size: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("nats.servers: give at least one nats:// or tls:// URL")
        for url in self.servers:
            parts = urlsplit(url)
            if parts.scheme not in ("nats", "tls") or not parts.hostname:
                raise ValueError(
                    "nats.servers: expected nats://HOST:PORT or tls://HOST:PORT, "
                    f'got "{redact(url)}"'
                )
        if not self.stream or any(c in self.stream for c in " .*>"):
            raise ValueError(f'nats.stream: a stream name without " .*>", got "{self.stream}"')
        if not self.consumer or any(c in self.consumer for c in " .*>"):
            raise ValueError(f'nats.consumer: a name without " .*>", got "{self.consumer}"')
        if not self.subjects or any(not s.startswith("enoc.") for s in self.subjects):
            raise ValueError("nats.subjects: enoc's subjects, e.g. enoc.v1.>")
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"nats.replicas must be 1 to 5, got {self.replicas}")
        if self.max_ack_pending < 1 or self.batch < 1 or self.batch > self.max_ack_pending:
            raise ValueError("nats.batch must be at least 1 and at most nats.max_ack_pending")
        if float(self.ack_wait) < 1 or float(self.nak_delay) < 0:
            raise ValueError("nats.ack_wait must be at least 1s and nats.nak_delay not negative")
        if self.credentials_file is not None and self.username is not None:
            raise ValueError("nats.credentials_file and nats.username: give one way to log in")
        if (self.username is None) != (self.password is None):
            raise ValueError("nats.username and nats.password (or password_file) go together")
        if not 1024 <= self.max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(
                f"nats.max_message_size must be 1024 to {MAX_MESSAGE_SIZE} bytes, "
                f"got {self.max_message_size}"
            )

    @property
    def prefix(self) -> str:
        """What the stream's subjects start with before enoc's own."""
        return MQTT_PREFIX if self.stream == MQTT_STREAM else ""


def check_nats(checked: Checked[Any], config: Any, *, mqtt_given: bool) -> None:
    """What `check_collector` checks of the collector's `nats`: not beside `mqtt`, its files
    readable; and advises, as for a shared subscription, on what replicas share."""
    nats: NatsConfig | None = config.nats
    if nats is None:
        return
    if mqtt_given:
        checked.error("mqtt", NATS_OR_MQTT)
    advice = []
    if str(config.store.url).startswith("sqlite"):
        advice.append(
            (
                "store.url",
                "replicas sharing the NATS consumers agree on incidents "
                "only through one PostgreSQL; each SQLite file sees only its share",
            )
        )
    if config.recent.source == "local":
        advice.append(
            (
                "recent.source",
                "is local with NATS consumers shared by replicas: the "
                "device page of each shows only its share; set it to influxdb",
            )
        )
    for key, text in advice:
        issue = ConfigIssue(checked.file, checked.line_of(key), key, text, warning=True)
        checked.add(issue, notes=True)
    with skipping_unread():
        check_tls_files(checked, "nats.tls", nats.tls, "NATS")
        if nats.credentials_file is not None and not nats.credentials_file.is_file():
            checked.error("nats.credentials_file", f"no such file: {nats.credentials_file}")
