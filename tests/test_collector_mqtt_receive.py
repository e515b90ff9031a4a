"""collector.mqtt_receive against paho's own PUBLISH decoder: the same message from every
packet, and a malformed packet refused wherever paho refuses it."""

from __future__ import annotations

import itertools
import socket
import struct
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.mqtt_receive import buffered_read, decode_publish, lean_receive

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def properties(**values: object) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def packet(
    topic: bytes,
    payload: bytes,
    *,
    qos: int,
    mid: int,
    protocol: MQTTProtocolVersion,
    props: Properties | None,
) -> bytes:
    """A PUBLISH after its fixed header, as a broker sends it."""
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if protocol == V5:
        body += props.pack() if props is not None else b"\x00"  # type: ignore[no-untyped-call]
    return body + payload


PROPS = [
    None,
    properties(MessageExpiryInterval=3600),
    properties(UserProperty=[("agent", "nyc-1"), ("v", "1")], ContentType="application/json"),
]
PAYLOADS = [b"", b"{}", b'{"v":1,"samples":[]}' * 1000]
TOPICS = [b"enoc/v1/nyc/nyc-1/metrics", b"t" * 300]


def same(ours: paho.MQTTMessage, theirs: _packet.PublishPacket) -> None:
    assert ours.topic == theirs.topic.decode()
    assert (ours.mid, ours.qos, ours.dup, ours.retain) == (
        theirs.mid,
        theirs.qos,
        theirs.dup,
        theirs.retain,
    )
    assert ours.payload == theirs.payload and type(ours.payload) is bytes
    if ours.properties is None:  # none carried: paho's is empty (or absent on 3.1.1)
        assert theirs.properties is None or theirs.properties.json() == {}  # type: ignore[no-untyped-call]
    else:
        assert theirs.properties is not None
        assert ours.properties.json() == theirs.properties.json() != {}  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("protocol", [V5, V311])
def test_every_publish_decodes_as_paho_decodes_it(protocol: MQTTProtocolVersion) -> None:
    cases = itertools.product(TOPICS, PAYLOADS, (0, 1), PROPS, (0, 1), (0, 1))
    for topic, payload, qos, props, dup, retain in cases:
        if protocol != V5 and props is not None:
            continue
        header = 0x30 | (dup << 3) | (qos << 1) | retain
        data = packet(topic, payload, qos=qos, mid=4321, protocol=protocol, props=props)
        same(decode_publish(header, data, protocol), _packet.decode_publish(header, data, protocol))
        ours = decode_publish(header, bytearray(data), protocol)  # paho reads into bytearray
        assert ours.payload == payload


@pytest.mark.parametrize("protocol", [V5, V311])
def test_a_cut_packet_is_refused_wherever_paho_refuses_it(protocol: MQTTProtocolVersion) -> None:
    """Every prefix of a packet: both decoders refuse it (MalformedPacket, which paho
    answers by dropping the connection) or both read the same message from it; a cut
    inside the properties, which paho reads past their end as if they were whole, is
    refused."""
    props = PROPS[2] if protocol == V5 else None
    topic = b"enoc/v1/x/y/events"
    data = packet(topic, b'{"v":1}', qos=1, mid=7, protocol=protocol, props=props)
    start = 2 + len(topic) + 2
    end = start + (len(props.pack()) if props is not None else 0)  # type: ignore[no-untyped-call]
    refused = 0
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        if start < cut < end:
            with pytest.raises(MalformedPacket):
                decode_publish(0x32, prefix, protocol)
            refused += 1
            continue
        try:
            theirs = _packet.decode_publish(0x32, prefix, protocol)
        except MalformedPacket:
            with pytest.raises(MalformedPacket):
                decode_publish(0x32, prefix, protocol)
            refused += 1
            continue
        same(decode_publish(0x32, prefix, protocol), theirs)
    assert refused >= start, "every cut inside the topic, the id and the properties"


def test_an_empty_topic_is_refused_on_3_1_1_and_allowed_on_5() -> None:
    data = packet(b"", b"x", qos=0, mid=0, protocol=V311, props=None)
    with pytest.raises(MalformedPacket, match="empty"):
        decode_publish(0x30, data, V311)
    v5 = packet(b"", b"x", qos=0, mid=0, protocol=V5, props=properties(TopicAlias=3))
    assert decode_publish(0x30, v5, V5).properties is not None


def test_the_client_hands_messages_on_and_acknowledges_as_paho_does() -> None:
    """Through a paho client: on_message gets the message; QoS 1 is acknowledged unless
    acknowledgements are manual; QoS 2, and the forbidden QoS 3, still go to paho's own
    handler (which refuses QoS 3 as a protocol error, delivering nothing)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    got: list[paho.MQTTMessage] = []
    client.on_message = lambda _c, _u, message: got.append(message)
    acks: list[int] = []
    client._send_puback = lambda mid: acks.append(mid) or paho.MQTT_ERR_SUCCESS  # type: ignore[method-assign,func-returns-value]
    to_paho: list[int] = []
    client._handle_publish = lambda: to_paho.append(1) or paho.MQTT_ERR_SUCCESS  # type: ignore[method-assign,func-returns-value]
    lean_receive(client)

    def receive(header: int, data: bytes) -> None:
        client._in_packet = {"command": header, "packet": data}  # type: ignore[typeddict-item]
        client._handle_publish()

    one = packet(b"a/b", b"payload", qos=1, mid=9, protocol=V5, props=None)
    receive(0x32, one)
    client.manual_ack_set(True)
    receive(0x32, packet(b"a/b", b"manual", qos=1, mid=10, protocol=V5, props=None))
    receive(0x30, packet(b"a/b", b"qos0", qos=0, mid=0, protocol=V5, props=None))
    receive(0x34, packet(b"a/b", b"qos2", qos=2, mid=11, protocol=V5, props=None))
    receive(0x36, packet(b"a/b", b"qos3", qos=3, mid=12, protocol=V5, props=None))
    assert [(m.topic, m.payload, m.mid) for m in got] == [
        ("a/b", b"payload", 9),
        ("a/b", b"manual", 10),
        ("a/b", b"qos0", 0),
    ]
    assert acks == [9], "acknowledged by paho only while acknowledgements are automatic"
    assert to_paho == [1, 1], "QoS 2 is paho's, and the QoS 3 it refuses"


def stream(protocol: MQTTProtocolVersion) -> bytes:
    """What a broker sends: PUBLISH packets of QoS 0 and 1 from empty to 70 KB (remaining
    lengths of one to three bytes), with and without properties, among PINGRESPs."""
    out = bytearray()
    sizes = [0, 1, 100, 125, 126, 127, 128, 16_383, 16_384, 21_000, 70_000]
    for n, size in enumerate(sizes * 2):
        qos = n % 2
        props = PROPS[n % 3] if protocol == V5 else None
        topic = f"enoc/v1/site-{n}/agent/metrics".encode()
        body = packet(topic, bytes([n]) * size, qos=qos, mid=n + 1, protocol=protocol, props=props)
        retain = (n // 2) % 2
        out += bytes([0x30 | (qos << 1) | retain]) + remaining_length(len(body)) + body
        if n % 5 == 0:
            out += b"\xd0\x00"  # PINGRESP
    return bytes(out)


def remaining_length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_all(
    data: bytes, protocol: MQTTProtocolVersion, read_size: int | None
) -> list[tuple[str, bytes, int, int, bool, bool]]:
    """Everything a client delivers from `data` arriving on its socket, read by paho
    (read_size None) or by buffered_read, until the connection's end."""
    ours, theirs = socket.socketpair()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.manual_ack_set(True)
    got: list[tuple[str, bytes, int, int, bool, bool]] = []
    client.on_message = lambda _c, _u, m: got.append(
        (m.topic, bytes(m.payload), m.qos, m.mid, m.retain, m.dup)
    )
    lean_receive(client)
    if read_size is not None:
        buffered_read(client, read_size)
    client._sock = ours

    def send() -> None:
        for i in range(0, len(data), 1000):  # in pieces, as TCP might
            theirs.sendall(data[i : i + 1000])
        theirs.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=send)
    writer.start()
    calls = 0
    try:
        while client._sock is not None and calls < 1_000_000:  # the end: connection lost
            client.loop_read()
            calls += 1
    finally:
        writer.join()
        theirs.close()
        ours.close()
    return got


@pytest.mark.parametrize("protocol", [V5, V311])
def test_buffered_reads_deliver_what_paho_delivers_however_the_stream_is_cut(
    protocol: MQTTProtocolVersion,
) -> None:
    """The same messages in the same order from a stream read a byte at a time, in
    pieces that cut headers and payloads anywhere, or many packets a read; and the
    connection's end seen after the last one."""
    data = stream(protocol)
    expected = read_all(data, protocol, None)
    assert len(expected) == 22 and len({m[0] for m in expected}) == 22
    for read_size in (1, 2, 3, 7, 1000, 4096, 65_536, 256 * 1024):
        assert read_all(data, protocol, read_size) == expected, f"read_size {read_size}"


def test_a_remaining_length_of_five_bytes_drops_the_connection_as_paho_does() -> None:
    good = bytes([0x30]) + remaining_length(7) + struct.pack("!H", 3) + b"a/bxy"
    bad = b"\x30\xff\xff\xff\xff\x01"
    for read_size in (None, 1, 4096):
        got = read_all(good + bad + good, V311, read_size)
        assert [m[1] for m in got] == [b"xy"], f"read_size {read_size}: stops at the bad one"


def test_one_buffered_read_delivers_every_whole_packet_the_socket_holds() -> None:
    """What the event loop's readiness cannot see must not wait: every whole packet of
    a read is delivered in that call, only an incomplete one's start is kept."""
    ours, theirs = socket.socketpair()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=V311)
    got: list[bytes] = []
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    lean_receive(client)
    buffered_read(client)
    client._sock = ours
    one = [packet(b"a/b", b"%d" % n, qos=0, mid=0, protocol=V311, props=None) for n in range(10)]
    wire = [bytes([0x30]) + remaining_length(len(p)) + p for p in one]
    try:
        theirs.sendall(b"".join(wire) + wire[0][:3])  # ten whole, and the start of one
        client.loop_read()
        assert got == [b"%d" % n for n in range(10)]
        theirs.sendall(wire[0][3:])
        client.loop_read()
        assert got[10:] == [b"0"]
    finally:
        ours.close()
        theirs.close()
