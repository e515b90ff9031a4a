"""Notifier kinds: the registry that `notifications.webhooks[].format` picks from.

Adding a kind (e-mail, ServiceNow, ...) is one module with a class that implements
`Notifier` (collector/notifiers/base.py) and one line in `NOTIFIERS`; the delivery
machinery (collector/notify.py: leases, cursors, retries, dead letters) is the same for
every kind, and the config loader accepts exactly the kinds registered here.
"""

from __future__ import annotations

from collector.notifiers.alertmanager import Alertmanager
from collector.notifiers.base import (
    Delivery,
    DeliveryFailed,
    DeliveryRefused,
    Env,
    Http,
    Notifier,
    NotifierFactory,
)
from collector.notifiers.email import Email
from collector.notifiers.servicenow import ServiceNow
from collector.notifiers.webhook_json import JsonWebhook

__all__ = [
    "NOTIFIERS",
    "Delivery",
    "DeliveryFailed",
    "DeliveryRefused",
    "Env",
    "Http",
    "Notifier",
    "NotifierFactory",
    "kinds",
    "register",
]

NOTIFIERS: dict[str, NotifierFactory] = {
    "json": JsonWebhook,
    "alertmanager": Alertmanager,
    "email": Email,  # notifications.email entries, not a webhook format
    "servicenow": ServiceNow,
}


def register(kind: str, factory: NotifierFactory) -> None:
    """Add a notifier kind (for a plugin, or a test); a kind is registered once."""
    if kind in NOTIFIERS:
        msg = f'notifier kind "{kind}" is already registered'
        raise ValueError(msg)
    NOTIFIERS[kind] = factory


def kinds() -> str:
    """The registered kinds, for error messages: `"alertmanager", "json"`."""
    return ", ".join(f'"{kind}"' for kind in sorted(NOTIFIERS))
