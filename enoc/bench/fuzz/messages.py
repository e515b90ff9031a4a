"""Valid inputs the mutators start from: wire messages, traps, configs, API requests."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from enoc import wire
from enoc.snmp import ber
from enoc.snmp.message import build_v3_message, encode_pdu, encode_scoped
from enoc.snmp.usm import LocalizedUser, UsmUser
from enoc.wire import Kind, encode

SITE = "fuzz"
AGENT = "fuzz-1"
SYS_UPTIME_0 = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
LINK_DOWN = (1, 3, 6, 1, 6, 3, 1, 1, 5, 3)
IF_INDEX = (1, 3, 6, 1, 2, 1, 2, 2, 1, 1)
TRAP_COMMUNITY = b"fuzz-traps"
TRAP_USERS = [
    UsmUser("fuzz-noauth"),
    UsmUser("fuzz-auth", "SHA", "fuzz-auth-key"),
    UsmUser("fuzz-priv", "SHA-256", "fuzz-auth-key", "AES-128", "fuzz-priv-key"),
]
TRAP_ENGINE = b"\x80\x00\x1f\x88\x04fuzz-sender"


def metrics(
    rng: random.Random, site: str = SITE, agent: str = AGENT, seq: int = 1, now: float = 0.0
) -> bytes:
    now = now or time.time()
    samples = []
    for d in range(rng.randint(1, 2)):
        ifs = [
            wire.InterfaceSample(
                i,
                f"ge-0/0/{i}",
                f"port {i}",
                rng.choice(["", "uplink"]),
                {
                    "in_octets": rng.randrange(2**40),
                    "out_octets": rng.randrange(2**40),
                    "in_bps": round(rng.random() * 1e9, 1),
                    "out_bps": round(rng.random() * 1e9, 1),
                    "oper_status": rng.choice([1, 2]),
                },
            )
            for i in range(1, rng.randint(1, 4) + 1)
        ]
        samples.append(
            wire.DeviceSample(
                f"dev-{d}",
                f"127.0.0.{d + 1}",
                now - 1,
                {"cpu": rng.randrange(100), "memory": 41.5, "response_ms": 3.25, "descr": "x"},
                ifs,
                [wire.BgpSample("127.9.0.1", {"state": 6, "prefixes": 10})]
                if rng.random() < 0.3
                else [],
                [  # sensors: a number and a string, the rows' fields
                    wire.Row(
                        "sensor",
                        {"sensor": f"s {k}", "class": "fan"},
                        {"value": 41.5, "status": "ok"},
                    )
                    for k in range(rng.randint(0, 3))
                ],
            )
        )
    return encode(wire.MetricsMessage(agent, site, "americas", seq, now, samples))


def event(
    rng: random.Random,
    device: str = "dev-0",
    resource: str = "if:3",
    state: str = "down",
    now: float = 0.0,
) -> wire.Event:
    return wire.Event(
        f"e-{rng.getrandbits(48):x}",
        (now or time.time()) - 1,
        device,
        resource,
        "link",
        state,
        "major",
        "ge-0/0/3 down",
        rng.choice(["poll", "trap"]),
        {"if_name": "ge-0/0/3", "if_index": 3},
    )


def events(
    rng: random.Random, site: str = SITE, agent: str = AGENT, seq: int = 1, now: float = 0.0
) -> bytes:
    now = now or time.time()
    items = [event(rng, f"dev-{rng.randrange(3)}", f"if:{rng.randrange(1, 9)}", now=now)]
    return encode(wire.EventsMessage(agent, site, "americas", seq, now, items))


def status(
    rng: random.Random, site: str = SITE, agent: str = AGENT, seq: int = 1, now: float = 0.0
) -> bytes:
    devices = [wire.DeviceInfo(f"dev-{d}", f"127.0.0.{d + 1}", "router", "") for d in range(2)]
    return encode(
        wire.StatusMessage(
            agent,
            site,
            "americas",
            seq,
            now or time.time(),
            "online",
            "0.1.0",
            2,
            {"polls": 10, "spool_bytes": 0, "uptime_s": 12.5},
            devices if rng.random() < 0.5 else [],
        )
    )


VALID = {"metrics": metrics, "events": events, "status": status}


def valid_json(kind: Kind, rng: random.Random, now: float = 0.0) -> Any:
    """A valid message of `kind` as JSON values, sent at `now` (0: the present)."""
    return json.loads(VALID[kind](rng, now=now))


# ------------------------------------------------------------------ traps


def _varbinds(rng: random.Random) -> bytes:
    index = rng.randrange(1, 50)
    return (
        ber.encode_varbind(
            ber.encode_oid(SYS_UPTIME_0), ber.encode_unsigned(ber.TIMETICKS, rng.randrange(2**32))
        )
        + ber.encode_varbind(ber.encode_oid(SNMP_TRAP_OID_0), ber.encode_oid(LINK_DOWN))
        + ber.encode_varbind(ber.encode_oid((*IF_INDEX, index)), ber.encode_integer(index))
        + ber.encode_varbind(
            ber.encode_oid((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1, index)),
            ber.encode_octets(b"ge-0/0/1"),
        )
    )


def trap_v1(rng: random.Random) -> bytes:
    """An SNMPv1 Trap-PDU (RFC 1157): the agent does not take v1, and says so."""
    pdu = ber.tlv(
        0xA4,
        ber.encode_oid((1, 3, 6, 1, 4, 1, 8072))
        + ber.encode_ip(bytes([127, 0, 0, 1]))
        + ber.encode_integer(2)
        + ber.encode_integer(0)
        + ber.encode_unsigned(ber.TIMETICKS, rng.randrange(2**32))
        + ber.tlv(ber.SEQUENCE, b""),
    )
    return ber.tlv(ber.SEQUENCE, ber.encode_integer(0) + ber.encode_octets(TRAP_COMMUNITY) + pdu)


def trap_v2c(rng: random.Random) -> bytes:
    tag = ber.INFORM if rng.random() < 0.2 else ber.TRAP_V2
    pdu = encode_pdu(tag, rng.randrange(2**31), 0, 0, _varbinds(rng))
    return ber.tlv(ber.SEQUENCE, ber.encode_integer(1) + ber.encode_octets(TRAP_COMMUNITY) + pdu)


class V3Traps:
    """v3 traps of each security level, keyed for the sender's engine (localised once)."""

    def __init__(self) -> None:
        self.keys = {u.name: LocalizedUser.localize(u, TRAP_ENGINE) for u in TRAP_USERS if u.level}

    def trap(self, rng: random.Random) -> bytes:
        user = rng.choice(TRAP_USERS)
        keys = self.keys.get(user.name)
        pdu = encode_pdu(ber.TRAP_V2, rng.randrange(2**31), 0, 0, _varbinds(rng))
        etime = rng.randrange(1000)  # drawn before the msgID, as the seeds expect
        return build_v3_message(
            msg_id=rng.randrange(2**31),
            max_size=65507,
            flags=user.level,
            engine_id=TRAP_ENGINE,
            boots=1,
            etime=etime,
            user_name=user.name.encode(),
            scoped=encode_scoped(TRAP_ENGINE, pdu),
            keys=keys,
        )


# ------------------------------------------------------------------ configs


def agent_config(tmp: str) -> dict[str, Any]:
    return {
        "agent_id": "fuzz-1",
        "site": "fuzz",
        "rtc": "americas",
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "keepalive": "30s", "max_inflight": 100},
        "spool": {"path": f"{tmp}/spool", "max_bytes": 1048576},
        "polling": {"interval": "60s", "timeout": "5s", "retries": 1, "concurrency": 8},
        "publishing": {"heartbeat": "30s"},
        "inventory": f"{tmp}/devices.yaml",
        "traps": {"listen": "127.0.0.1:1162"},
        "log": {"format": "json", "level": "info"},
    }


def collector_config(tmp: str) -> dict[str, Any]:
    return {
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "client_id": "enoc-fuzz", "max_unacked": 100},
        "store": {"url": f"sqlite:///{tmp}/incidents.db", "poll_interval": "1s"},
        "incidents": {"flap_transitions": 6, "flap_window": "10m", "agent_timeout": "3m"},
        "notifications": {"webhooks": [], "retries": 5, "escalate_after": {"critical": "15m"}},
        "http": {"listen": "127.0.0.1:8080", "users_file": f"{tmp}/users.yaml"},
        "log": {"level": "info"},
    }


INVENTORY = """\
devices:
  - {name: dev-0, address: 127.0.0.1, snmp: {version: "2c", community: public}}
"""

YAML_SPICE = [
    (
        "alias bomb",
        'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\n'
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c]\n",
    ),
    ("python tag", "site: !!python/object/apply:os.system ['true']\n"),
    ("binary tag", "site: !!binary aGVsbG8=\n"),
    ("set tag", "site: !!set {a, b}\n"),
    ("tab indent", "mqtt:\n\turl: x\n"),
    ("duplicate keys", "site: a\nsite: b\n"),
    ("merge key", "base: &b {url: x}\nmqtt:\n  <<: *b\n"),
    ("timestamp", "site: 2001-12-14t21:59:43.10-05:00\n"),
    ("document markers", "---\nsite: a\n---\nsite: b\n"),
    ("huge int key", "99999999999999999999999999: 1\n"),
    ("complex key", "? [a, b]\n: c\n"),
    ("anchor to itself", "a: &a [*a]\n"),
    ("NUL", 'site: "a\\0b"\n'),
    ("BOM", "\ufeffsite: a\n"),
    ("env ref", "site: ${NO_SUCH_VAR_FUZZ}\n"),
    ("env default loop", "site: ${A:-${B:-${C:-x}}}\n"),
]
# Slow to parse (PyYAML composes in Python, about a millisecond per hundred levels): rare.
DEEP_YAML = [
    ("flow nesting 600 deep", "x: " + "[" * 600 + "]" * 600 + "\n"),
    ("block nesting 400 deep", "".join("  " * i + f"k{i}:\n" for i in range(400))),
]
