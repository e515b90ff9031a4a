"""`enoc token create|list|revoke --config collector.yaml`: the collector's API tokens.

Works on the incident store the collector config names (every replica reads it), so it
runs wherever that config and the store are reachable, with the store's rights and no
scope of its own: what the file system lets one read, one may grant. `create` prints the
token once, on standard output and nowhere else (the store keeps its SHA-256);
`list` never shows a secret. Each create and revoke is logged to `enoc.audit` and
appended to `http.audit_file` when configured, naming the identity `cli:<login>`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.config import CollectorConfig
    from collector.tokens import Tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, type=Path, help="collector config (YAML)")
    create = sub.add_parser("create", parents=[common], help="make a token and print it once")
    create.add_argument("--name", required=True, help="what the token is for (its caller name)")
    create.add_argument("--role", choices=("viewer", "operator", "admin"), default="viewer")
    create.add_argument(
        "--rtc", action="append", default=[], help="limit it to an RTC (repeatable)"
    )
    create.add_argument(
        "--site", action="append", default=[], help="limit it to a site (repeatable)"
    )
    create.add_argument(
        "--expires",
        default="90d",
        help='how long it lasts: a duration like "90d" or "12h", or "never" (default 90d)',
    )
    listing = sub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a token on every replica")
    revoke.add_argument("id", help="the token's id (as `list` shows it)")


def run(args: argparse.Namespace) -> int:
    from collector.config import check_collector
    from enoc.config import ConfigError

    try:
        config = check_collector(args.config).result()
    except ConfigError as exc:
        print(f"enoc token: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, config))
    except ValueError as exc:
        print(f"enoc token: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, config: CollectorConfig) -> int:
    from collector.store import Store
    from collector.tokens import Tokens

    store = Store(config.store.url)
    try:
        await store.open()
    except Exception as exc:
        print(f"enoc token: the incident store cannot be opened: {exc}", file=sys.stderr)
        return 1
    try:
        tokens = Tokens(store)
        if args.action == "create":
            return await _create(args, tokens, config.http.audit_file)
        if args.action == "list":
            return await _list(args, tokens)
        return await _revoke(args, tokens, config.http.audit_file)
    finally:
        await store.close()


async def _create(args: argparse.Namespace, tokens: Tokens, audit_file: Path | None) -> int:
    from collector.access import EVERYTHING, Scope, ScopeConfig
    from collector.tokens import parse_expiry

    expires_in = parse_expiry(args.expires)
    scope = Scope.of(ScopeConfig(rtc=args.rtc, site=args.site)) if args.rtc or args.site else None
    text, info = await tokens.create(
        args.name, args.role, scope or EVERYTHING, _identity(), expires_in
    )
    _audit(audit_file, "token_create", **info.audited())
    print(text)
    expiry = "never expires" if info.expires is None else f"expires {_when(info.expires)}"
    print(
        f"token {info.id} ({info.name}, {info.role}) {expiry}; it is shown only now",
        file=sys.stderr,
    )
    return 0


async def _list(args: argparse.Namespace, tokens: Tokens) -> int:
    found = await tokens.list()
    if args.json:
        for info in found:
            print(json.dumps(info.as_dict(), sort_keys=True))
        return 0
    rows = [["ID", "NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES", "LAST USED", "REVOKED"]]
    now = time.time()
    for info in found:
        scope = info.scope.as_dict()
        shown = (
            "all"
            if scope is None
            else " ".join(
                [*(f"rtc:{r}" for r in scope["rtc"]), *(f"site:{s}" for s in scope["site"])]
            )
        )
        expires = "never" if info.expires is None else _when(info.expires)
        if info.expires is not None and info.expires <= now:
            expires += " (expired)"
        rows.append(
            [
                info.id,
                info.name,
                info.role,
                shown,
                f"{_when(info.created)} by {info.created_by}",
                expires,
                _when(info.last_used) if info.last_used else "-",
                f"{_when(info.revoked)} by {info.revoked_by}" if info.revoked else "-",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _revoke(args: argparse.Namespace, tokens: Tokens, audit_file: Path | None) -> int:
    info = await tokens.revoke(args.id, _identity())
    if info is None:
        print(f"enoc token revoke: no token {args.id!r}", file=sys.stderr)
        return 1
    _audit(audit_file, "token_revoke", token=info.id, name=info.name)
    print(f"token {info.id} ({info.name}) revoked {_when(info.revoked)} by {info.revoked_by}")
    return 0


def _identity() -> str:
    """Who runs the command, as the audit log names it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name for this uid (a container)
        return "cli:unknown"


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _audit(audit_file: Path | None, action: str, **details: Any) -> None:
    """The API's audit record (collector/api_access.py `Access.audit`) for a command."""
    from enoc.logs import get_logger

    identity = _identity()
    get_logger("enoc.audit").info("audit %s by %s", action, identity, identity=identity, **details)
    if audit_file is None:
        return
    record = {"at": time.time(), "actor": identity, "identity": identity, "action": action}
    try:
        with audit_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps({**record, "remote": "", **details}, sort_keys=True) + "\n")
    except OSError as exc:
        print(f"enoc token: the audit file {audit_file}: {exc}", file=sys.stderr)
