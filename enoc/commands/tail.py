"""`enoc tail --mqtt URL [--site S] [--count N] [--json]`: watch what agents publish.

Like mosquitto_sub, but every payload is decoded and validated against the
wire contract; a message that breaks it is printed with the reason instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enoc.config import TlsConfig
from enoc.mqtt import tls_context
from enoc.runtime import run as run_loop
from enoc.runtime import stop_event
from enoc.wire import (
    KINDS,
    EventsMessage,
    Message,
    MetricsMessage,
    StatusMessage,
    WireError,
    decode,
    subscription,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://")
    parser.add_argument("--site", default="+", help="only this site (default: all)")
    parser.add_argument("--kind", choices=KINDS, help="only metrics, events or status")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--ca-file", type=Path, help="CA bundle for mqtts://")
    parser.add_argument("--cert-file", type=Path, help="client certificate for mqtts://")
    parser.add_argument("--key-file", type=Path, help="client certificate's private key")
    parser.add_argument("--username")
    parser.add_argument(
        "--password-file",
        type=Path,
        help="file holding the MQTT password (never on the command line)",
    )


def run(args: argparse.Namespace) -> int:
    url = urlsplit(args.mqtt)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        print(
            f"enoc tail: --mqtt must be mqtt://HOST:PORT or mqtts://..., got {args.mqtt!r}",
            file=sys.stderr,
        )
        return 2
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            print(f"enoc tail: --password-file: {exc}", file=sys.stderr)
            return 2

    async def main() -> int:
        import aiomqtt

        stop = stop_event()
        seen = 0
        try:
            tls = None
            if url.scheme == "mqtts":
                tls = tls_context(TlsConfig(args.ca_file, args.cert_file, args.key_file))
            async with aiomqtt.Client(
                url.hostname or "127.0.0.1",
                url.port or (8883 if tls else 1883),
                username=args.username,
                password=password,
                tls_context=tls,
            ) as client:
                pattern = subscription(args.kind or "+", args.site)
                await client.subscribe(pattern, qos=1)
                # on stderr, as mosquitto_sub -d: the printed messages stay one per line
                print(f"enoc tail: subscribed to {pattern} on {args.mqtt}", file=sys.stderr)
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    print(render(str(message.topic), payload, as_json=args.json), flush=True)
                    seen += 1
                    if (args.count and seen >= args.count) or stop.is_set():
                        break
        except (aiomqtt.MqttError, OSError) as exc:
            print(f"enoc tail: {args.mqtt}: {exc}", file=sys.stderr)
            return 1
        return 0

    return run_loop(main)


def render(topic_name: str, payload: bytes, *, as_json: bool) -> str:
    try:
        message = decode(topic_name, payload)
    except WireError as exc:
        if as_json:
            return json.dumps({"topic": topic_name, "error": exc.kind, "detail": str(exc)})
        return f"{topic_name}  INVALID ({exc})"
    if as_json:
        body: dict[str, Any] = json.loads(payload)
        return json.dumps({"topic": topic_name, **body}, separators=(",", ":"))
    return f"{_when(message)}  {message.site}/{message.agent}  {summary(message)}"


def _when(message: Message) -> str:
    return time.strftime("%H:%M:%S", time.localtime(message.sent))


def summary(message: Message) -> str:
    if isinstance(message, MetricsMessage):
        interfaces = sum(len(s.interfaces) for s in message.samples)
        devices = ", ".join(s.device for s in message.samples[:3])
        more = "..." if len(message.samples) > 3 else ""
        return f"metrics #{message.seq}: {devices}{more} ({interfaces} interfaces)"
    if isinstance(message, EventsMessage):
        events = "; ".join(
            f"{e.severity} {e.device} {e.resource} {e.kind} {e.state}" for e in message.events
        )
        return f"events #{message.seq}: {events}"
    assert isinstance(message, StatusMessage)
    health = " ".join(f"{k}={v}" for k, v in message.health.items())
    return f"status {message.state} {message.version} devices={message.inventory_size} {health}"
