"""The collector's configuration (DESIGN: "Configuration"; these keys are the contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from collector.access import Grant
from collector.config_ldap import LdapConfig
from collector.config_nats import NATS_OR_MQTT, NatsConfig, check_nats
from collector.config_partition import PARTITION_NEEDS_MQTT, PartitionConfig, check_partition
from collector.config_sinks import (
    RESERVED_SINK_NAMES,
    InfluxConfig,
    SinkConfig,
    sink_name,
)
from collector.desks import ON_SHIFT, Window
from collector.notifiers import NOTIFIERS
from enoc.config import (
    Checked,
    ConfigError,
    ConfigIssue,
    Duration,
    HostPort,
    LogConfig,
    Secret,
    TlsConfig,
    check_file,
    check_include,
    check_tls_files,
    check_url,
    register_kind,
    skipping_unread,
)
from enoc.config_types import MqttBroker
from enoc.logs import redact, strip_login
from enoc.mqtt import MAX_MESSAGE_SIZE


@dataclass(frozen=True)
class CollectorMqttConfig(MqttBroker):
    client_id: str = "enoc-collector"
    shared_group: str = ""  # "enoc-collectors": replicas split the load
    # Metrics messages held unacknowledged until written. The broker stops sending at its
    # in-flight limit (Mosquitto's max_inflight_messages, 20 by default): write then.
    max_unacked: int = 20
    # Bytes: a larger payload is dead-lettered without being decoded (the general decode
    # expands a payload about 45 times in memory); over MQTT 5 the broker is told (Maximum
    # Packet Size, this plus PACKET_HEADROOM) and does not send one at all.
    max_message_size: int = 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1024 <= self.max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(
                f"mqtt.max_message_size must be 1024 to {MAX_MESSAGE_SIZE} bytes, "
                f"got {self.max_message_size}"
            )


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///var/lib/enoc/incidents.db"
    # Every replica follows the store's change log (the event stream, the notifiers):
    # woken by its own commits and by PostgreSQL's NOTIFY, and polling this often anyway.
    poll_interval: Duration = Duration(1)
    # How long logged changes are kept: a stream client away longer than this misses some.
    changes_retention: Duration = Duration(3600)

    def __post_init__(self) -> None:
        if not self.url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(
                f'store.url must be sqlite:///PATH or postgresql://..., got "{self.url}"'
            )
        if not 0 < float(self.poll_interval) <= 60:
            raise ValueError("store.poll_interval must be more than 0 and at most 60 s")
        if float(self.changes_retention) < 60:
            raise ValueError("store.changes_retention must be at least 1m")


@dataclass(frozen=True)
class IncidentsConfig:
    """Incident rules (collector/incidents/)."""

    flap_transitions: int = 6  # problem/clear transitions within flap_window mark flapping
    flap_window: Duration = Duration(600)  # also: how long a flapping incident must settle
    reopen_within: Duration = Duration(600)  # a problem soon after its clearing reopens it
    agent_timeout: Duration = Duration(180)  # no heartbeat for this long: agent offline
    will_grace: Duration = Duration(30)  # a last will, no birth this long (<= agent_timeout)
    momentary_resolve_after: Duration = Duration(3600)  # reboots and traps have no clear
    sweep_interval: Duration = Duration(5)
    # events are kept this long (deduplication, decisions by event time); incidents and
    # their timelines are the record and stay
    events_retention: Duration = Duration(90 * 86400)

    def __post_init__(self) -> None:
        if self.flap_transitions < 2:
            raise ValueError("incidents.flap_transitions must be at least 2")
        if self.will_grace < 0:
            raise ValueError(f"incidents.will_grace must be 0s or more, got {self.will_grace:g}s")
        if float(self.events_retention) < 2 * float(self.flap_window):
            raise ValueError(
                "incidents.events_retention must be at least twice incidents.flap_window"
            )


@dataclass(frozen=True)
class ServiceNowConfig:
    """A `format: servicenow` webhook's own settings (collector/notifiers/servicenow.py,
    collector/tickets.py)."""

    table: str = "incident"  # the Table API's table
    correlation_prefix: str = "enoc-"  # correlation_id = prefix + enoc's incident id
    caller_id: str = ""  # set on the tickets made, when given (a user's sys_id or name)
    assignment_group: str = ""
    category: str = ""
    close_code: str = "Solution provided"  # with state 6 (Resolved)
    # The way back: how often tickets changed there are read (resolved or acknowledged
    # there resolves or acknowledges the incident here); 0s turns it off.
    poll_interval: Duration = Duration(30)

    def __post_init__(self) -> None:
        if not self.table.replace("_", "").isalnum():
            raise ValueError(f'servicenow.table: expected a table name, got "{self.table}"')
        if not self.correlation_prefix or "^" in self.correlation_prefix:
            raise ValueError("servicenow.correlation_prefix: expected text without ^")


@dataclass(frozen=True)
class WebhookConfig:
    """One notification target (collector/notify.py delivers, collector/notifiers/ renders)."""

    url: str
    # The notifier kind (collector/notifiers: NOTIFIERS): json, alertmanager (POST
    # <url>/api/v2/alerts), or a kind registered later.
    format: str = "json"
    name: str = ""  # for logs and counters; defaults to host:port/path (no user or password)
    token: Secret | None = None  # sent as "Authorization: Bearer <token>"
    min_severity: Literal["critical", "major", "minor", "warning", "info"] = "info"
    timeout: Duration = Duration(5)
    # HTTP basic authentication of format servicenow (password_file: the password's file)
    username: str = ""
    password: Secret | None = None
    servicenow: ServiceNowConfig | None = None  # format servicenow; default ServiceNowConfig()

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f'webhook url must start with http:// or https://, got "{self.url}"')
        if self.format not in NOTIFIERS or self.format in OWN_SECTION:
            kinds = ", ".join(f'"{k}"' for k in sorted(NOTIFIERS) if k not in OWN_SECTION)
            where = OWN_SECTION.get(self.format)
            also = f" (e-mail receivers are {where} entries)" if where else ""
            raise ValueError(
                f'format "{self.format}" is not a notifier kind{also}; the kinds are {kinds}'
            )
        if self.format == "servicenow" and not (self.username and self.password is not None):
            raise ValueError("format servicenow needs username and password (or password_file)")
        if self.format == "servicenow" and strip_login(self.url) != self.url:
            raise ValueError("format servicenow takes its login as username and password_file")
        if self.format != "servicenow" and (
            self.username or self.password is not None or self.servicenow is not None
        ):
            raise ValueError(
                "username, password and servicenow are settings of format servicenow "
                "(another kind takes a login in its url)"
            )


# Notifier kinds configured by a section of their own rather than as a webhook `format`.
OWN_SECTION = {"email": "notifications.email"}

Severity = Literal["critical", "major", "minor", "warning", "info"]


def _address(text: str, key: str) -> str:
    """An e-mail address as a header takes it (`NOC <noc@example.net>` or `noc@example.net`);
    a line break would let it add headers of its own."""
    _name, address = parseaddr(text)
    if "\r" in text or "\n" in text or "@" not in address or " " in address:
        raise ValueError(
            f'{key} must be an e-mail address like "noc@example.net", got "{text.strip()}"'
        )
    return address


@dataclass(frozen=True)
class SmtpConfig:
    """How an e-mail receiver reaches its mail server (collector/notifiers/email.py)."""

    # smtp://HOST[:25] (plain, or STARTTLS with `starttls: true`) or smtps://HOST[:465]
    # (TLS from the first byte); no login in the URL: username and password(_file)
    url: str
    starttls: bool = False
    tls: TlsConfig | None = None  # ca_file of a private CA; a client certificate if asked
    username: str = ""
    password: Secret | None = None  # or password_file
    timeout: Duration = Duration(5)  # the whole exchange: connect, TLS, AUTH, MAIL, DATA

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                f'url must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got "{redact(self.url)}"'
            )
        if parts.username or parts.password:
            raise ValueError("url must not carry a login: give username and password_file")
        if self.starttls and parts.scheme == "smtps":
            raise ValueError("starttls is for smtp:// (smtps:// is TLS from the start)")
        if self.tls is not None and not (self.starttls or parts.scheme == "smtps"):
            raise ValueError("tls needs smtps:// or starttls: true")
        if (self.password is not None) != bool(self.username):
            raise ValueError("username and password (or password_file) go together")

    @property
    def secure(self) -> bool:
        return self.starttls or self.url.startswith("smtps://")


@dataclass(frozen=True)
class EmailConfig:
    """One `notifications.email` entry: a receiver the delivery machinery (collector/
    notify.py) treats as it treats a webhook, sending through `smtp`."""

    name: str  # in logs, counters and the store (its cursor); unique among receivers
    smtp: SmtpConfig
    from_: str  # the key `from`
    to: list[str]
    min_severity: Severity = "info"

    format: ClassVar[str] = "email"  # its notifier kind (collector/notifiers: NOTIFIERS)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name must not be empty")
        if not self.to:
            raise ValueError("to must list at least one address")
        _address(self.from_, "from")
        for i, address in enumerate(self.to):
            _address(address, f"to ({i + 1})")

    @property
    def url(self) -> str:
        return self.smtp.url

    @property
    def timeout(self) -> Duration:
        return self.smtp.timeout

    @property
    def key(self) -> str:
        """Its name in the store: the name, since receivers may share a mail server."""
        return f"email {self.name}"


Receiver = WebhookConfig | EmailConfig


@dataclass(frozen=True)
class DeskConfig:
    """One `notifications.desks` entry: a service desk and its shifts (collector/desks.py)."""

    name: str
    timezone: str  # IANA: "Asia/Bangkok"
    hours: str  # local, "08:00-17:00"; "22:00-06:00" runs past midnight
    days: str | list[str] = "mon-sun"  # the days a shift starts: "mon-fri", [mon, wed]
    receivers: list[str] = field(default_factory=list)  # receiver names: the desk's incidents
    # escalation level (the engine's, notifications.escalate_after) -> receivers added then
    escalation: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip() or self.name == ON_SHIFT:
            raise ValueError(f'name must be a desk\'s own (not empty, not "{ON_SHIFT}")')
        try:
            Window.parse(self.timezone, "00:00-01:00", "daily")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        Window.parse("UTC", self.hours, self.days)  # messages start with hours / days
        for level in self.escalation:
            if not level.isdigit() or int(level) < 1:
                raise ValueError(f'escalation levels are 1, 2, ...; got "{level}"')


@dataclass(frozen=True)
class RouteMatch:
    """What a route matches (every key optional; one value or a list)."""

    rtc: str | list[str] = field(default_factory=list)
    site: str | list[str] = field(default_factory=list)
    severity: str | list[str] = field(default_factory=list)
    hours: str = ""  # the time of day, local to `timezone`: "18:00-08:00"
    days: str | list[str] = "mon-sun"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.hours:
            Window.parse(self.timezone, self.hours, self.days)
        elif self.timezone != "UTC" or self.days != "mon-sun":
            raise ValueError("hours: timezone and days need hours")


@dataclass(frozen=True)
class RouteConfig:
    """One `notifications.routes` entry: incidents that `match` go to `desk` (a desk's
    name, or on-shift: the desk on shift). The first matching route wins."""

    desk: str
    match: RouteMatch = field(default_factory=RouteMatch)


def _default_escalation() -> dict[str, Duration]:
    return {"critical": Duration(900), "major": Duration(1800), "minor": Duration(14400)}


@dataclass(frozen=True)
class NotificationsConfig:
    webhooks: list[WebhookConfig] = field(default_factory=list)
    email: list[EmailConfig] = field(default_factory=list)
    # The console's address as receivers reach it: e-mails link to the incident's device
    console_url: str = ""
    # Follow the sun (collector/desks.py, collector/handover.py): service desks, routes to
    # them, and the summary mailed to the next desk at each shift change, sent if the
    # change was at most handover_window ago (a collector down longer sends none late).
    desks: list[DeskConfig] = field(default_factory=list)
    routes: list[RouteConfig] = field(default_factory=list)
    handover_window: Duration = Duration(3600)
    retries: int = 5  # attempts after the first, with exponential backoff
    retry_backoff: Duration = Duration(1)  # first wait; doubles up to 60 s
    dead_letter_file: Path | None = None  # JSON lines of notifications that never got through
    # An incident still open and unacknowledged this long after it opened escalates one level
    # (and again after each further period). Severities not listed never escalate.
    escalate_after: dict[str, Duration] = field(default_factory=_default_escalation)
    max_queue: int = 10_000  # notifications waiting; beyond it the oldest go to dead letters
    # One replica at a time delivers to a webhook, holding its lease in the store; when
    # that replica dies, another takes over once the lease has run out.
    lease: Duration = Duration(15)

    def __post_init__(self) -> None:
        if float(self.lease) < 1:
            raise ValueError("notifications.lease must be at least 1s")
        if float(self.retry_backoff) <= 0:
            raise ValueError("notifications.retry_backoff must be more than 0")
        for hook in self.receivers:
            if float(self.lease) < 2 * float(hook.timeout):
                raise ValueError(
                    f"notifications.lease ({float(self.lease):g} s) must be at least twice "
                    f"the timeout of {hook.format} receiver {redact(hook.url)} "
                    f"({float(hook.timeout):g} s)"
                )
        keys = [(w.format, strip_login(w.url)) for w in self.webhooks]
        if len(set(keys)) != len(keys):
            raise ValueError("two webhooks with the same url (login aside) and format")
        names = [r.name for r in self.receivers if r.name]
        for name in {n for n in names if names.count(n) > 1}:
            raise ValueError(f'notifications: two receivers named "{name}"')
        if self.console_url and not self.console_url.startswith(("http://", "https://")):
            raise ValueError(
                f"notifications.console_url must start with http:// or https://, got "
                f'"{self.console_url}"'
            )

        self._check_desks()

    def _check_desks(self) -> None:
        names = {r.name for r in self.receivers if r.name}
        desks = [d.name for d in self.desks]
        for name in {n for n in desks if desks.count(n) > 1}:
            raise ValueError(f'desks: two desks named "{name}"')
        for desk in self.desks:
            named = [*desk.receivers, *(r for level in desk.escalation.values() for r in level)]
            for receiver in named:
                if receiver not in names:
                    raise ValueError(
                        f'desks: desk "{desk.name}" names receiver "{receiver}", which is no '
                        "webhook's or e-mail receiver's name"
                    )
        if self.routes and not self.desks:
            raise ValueError("routes: routes need desks")
        for route in self.routes:
            if route.desk != ON_SHIFT and route.desk not in desks:
                raise ValueError(
                    f'routes: desk "{route.desk}" is not a desk (nor {ON_SHIFT}); the desks '
                    f"are {', '.join(desks)}"
                )

    @property
    def receivers(self) -> list[Receiver]:
        """What the delivery machinery delivers to: the webhooks, then the e-mail ones."""
        return [*self.webhooks, *self.email]


def _loopback_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


@dataclass(frozen=True)
class OidcConfig:
    """Single sign-on for the console (collector/oidc.py): an OpenID provider's users log
    in with the authorisation code flow; the groups claim maps to a role and scope."""

    issuer: str  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str
    redirect_url: str  # the console's callback as the browser reaches it: .../login/oidc/callback
    client_secret: Secret | None = None  # or client_secret_file; none: a public client (PKCE)
    scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email"])
    groups_claim: str = "groups"
    name_claim: str = "preferred_username"
    grants: list[Grant] = field(default_factory=list)  # first held group decides
    # where the IdP sends the browser after its logout; default: the console's root
    post_logout_redirect_url: str = ""
    ca_file: Path | None = None  # the CA of the IdP's TLS (None: the system's)
    timeout: Duration = Duration(10)
    login_timeout: Duration = Duration(600)  # from the redirect to the IdP to the callback

    def __post_init__(self) -> None:
        for key in ("issuer", "redirect_url") + (
            ("post_logout_redirect_url",) if self.post_logout_redirect_url else ()
        ):
            url = getattr(self, key)
            if not url.startswith("https://") and not (
                url.startswith("http://") and _loopback_host(url)
            ):
                raise ValueError(
                    f'{key} must be an https:// URL (http:// only on loopback), got "{url}"'
                )
        if not self.client_id:
            raise ValueError("client_id is required")
        if "openid" not in self.scopes:
            raise ValueError(f"scopes must include openid, got {self.scopes}")
        if not self.grants:
            raise ValueError("grants must map at least one group to a role")
        if not self.groups_claim or not self.name_claim:
            raise ValueError("groups_claim and name_claim must not be empty")


@dataclass(frozen=True)
class HttpConfig:
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 8080))
    users_file: Path | None = None
    # Signs console session cookies; replicas behind one load balancer share it.
    # Without it each process makes its own key (a restart logs everyone out).
    session_key_file: Path | None = None
    session_lifetime: Duration = Duration(12 * 3600)
    # A directory or single-sign-on identity behind a session is confirmed again this
    # long after its last confirmation (a user removed from its group loses the session);
    # while its source cannot answer, the session lasts one more such time.
    session_recheck: Duration = Duration(60)
    audit_file: Path | None = None  # operator actions as JSON lines (also logged)
    # Failed logins of one client address and user name pair that go ahead at once; then
    # each waits login_backoff, doubling with every further failure up to
    # login_backoff_max (429 with Retry-After). A pair that, once allowed again, has no
    # failure for login_window starts afresh. Only the pair waits: the same name from
    # another address does not.
    login_max_failures: int = 5
    login_window: Duration = Duration(300)
    login_backoff: Duration = Duration(1)
    login_backoff_max: Duration = Duration(900)
    # Password checks at once (0: one per CPU the process may use) and logins waiting for
    # one; beyond those a login gets 503 with Retry-After at once.
    login_hash_workers: int = 0
    login_hash_queue: int = 16
    # Server-sent-event streams open at once, per user and on this replica in all; beyond
    # them 429 (per user) or 503 (in all) with Retry-After.
    stream_max_clients_per_user: int = 20
    stream_max_clients: int = 500
    oidc: OidcConfig | None = None  # single sign-on for the console
    ldap: LdapConfig | None = None  # console logins checked against a directory

    def __post_init__(self) -> None:
        if self.login_max_failures < 1:
            raise ValueError("login_max_failures must be at least 1")
        if not 0 < self.login_backoff <= self.login_backoff_max:
            raise ValueError(
                f"login_backoff must be above 0 and at most login_backoff_max, got "
                f"{self.login_backoff:g} s and {self.login_backoff_max:g} s"
            )
        for key in ("login_hash_workers", "login_hash_queue"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 or more, got {getattr(self, key)}")
        for key in ("stream_max_clients_per_user", "stream_max_clients"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class RecentConfig:
    """Where the device page's last hour comes from (collector/recent.py)."""

    # local: what this process received (with replicas on a shared subscription, only its
    # share of the polls); influxdb: an InfluxQL query to `influxdb` (1.x, 2.x with a
    # DBRP mapping, 3.x; not VictoriaMetrics), this process's window when it fails (or
    # when there is no influxdb section: check-config warns).
    source: Literal["local", "influxdb"] = "local"
    database: str = ""  # the InfluxQL database; default influxdb.database or influxdb.bucket
    timeout: Duration = Duration(5)


@dataclass(frozen=True)
class CollectorConfig:
    mqtt: CollectorMqttConfig = field(default_factory=CollectorMqttConfig)
    nats: NatsConfig | None = None  # ingest from NATS JetStream instead of `mqtt`
    influxdb: InfluxConfig | None = None
    # metrics sinks besides (or instead of) `influxdb`; a message is acknowledged when
    # every sink has it
    sinks: list[SinkConfig] = field(default_factory=list)
    store: StoreConfig = field(default_factory=StoreConfig)
    incidents: IncidentsConfig = field(default_factory=IncidentsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    recent: RecentConfig = field(default_factory=RecentConfig)
    log: LogConfig = field(default_factory=LogConfig)
    partition: PartitionConfig | None = None  # replicas that split the sites (partition.py)

    def __post_init__(self) -> None:
        if self.nats is not None and (self.mqtt != CollectorMqttConfig() or self.partition):
            raise ValueError(PARTITION_NEEDS_MQTT if self.partition else NATS_OR_MQTT)
        names = [sink_name(None)] if self.influxdb is not None else []
        names += [sink_name(s) for s in self.sinks if s.kind]
        for name in names:
            if name in RESERVED_SINK_NAMES:
                raise ValueError(f'sinks: "{name}" is a link of /healthz, not a sink\'s name')
            if names.count(name) > 1:
                raise ValueError(
                    f'sinks: two sinks named "{name}" (the influxdb section is one named '
                    "influxdb): give each its own name"
                )


def collector_issues(config: CollectorConfig, filename: str) -> list[ConfigIssue]:
    """What check-config warns about: replicas that would not act as one collector."""
    issues = []
    if config.mqtt.shared_group and config.store.url.startswith("sqlite"):
        issues.append(
            ConfigIssue(
                filename,
                0,
                "store.url",
                "replicas on a shared subscription (mqtt.shared_group) agree on incidents only "
                "through one PostgreSQL; each SQLite file sees only its replica's share",
                warning=True,
            )
        )
    for i, mail in enumerate(config.notifications.email):
        if mail.smtp.password is not None and not mail.smtp.secure:
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"notifications.email[{i}].smtp",
                    "logs in without TLS: the password crosses the network in clear; use "
                    "smtps:// or starttls: true",
                    warning=True,
                )
            )
    ldap = config.http.ldap
    if ldap is not None and ldap.insecure_plaintext and ldap.url.startswith("ldap://"):
        issues.append(
            ConfigIssue(
                filename,
                0,
                "http.ldap.insecure_plaintext",
                "logins go to the directory without TLS: every password crosses the network "
                "in clear; use ldaps:// or start_tls: true",
                warning=True,
            )
        )
    mailboxes = {mail.name for mail in config.notifications.email}
    for i, desk in enumerate(config.notifications.desks):
        if len(config.notifications.desks) > 1 and not mailboxes & set(desk.receivers):
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"notifications.desks[{i}].receivers",
                    f"desk {desk.name} has no e-mail receiver: the handover at the shift "
                    "change that gives it the watch has nowhere to go",
                    warning=True,
                )
            )
    if config.recent.source == "influxdb" and config.influxdb is None:
        issues.append(
            ConfigIssue(
                filename,
                0,
                "recent.source",
                "is influxdb without an influxdb section: the device page shows this "
                "process's own window",
                warning=True,
            )
        )
    if config.mqtt.shared_group and config.recent.source == "local":
        issues.append(
            ConfigIssue(
                filename,
                0,
                "recent.source",
                "is local with a shared subscription: the device page of each replica shows "
                "only the polls that replica received; set it to influxdb",
                warning=True,
            )
        )
    return issues


def check_collector(path: Path) -> Checked[CollectorConfig]:
    """Everything `enoc collector` checks before it runs, in one pass (`enoc check-config`
    runs this too): the config, its users file, session key, URLs and TLS files."""
    checked = check_file(path, CollectorConfig, collector_issues)
    config = checked.value
    if config is None:
        return checked
    check_nats(checked, config, mqtt_given=bool(checked.line_of("mqtt")))
    check_partition(checked, config)
    with skipping_unread():
        for key, url in config.mqtt.url_keys():
            check_url(checked, key, url)
    with skipping_unread():
        check_tls_files(checked, "mqtt.tls", config.mqtt.tls, "MQTT", retried=True)
    with skipping_unread():
        check_url(checked, "store.url", config.store.url)
    with skipping_unread():
        if config.influxdb is not None:
            with skipping_unread():
                check_url(checked, "influxdb.url", config.influxdb.url)
            check_tls_files(checked, "influxdb.tls", config.influxdb.tls, "InfluxDB")
    with skipping_unread():
        for i, sink in enumerate(config.sinks):
            if not sink.kind:  # refused already
                continue
            key, settings = f"sinks[{i}].{sink.kind}", sink.settings
            with skipping_unread():
                check_url(checked, f"{key}.url", settings.url)
            with skipping_unread():
                check_tls_files(checked, f"{key}.tls", settings.tls, f"sink {sink_name(sink)}")
    with skipping_unread():
        for i, hook in enumerate(config.notifications.webhooks):
            with skipping_unread():
                check_url(checked, f"notifications.webhooks[{i}].url", hook.url)
        for i, mail in enumerate(config.notifications.email):
            key = f"notifications.email[{i}].smtp"
            with skipping_unread():
                check_url(checked, f"{key}.url", mail.smtp.url)
            with skipping_unread():
                check_tls_files(checked, f"{key}.tls", mail.smtp.tls, f"SMTP of {mail.name}")
    with skipping_unread():
        if config.http.users_file is not None:
            from collector.auth import UsersFile

            users = check_include(
                checked, "http.users_file", config.http.users_file, UsersFile, _users_issues
            )
            if users is not None:
                checked.include(users, notes=False)  # a secret file itself, mode 0600
    with skipping_unread():
        oidc = config.http.oidc
        if oidc is not None:
            check_url(checked, "http.oidc.issuer", oidc.issuer)
            if oidc.ca_file is not None and not oidc.ca_file.is_file():
                checked.error("http.oidc.ca_file", f"no such file: {oidc.ca_file}")
        if config.http.ldap is not None and config.http.ldap.ca_file is not None:
            tls = TlsConfig(ca_file=config.http.ldap.ca_file)
            check_tls_files(checked, "http.ldap", tls, "the directory (LDAP)")
    with skipping_unread():
        if config.http.session_key_file is not None:
            from collector.session import load_key

            try:
                load_key(config.http.session_key_file)
            except OSError as exc:
                checked.error(
                    "http.session_key_file",
                    f"cannot read {config.http.session_key_file}: {exc.strerror or exc}",
                )
            except ValueError as exc:
                checked.error("http.session_key_file", str(exc))
    return checked


def _users_issues(users: Any, filename: str) -> list[ConfigIssue]:
    from collector.auth import Users

    try:
        Users(users.users, filename)  # what the collector loads: names unique
    except ConfigError as exc:
        return exc.issues
    return []


def _is_collector(mapping: Mapping[str, Any]) -> bool:
    return "store" in mapping or "http" in mapping or "influxdb" in mapping or "sinks" in mapping


register_kind("collector", CollectorConfig, _is_collector, collector_issues, check_collector)
