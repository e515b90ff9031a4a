"""MQTT connection settings shared by the agent, the collector and `enoc tail`.

One place builds the aiomqtt client arguments and the TLS context, so a fix
to either (certificate checks, timeouts) reaches every client at once.

MQTT 5 where the broker offers it, 3.1.1 otherwise (DESIGN, "Protocol"):
`ProtocolChoice` says which version to offer next and recognises a broker
that does not speak 5 (it refuses a v5 CONNECT, or leaves it unanswered and
answers 3.1.1); `client_args` builds a persistent session for either
(3.1.1: clean session off; 5: clean start off and a session expiry interval,
without which a v5 session ends with its connection). `AckedClient` is
aiomqtt's client plus `publish_acked`, which returns the broker's PUBACK
reason code: over MQTT 5 a broker answers a publish its ACL denies with
"Not authorized" (135), where 3.1.1 acknowledges it as if it were delivered.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from enoc.config_types import MqttBroker, Secret

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311
# A session nobody resumed for 30 days is gone: what deploy/mosquitto/mosquitto.conf's
# persistent_client_expiration gives 3.1.1 sessions.
SESSION_EXPIRY = 30 * 86400
# CONNACK codes of a broker that does not speak MQTT 5: 3.1.1's "unacceptable protocol
# version" (paho reads it as 132 on a v5 connection) and v5's "unsupported protocol version".
_NO_V5 = (1, 132)
# How long a v5 CONNECT may go unanswered before 3.1.1 is tried (see ProtocolChoice); a
# CONNACK takes one round trip once TCP and TLS are up, even over a satellite link.
V5_CONNACK_TIMEOUT = 5.0
# The reason paho gives its own close of a connection silent for `keepalive` seconds.
KEEPALIVE_TIMEOUT = ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout")
# A Maximum Packet Size announced for payloads of n bytes is n plus this: the fixed header,
# the topic (an enoc topic is some 60 bytes) and the properties.
PACKET_HEADROOM = 4096
# MQTT's largest packet (a four-byte remaining length), less the headroom
MAX_MESSAGE_SIZE = 268_435_455 - PACKET_HEADROOM
# What the agent announces: it receives acknowledgements only (no subscription)
AGENT_MAX_PACKET_SIZE = 64 * 1024


class TlsFiles(Protocol):
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...


class TlsSetupError(OSError):
    """A CA, certificate or key file that cannot be used (missing, unreadable, mismatched)."""


def tls_context(tls: TlsFiles | None, *, what: str = "MQTT") -> ssl.SSLContext:
    """Verifying client context: the server's certificate must chain to `ca_file` (or the
    system CAs) and name the host; `cert_file`/`key_file` are this client's identity.
    `what` names the link in the error about unusable files (the collector's InfluxDB
    link builds its context here too)."""
    ca = tls.ca_file if tls else None
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if tls is not None and tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("ca_file", ca),
                ("cert_file", tls.cert_file if tls else None),
                ("key_file", tls.key_file if tls else None),
            )
            if value
        )
        raise TlsSetupError(f"cannot use the {what} TLS files ({files}): {exc}") from exc
    return context


def client_args(
    url: str,
    *,
    identifier: str,
    tls: TlsFiles | None = None,
    username: str | None = None,
    password: Secret | None = None,
    keepalive: float = 30,
    timeout: float = 10.0,
    protocol: aiomqtt.ProtocolVersion = V311,
    session_expiry: int = SESSION_EXPIRY,
    receive_maximum: int | None = None,
    maximum_packet_size: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `aiomqtt.Client` (or `AckedClient`): a persistent session.

    3.1.1: clean session off. 5: clean start off on every connection (aiomqtt's
    default cleans the first one, and each reconnect here is a new client) and a
    session expiry of `session_expiry` seconds (0 would end the session with the
    connection); paho refuses a clean-session flag on a v5 client. `receive_maximum`
    (5 only) is how many QoS 1 messages the broker may have in flight to this client,
    unacknowledged: a consumer that acknowledges late sets it to its own window, which
    3.1.1 leaves to the broker's configuration (Mosquitto's max_inflight_messages).
    `maximum_packet_size` (5 only): the broker sends no larger packet to this client (it
    drops the message for it); 3.1.1 cannot say so, and the receiver checks sizes itself."""
    parts = urlsplit(url)
    secure = parts.scheme == "mqtts"
    args: dict[str, Any] = {
        "hostname": parts.hostname or "127.0.0.1",
        "port": parts.port or (8883 if secure else 1883),
        "identifier": identifier,
        "protocol": protocol,
        "keepalive": int(keepalive),
        "timeout": timeout,
    }
    if protocol == V5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry
        if receive_maximum is not None:
            properties.ReceiveMaximum = max(1, min(65535, receive_maximum))
        if maximum_packet_size is not None:
            properties.MaximumPacketSize = max(1, min(268_435_455, maximum_packet_size))
        args["clean_start"] = False
        args["properties"] = properties
    else:
        args["clean_session"] = False
    if username:
        args["username"] = username
    if password is not None:
        args["password"] = password.reveal()
    if secure:
        args["tls_context"] = tls_context(tls)
    return args


def broker_client_args(
    broker: MqttBroker, *, identifier: str, url: str = "", **options: Any
) -> dict[str, Any]:
    """`client_args` for a configured broker: its URL (or `url`, one of a cluster's; the
    first of `urls` when neither), TLS files and login."""
    return client_args(
        url or broker.brokers[0],
        identifier=identifier,
        tls=broker.tls,
        username=broker.username,
        password=broker.password,
        **options,
    )


@dataclass
class ProtocolChoice:
    """Which MQTT version to offer a broker next: 5, or 3.1.1 for `recheck` seconds after
    the broker showed it does not speak 5 (then 5 again: a broker upgraded in place).

    A broker shows it in one of two ways. It refuses the v5 CONNECT (CONNACK
    "unsupported protocol version"): settled at once. Or it leaves a v5 CONNECT
    unanswered on an open connection: amqtt, the demo's broker, parses a v5 CONNECT
    as 3.1.1 and, given the v5 properties (session expiry, the will's), waits for
    bytes that never come.
    Then 3.1.1 is tried tentatively, and settled only if it connects (`connected`);
    if it fails too (`failed`) the broker is merely down and 5 is offered again.
    """

    recheck: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    _v311_since: float | None = field(default=None, repr=False)
    _trying_v311: bool = field(default=False, repr=False)

    @property
    def version(self) -> aiomqtt.ProtocolVersion:
        if self._trying_v311:
            return V311
        if self._v311_since is not None and self.clock() - self._v311_since < self.recheck:
            return V311
        return V5

    def fall_back(self, error: BaseException) -> bool:
        """After a failed connection attempt: True when 3.1.1 should be tried at once."""
        if self.version != V5:
            return False
        if isinstance(error, MqttConnectError) and error.rc in _NO_V5:
            self._v311_since = self.clock()
            return True
        # aiomqtt's error for a CONNACK that did not come in time on a connection that
        # stayed open (its failures carry the OSError's text; one closed before the
        # CONNACK fails with its own error: AckedClient._on_disconnect)
        if type(error) is aiomqtt.MqttError and str(error) == "Operation timed out":
            self._trying_v311 = True
            return True
        return False

    def connected(self) -> None:
        """The attempt with `version` connected."""
        if self._trying_v311:
            self._trying_v311 = False
            self._v311_since = self.clock()

    def failed(self) -> None:
        """The attempt with `version` failed for a reason `fall_back` did not take."""
        self._trying_v311 = False


def abandon(client: aiomqtt.Client) -> None:
    """Release what a connection attempt that did not connect left behind.

    aiomqtt 2.5 leaves paho's socket open and its housekeeping task running when
    the CONNACK does not come in time (a broker that does not speak MQTT 5 leaving a
    v5 CONNECT unanswered): one socket and one task per attempt, and a broker
    waiting on the other end. Closing the socket through paho stops both (paho
    tells aiomqtt, which drops its reader and cancels the task). Harmless when
    there is no socket."""
    client._client._sock_close()


def version_name(protocol: aiomqtt.ProtocolVersion) -> str:
    return {V5: "5", V311: "3.1.1"}.get(protocol, str(int(protocol)))


class AckedClient(aiomqtt.Client):
    """`aiomqtt.Client` whose `publish_acked` returns the broker's PUBACK reason code.

    aiomqtt 2.5 drops the reason code (its `_on_publish` only wakes the waiting
    publish). This client resolves its own publishes by message id in `_on_publish`,
    which paho calls on the event loop's thread for every PUBACK; publishes made with
    the inherited `publish` are left to aiomqtt. Over 3.1.1 a PUBACK is always Success.
    `session_present` is the CONNACK's flag: whether the broker kept this client's
    session.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self.session_present = False

    async def publish_acked(
        self, topic: str, payload: bytes, *, retain: bool = False
    ) -> ReasonCode:
        """Publish at QoS 1 and return the broker's reason code (`.is_failure`: refused).
        Raises `aiomqtt.MqttError` if the message cannot be sent, the connection is lost
        before the acknowledgement or the client's `timeout` passes."""
        info = self._client.publish(topic, payload, 1, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            lost = self._disconnected.exception() if self._disconnected.done() else None
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message") from lost
        # paho hands the packet to the event loop's writer: no PUBACK can be read before
        # this future is registered.
        acked: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = acked
        try:
            done, _ = await asyncio.wait(
                (acked, self._disconnected),
                timeout=None if self.timeout == math.inf else self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._acks.pop(info.mid, None)
        if acked in done:
            return acked.result()
        if self._disconnected.done():
            lost = self._disconnected.exception()
            raise aiomqtt.MqttError("Disconnected before the broker acknowledged") from lost
        raise aiomqtt.MqttError("Operation timed out")

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        """As aiomqtt's, but the writer is added only if the socket is still open when the
        loop gets to it: paho asks from its thread, and a connection lost in between left a
        closed descriptor (EBADF, logged by asyncio with a traceback; the demo's WAN cut
        showed it) or one another socket had taken by then."""
        fileno = sock.fileno()

        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: as aiomqtt's callback does
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            if sock.fileno() == fileno:  # a closed socket's number is -1
                self._loop.add_writer(fileno, write)

        self._loop.call_soon_threadsafe(register)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        acked = self._acks.pop(mid, None)
        if acked is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not acked.done():
            acked.set_result(reason_code)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        """As aiomqtt's, but a connection that ends before the CONNACK fails the attempt
        at once. aiomqtt ignores it and waits out the timeout, and an unanswered v5
        CONNECT is how a broker that does not speak 5 shows it (`ProtocolChoice`): a
        relay or load balancer that accepts and then closes, its broker down, sent every
        client to 3.1.1 for an hour after each broker outage."""
        if not self._connected.done():
            # Only while the connect waits (aiomqtt holds its lock then: a later close must
            # not leave an exception nobody retrieves), and not paho's own keepalive close
            # of a CONNECT left unanswered: that is the silent broker, the timeout's case.
            if self._lock.locked() and reason_code != KEEPALIVE_TIMEOUT:
                closed = f"connection closed before the broker answered: {reason_code}"
                self._connected.set_exception(aiomqtt.MqttError(closed))
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
