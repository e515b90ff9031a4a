"""`partition`: collector replicas that split the sites between them (collector/partition.py).

Its own module so that the collector's config stays one screen per section; the
collector's config (collector/config.py) holds it as `partition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from enoc.config import Checked, ConfigIssue, Duration

PARTITION_NEEDS_MQTT = (
    "partition: the sites are routed to their owner by MQTT subscriptions; with nats "
    "every replica still takes a share of every site. On a NATS cluster, partition "
    "through its MQTT gateways instead: mqtt.urls over them in place of nats "
    "(docs/collector.md, Partitioning)"
)


@dataclass(frozen=True)
class PartitionConfig:
    """`partition`: each replica owns a share of the sites (highest-random-weight hashing
    of the site's name over the live replicas), subscribes to those alone and keeps
    per-device state for them alone (docs/collector.md, "Partitioning")."""

    # This replica's name among the others (empty: its mqtt.client_id). Keep it across
    # restarts: the replica resumes its MQTT sessions and its share under it.
    id: str = ""
    # The URL of this replica's API as the others reach it (empty: http://<http.listen>);
    # a device page of a site owned elsewhere is asked of its owner there.
    url: str = ""
    # A replica whose heartbeat is older than this is dead: its sites move to the others.
    takeover: Duration = Duration(15)
    # How often each replica writes its heartbeat and reads the others' (0: takeover / 5).
    heartbeat: Duration = Duration(0)

    def __post_init__(self) -> None:
        if float(self.takeover) < 1:
            raise ValueError(f"partition.takeover must be at least 1s, got {self.takeover}")
        if float(self.heartbeat) < 0 or float(self.heartbeat) > float(self.takeover) / 2:
            raise ValueError(
                "partition.heartbeat must be at most half of partition.takeover "
                f"({float(self.takeover) / 2:g}s), got {self.heartbeat}"
            )
        if self.url:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f'partition.url: expected http(s)://HOST:PORT, got "{self.url}"')

    @property
    def interval(self) -> float:
        """Seconds between two heartbeats."""
        return float(self.heartbeat) or float(self.takeover) / 5


def check_partition(checked: Checked[Any], config: Any) -> None:
    """What `check_collector` advises about `partition`: replicas that split the sites
    agree on their members only through one PostgreSQL, and subscribe by site."""
    if config.partition is None:
        return
    sqlite = str(config.store.url).startswith("sqlite")
    advice = {
        "store.url": "replicas splitting the sites (partition) see each other only in one "
        "shared store: a SQLite file is one host's, use PostgreSQL"
        if sqlite
        else "",
        "mqtt.shared_group": "is not used with partition: each replica subscribes to its own sites"
        if config.mqtt.shared_group
        else "",
    }
    for key, text in advice.items():
        if text:
            checked.add(ConfigIssue(checked.file, checked.line_of(key), key, text, warning=True))
