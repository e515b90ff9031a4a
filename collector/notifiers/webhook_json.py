"""`format: json`: the generic webhook, one POST of the change and the incident."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collector.notifiers.base import Delivery, Env
from enoc import __version__
from enoc.logs import strip_login

if TYPE_CHECKING:
    from collector.config import WebhookConfig


def json_payload(
    change: str, incident: dict[str, Any], sent: float, change_id: int = 0
) -> dict[str, Any]:
    """The generic webhook body: the change and the incident as the API shows it.
    `change_id` is the change's id in the store (the stream's event id); 0 for none."""
    return {
        "source": "enoc",
        "version": __version__,
        "change": change,
        "change_id": change_id,
        "sent": sent,
        "incident": incident,
    }


class JsonWebhook:
    """POSTs `json_payload` to the webhook's URL."""

    refreshes = False

    def __init__(self, config: WebhookConfig, env: Env) -> None:
        self.config = config
        self.env = env
        self.url = config.url  # with its login, if it has one (HTTP basic authentication)
        self.endpoint = strip_login(self.url)

    def render(self, delivery: Delivery) -> Any:
        return json_payload(delivery.change, delivery.incident, delivery.sent, delivery.change_id)

    async def send(self, delivery: Delivery) -> None:
        await self.env.http.post_json(self.config, self.url, self.render(delivery))
