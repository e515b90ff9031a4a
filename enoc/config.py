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
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from enoc.logs import redact, register_secret, register_url_secret
from enoc.wire import INT64_MAX, INT64_MIN

T = TypeVar("T")

# ------------------------------------------------------------------ value types


class Duration(float):
    """Seconds, written as 90s, 5m, 1h, 250ms, 1h30m or a plain number of seconds."""

    _PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
    _UNITS: typing.ClassVar[dict[str, float]] = {
        "ms": 0.001,
        "s": 1,
        "m": 60,
        "h": 3600,
        "d": 86400,
    }

    @classmethod
    def parse(cls, text: str) -> Duration:
        text = text.strip()
        try:
            return cls(float(text))
        except ValueError:
            pass
        pos, total = 0, 0.0
        for match in cls._PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * cls._UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(text)
        return cls(total)


class Secret:
    """A secret value: never shown by repr/str, and redacted from every log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(text)
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ------------------------------------------------------------------ errors


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int  # 1-based; 0 when unknown
    key: str  # dotted path, with [i] for list items; "" for the whole file
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "warning: " if self.warning else ""
        return (
            f"{where}: {self.key}: {kind}{self.message}"
            if self.key
            else f"{where}: {kind}{self.message}"
        )


class ConfigError(ValueError):
    """One or more problems in a config file; `issues` lists them all."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


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
    loader = _Loader(filename, base_dir or Path.cwd())
    value = loader.convert(node, schema, "", node.start_mark.line + 1 if node else 1)
    if loader.issues:
        raise ConfigError(sorted(loader.issues, key=lambda issue: issue.line))
    result: T = value
    return result, sorted(loader.warnings, key=lambda issue: issue.line)


MAX_DEPTH = 64  # nesting of a config: far beyond any schema's, well within the stack


def compose(text: str, filename: str) -> yaml.Node | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML's parser recurses per level of flow nesting
        raise ConfigError(
            [ConfigIssue(filename, 0, "", f"nested deeper than {MAX_DEPTH} levels")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError(
            [ConfigIssue(filename, line, "", f"not valid YAML: {exc.problem or exc}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(filename, 0, "", f"not valid YAML: {exc}")]) from None
    _check_depth(node, filename)
    return node


def _check_depth(root: yaml.Node | None, filename: str) -> None:
    """Refuse nesting the loader's recursion (and to_python's) would not survive."""
    stack = [(root, 1)] if root is not None else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise ConfigError(
                [ConfigIssue(filename, line, "", f"nested deeper than {MAX_DEPTH} levels")]
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in node.value for part in pair)


def to_python(node: yaml.Node | None) -> Any:
    """The plain Python value of a composed node (for kind detection)."""
    if node is None:
        return None
    return yaml.SafeLoader("").construct_document(node)


_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MISSING = object()
# scheme://user:password@host, and libpq's ?password=... (both readable in the file)
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:([^/?#@\s]*)@")
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)")


def _written_in_file(raw: str) -> bool:
    """True when a raw value holds text of its own, not only `${VAR}` references (a
    non-empty `${VAR:-default}` default and `$${` are text of the file too)."""
    rest = _ENV.sub(lambda m: "$" if m.group(0) == "$${" or m.group(2) else "", raw)
    return bool(rest.strip())


class _Skipped(Exception):
    """Internal: a rule touched a value that could not be read (its issue is recorded)."""


class _Unread:
    """Stands for a value that could not be read, in a partly read config.

    Every rule runs on what could be read, so that one pass names every mistake; a rule
    that touches an unread value stops there (that value's own issue is already
    reported), as does any use of it: comparison, arithmetic, attribute, truth, text.
    """

    __slots__ = ()

    def _skip(self, *_args: object, **_kwargs: object) -> typing.NoReturn:
        raise _Skipped

    __getattr__ = _skip
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _skip
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _skip
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __neg__ = _skip
    __bool__ = __len__ = __iter__ = __contains__ = __getitem__ = _skip
    __float__ = __int__ = __index__ = __str__ = __repr__ = __format__ = _skip
    __hash__ = _skip
    __fspath__ = _skip


_UNREAD: Any = _Unread()


def skipping_unread() -> contextlib.AbstractContextManager[None]:
    """`with skipping_unread(): RULE`: a rule that meets an unread value stops there."""
    return contextlib.suppress(_Skipped)


def is_unread(value: object) -> bool:
    """True for a value of a partly read config that could not be read."""
    return value is _UNREAD


class _Invalid(Exception):
    """Internal: this value cannot be converted; the issue is already recorded.

    `partial` is what could be read of it (an unread marker, or a dataclass instance
    built without its checks, with unread markers where its fields failed)."""

    def __init__(self, partial: Any = _UNREAD) -> None:
        super().__init__()
        self.partial = partial


class _Loader:
    def __init__(self, filename: str, base_dir: Path) -> None:
        self.filename = filename
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []  # how the file is written: inline secrets
        self._from_file: set[int] = set()  # ids of the nodes that `KEY_file` read
        self.lines: dict[str, int] = {}  # key path -> line, to place the issues of later rules

    def warn(self, line: int, key: str, message: str) -> None:
        self.warnings.append(ConfigIssue(self.filename, line, key, message, warning=True))

    def _inline_secret(self, node: yaml.Node, key: str, line: int) -> None:
        if id(node) in self._from_file or not isinstance(node, yaml.ScalarNode):
            return
        if not node.value or not _written_in_file(node.value):
            return
        name = key.rpartition(".")[2]
        if name.endswith("]"):  # a list item: no KEY_file form
            fix = 'write it as "${VAR}" to take it from the environment'
        else:
            fix = (
                f"read it from a file ({name}_file: /etc/enoc/...) or the environment "
                f'({name}: "${{VAR}}")'
            )
        own_text = _ENV.sub(lambda m: m.group(0) if m.group(0) == "$${" else "", node.value)
        how = "" if own_text.strip() else " (as the default of ${VAR:-...})"
        self.warn(line, key, f"a secret written inline in the file{how}; {fix}")

    def _inline_url_password(self, node: yaml.Node, key: str, line: int) -> None:
        if not isinstance(node, yaml.ScalarNode) or "://" not in node.value:
            return
        raw: str = node.value
        found = [m.group(1) for m in (_URL_PASSWORD.match(raw), _QUERY_PASSWORD.search(raw)) if m]
        if not any(password and _written_in_file(password) for password in found):
            return
        if raw.startswith(("postgresql:", "postgres:")):
            fix = (
                "leave it out of the URL and give it to libpq in a password file "
                "(PGPASSFILE or ~/.pgpass, as deploy/ does) or PGPASSWORD, or write it "
                'as "${VAR}" (from the environment)'
            )
        else:
            fix = 'write it as "${VAR}" (from the environment)'
        self.warn(line, key, f"a password written inline in the URL; {fix}")

    def fail(self, line: int, key: str, message: str) -> _Invalid:
        # A schema's own message may quote a value: never a secret (a URL's password).
        self.issues.append(ConfigIssue(self.filename, line, key, redact(message)))
        return _Invalid()

    # -- scalars

    def scalar_text(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(
                node.start_mark.line + 1, key, f"expected a single value, got a {_shape(node)}"
            )
        value: str = node.value

        def expand(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            env = os.environ.get(name)
            if env is not None:
                return env
            if default is not None:
                return default
            raise self.fail(
                node.start_mark.line + 1, key, f"environment variable {name} is not set"
            )

        return _ENV.sub(expand, value) if "$" in value else value

    def convert(self, node: yaml.Node | None, hint: Any, key: str, line: int) -> Any:
        """The value; what could be read of it when it is invalid (its issues recorded)."""
        try:
            return self._convert(node, hint, key, line)
        except _Invalid as exc:
            return exc.partial

    def _convert(self, node: yaml.Node | None, hint: Any, key: str, line: int) -> Any:
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            options = [a for a in get_args(hint) if a is not type(None)]
            if node is None or _is_null(node):
                if type(None) in get_args(hint):
                    return None
                raise self.fail(line, key, f"expected {_describe(hint)}, got nothing")
            if len(options) == 1:
                return self._convert(node, options[0], key, line)
            errors, warnings = len(self.issues), len(self.warnings)
            for option in options:
                try:
                    return self._convert(node, option, key, line)
                except _Invalid:
                    del self.issues[errors:]
                    del self.warnings[warnings:]
            raise self.fail(line, key, f"expected {_describe(hint)}, got {_show(node)}")
        if node is None or _is_null(node):
            raise self.fail(line, key, f"expected {_describe(hint)}, got nothing")
        line = node.start_mark.line + 1
        if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint is not HostPort:
            return self._dataclass(node, hint, key)
        if origin is list:
            (item,) = get_args(hint) or (Any,)
            if not isinstance(node, yaml.SequenceNode):
                raise self.fail(line, key, f"expected a list, got {_show(node)}")
            out = []
            before = len(self.issues)
            for i, child in enumerate(node.value):
                self.lines.setdefault(f"{key}[{i}]", child.start_mark.line + 1)
                out.append(self.convert(child, item, f"{key}[{i}]", child.start_mark.line + 1))
            if len(self.issues) != before:
                raise _Invalid(out)  # unread items stay in place: later rules keep the indexes
            return out
        if origin is dict:
            _, value_hint = get_args(hint) or (str, Any)
            if not isinstance(node, yaml.MappingNode):
                raise self.fail(line, key, f"expected a mapping, got {_show(node)}")
            result = {}
            before = len(self.issues)
            for k_node, v_node in node.value:
                try:
                    name = self.scalar_text(k_node, key)
                except _Invalid:
                    continue
                child_key = f"{key}.{name}" if key else name
                self.lines.setdefault(child_key, k_node.start_mark.line + 1)
                result[name] = self.convert(
                    v_node, value_hint, child_key, v_node.start_mark.line + 1
                )
            if len(self.issues) != before:
                raise _Invalid(result)
            return result
        if origin is Literal:
            text = self.scalar_text(node, key)
            for choice in get_args(hint):
                if str(choice) == text:
                    return choice
            choices = ", ".join(f'"{c}"' for c in get_args(hint))
            raise self.fail(line, key, f"expected one of {choices}, got {text!r}")
        if hint is Any:
            return to_python(node)
        return self._scalar(node, hint, key, line)

    def _scalar(self, node: yaml.Node, hint: Any, key: str, line: int) -> Any:
        text = self.scalar_text(node, key)
        tag = node.tag if isinstance(node, yaml.ScalarNode) else ""
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        try:
            if hint is bool:
                if quoted or tag != "tag:yaml.org,2002:bool":
                    raise ValueError(text)
                return text.lower() in ("true", "yes", "on")
            if hint is int:
                if tag == "tag:yaml.org,2002:bool":
                    raise ValueError(text)
                number = int(text, 0) if text.lower().startswith(("0x", "0o")) else int(text)
                if (
                    not INT64_MIN <= number <= INT64_MAX
                ):  # a count or a port; beyond, rules overflow
                    raise ValueError(text)
                return number
            if hint is float:
                if tag == "tag:yaml.org,2002:bool":
                    raise ValueError(text)
                return float(text)
            if hint is str:
                if "://" in text:  # a password in a URL is a secret too: never logged
                    register_url_secret(text)
                    self._inline_url_password(node, key, line)
                return text
            if hint is Duration:
                return Duration.parse(text)
            if hint is HostPort:
                return HostPort.parse(text)
            if hint is Secret:
                self._inline_secret(node, key, line)
                return Secret(text)
            if hint is Path:
                path = Path(text).expanduser()
                return path if path.is_absolute() else self.base_dir / path
            if isinstance(hint, type) and issubclass(hint, enum.Enum):
                return hint(text)
        except ValueError:
            raise self.fail(
                line, key, f"expected {_describe(hint)}, got {_show(node, text)}"
            ) from None
        raise self.fail(line, key, f"unsupported type {hint!r} in the schema")

    def _dataclass(self, node: yaml.Node, schema: type, key: str) -> Any:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(line, key, f"expected a mapping, got {_show(node)}")
        hints = get_type_hints(schema)
        fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
        given: dict[str, yaml.Node] = {}
        given_lines: dict[str, int] = {}
        unread: set[str] = set()  # `KEY_file` files that could not be read
        for k_node, raw_node in node.value:
            v_node = raw_node
            name = self.scalar_text(k_node, key)
            child_key = f"{key}.{name}" if key else name
            target = name
            if name.endswith("_file") and name[:-5] in fields and _is_secret(hints[name[:-5]]):
                target = name[:-5]
                if target in given or target in unread:
                    self.fail(
                        k_node.start_mark.line + 1,
                        child_key,
                        f"give either {target} or {name}, not both",
                    )
                    continue
                try:
                    v_node = self._secret_file(v_node, child_key)
                    self._from_file.add(id(v_node))
                except _Invalid:
                    unread.add(target)  # the file's issue is recorded; no second one
                    given_lines[target] = k_node.start_mark.line + 1
                    continue
            elif name not in fields:
                close = difflib.get_close_matches(name, list(fields), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                known = ", ".join(fields)
                self.fail(
                    k_node.start_mark.line + 1,
                    child_key,
                    f"unknown key{hint} (known keys: {known})",
                )
                continue
            elif name in given:
                self.fail(k_node.start_mark.line + 1, child_key, "given twice")
                continue
            given[target] = v_node
            given_lines[target] = k_node.start_mark.line + 1
            self.lines.setdefault(f"{key}.{target}" if key else target, given_lines[target])
        values: dict[str, Any] = {}
        invalid = False
        for name, field in fields.items():
            child_key = f"{key}.{name}" if key else name
            if name in unread:
                values[name] = _UNREAD
                invalid = True
            elif name in given:
                before = len(self.issues)
                values[name] = self.convert(given[name], hints[name], child_key, given_lines[name])
                invalid |= len(self.issues) != before
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                where = f"{key}: " if key else ""
                self.fail(
                    line,
                    child_key,
                    f"missing required key ({where}expected {_describe(hints[name])})",
                )
                values[name] = _UNREAD
                invalid = True
        if invalid:
            # The schema's own rules still run on the fields that could be read.
            partial = _assemble(schema, values)
            post_init = getattr(schema, "__post_init__", None)
            if post_init is not None:
                try:
                    post_init(partial)
                except (_Skipped, TypeError):
                    pass  # the rule needs a value that could not be read
                except ValueError as exc:
                    self._rule_failed(schema, key, line, str(exc))
            raise _Invalid(partial)
        try:
            return schema(**values)
        except (TypeError, ValueError) as exc:
            self._rule_failed(schema, key, line, str(exc))
            raise _Invalid(_assemble(schema, values)) from None

    def _rule_failed(self, schema: type, key: str, line: int, message: str) -> None:
        """A schema's own rule refused the values: the issue names the field its message
        starts with ("agent_id ...", "mqtt.url must ..."), at that field's line."""
        first = message.split(" ", 1)[0]
        names = {f.name for f in dataclasses.fields(schema)}
        field_key = ""
        if first in names:
            field_key = f"{key}.{first}" if key else first
        elif key and first.startswith(f"{key}.") and first[len(key) + 1 :] in names:
            field_key = first
        if field_key in self.lines:
            self.fail(self.lines[field_key], field_key, message)
        else:
            self.fail(line, key or "(top level)", message)

    def _secret_file(self, node: yaml.Node, key: str) -> yaml.Node:
        path = Path(self.scalar_text(node, key)).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise self.fail(
                node.start_mark.line + 1, key, f"cannot read secret file {path}: {exc.strerror}"
            ) from None
        # Quoted so that a secret of "yes" or "123" stays a string; `$` is not expanded in files.
        return yaml.ScalarNode(
            "tag:yaml.org,2002:str",
            value.replace("${", "$${"),
            start_mark=node.start_mark,
            end_mark=node.end_mark,
            style='"',
        )


def _assemble(schema: type, values: dict[str, Any]) -> Any:
    """An instance of `schema` with these values and the defaults, without its checks."""
    obj: Any = object.__new__(schema)
    for spec in dataclasses.fields(schema):
        if not spec.init:
            continue
        if spec.name in values:
            value = values[spec.name]
        elif spec.default is not dataclasses.MISSING:
            value = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
        else:
            value = _UNREAD
        object.__setattr__(obj, spec.name, value)
    return obj


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _is_secret(hint: Any) -> bool:
    return hint is Secret or Secret in get_args(hint)


def _shape(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "value"


def _show(node: yaml.Node, text: str | None = None) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return f"a {_shape(node)}"
    value = node.value if text is None else text
    return f'"{value}"' if len(value) < 60 else f'"{value[:57]}..."'


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint) if a is not type(None))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(f'"{c}"' for c in get_args(hint))
    names: dict[Any, str] = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Duration: 'a duration like "60s"',
        HostPort: 'HOST:PORT like "127.0.0.1:8080"',
        Secret: "a secret (or KEY_file: path)",
        Path: "a path",
    }
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(f'"{m.value}"' for m in hint)
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


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
    loader = _Loader(str(path), path.parent)
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
    from enoc.mqtt import TlsSetupError, tls_context  # enoc.mqtt imports this module

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
