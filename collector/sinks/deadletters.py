"""Dead letters of the sinks: lines a server refused for good, published to
`enoc/deadletter/v1/<reason>` so that an operator can see what was lost and why."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from collector.config import CollectorMqttConfig
from collector.ingest import DEAD_LETTER_PREFIX
from enoc.brokers import Brokers
from enoc.logs import StateLogger, get_logger, strip_login
from enoc.mqtt import broker_client_args

log = get_logger("enoc.collector.influx")

# A dead letter sink: (reason, letters) -> how many were published.
DeadLetters = Callable[[str, list[dict[str, Any]]], Awaitable[int]]


class MqttDeadLetters:
    """The sinks' dead letters, published (QoS 1) to `enoc/deadletter/v1/<reason>` on the
    collector's broker over a connection of their own, opened when the first is due and
    kept (the ingest's lanes are consumers; refusals are rare). A broker that cannot take
    them is logged when that starts and ends; the lines stay counted."""

    def __init__(self, config: CollectorMqttConfig) -> None:
        self.config = config
        self.brokers = Brokers(config.brokers, identity=f"{config.client_id}-deadletters")
        self._client: aiomqtt.Client | None = None
        self._outage = StateLogger(log)

    async def __call__(self, reason: str, letters: list[dict[str, Any]]) -> int:
        published = 0
        try:
            client = await self._connected()
            for letter in letters:
                await client.publish(
                    f"{DEAD_LETTER_PREFIX}/{reason}", json.dumps(letter), qos=1, timeout=5
                )
                published += 1
            self._outage.ok("dead letters to MQTT", url=self.brokers.shown())
        except (aiomqtt.MqttError, OSError) as exc:
            self._outage.failed("dead letters to MQTT", exc, url=strip_login(self.brokers.url))
            self.brokers.failed()  # a cluster's next node, the next time
            await self.close()
        return published

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            c = self.config
            args = broker_client_args(
                c, url=self.brokers.url, identifier=f"{c.client_id}-deadletters"
            )
            args["clean_session"] = True  # a publisher: no session to keep
            client = aiomqtt.Client(**args)
            await client.__aenter__()
            self.brokers.connected()
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)
