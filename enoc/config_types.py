"""The value types of enoc's configs and the sections several parts share: what a schema's
fields are written with (`enoc.config` loads and checks; this is what it converts into).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from enoc.logs import register_secret

# ------------------------------------------------------------------ value types


class Duration(float):
    """Seconds, written as 90s, 5m, 1h, 250ms, 1h30m or a plain number of seconds."""

    _PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
    _UNITS: typing.ClassVar[dict[str, float]] = {
        "ms": 0.001,
        "s": 1,
        "m": 60,
        "h": 3600,
        "d": 86400,
    }

    @classmethod
    def parse(cls, text: str) -> Duration:
        text = text.strip()
        try:
            return cls(float(text))
        except ValueError:
            pass
        pos, total = 0, 0.0
        for match in cls._PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * cls._UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(text)
        return cls(total)


class Secret:
    """A secret value: never shown by repr/str, and redacted from every log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(text)
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ------------------------------------------------------------------ shared sections


@dataclass(frozen=True)
class TlsConfig:
    """The TLS files of a client connection (MQTT, InfluxDB): the CA to trust (None: the
    system's), and an optional client certificate with its key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"


def check_broker_url(key: str, url: str) -> None:
    """A broker URL's scheme (check-config checks its host and port: `enoc.config.check_url`)."""
    if not url.startswith(("mqtt://", "mqtts://")):
        raise ValueError(f'{key} must start with mqtt:// or mqtts://, got "{url}"')


@dataclass(frozen=True)
class MqttBroker:
    """Where an MQTT client connects and how it logs in: the `mqtt` section's part that
    the agent's and the collector's share. `url` is one broker; `urls` the nodes of a
    cluster, each client trying them in an order of its own (enoc.brokers)."""

    # "" when not given: the default broker, or none with `urls` (both given is an error).
    url: str = ""  # mqtts:// for TLS
    urls: list[str] | None = None
    tls: TlsConfig | None = None
    username: str | None = None
    password: Secret | None = None

    def __post_init__(self) -> None:
        if self.urls is None:
            object.__setattr__(self, "url", self.url or DEFAULT_BROKER_URL)
            check_broker_url("mqtt.url", self.url)
            return
        if self.url:
            raise ValueError(
                "mqtt.urls and mqtt.url are both given: keep one (urls lists every broker)"
            )
        if not self.urls:
            raise ValueError("mqtt.urls must list at least one broker URL")
        for i, url in enumerate(self.urls):
            check_broker_url(f"mqtt.urls[{i}]", url)
            if url in self.urls[:i]:
                raise ValueError(f"mqtt.urls[{i}] repeats mqtt.urls[{self.urls.index(url)}]: {url}")

    @property
    def brokers(self) -> list[str]:
        """Every broker this client may connect to, as configured."""
        return list(self.urls) if self.urls is not None else [self.url]

    def url_keys(self) -> list[tuple[str, str]]:
        """(config key, URL) of each broker, for check-config's reachability checks."""
        if self.urls is None:
            return [("mqtt.url", self.url)]
        return [(f"mqtt.urls[{i}]", url) for i, url in enumerate(self.urls)]


@dataclass(frozen=True)
class LogConfig:
    format: Literal["logfmt", "json"] = "logfmt"
    level: Literal["debug", "info", "warning", "error"] = "info"
