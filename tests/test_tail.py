"""`enoc tail` decodes what it receives and flags what breaks the wire contract."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiomqtt
import pytest

from enoc.wire import DeviceSample, Event, EventsMessage, MetricsMessage, encode, topic
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers


async def test_tail_prints_decoded_messages_and_flags_bad_ones(mosquitto: Mosquitto) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "enoc.cli", "tail", "--mqtt", mosquitto.url),
        *("--count", "3", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    now = time.time()
    metrics = MetricsMessage(
        "gva-1", "gva", "emea", 7, now, [DeviceSample("gva-pe-1", "127.0.0.5", now)]
    )
    event = Event("e1", now, "gva-pe-1", "if:3", "link", "down")
    events = EventsMessage("gva-1", "gva", "emea", 8, now, [event])
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    assert proc.stderr is not None

    async def finished(within: float) -> tuple[bytes, bytes]:
        """tail's output; killed (not left running into later tests) if it takes longer."""
        try:
            return await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise

    try:  # what is published before tail subscribes is not for it
        said = await asyncio.wait_for(proc.stderr.readline(), 60)
    except TimeoutError:
        await finished(0)
        raise
    assert said.decode() == f"enoc tail: subscribed to enoc/v1/+/+/+ on {mosquitto.url}\n"
    async with aiomqtt.Client(host, int(port)) as client:
        await client.publish(topic("gva", "gva-1", "metrics"), encode(metrics), qos=1)
        await client.publish(topic("gva", "gva-1", "events"), encode(events), qos=1)
        await client.publish(topic("gva", "other", "events"), encode(events), qos=1)
    out, err = await finished(60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines[0]["kind"] == "metrics" and lines[0]["seq"] == 7
    assert lines[1]["events"][0]["state"] == "down"
    assert lines[2]["error"] == "misaddressed"


async def test_tail_refuses_a_bad_url() -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "enoc.cli", "tail", "--mqtt", "http://nope"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"mqtt://HOST:PORT" in err
