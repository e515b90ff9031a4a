"""collector/_lineproto.c: line protocol field sets in C (see collector/lineproto.py)."""

from collections.abc import Callable, Sequence

from enoc.wire import InterfaceSample, Value

VERSION: int

def format_fields(
    fields: dict[str, Value], prefixes: dict[str, bytes], encode: Callable[[list[Value]], bytes], /
) -> bytes | None: ...
def format_interfaces(
    interfaces: Sequence[InterfaceSample],
    heads: dict[tuple[int, str, str, str], bytes],
    prefixes: dict[str, bytes],
    stamp: bytes,
    encode: Callable[[list[Value]], bytes],
    /,
) -> tuple[bytes, int] | None: ...
def zero_upper() -> None: ...
def avx_upper_in_use() -> bool | None: ...
