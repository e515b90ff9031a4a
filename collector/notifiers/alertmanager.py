"""`format: alertmanager`: incidents as alerts of the Alertmanager API v2.

Alertmanager resolves an alert by itself when it is not refreshed within
`resolve_timeout`, so this kind `refreshes`: the lease holder re-sends open firing
alerts every refresh period with `endsAt` four periods ahead, the way Prometheus does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from collector.notifiers.base import Delivery, Env
from enoc.logs import strip_login

if TYPE_CHECKING:
    from collector.config import WebhookConfig


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def alertmanager_payload(
    change: str, incident: dict[str, Any], now: float, refresh: float
) -> list[dict[str, Any]]:
    """Alertmanager API v2 `postableAlerts`: labels identify the incident's key."""
    labels = {
        "alertname": f"enoc_{incident['kind']}",
        "site": incident["site"],
        "device": incident["device"],
        "resource": incident["resource"],
        "severity": incident["severity"],
        "rtc": incident["rtc"],
        "incident_id": str(incident["id"]),
    }
    annotations = {
        "summary": incident["title"],
        "state": incident["state"],
        "change": change,
        "count": str(incident["count"]),
        "escalated": str(incident["escalated"]),
        "acknowledged_by": incident["acknowledged_by"],
    }
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(incident["opened"]),
    }
    if incident["state"] == "resolved":
        alert["endsAt"] = _iso(incident["resolved"] or now)
    else:
        alert["endsAt"] = _iso(now + 4 * refresh)
    return [alert]


class Alertmanager:
    """POSTs `alertmanager_payload` to `<url>/api/v2/alerts`."""

    refreshes = True

    def __init__(self, config: WebhookConfig, env: Env) -> None:
        self.config = config
        self.env = env
        self.url = config.url.rstrip("/") + "/api/v2/alerts"  # with the URL's login, if any
        self.endpoint = strip_login(self.url)

    def render(self, delivery: Delivery) -> Any:
        return alertmanager_payload(
            delivery.change, delivery.incident, delivery.sent, self.env.refresh
        )

    async def send(self, delivery: Delivery) -> None:
        await self.env.http.post_json(self.config, self.url, self.render(delivery))
