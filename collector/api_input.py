"""What an API request may carry: the bounds on its body, ids, numbers and times, each
parsed once with a 4xx that says what was expected (ApiError, answered as JSON)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import datetime
from typing import Any

from aiohttp import web

from enoc.config import Duration
from enoc.wire import INT64_MAX
from enoc.wire_checked import nesting


class ApiError(web.HTTPException):
    """An error answered as JSON."""

    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": message}),
            content_type="application/json",
        )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def retry_later(status: int, message: str, seconds: int) -> ApiError:
    error = ApiError(status, message)
    error.headers["Retry-After"] = str(seconds)
    return error


MAX_BODY = 64 * 1024  # bytes of a request body: the API's are a few hundred
MAX_BODY_DEPTH = 16  # a request body's JSON: two or three levels are all the API reads
MAX_NAME = 256  # a login name, as the users file and a directory would hold it
MAX_PASSWORD = 1024  # a passphrase; longer is a request to hash megabytes


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit alone takes '²' and '٣'
        raise bad_request(f"id must be a positive integer, got {raw[:40]!r}")
    value = int(raw)
    if value > INT64_MAX:
        raise ApiError(404, f"no such id: {raw[:40]}")  # the store's ids are int64
    return value


def int_param(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low} and {high}, got {value}")
    return value


def time_param(raw: str, name: str, default: float, now: float, *, future: bool = False) -> float:
    """Unix seconds, ISO 8601, or a duration relative to `now` (ago; ahead when future)."""
    raw = raw.strip()
    if not raw:
        return default
    with contextlib.suppress(ValueError):
        value = float(raw)
        if math.isfinite(value) and value > 1e8:
            return value
    if re.fullmatch(r"[\d.hdms]+", raw):
        with contextlib.suppress(ValueError):
            span = float(Duration.parse(raw))
            return now + span if future else now - span
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f'{name} must be Unix seconds, ISO 8601 (2026-11-24T08:00:00Z) or a duration ("7d"),'
            f" got {raw!r}"
        ) from None
    if parsed.tzinfo is None:
        raise bad_request(f"{name} needs a time zone (Z or +hh:mm), got {raw!r}")
    return parsed.timestamp()


async def json_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise bad_request("a JSON object body is required")
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body larger than 64 KiB")
    raw = await request.read()
    if len(raw) > MAX_BODY:  # sent without a length (chunked)
        raise ApiError(413, "body larger than 64 KiB")
    # json recurses once per level: a deep body was a RecursionError, answered 500
    if nesting(raw) > MAX_BODY_DEPTH:
        raise bad_request(f"body is nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request(f"body must be a JSON object, got {type(body).__name__}")
    return body
