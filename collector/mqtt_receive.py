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
"""

from __future__ import annotations

import struct

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_V5 = MQTTProtocolVersion.MQTTv5


def decode_publish(
    header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion
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
            return paho_handler()
        message = decode_publish(header, incoming["packet"], client._protocol)
        client._handle_on_message(message)
        if message.qos == 0 or client._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return client._send_puback(message.mid)

    client._handle_publish = handle_publish  # type: ignore[method-assign]
