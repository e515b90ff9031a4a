"""The API's reports over a time range: their `from`/`to`, choices and steps, and the
answer as JSON or, with `format=csv`, as a CSV file of the report's rows."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from collector.api_input import bad_request, time_param
from enoc.config import Duration

FORMATS = ("json", "csv")


def choice(query: Mapping[str, str], name: str, options: Sequence[str], default: str) -> str:
    value = query.get(name, "") or default
    if value not in options:
        raise bad_request(f"{name} must be one of {', '.join(options)}, got {value[:40]!r}")
    return value


def time_range(query: Mapping[str, str], span: float, now: float) -> tuple[float, float]:
    """`from` and `to` (Unix seconds, ISO 8601 or a duration ago); `to` defaults to now,
    `from` to `span` seconds before `to`."""
    until = time_param(query.get("to", ""), "to", now, now)
    since = time_param(query.get("from", ""), "from", until - span, now)
    if since >= until:
        raise bad_request("from must be before to")
    return since, until


def seconds_param(query: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, or a duration like "1h"."""
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        try:
            value = float(Duration.parse(raw))
        except ValueError:
            message = f'{name} must be seconds or a duration like "1h", got {raw[:40]!r}'
            raise bad_request(message) from None
    if not math.isfinite(value) or value <= 0:
        raise bad_request(f"{name} must be a positive number of seconds, got {raw[:40]!r}")
    return value


def table_response(
    query: Mapping[str, str],
    body: dict[str, Any],
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    filename: str,
) -> web.Response:
    """`body` as JSON (it holds `rows`), or `rows` alone as CSV with `columns` (empty for
    null) when `format=csv`."""
    if choice(query, "format", FORMATS, "json") == "json":
        return web.json_response(body)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
