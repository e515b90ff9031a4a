"""Structured logging (logfmt or JSON) that never prints a secret.

Fields are given as keyword arguments through `get_logger(name)`:

    log = get_logger("enoc.agent")
    log.info("poll done", device="nyc-pe-1", ms=12)

Every value registered with `register_secret` (every `enoc.config.Secret`
does so, and the config loader registers the password of every URL it reads,
with `register_url_secret`) is replaced by `***` in the final rendered line,
tracebacks included. So is the password of any URL a line carries
(`scheme://user:***@host`, `?password=***`), registered or not.
`OnceLogger` logs the first occurrence of a kind of problem and counts the
rest; `StateLogger` logs a thing's switch between failing and ok, not every
failure (STYLE.md practice 8).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

LogFormat = Literal["logfmt", "json"]
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_MIN_SECRET = 4  # shorter values would blank out ordinary words


# scheme://user:PASSWORD@host (up to the last @ before the path: libpq and Python differ
# on a password with an unencoded @), and libpq's ?password=PASSWORD.
_URL_LOGIN = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:\"']*:)[^/?#\s\"']*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s\"']*")


def register_secret(value: str) -> None:
    if len(value) >= _MIN_SECRET:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def url_password(url: str) -> str | None:
    """The password a URL carries (`scheme://user:PASSWORD@host` or `?password=`), as
    written; None without one."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return None
    query = _QUERY_PASSWORD.search(rest)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    login, at, _host = authority.rpartition("@")
    if at and ":" in login:
        return login.partition(":")[2]
    return query.group(0).partition("=")[2] if query else None


def register_url_secret(url: str) -> None:
    """Register the password of `url` as a secret: as written, percent-decoded, and each
    part between unencoded @ signs (libpq splits a login at the first @, so its error
    messages may quote the rest of a password as a host name)."""
    password = url_password(url)
    if not password:
        return
    for form in {password, unquote(password), *password.split("@")}:
        register_secret(form)
    query = _QUERY_PASSWORD.search(url)
    if query:
        register_secret(unquote(query.group(0).partition("=")[2]))


def redact(text: str) -> str:
    if "://" in text:
        text = _URL_LOGIN.sub(r"\1***@", text)
    if "password=" in text:
        text = _QUERY_PASSWORD.sub(r"\1***", text)
    if not _SECRETS:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            parts["error"] = self.formatException(record.exc_info)
        return redact(" ".join(f"{k}={logfmt_value(v)}" for k, v in parts.items()))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            body[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(body, ensure_ascii=False))


def logfmt_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def setup_logging(
    fmt: LogFormat = "logfmt", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure the root logger once for a command."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        # A bad value from a config or a flag, not a programming error: ValueError.
        raise ValueError(  # noqa: TRY004
            f"unknown log level {level!r}: use debug, info, warning or error"
        )
    root.setLevel(numeric)
    logging.captureWarnings(True)


class FieldLogger(logging.LoggerAdapter[logging.Logger]):
    """`log.info("msg", key=value)` puts keyword arguments into the structured fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        reserved = {"exc_info", "stack_info", "stacklevel", "extra"}
        fields = {k: v for k, v in kwargs.items() if k not in reserved}
        rest = {k: v for k, v in kwargs.items() if k in reserved}
        extra = dict(rest.pop("extra", None) or {})
        extra["fields"] = {**extra.get("fields", {}), **fields}
        rest["extra"] = extra
        return msg, rest


def get_logger(name: str) -> FieldLogger:
    return FieldLogger(logging.getLogger(name), {})


class OnceLogger:
    """Logs the first occurrence of each kind at warning level; counts every occurrence."""

    def __init__(self, log: FieldLogger) -> None:
        self.log = log
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, message: str, **fields: Any) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            self.log.warning(
                "%s (first of its kind; further ones are only counted)",
                message,
                kind=kind,
                **fields,
            )


class StateLogger:
    """Logs when a named thing starts failing and when it recovers, not every failure."""

    def __init__(self, log: FieldLogger) -> None:
        self.log = log
        self.failing: dict[str, int] = {}

    def failed(self, name: str, error: object, **fields: Any) -> None:
        count = self.failing.get(name, 0) + 1
        self.failing[name] = count
        if count == 1:
            self.log.warning("%s is failing: %s", name, error, **fields)

    def ok(self, name: str, **fields: Any) -> None:
        count = self.failing.pop(name, 0)
        if count:
            self.log.info("%s recovered after %d failures", name, count, failures=count, **fields)


def strip_login(url: str) -> str:
    """`url` without its user and password (`http://user:pw@host/x` -> `http://host/x`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
