"""One typed configuration loader for every enoc config (agent, collector, fleet, inventory).

A schema is a frozen dataclass with type hints. The loader reads YAML keeping
the line of every node, converts and checks every value against its type,
and reports *all* problems at once, each naming the file, the line, the key
path and what was expected:

    agent.yaml:12: polling.interval: expected a duration like "60s", got "sixty"

Strings expand `${VAR}` (and `${VAR:-default}`; `$${` is a literal `${`). A
field typed `Secret` named `token` may be given as `token: ...` or as
`token_file: /path` (read from the file). Unknown keys are errors. The
password of a URL in any string (`postgresql://enoc:PASSWORD@db/enoc`) is
registered as a secret like a `Secret`'s value, so no log line shows it.

One pass names every mistake: a value that cannot be read stands as an unread
marker, its dataclass is built without its checks, and the schema's own rules
(`__post_init__`) and each kind's rules still run on what could be read; a
rule that touches an unread value stops there, its cause being reported.

`check_file` returns all of it as a `Checked`: the issues of every rule, with
the line of each key, and the warnings about how a file is written (a secret
given inline, `token: "abc..."` or a password in a URL, rather than from a file
or the environment). Each kind of config has one function over `check_file`
(`check_agent`, `check_collector`, `check_fleet`) that its program calls at
its start and `enoc check-config` calls too, so the two cannot disagree.
check-config prints the warnings about how a file is written and the kind's
advice (an MQTT login without TLS...); a program does not log them, since the
demo and the tests write such throw-away configs on purpose.

This module is the loader's surface; what it reads into (`Duration`, `Secret`,
`HostPort`, the shared `TlsConfig` and `LogConfig` sections) is in `enoc.config_types`,
the YAML-to-schema machinery and its `ConfigIssue` in `enoc.config_loader`; the
names callers use are re-exported here, so a schema imports from `enoc.config` alone.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from enoc.config_loader import (
    ConfigError,
    ConfigIssue,
    Loader,
    compose,
    is_unread,
    skipping_unread,
    to_python,
)
from enoc.config_types import Duration, HostPort, LogConfig, Secret, TlsConfig
from enoc.logs import redact
from enoc.mqtt import TlsSetupError, tls_context

__all__ = [
    "KINDS",
    "Checked",
    "ConfigError",
    "ConfigIssue",
    "ConfigKind",
    "Duration",
    "HostPort",
    "LogConfig",
    "Secret",
    "TlsConfig",
    "check_file",
    "check_include",
    "check_tls_files",
    "check_url",
    "compose",
    "is_unread",
    "load_config",
    "load_config_checked",
    "parse_config",
    "parse_config_checked",
    "register_kind",
    "skipping_unread",
    "to_python",
    "unreadable",
]

T = TypeVar("T")

# ------------------------------------------------------------------ loading


def load_config(path: Path | str, schema: type[T]) -> T:
    return load_config_checked(path, schema)[0]


def load_config_checked(path: Path | str, schema: type[T]) -> tuple[T, list[ConfigIssue]]:
    """The config and warnings about how the file is written (inline secrets)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), 0, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read: {exc}")]) from None
    return parse_config_checked(text, schema, filename=str(path), base_dir=path.parent)


def parse_config(
    text: str, schema: type[T], *, filename: str = "<string>", base_dir: Path | None = None
) -> T:
    return parse_config_checked(text, schema, filename=filename, base_dir=base_dir)[0]


def parse_config_checked(
    text: str, schema: type[T], *, filename: str = "<string>", base_dir: Path | None = None
) -> tuple[T, list[ConfigIssue]]:
    node = compose(text, filename)
    loader = Loader(filename, base_dir or Path.cwd())
    value = loader.convert(node, schema, "", node.start_mark.line + 1 if node else 1)
    if loader.issues:
        raise ConfigError(sorted(loader.issues, key=lambda issue: issue.line))
    result: T = value
    return result, sorted(loader.warnings, key=lambda issue: issue.line)


# ------------------------------------------------------------------ whole files, as programs start


@dataclass
class Checked(typing.Generic[T]):
    """Everything validating a config file found, in one pass.

    `value` is the config (partly read when there are errors: see `_Unread`), `issues`
    the errors and warnings of every rule, of this file and of the files it includes,
    `notes` the warnings that `enoc check-config` prints and a starting program does
    not log: how the files are written (inline secrets) and the kind's advice (the
    warnings of `check_file`'s `rule`). A program's start
    and `enoc check-config` call the same function returning this, so they cannot
    disagree; `result()` is the start's verdict."""

    file: str
    value: T | None
    issues: list[ConfigIssue] = dataclasses.field(default_factory=list)
    notes: list[ConfigIssue] = dataclasses.field(default_factory=list)
    lines: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if not i.warning]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.warning]

    def line_of(self, key: str) -> int:
        """The line of a key path, or of its nearest parent that has one (0: none)."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return 0

    def add(self, *issues: ConfigIssue, notes: bool = False) -> None:
        """Add the issues of a later rule; those of this file without a line get their key's.
        `notes`: its warnings are advice, among the notes."""
        for issue in issues:
            placed = issue
            if issue.file == self.file and not issue.line:
                placed = dataclasses.replace(issue, line=self.line_of(issue.key))
            (self.notes if notes and issue.warning else self.issues).append(placed)

    def error(self, key: str, message: str) -> None:
        self.add(ConfigIssue(self.file, 0, key, redact(message)))

    def run(
        self,
        rule: Callable[[Any, str], list[ConfigIssue]],
        value: Any = None,
        *,
        notes: bool = False,
    ) -> None:
        """Add the issues of `rule(value or self.value, file)`, unless it meets an unread value."""
        with skipping_unread():
            self.add(*rule(self.value if value is None else value, self.file), notes=notes)

    def include(self, other: Checked[Any], *, notes: bool = True) -> None:
        """Take in the issues of an included file (they keep their file and lines);
        `notes=False` for a file that is a secret itself (a users file)."""
        self.issues += other.issues
        if notes:
            self.notes += other.notes

    def report(self) -> list[ConfigIssue]:
        """Every issue, this file's first, each file's by line."""
        issues = [*self.notes, *self.issues]
        return sorted(issues, key=lambda i: (i.file != self.file, i.file, i.line))

    def result(self) -> T:
        """The config, or ConfigError naming every error (what a program's start does)."""
        errors = self.errors
        if errors or self.value is None:
            raise ConfigError(
                sorted(errors, key=lambda i: (i.file != self.file, i.file, i.line))
                or [ConfigIssue(self.file, 0, "", "no configuration")]
            )
        return self.value

    def with_value(self, value: Any) -> Checked[Any]:
        return dataclasses.replace(self, value=value)


def check_file(
    path: Path | str,
    schema: type[T],
    rule: Callable[[Any, str], list[ConfigIssue]] | None = None,
) -> Checked[T]:
    """Read, convert and check one file: every issue of the types, of the schema's own
    rules and of `rule(config, filename)` (its warnings as notes: advice), each run on
    what could be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = compose(text, str(path))
    except FileNotFoundError:
        return Checked(str(path), None, [ConfigIssue(str(path), 0, "", "file not found")])
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return Checked(str(path), None, [ConfigIssue(str(path), 0, "", f"cannot read: {reason}")])
    except ConfigError as exc:
        return Checked(str(path), None, list(exc.issues))
    loader = Loader(str(path), path.parent)
    value = loader.convert(node, schema, "", node.start_mark.line + 1 if node else 1)
    checked: Checked[T] = Checked(
        str(path), None if is_unread(value) else value, loader.issues, loader.warnings, loader.lines
    )
    if rule is not None and checked.value is not None:
        checked.run(rule, notes=True)
    return checked


def check_include(
    parent: Checked[Any],
    key: str,
    path: Path,
    schema: type[T],
    rule: Callable[[Any, str], list[ConfigIssue]] | None = None,
) -> Checked[T] | None:
    """A file the config names (`key: path`): a missing one is an error of the config's
    key; what is in it, errors of that file. None when it cannot be read."""
    problem = unreadable(path)
    if problem:
        parent.error(key, f"cannot read {path}: {problem}")
        return None
    return check_file(path, schema, rule)


def unreadable(path: Path) -> str:
    """Why this file cannot be read ("" when it can)."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def check_url(checked: Checked[Any], key: str, url: object) -> None:
    """A URL the program will connect to: a host, and a port (when given) from 1 to 65535."""
    if not isinstance(url, str) or "://" not in url or url.startswith("sqlite:"):
        return  # the scheme's own rule names these
    parts = urlsplit(url)
    if url.startswith(("postgresql:", "postgres:")) and "," in parts.netloc:
        # libpq's several hosts (h1:5432,h2:5432): each host and its port on its own
        for host in parts.netloc.rpartition("@")[2].split(","):
            check_url(checked, key, f"{parts.scheme}://{host}")
        return
    try:
        port = parts.port
    except ValueError:
        port = 0
    after_host = parts.netloc.rpartition("@")[2].rpartition("]")[2]
    if port == 0 and ":" in after_host and after_host.rpartition(":")[2]:
        checked.error(key, f'expected a port from 1 to 65535 after the host, got "{url}"')
    if not parts.hostname and not url.startswith(("postgresql:", "postgres:")):
        checked.error(key, f'expected a host after "{parts.scheme}://", got "{url}"')


def check_tls_files(
    checked: Checked[Any], key: str, tls: Any, what: str, *, retried: bool = False
) -> None:
    """The TLS files a program loads when it connects: each there and readable (an
    error: a path is the config's), and usable together (PEM, a key that matches its
    certificate), as `enoc.mqtt.tls_context` loads them. `retried`: the program builds
    its context again at each connection attempt (the MQTT links), so it starts with
    unusable contents, keeps its data and connects once they are fixed (a botched
    certificate rotation): a warning, which the program logs at its start too."""
    if tls is None or is_unread(tls):
        return
    missing = False
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is None or is_unread(path):
            continue
        problem = unreadable(path)
        if problem:
            checked.error(f"{key}.{name}", f"cannot read {path}: {problem}")
            missing = True
    if tls.key_file is not None and tls.cert_file is None:
        checked.error(f"{key}.key_file", "needs cert_file (the certificate of this key)")
        missing = True
    if missing:
        return
    try:
        tls_context(tls, what=what)
    except TlsSetupError as exc:
        if not retried:
            checked.error(key, str(exc))
            return
        checked.add(
            ConfigIssue(
                checked.file,
                0,
                key,
                redact(f"{exc}; it starts, and connects once they can be used"),
                warning=True,
            )
        )


# ------------------------------------------------------------------ kinds, for `enoc check-config`


@dataclass(frozen=True)
class ConfigKind:
    name: str
    schema: type
    detect: Callable[[Mapping[str, Any]], bool]
    check: Callable[[Any, str], list[ConfigIssue]] | None = None  # extra checks, warnings
    # Everything the program checks at its start (included files, TLS files, URLs);
    # default: `check_file(path, schema, check)`.
    validate: Callable[[Path], Checked[Any]] | None = None

    def check_path(self, path: Path) -> Checked[Any]:
        if self.validate is not None:
            return self.validate(path)
        return check_file(path, self.schema, self.check)


KINDS: dict[str, ConfigKind] = {}


def register_kind(
    name: str,
    schema: type,
    detect: Callable[[Mapping[str, Any]], bool],
    check: Callable[[Any, str], list[ConfigIssue]] | None = None,
    validate: Callable[[Path], Checked[Any]] | None = None,
) -> None:
    KINDS[name] = ConfigKind(name, schema, detect, check, validate)
