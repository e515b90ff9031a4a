"""Which of several MQTT brokers (the nodes of a cluster) a client tries next.

Each client goes through the URLs in an order of its own, shuffled from its
identity: a fleet of agents spreads over the nodes, and one agent starts at the
same node after every restart (an operator can tell where it should be). A
client stays with a broker while it answers and moves to the next URL when the
broker refuses the connection or drops it; the caller waits its backoff between
attempts as with one broker. A *switch* is a connection to another broker than
the last one that answered, whatever the attempts in between.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from enoc.logs import strip_login


class Brokers:
    """The URLs in this client's order; `url` is the one to try now."""

    def __init__(self, urls: Sequence[str], *, identity: str) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self.order = list(urls)
        # A str seed is hashed (SHA-512): the same order in every process, unlike hash().
        random.Random(identity).shuffle(self.order)
        self._at = 0
        self.current = ""  # the broker connected to now; "" while not connected
        self.last = ""  # the last broker that answered
        self.switches = 0  # connections to another broker than the last that answered

    @property
    def url(self) -> str:
        return self.order[self._at]

    @property
    def several(self) -> bool:
        return len(self.order) > 1

    def connected(self) -> str:
        """`url` answered. Returns the broker it replaces ("" when the same one, or none
        before): a switch, counted."""
        previous = self.last if self.last and self.last != self.url else ""
        if previous:
            self.switches += 1
        self.current = self.last = self.url
        return previous

    def failed(self) -> None:
        """`url` refused, did not answer or dropped the connection: the next one."""
        self.current = ""
        self._at = (self._at + 1) % len(self.order)

    def shown(self) -> str:
        """The broker connected to, for status and logs (no login in it)."""
        return strip_login(self.current)
