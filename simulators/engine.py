"""SNMP request processing for one simulated device: bytes in, bytes out.

Pure and synchronous so that it can be tested without sockets and measured
without the event loop. Every kind of bad input is counted in `Stats` and
answered the way a real agent answers it (a Report for USM failures) or
dropped silently (malformed BER, unknown community), never raised.

A device with a `garbage` fault answers, but the way broken agents do
(`GARBAGE_MODES`): a response cut short (undecodable BER), a well-formed
response to another request id, numbers sent as OCTET STRINGs, or counters
that hold absurd values.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from enoc.snmp import ber
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    NO_ERROR,
    NO_SUCH_NAME,
    TOO_BIG,
    V1,
    V2C,
    V3,
    ExchangeCounts,
    Pdu,
    UnknownSecurityModel,
    V3Header,
    build_v3_message,
    encode_null_varbinds,
    encode_pdu,
    encode_report,
    encode_scoped,
    parse_pdu,
    parse_v3_header,
)
from enoc.snmp.usm import (
    REPORT_KINDS,
    SNMP_UNKNOWN_CONTEXTS,
    TIME_WINDOW,
    USM_STATS_DECRYPTION_ERRORS,
    USM_STATS_NOT_IN_TIME_WINDOWS,
    USM_STATS_UNKNOWN_ENGINE_IDS,
    USM_STATS_UNKNOWN_USER_NAMES,
    USM_STATS_UNSUPPORTED_SEC_LEVELS,
    USM_STATS_WRONG_DIGESTS,
    DecryptionError,
    LocalizedUser,
)
from simulators.model import Device, Getter

NOT_WRITABLE = 17
MAX_BULK_VARBINDS = 2048  # a local constraint, like real agents have
UDP_MAX = 65507
# Room for length octets that grow as varbinds are added (up to 3 per SEQUENCE level).
LENGTH_SLACK = 16
# How a `garbage` fault spoils a device's answers:
GARBAGE_MODES = (
    "truncated",  # every answer cut to half its length: undecodable BER
    "request_id",  # well-formed, but carrying the id of the request before (v2c request-id;
    #                v3 msgID and request-id): an answer to some other request
    "wrong_type",  # every number (INTEGER, Counter32/64, Gauge32, TimeTicks) sent as an
    #                OCTET STRING of its decimal digits
    "absurd",  # every Counter32 and Counter64 a random value, new at each answer
)
NUMBER_TAGS = (ber.INTEGER, ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64)
# Absurd Counter64 values stay below 2^63: InfluxDB's integers are signed 64-bit.
ABSURD_BITS = {ber.COUNTER32: 32, ber.COUNTER64: 63}


@dataclass
class Stats(ExchangeCounts):
    """What the simulator served and what it refused, by kind."""

    varbinds: int = 0
    traps: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by fault: unreachable, packet_loss
    garbled: Counter[str] = field(default_factory=Counter)  # answers spoiled, by garbage mode

    def as_dict(self) -> dict[str, object]:
        """Every count, a Counter as a plain dict (the control API's JSON)."""
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}


class Refused(Exception):
    """A request that is dropped: the kind names the counter."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Garbled:
    """A view's getters as a device with a `garbage` fault of a value mode answers them."""

    def __init__(self, getters: Sequence[Getter], spoil: Callable[[bytes], bytes]) -> None:
        self.getters = getters
        self.spoil = spoil

    def __getitem__(self, i: int) -> Getter:
        getter, spoil = self.getters[i], self.spoil
        return lambda device, now: spoil(getter(device, now))


def as_text(value: bytes) -> bytes:
    """A number as an OCTET STRING of its decimal digits (wrong_type); the rest as it is."""
    tag, start, stop = ber.read_tlv(value, 0, len(value))
    if tag not in NUMBER_TAGS:
        return value
    if tag == ber.INTEGER:
        number = ber.decode_integer(value, start, stop)
    else:
        number = ber.decode_unsigned(value, start, stop)
    return ber.encode_octets(str(number).encode())


def absurd(rng: random.Random) -> Callable[[bytes], bytes]:
    """Counters to random values over their range (absurd); the rest as it is."""

    def spoil(value: bytes) -> bytes:
        bits = ABSURD_BITS.get(value[0])
        if bits is None:
            return value
        return ber.encode_unsigned(value[0], rng.getrandbits(bits))

    return spoil


class Responder:
    """Answers one device's GET, GETNEXT and GETBULK from its MibView."""

    def __init__(self, stats: Stats, rng: random.Random | None = None) -> None:
        self.stats = stats
        self.rng = rng or random.Random()
        self._absurd = absurd(self.rng)

    def _getters(self, device: Device) -> Sequence[Getter] | _Garbled:
        view = device.view
        assert view is not None
        mode = device.faults.garbage
        if mode == "wrong_type":
            self.stats.garbled[mode] += 1
            return _Garbled(view.getters, as_text)
        if mode == "absurd":
            self.stats.garbled[mode] += 1
            return _Garbled(view.getters, self._absurd)
        return view.getters

    def respond(self, device: Device, pdu: Pdu, budget: int, now: float) -> bytes:
        """The Response PDU for `pdu`, its varbinds fitting in `budget` octets."""
        view = device.view
        assert view is not None
        if pdu.tag == ber.GETBULK:
            return self._bulk(device, pdu, budget, now)
        if pdu.tag == ber.SET:
            return encode_pdu(ber.RESPONSE, pdu.request_id, NOT_WRITABLE, 1, b"")
        parts: list[bytes] = []
        oids = view.oids
        count = len(oids)
        getters = self._getters(device)
        for oid in pdu.oids:
            if pdu.tag == ber.GET:
                i = view.exact(oid)
                if i >= 0:
                    parts.append(ber.encode_varbind(view.encoded_oids[i], getters[i](device, now)))
                else:
                    parts.append(ber.encode_varbind(ber.encode_oid(oid), view.missing_value(oid)))
            else:  # GETNEXT
                i = _next_index(oids, oid)
                if i < count:
                    parts.append(ber.encode_varbind(view.encoded_oids[i], getters[i](device, now)))
                else:
                    parts.append(ber.encode_varbind(ber.encode_oid(oid), ber.END_OF_MIB_VIEW_VALUE))
        body = b"".join(parts)
        if len(body) > budget:
            self.stats.bad["too_big"] += 1
            return encode_pdu(ber.RESPONSE, pdu.request_id, TOO_BIG, 0, b"")
        self.stats.varbinds += len(parts)
        return encode_pdu(ber.RESPONSE, pdu.request_id, NO_ERROR, 0, body)

    def _bulk(self, device: Device, pdu: Pdu, budget: int, now: float) -> bytes:
        view = device.view
        assert view is not None
        oids, encoded, getters = view.oids, view.encoded_oids, self._getters(device)
        count = len(oids)
        non_repeaters = max(0, min(pdu.field1, len(pdu.oids)))
        repetitions = max(0, pdu.field2)
        parts: list[bytes] = []
        used = 0
        truncated = False
        limit = min(MAX_BULK_VARBINDS, device.max_bulk_varbinds)

        def add(vb: bytes) -> bool:
            nonlocal used
            if used + len(vb) > budget or len(parts) >= limit:
                return False
            parts.append(vb)
            used += len(vb)
            return True

        for oid in pdu.oids[:non_repeaters]:
            i = _next_index(oids, oid)
            vb = (
                ber.encode_varbind(encoded[i], getters[i](device, now))
                if i < count
                else ber.encode_varbind(ber.encode_oid(oid), ber.END_OF_MIB_VIEW_VALUE)
            )
            if not add(vb):
                truncated = True
                break
        repeaters = pdu.oids[non_repeaters:]
        if not truncated and repeaters:
            positions = [_next_index(oids, oid) for oid in repeaters]
            for r in range(repetitions):
                all_done = True
                for j, start in enumerate(positions):
                    i = start + r
                    if i < count:
                        all_done = False
                        vb = ber.encode_varbind(encoded[i], getters[i](device, now))
                    else:
                        last = oids[count - 1] if count and start < count else repeaters[j]
                        vb = ber.encode_varbind(ber.encode_oid(last), ber.END_OF_MIB_VIEW_VALUE)
                    if not add(vb):
                        truncated = True
                        break
                if truncated or all_done:
                    break
        if not parts and (pdu.oids and repetitions + non_repeaters > 0):
            self.stats.bad["too_big"] += 1
            return encode_pdu(ber.RESPONSE, pdu.request_id, TOO_BIG, 0, b"")
        self.stats.varbinds += len(parts)
        return encode_pdu(ber.RESPONSE, pdu.request_id, NO_ERROR, 0, b"".join(parts))

    def respond_v1(self, device: Device, pdu: Pdu, budget: int, now: float) -> bytes:
        """The v1 Response PDU for `pdu`, as an RFC 3584 agent answers a v1 request: the
        first object missing (or a Counter64, which v1 cannot carry; GETNEXT skips them)
        fails the request with noSuchName and its index, echoing the request's varbinds."""
        view = device.view
        assert view is not None
        oids, encoded, getters = view.oids, view.encoded_oids, self._getters(device)
        count = len(oids)
        parts: list[bytes] = []
        failed = 0
        if pdu.tag == ber.SET:  # read-only: notWritable is noSuchName in v1 (RFC 3584 4.4)
            failed = 1
        for n, oid in enumerate(pdu.oids, 1):
            if failed:
                break
            if pdu.tag == ber.GET:
                i = view.exact(oid)
                value = getters[i](device, now) if i >= 0 else b""
            else:  # GETNEXT
                i = _next_index(oids, oid)
                value = getters[i](device, now) if i < count else b""
                while i < count and value[0] == ber.COUNTER64:
                    i += 1
                    value = getters[i](device, now) if i < count else b""
            if not value or value[0] in (ber.COUNTER64, ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE):
                failed = n
                break
            parts.append(ber.encode_varbind(encoded[i], value))
        if failed:
            return _v1_error(pdu, NO_SUCH_NAME, failed)
        body = b"".join(parts)
        if len(body) > budget:
            self.stats.bad["too_big"] += 1
            return _v1_error(pdu, TOO_BIG, 0)
        self.stats.varbinds += len(parts)
        return encode_pdu(ber.RESPONSE, pdu.request_id, NO_ERROR, 0, body)


def _v1_error(pdu: Pdu, status: int, index: int) -> bytes:
    """A v1 error answer: the request's varbinds echoed (RFC 1157 4.1.2)."""
    return encode_pdu(
        ber.RESPONSE, pdu.request_id, status, index, encode_null_varbinds(list(pdu.oids))
    )


def _next_index(oids: list[Oid], oid: Oid) -> int:
    return bisect_right(oids, oid)


def _stale(request_id: int) -> int:
    """The id of the request before: what a `request_id` garbage fault answers with."""
    return (request_id - 1) & 0x7FFFFFFF


class Engine:
    """Message processing (v1, v2c and v3 USM) in front of a `Responder`."""

    def __init__(self, stats: Stats | None = None, rng: random.Random | None = None) -> None:
        self.stats = stats or Stats()
        self.responder = Responder(self.stats, rng)
        self._report_counts: Counter[Oid] = Counter()
        self.last_bad: str | None = None  # what was wrong with the last request, if anything

    def handle(self, device: Device, data: bytes, now: float) -> bytes | None:
        """The datagram to send back, or None to stay silent."""
        self.stats.requests += 1
        self.last_bad = None
        if len(data) > device.max_message_size:
            self._bad("oversized")
            return None
        try:
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            if end != len(data):
                raise BerError("trailing bytes after the message")
            version, pos = ber.read_integer(data, start, end)
            if version == V2C:
                reply = self._v2c(device, data, pos, end, now)
            elif version == V1:
                reply = self._v2c(device, data, pos, end, now, V1)
            elif version == V3:
                reply = self._v3(device, data, pos, end, now)
            else:
                raise Refused("unsupported_version")
        except BerError:
            self._bad("malformed")
            return None
        except Refused as refused:
            self._bad(refused.kind)
            return None
        self.stats.responses += 1
        if device.faults.garbage == "truncated":
            self.stats.garbled["truncated"] += 1
            return reply[: len(reply) // 2]
        return reply

    def _bad(self, kind: str) -> None:
        self.stats.bad[kind] += 1
        self.last_bad = kind

    # ---------------------------------------------------------------- v2c

    def _v2c(
        self, device: Device, data: bytes, pos: int, end: int, now: float, version: int = V2C
    ) -> bytes:
        """v2c, or v1 with the same communities (a device speaking both, as most do)."""
        community, pos = ber.read_octets(data, pos, end)
        pdu = parse_pdu(data, pos, end)
        if community not in device.communities:
            raise Refused("unknown_community")  # real agents stay silent (snmpInBadCommunityNames)
        if pdu.tag not in (ber.GET, ber.GETNEXT, ber.GETBULK, ber.SET) or (
            version == V1 and pdu.tag == ber.GETBULK  # no GETBULK in v1
        ):
            raise Refused("unsupported_pdu")
        if device.faults.garbage == "request_id":
            self.stats.garbled["request_id"] += 1
            pdu.request_id = _stale(pdu.request_id)
        head = ber.encode_integer(version) + ber.encode_octets(community)
        budget = device.max_message_size - len(head) - 24 - LENGTH_SLACK
        respond = self.responder.respond_v1 if version == V1 else self.responder.respond
        response = respond(device, pdu, budget, now)
        return ber.tlv(ber.SEQUENCE, head + response)

    # ---------------------------------------------------------------- v3

    def _v3(self, device: Device, data: bytes, pos: int, end: int, now: float) -> bytes:
        try:
            header = parse_v3_header(data, pos, end)
        except UnknownSecurityModel:
            raise Refused("unknown_security_model") from None
        msg_id = header.msg_id
        stale = device.faults.garbage == "request_id"
        if stale:
            self.stats.garbled["request_id"] += 1
            msg_id = _stale(msg_id)
        ctx = _V3Context(msg_id, min(header.max_size, device.max_message_size), header.user_name)
        reportable = header.reportable
        request_id = self._peek_request_id(data, header, end) if not header.level & FLAG_PRIV else 0
        if stale:
            request_id = _stale(request_id)

        def report(counter: Oid, keys: LocalizedUser | None = None, rid: int = request_id) -> bytes:
            # A time-window report is sent whether the request was reportable or not.
            always = counter == USM_STATS_NOT_IN_TIME_WINDOWS
            return self._report(device, ctx, rid, counter, now, reportable or always, keys)

        if header.engine_id != device.engine_id:
            return report(USM_STATS_UNKNOWN_ENGINE_IDS)  # discovery (empty engine ID) too
        keys = device.user_keys(header.user_name)
        if keys is None:
            return report(USM_STATS_UNKNOWN_USER_NAMES)
        if header.level & ~keys.user.level:
            return report(USM_STATS_UNSUPPORTED_SEC_LEVELS)
        if header.level & FLAG_AUTH:
            if not header.authentic(data, keys):
                return report(USM_STATS_WRONG_DIGESTS)
            boots, etime = header.boots, header.etime
            ours_boots, ours_time = device.engine_boots, device.engine_time(now)
            if boots != ours_boots or abs(etime - ours_time) > TIME_WINDOW or boots >= 0x7FFFFFFF:
                ctx.level = FLAG_AUTH
                return report(USM_STATS_NOT_IN_TIME_WINDOWS, keys)
        try:
            _engine, context_name, pdu = header.open_scoped(data, end, keys, parse_pdu)
        except DecryptionError:
            return report(USM_STATS_DECRYPTION_ERRORS)
        ctx.level = header.level
        if stale:
            pdu.request_id = _stale(pdu.request_id)
        if pdu.tag not in (ber.GET, ber.GETNEXT, ber.GETBULK, ber.SET):
            raise Refused("unsupported_pdu")
        if context_name:
            return report(SNMP_UNKNOWN_CONTEXTS, keys, pdu.request_id)
        # The envelope of a v3 response: ~60 octets plus the engine ID, user, MAC and salt.
        overhead = (
            64
            + len(device.engine_id) * 2
            + len(header.user_name)
            + keys.auth_len
            + 8
            + LENGTH_SLACK
        )
        response = self.responder.respond(device, pdu, ctx.max_size - overhead, now)
        return self._wrap(device, ctx, response, now, keys)

    @staticmethod
    def _peek_request_id(data: bytes, header: V3Header, end: int) -> int:
        try:
            return header.open_scoped(data, end, None, parse_pdu)[2].request_id
        except BerError:
            return 0

    def _report(
        self,
        device: Device,
        ctx: _V3Context,
        request_id: int,
        counter: Oid,
        now: float,
        reportable: bool,
        keys: LocalizedUser | None = None,
    ) -> bytes:
        kind = REPORT_KINDS[counter]
        if not reportable:
            raise Refused(kind)
        self.stats.reports[kind] += 1
        self.last_bad = kind
        self._report_counts[counter] += 1
        pdu = encode_report(request_id, counter, self._report_counts[counter])
        if keys is None:
            ctx.level = 0
        return self._wrap(device, ctx, pdu, now, keys)

    def _wrap(
        self, device: Device, ctx: _V3Context, pdu: bytes, now: float, keys: LocalizedUser | None
    ) -> bytes:
        return build_v3_message(
            msg_id=ctx.msg_id,
            max_size=device.max_message_size,
            flags=ctx.level if keys is not None else 0,
            engine_id=device.engine_id,
            boots=device.engine_boots,
            etime=device.engine_time(now),
            user_name=ctx.user_name,
            scoped=encode_scoped(device.engine_id, pdu),
            keys=keys,
        )


@dataclass
class _V3Context:
    msg_id: int
    max_size: int
    user_name: bytes
    level: int = 0
