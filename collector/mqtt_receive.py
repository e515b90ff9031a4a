"""A leaner PUBLISH receive path for paho, where the collector's ingest spends its CPU.

paho 2.2 decodes every incoming PUBLISH by unpacking the rest of the packet with
`struct` two or three times (each a copy of a 21 KB metrics payload), builds a
`Properties` object for every MQTT 5 message (its `__init__` fills two dictionaries of
every property MQTT 5 defines: 14 % of a replica's CPU in a profile of
`enoc bench collector`), and an `MQTTMessageInfo` with a `threading.Condition` that only
a publisher waits on (5 %). `lean_receive(client)` replaces that client's PUBLISH
handler with one that reads the packet through a memoryview (the payload copied once),
makes `Properties` only when the message carries some, and skips the `MQTTMessageInfo`.
Everything after it is paho's own: the on_message callbacks (aiomqtt's queue), the
PUBACK, manual acknowledgements. QoS 2 goes to paho's handler unchanged, and so
does the QoS 3 that MQTT forbids (paho refuses it as a protocol error).

A message without properties has `properties` None where paho gives an empty
`Properties`; the collector reads no property. tests/test_collector_mqtt_receive.py
checks it message for message against paho's decoder.

`buffered_read(client)` replaces the client's `loop_read`, which aiomqtt calls whenever
the socket is readable. paho reads one packet per call, and each with three to five
`recv` calls (a byte for the packet type, a byte at a time for the remaining length,
then the rest, each behind a lock): a fifth of the receive path's CPU. The replacement
reads what the socket has into one buffer (`recv_into`, up to 256 KB) and hands every
whole packet in it to paho's dispatcher; the start of a packet not yet whole stays at
the buffer's front until the next read. Bytes kept in user space are invisible to the
event loop's readiness, which is why every whole packet is handled before returning:
only an incomplete one waits, and its remainder is still to come from the socket (or,
on TLS, from the SSL object, whose `pending()` aiomqtt's callback checks). Given
`may_read`, the reader also pauses the socket while the consumer holds enough (see
`buffered_read`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_V5 = MQTTProtocolVersion.MQTTv5
_PUBLISH = 0x30


def decode_publish(
    header: int, packet: bytes | bytearray | memoryview, protocol: MQTTProtocolVersion
) -> paho.MQTTMessage:
    """One PUBLISH packet (its fixed header's first byte, and everything after the
    remaining length) as paho's `MQTTMessage`, without `info`; raises MalformedPacket."""
    view = memoryview(packet)
    size = len(view)
    qos = (header & 0x06) >> 1
    if size < 2:
        raise MalformedPacket("PUBLISH shorter than its topic length")
    end = 2 + ((view[0] << 8) | view[1])
    if end > size:
        raise MalformedPacket("PUBLISH topic longer than the packet")
    if protocol != _V5 and end == 2:
        raise MalformedPacket("topic can't be empty in MQTTv3")
    topic = bytes(view[2:end])
    pos = end
    mid = 0
    if qos > 0:
        if pos + 2 > size:
            raise MalformedPacket("PUBLISH without its packet identifier")
        mid = (view[pos] << 8) | view[pos + 1]
        pos += 2
    properties: Properties | None = None
    if protocol == _V5:
        length, shift, start = 0, 0, pos
        while True:  # the properties' length, a Variable Byte Integer
            if pos >= size or shift > 21:
                raise MalformedPacket("PUBLISH properties length malformed")
            byte = view[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if length:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            try:
                _, used = properties.unpack(bytes(view[start:]))  # type: ignore[no-untyped-call]
            except (struct.error, IndexError, KeyError, ValueError, MQTTException) as exc:
                raise MalformedPacket(str(exc)) from exc
            pos = start + used
            if pos > size:
                raise MalformedPacket("PUBLISH properties longer than the packet")
    message = paho.MQTTMessage.__new__(paho.MQTTMessage)
    message.timestamp = paho.time_func()
    message.state = paho.mqtt_ms_invalid
    message.dup = bool(header & 0x08)
    message.mid = mid
    message._topic = topic
    message.qos = qos
    message.retain = bool(header & 0x01)
    message.properties = properties
    message.payload = bytes(view[pos:])
    return message


def lean_receive(client: paho.Client) -> None:
    """Make `client` receive QoS 0 and 1 PUBLISH packets through `decode_publish`."""
    paho_handler = client._handle_publish

    def handle_publish() -> MQTTErrorCode:
        incoming = client._in_packet
        header = incoming["command"]
        if header & 0x04:  # QoS 2 (its PUBREC/PUBREL state is paho's) or 3 (refused by it)
            incoming["packet"] = bytearray(incoming["packet"])  # paho's type (not a view)
            return paho_handler()
        message = decode_publish(header, incoming["packet"], client._protocol)
        client._handle_on_message(message)
        if message.qos == 0 or client._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return client._send_puback(message.mid)

    client._handle_publish = handle_publish  # type: ignore[method-assign]


READ_SIZE = 256 * 1024  # the buffer: a dozen 21 KB metrics messages a read
RESUME_CHECK = 0.02  # s between checks of a paused reader
MAX_PAUSE = 10.0  # s: a read at least this often (keepalive, a lost connection)


def _empty_packet() -> dict[str, object]:
    """paho's `_in_packet` between packets."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class _BufferedReader:
    """paho's `loop_read` for one client: `recv_into` one buffer, kept between reads.

    Into, not `recv(n)`: that allocates n bytes for every call and gives back what is
    unused, and for n = 256 KB the allocation (fresh pages each time) cost ten times the
    copy (75-150 us against 13 us for 200 KB here). The buffer holds the start of a packet
    not yet whole at its front; it is replaced by a larger one for a packet that does
    not fit, and back by one of the first size once it is empty (a 23 MB message must not
    keep 23 MB). Packets are handed to paho as views of it, valid during the call only:
    decode_publish copies topic and payload out, other packets are copied whole.
    """

    def __init__(
        self,
        client: paho.Client,
        size: int,
        may_read: Callable[[], bool] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.client = client
        self.size = size
        self.buffer = bytearray(size)
        self.filled = 0  # bytes at the front: the start of a packet not yet whole
        self.sock: object = None  # the connection they came from
        self.may_read = may_read
        self.on_error = on_error
        self.paused: tuple[asyncio.AbstractEventLoop, int, float] | None = None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:  # paho's signature
        client = self.client
        sock = client._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self.sock is not sock:  # a new connection: nothing of the old one carries over
            self.sock, self.filled = sock, 0
        if not isinstance(sock, socket.socket):  # not a socket (paho's websocket wrapper)
            return paho.Client.loop_read(client, max_packets)
        if self.filled == len(self.buffer):  # a header longer than a tiny buffer
            self.buffer = self.buffer + bytearray(len(self.buffer))
        with memoryview(self.buffer) as view:
            try:
                received = sock.recv_into(view[self.filled :])
            except (BlockingIOError, ssl.SSLWantReadError):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except ssl.SSLWantWriteError:
                client._call_socket_register_write()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError as err:  # TimeoutError too: paho's answer to both
                client._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not received:
                return client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            with client._msgtime_mutex:
                client._last_bytes_received = paho.time_func()
            try:
                rc = self._dispatch(sock, view, self.filled + received)
            finally:
                client._in_packet = _empty_packet()  # type: ignore[assignment]
        still = client._sock is sock and isinstance(sock, socket.socket)  # (for mypy)
        if still and self.may_read is not None and not self.may_read():
            self._pause(sock)
        return rc

    # ------------------------------------------------------------------ pausing

    def _pause(self, sock: socket.socket) -> None:
        """Stop reading this socket until `may_read` says so again (the broker's send
        buffer fills and its session holds the rest); checked every RESUME_CHECK s, and
        one read is made at least every MAX_PAUSE s, so that the keepalive's PINGRESP (and
        the end of a lost connection) is still read."""
        if self.paused is not None:
            return
        loop = asyncio.get_running_loop()  # loop_read runs on the event loop's thread
        fd = sock.fileno()
        loop.remove_reader(fd)
        self.paused = (loop, fd, loop.time())
        loop.call_later(RESUME_CHECK, self._check)

    def _check(self) -> None:
        if self.paused is None:
            return
        loop, fd, since = self.paused
        sock = self.client._sock
        if sock is None or sock.fileno() != fd:  # closed meanwhile: nothing to resume
            self.paused = None
            return
        assert self.may_read is not None
        if self.may_read() or loop.time() - since >= MAX_PAUSE:
            self.paused = None
            loop.add_reader(fd, self._readable)
        else:
            loop.call_later(RESUME_CHECK, self._check)

    def _readable(self) -> None:
        """What aiomqtt's reader callback does: read, again while TLS holds decrypted
        bytes, and hand an unexpected error to the client (which then disconnects)."""
        try:
            while True:
                self.loop_read()
                sock = self.client._sock
                if self.paused is None and isinstance(sock, ssl.SSLSocket) and sock.pending():
                    continue
                break
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)

    def _dispatch(self, sock: object, view: memoryview, size: int) -> MQTTErrorCode:
        """Hand every whole packet of `view[:size]` to paho; keep the rest at the front."""
        client = self.client
        pos = 0
        needed = 0  # the size of the packet not yet whole, when its header is
        while size - pos >= 2:
            length, shift, at, whole = 0, 0, pos + 1, False
            while at < size:  # the remaining length, a Variable Byte Integer (1-4 bytes)
                byte = view[at]
                at += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    whole = True
                    break
                shift += 7
                if shift > 21:  # a fifth byte: paho's answer too
                    return client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)
            end = at + length
            if not whole or end > size:
                needed = end - pos if whole else 0
                break  # the rest of this packet is still to come
            command = view[pos]
            pos = end
            client._in_packet = {
                "command": command,
                "have_remaining": 1,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": length,
                # a PUBLISH is read through the view (decode_publish copies its topic
                # and payload out); paho's other handlers get the bytearray they know
                "packet": view[at:end]  # type: ignore[typeddict-item]
                if command & 0xF0 == _PUBLISH
                else bytearray(view[at:end]),
                "to_process": 0,
                "pos": 0,
            }
            try:
                rc = client._packet_handle()
            except MalformedPacket as exc:
                client._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            if rc > 0:
                return client._loop_rc_handle(rc)
            if client._sock is not sock:  # the handler closed the connection
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        rest = size - pos
        if needed > len(self.buffer):  # a packet larger than the buffer: a larger one
            larger = bytearray(max(needed, 2 * len(self.buffer)))
            larger[:rest] = view[pos:size]
            self.buffer = larger
        elif not rest and len(self.buffer) > self.size:  # that packet is gone: so is its room
            self.buffer = bytearray(self.size)
        elif rest and pos:
            self.buffer[:rest] = view[pos:size]  # same length: the buffer keeps its size
        self.filled = rest
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def buffered_read(
    client: paho.Client,
    read_size: int = READ_SIZE,
    *,
    may_read: Callable[[], bool] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Make `client.loop_read` read the socket into a buffer of `read_size` bytes and
    dispatch every whole packet in it (see the module's docstring).

    `may_read`, if given, is asked after each read: while it says no, the socket is not
    read (at most one read every MAX_PAUSE seconds). That bounds what a consumer holds
    when the broker sends more than its Receive Maximum allows (Debian's Mosquitto
    2.0.11 does, after the first acknowledgement). `on_error` gets an unexpected error
    of a read made after a pause (aiomqtt's own callback makes the others)."""
    reader = _BufferedReader(client, read_size, may_read, on_error)
    client.loop_read = reader.loop_read  # type: ignore[method-assign]
