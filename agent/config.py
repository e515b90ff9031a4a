"""The agent's configuration (DESIGN: "Configuration"; these keys are the contract)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from agent.edge import SENSOR_LIMITS, SensorLimits, ThresholdRule
from agent.mibgroups.tables import resolve
from agent.profiles import BUILT_IN, ProfileConfig
from agent.reach import PingLimits
from agent.trapdefaults import SHIPPED_RULES
from agent.traprules import catalogue_for, check_rules_include
from enoc.config import (
    Checked,
    ConfigIssue,
    Duration,
    HostPort,
    LogConfig,
    Secret,
    check_file,
    check_include,
    check_tls_files,
    check_url,
    is_unread,
    register_kind,
    skipping_unread,
)
from enoc.config_types import MqttBroker
from enoc.ifpolicy import InterfacesConfig
from enoc.inventory import Credential, Inventory, InventoryDevice, inventory_issues
from enoc.mibs import MibIndex
from enoc.wire import check_name


@dataclass(frozen=True)
class MqttConfig(MqttBroker):
    keepalive: Duration = Duration(30)
    max_inflight: int = 100


@dataclass(frozen=True)
class SpoolConfig:
    path: Path
    max_bytes: int = 512 * 2**20
    fsync: bool = False


@dataclass(frozen=True)
class PollingConfig:
    interval: Duration = Duration(60)
    timeout: Duration = Duration(5)
    retries: int = 1
    concurrency: int = 64
    max_repetitions: int = 25
    unreachable_after: int = 3
    deadline: Duration | None = None  # per device poll; default 90 % of the interval
    source: str = "0.0.0.0"  # noqa: S104  # local address the SNMP requests leave from

    def __post_init__(self) -> None:
        if self.timeout * (self.retries + 1) >= self.interval:
            raise ValueError(
                "polling.timeout x (retries + 1) must be shorter than polling.interval"
            )
        if self.deadline is not None and self.deadline >= self.interval:
            raise ValueError("polling.deadline must be shorter than polling.interval")
        if not 1 <= self.max_repetitions <= 200:
            raise ValueError("polling.max_repetitions must be between 1 and 200")
        if self.concurrency < 1:
            raise ValueError("polling.concurrency must be at least 1")

    @property
    def poll_deadline(self) -> float:
        return float(self.deadline) if self.deadline is not None else 0.9 * self.interval


@dataclass(frozen=True)
class PublishingConfig:
    heartbeat: Duration = Duration(30)  # retained status with the agent's health
    replay_rate: int = 50  # backlog messages per second after a reconnect
    batch_samples: int = 1  # device samples per metrics message
    # A metrics message larger is split (by sample, then by a sample's interfaces): under
    # the collector's mqtt.max_message_size and the broker's message_size_limit (1 MiB).
    max_message_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        if self.replay_rate < 1 or self.batch_samples < 1:
            raise ValueError("publishing.replay_rate and batch_samples must be at least 1")
        if not 4096 <= self.max_message_bytes <= 256 * 2**20:
            raise ValueError("publishing.max_message_bytes must be 4096 to 268435456 bytes")


@dataclass(frozen=True)
class Threshold:
    """Enter at or above `enter`, leave below `leave`, each sustained for `polls` polls."""

    enter: float
    leave: float
    polls: int = 3
    percent: ClassVar[bool] = True  # a percentage: 0..100

    def __post_init__(self) -> None:
        top = 100 if self.percent else None
        for name in ("enter", "leave"):
            value = getattr(self, name)
            if value < 0 or (top is not None and value > top):
                where = "between 0 and 100 (a percentage)" if top else "at least 0"
                raise ValueError(f"expected {name} {where}, got {value:g}")
        if self.leave > self.enter:
            raise ValueError(
                f"expected leave at or below enter ({self.enter:g}), got {self.leave:g}"
            )
        if self.polls < 1:
            raise ValueError(f"expected polls of at least 1, got {self.polls}")


@dataclass(frozen=True)
class UtilizationThreshold(Threshold):
    enter: float = 90
    leave: float = 80


@dataclass(frozen=True)
class ErrorsThreshold(Threshold):
    enter: float = 10  # input errors per second
    leave: float = 1
    percent: ClassVar[bool] = False


@dataclass(frozen=True)
class CpuThreshold(Threshold):
    enter: float = 90
    leave: float = 75


@dataclass(frozen=True)
class MemoryThreshold(Threshold):
    enter: float = 95
    leave: float = 90


@dataclass(frozen=True)
class ThresholdsConfig:
    """`thresholds:`: levels of the threshold events; each key may be given in part."""

    utilization: UtilizationThreshold = field(default_factory=UtilizationThreshold)  # in and out
    errors: ErrorsThreshold = field(default_factory=ErrorsThreshold)  # input errors / s
    cpu: CpuThreshold = field(default_factory=CpuThreshold)
    memory: MemoryThreshold = field(default_factory=MemoryThreshold)

    def rules(self) -> tuple[ThresholdRule, ...]:
        """The edge detector's rules, by the metric names of the samples."""
        u, e, c, m = self.utilization, self.errors, self.cpu, self.memory
        return (
            ThresholdRule("in_utilization", u.enter, u.leave, u.polls),
            ThresholdRule("out_utilization", u.enter, u.leave, u.polls),
            ThresholdRule("cpu", c.enter, c.leave, c.polls, severity="major"),
            ThresholdRule("memory", m.enter, m.leave, m.polls),
            ThresholdRule("in_errors_per_s", e.enter, e.leave, e.polls, severity="warning"),
        )


@dataclass(frozen=True)
class SensorClassConfig:
    """One class's limits under `sensors:`, for sensors whose device reports none. A class
    given replaces its defaults (agent.edge.SENSOR_LIMITS): a limit left out is none;
    `hysteresis` left out is the default's."""

    high_warning: float | None = None
    high_critical: float | None = None
    low_warning: float | None = None
    low_critical: float | None = None
    hysteresis: float | None = None

    def __post_init__(self) -> None:
        self.limits("")  # an order or a hysteresis that cannot be is an error here

    def limits(self, cls: str) -> SensorLimits:
        default = SENSOR_LIMITS.get(cls, SensorLimits())
        hysteresis = default.hysteresis if self.hysteresis is None else self.hysteresis
        return SensorLimits(
            self.high_warning, self.high_critical, self.low_warning, self.low_critical, hysteresis
        )


@dataclass(frozen=True)
class SensorsConfig:
    """`sensors:`: limits by sensor class (agent.mibgroups.sensors.CLASSES, a field each,
    so that a misspelt class is an unknown key)."""

    temperature: SensorClassConfig | None = None
    humidity: SensorClassConfig | None = None
    fan: SensorClassConfig | None = None  # rpm
    voltage: SensorClassConfig | None = None
    current: SensorClassConfig | None = None
    power: SensorClassConfig | None = None  # watts
    frequency: SensorClassConfig | None = None
    airflow: SensorClassConfig | None = None
    dbm: SensorClassConfig | None = None
    db: SensorClassConfig | None = None
    battery: SensorClassConfig | None = None  # charge, %
    runtime: SensorClassConfig | None = None  # seconds
    load: SensorClassConfig | None = None  # % of capacity
    source: SensorClassConfig | None = None
    alarms: SensorClassConfig | None = None
    psu: SensorClassConfig | None = None
    state: SensorClassConfig | None = None
    other: SensorClassConfig | None = None
    unknown: SensorClassConfig | None = None


@dataclass(frozen=True)
class DiscoveryConfig:
    """`discovery:`: capability discovery (agent.discovery)."""

    enabled: bool = True
    interval: Duration = Duration(6 * 3600)  # probe each device again after this long

    def __post_init__(self) -> None:
        if self.interval < 60:
            raise ValueError(
                f'discovery.interval: expected a duration of at least "1m", got {self.interval:g}s'
            )


@dataclass(frozen=True)
class PingLevel:
    """A ping threshold: `degraded` at or above, back to ok below `clear`."""

    degraded: float
    clear: float

    def __post_init__(self) -> None:
        if self.clear < 0 or self.clear > self.degraded:
            raise ValueError(
                f"expected 0 <= clear <= degraded ({self.degraded:g}), got clear {self.clear:g}"
            )


@dataclass(frozen=True)
class LossLevel(PingLevel):
    degraded: float = 20  # %
    clear: float = 5


@dataclass(frozen=True)
class RttLevel(PingLevel):
    degraded: float = 300  # ms
    clear: float = 200


@dataclass(frozen=True)
class PingThresholdsConfig:
    """`ping.thresholds`: when a device's ping is "degraded" (agent.reach)."""

    loss_pct: LossLevel = field(default_factory=LossLevel)
    rtt_ms: RttLevel = field(default_factory=RttLevel)  # the average round trip
    rounds: int = 2  # sustained for this many rounds, either way

    def __post_init__(self) -> None:
        if self.loss_pct.degraded > 100:
            raise ValueError(
                f"loss_pct.degraded: expected at most 100, got {self.loss_pct.degraded:g}"
            )
        if self.rounds < 1:
            raise ValueError(f"rounds: expected at least 1, got {self.rounds}")


@dataclass(frozen=True)
class PingConfig:
    """`ping:`: the agent pings every device (agent.ping); `enabled: false` turns it off, and
    a device's `ping: false` in the inventory leaves that one out."""

    enabled: bool = True
    interval: Duration = Duration(10)  # between rounds
    count: int = 3  # echo requests a round
    timeout: Duration = Duration(1)  # for each reply
    packet_interval: Duration = Duration(0.2)  # between a round's requests to one device
    concurrency: int = 64  # devices pinged at once
    down_after: int = 2  # missed rounds, with no SNMP answer since, are down
    thresholds: PingThresholdsConfig = field(default_factory=PingThresholdsConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 100:
            raise ValueError(f"count: expected 1 to 100, got {self.count}")
        if self.concurrency < 1 or self.down_after < 1:
            raise ValueError("concurrency and down_after: expected at least 1")
        if self.timeout <= 0:
            raise ValueError(f"timeout: expected a duration above 0, got {self.timeout:g}s")
        # a round's longest (no answer at all) fits its interval: rounds never stack
        longest = self.count * self.timeout + (self.count - 1) * self.packet_interval
        if longest >= self.interval:
            raise ValueError(
                f"count x timeout + (count - 1) x packet_interval ({longest:g}s): expected "
                f"shorter than interval ({self.interval:g}s), so that rounds never stack"
            )

    def limits(self) -> PingLimits:
        t = self.thresholds
        return PingLimits(
            t.loss_pct.degraded,
            t.loss_pct.clear,
            t.rtt_ms.degraded,
            t.rtt_ms.clear,
            t.rounds,
            self.down_after,
        )


@dataclass(frozen=True)
class TrapsConfig:
    listen: HostPort = field(default_factory=lambda: HostPort("0.0.0.0", 162))  # noqa: S104
    communities: list[Secret] = field(default_factory=list)
    rules: Path | None = None  # more trap rules, or the shipped ones replaced (agent.traprules)


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    site: str
    spool: SpoolConfig
    rtc: str = ""
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    polling: PollingConfig = field(default_factory=PollingConfig)
    publishing: PublishingConfig = field(default_factory=PublishingConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    sensors: SensorsConfig = field(default_factory=SensorsConfig)
    interfaces: InterfacesConfig = field(default_factory=InterfacesConfig)  # enoc.ifpolicy
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    inventory: Path | None = None  # what `enoc sim --inventory-out` writes
    devices: list[InventoryDevice] = field(default_factory=list)
    credentials: dict[str, Credential] = field(default_factory=dict)
    traps: TrapsConfig | None = None
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    ping: PingConfig = field(default_factory=PingConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Compiled MIBs (`enoc mib compile DIR --out` this folder), loaded over the shipped ones
    # for profile tables and trap names.
    mibs: Path | None = None

    def __post_init__(self) -> None:
        check_name("agent_id", self.agent_id)
        check_name("site", self.site)

    def sensor_limits(self) -> dict[str, SensorLimits]:
        """The edge's limits by sensor class: the defaults, each class given replaced."""
        given = {
            f.name: value
            for f in fields(SensorsConfig)
            if (value := getattr(self.sensors, f.name)) is not None
        }
        return {**SENSOR_LIMITS, **{cls: g.limits(cls) for cls, g in given.items()}}


def profile_issues(
    config: AgentConfig, devices: list[InventoryDevice], filename: str
) -> list[ConfigIssue]:
    """Devices naming a profile that is neither built in nor under the config's `profiles:`."""
    known = sorted({*BUILT_IN, *config.profiles})
    return [
        ConfigIssue(
            filename,
            0,
            f"devices[{i}].profile",
            f"unknown profile {device.profile!r} (known: {', '.join(known)})",
        )
        for i, device in enumerate(devices)
        if device.profile and device.profile not in known
    ]


def role_issues(
    config: AgentConfig, devices: list[InventoryDevice], filename: str
) -> list[ConfigIssue]:
    """An `interfaces.roles` block for a role no device has: a typo leaves a policy unused."""
    roles = sorted({d.role for d in devices if d.role})
    return [
        ConfigIssue(
            filename,
            0,
            f"interfaces.roles.{role}",
            f"no device has this role (the inventory's: {', '.join(roles) or 'none'})",
            warning=True,
        )
        for role in config.interfaces.roles
        if role not in roles
    ]


def mib_index(config: AgentConfig) -> MibIndex:
    """The shipped MIB facts and the config's compiled folder (`mibs:`) over them."""
    return MibIndex.load([config.mibs] if config.mibs is not None else [])


def table_issues(config: AgentConfig, filename: str) -> list[ConfigIssue]:
    """Each profile table whose table, index or fields no loaded MIB defines."""
    tabled = {n: p for n, p in config.profiles.items() if p.tables and not is_unread(p.tables)}
    if config.mibs is not None and not config.mibs.is_dir():
        # Without tables only trap names miss it: the agent runs on the shipped MIBs.
        message = f"no such folder: {config.mibs} (`enoc mib compile DIR --out` makes it)"
        return [ConfigIssue(filename, 0, "mibs", message, warning=not tabled)]
    if not tabled:
        return []
    try:
        mibs = mib_index(config)
    except ValueError as exc:
        return [ConfigIssue(filename, 0, "mibs", str(exc))]
    issues = []
    for name, profile in tabled.items():
        for i, table in enumerate(profile.tables):
            try:
                resolve(table, mibs)
            except ValueError as exc:
                where, _, message = str(exc).partition(": ")
                issues.append(
                    ConfigIssue(filename, 0, f"profiles.{name}.tables[{i}].{where}", message)
                )
    return issues


def agent_issues(config: AgentConfig, filename: str) -> list[ConfigIssue]:
    issues = profile_issues(config, config.devices, filename)  # check_agent: the inventory
    issues += table_issues(config, filename)
    expected = f"{config.site}/{config.agent_id}"
    if config.mqtt.username is not None and config.mqtt.username != expected:
        # deploy/mosquitto/acl: `pattern write enoc/v1/%u/...`. Over MQTT 5 the agent sees
        # the broker's refusals and keeps the data; over 3.1.1 they look like deliveries.
        issues.append(
            ConfigIssue(
                filename,
                0,
                "mqtt.username",
                f"is {config.mqtt.username!r}; the shipped broker ACL lets an agent publish "
                f"only as {expected!r} (<site>/<agent_id>) and refuses anything else: over "
                "MQTT 5 the agent keeps the refused data in its spool (publish_refused), "
                "over 3.1.1 the broker drops it silently",
                warning=True,
            )
        )
    for key, name in (("site", config.site), ("agent_id", config.agent_id)):
        if "." in name:
            # nats-server 2.9's gateway maps topic levels to subject tokens split at '.'
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    key,
                    f"{name!r} has a '.': NATS's MQTT gateway (nats-server 2.9) refuses a "
                    "topic with one and closes the connection, so on a NATS cluster this "
                    "agent publishes nothing; use '-' or '_' there (Mosquitto and EMQX "
                    "take it)",
                    warning=True,
                )
            )
    if config.mqtt.password is None and config.mqtt.tls is None:
        issues.append(
            ConfigIssue(
                filename,
                0,
                "mqtt",
                "neither a password nor TLS: any client that reaches the broker can publish "
                "as this site",
                warning=True,
            )
        )
    return issues


def check_agent(path: Path) -> Checked[tuple[AgentConfig, Inventory]]:
    """Everything `enoc agent` checks before it runs, in one pass (`enoc check-config`
    runs this too): the config, the inventory it includes, the devices of both against
    the credentials of both, the broker's URL and TLS files, the SNMP source address.
    The value: the config and the whole inventory."""
    checked = check_file(path, AgentConfig, agent_issues)
    config = checked.value
    if config is None:
        return checked.with_value(None)
    with skipping_unread():
        for key, url in config.mqtt.url_keys():
            check_url(checked, key, url)
    with skipping_unread():
        check_tls_files(checked, "mqtt.tls", config.mqtt.tls, "MQTT", retried=True)
    with skipping_unread():
        try:
            ipaddress.IPv4Address(config.polling.source)  # the SNMP socket is IPv4
        except ValueError:
            checked.error(
                "polling.source",
                f'expected a local IPv4 address like "0.0.0.0", got "{config.polling.source}"',
            )
    inline = Inventory(
        devices=[] if is_unread(config.devices) else config.devices,
        credentials={} if is_unread(config.credentials) else config.credentials,
    )
    included: Checked[Inventory] | None = None
    with skipping_unread():
        if config.inventory is not None:
            included = check_include(checked, "inventory", config.inventory, Inventory)
    extra = included.value if included is not None and included.value is not None else Inventory()
    if included is not None and extra.devices:
        included.run(lambda devices, name: profile_issues(config, devices, name), extra.devices)
    whole = Inventory(
        devices=[*inline.devices, *extra.devices],
        credentials={**inline.credentials, **extra.credentials},
    )
    # One check of the whole inventory (a device may use the other file's credentials);
    # each issue is told in the file, at the index, where its device or credential is.
    first = len(inline.devices)
    with skipping_unread():
        for issue in inventory_issues(whole, str(path)):
            owner: Checked[Any] = checked
            key = issue.key
            if key.startswith("devices[") and included is not None:
                index = int(key[len("devices[") : key.index("]")])
                if index >= first:
                    owner = included
                    key = f"devices[{index - first}]{key[key.index(']') + 1 :]}"
            elif included is not None and key.partition(".")[2] in extra.credentials:
                owner = included  # credentials.NAME: the included file's wins
            owner.add(replace(issue, file=owner.file, key=key))
    with skipping_unread():
        checked.add(*role_issues(config, whole.devices, str(path)))
    with skipping_unread():
        if config.traps is not None:  # traps are named from the MIBs, `mibs:` included
            try:
                catalogue = catalogue_for(config.mibs)
            except ValueError as exc:
                checked.error("mibs", str(exc))
            else:
                rules = config.traps.rules
                if rules is not None:
                    check_rules_include(checked, "traps.rules", rules, SHIPPED_RULES, catalogue)
    if included is not None:
        checked.include(included)
    return checked.with_value((config, whole))


def _is_agent(mapping: Mapping[str, Any]) -> bool:
    return "agent_id" in mapping


register_kind("agent", AgentConfig, _is_agent, agent_issues, check_agent)
