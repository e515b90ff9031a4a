"""collector/_metricsjson.c: a metrics payload straight to line protocol (see
collector/lineproto.py, `payload_lines`)."""

from collections.abc import Callable
from typing import Any

VERSION: int

def lines(
    payload: bytes, site: str, agent: str, device_tags: Callable[[str, str, str, str], Any], /
) -> tuple[str, bytes, int, list[tuple[str, tuple[Any, ...]]]] | None: ...
def number(token: bytes, /) -> float | None: ...
def powers_of_five() -> bytes: ...
