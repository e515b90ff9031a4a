"""Structured logging: both formats parse back; secrets never appear; once-per-kind logging."""

from __future__ import annotations

import io
import json
import logging
import shlex
from collections.abc import Iterator

import pytest

from enoc.logs import (
    OnceLogger,
    StateLogger,
    get_logger,
    logfmt_value,
    register_secret,
    setup_logging,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    setup_logging("logfmt", "warning", io.StringIO())


def test_json_lines_parse_back_with_fields(stream: io.StringIO) -> None:
    setup_logging("json", "info", stream)
    get_logger("enoc.test").info("poll done", device="nyc-pe-1", ms=12, ok=True)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "poll done"
    assert (line["device"], line["ms"], line["ok"]) == ("nyc-pe-1", 12, True)
    assert line["level"] == "info" and line["logger"] == "enoc.test"
    assert line["time"].endswith("Z")


def test_logfmt_quotes_what_needs_quoting(stream: io.StringIO) -> None:
    setup_logging("logfmt", "info", stream)
    get_logger("enoc.test").warning("odd values", alias='up "link"\nr\xe9f', empty="", n=3)
    fields = dict(part.split("=", 1) for part in shlex.split(stream.getvalue().strip()))
    assert fields["msg"] == "odd values"
    assert fields["n"] == "3"
    assert json.loads(logfmt_value('up "link"\nr\xe9f')) == 'up "link"\nr\xe9f'
    assert logfmt_value("") == '""'


def test_secrets_are_redacted_everywhere_even_in_tracebacks(stream: io.StringIO) -> None:
    setup_logging("logfmt", "info", stream)
    register_secret("topsecret-42")
    log = get_logger("enoc.test")
    try:
        raise RuntimeError("auth failed with key topsecret-42")
    except RuntimeError:
        log.exception("connect failed", password="topsecret-42")
    output = stream.getvalue()
    assert "topsecret-42" not in output
    assert output.count("***") >= 2
    assert "RuntimeError" in output


def test_levels_filter_and_bad_level_is_a_clear_error(stream: io.StringIO) -> None:
    setup_logging("logfmt", "warning", stream)
    get_logger("enoc.test").info("hidden")
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("logfmt", "loud", stream)


def test_once_logger_logs_the_first_and_counts_all(stream: io.StringIO) -> None:
    setup_logging("logfmt", "info", stream)
    once = OnceLogger(get_logger("enoc.test"))
    for _ in range(5):
        once("malformed", "malformed packet from 127.0.0.5")
    once("unknown_version", "schema 9")
    assert once.counts == {"malformed": 5, "unknown_version": 1}
    assert stream.getvalue().count("\n") == 2


def test_state_logger_logs_changes_not_every_failure(stream: io.StringIO) -> None:
    setup_logging("logfmt", "info", stream)
    state = StateLogger(get_logger("enoc.test"))
    for _ in range(10):
        state.failed("influxdb", "connection refused")
    state.ok("influxdb")
    state.ok("influxdb")
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2
    assert "influxdb is failing" in lines[0] and "recovered after 10 failures" in lines[1]
    logging.getLogger().handlers.clear()
