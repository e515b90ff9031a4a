"""The machinery of enoc's config loader: YAML with the line of every node, converted and
checked against a schema's type hints, every problem recorded as a `ConfigIssue` (the
contract and its public functions are in `enoc.config`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import keyword
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from enoc.config_types import Duration, HostPort, Secret
from enoc.logs import redact, register_url_secret
from enoc.wire import INT64_MAX, INT64_MIN

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


class Loader:
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
        # a field named after a Python keyword plus "_" (`from_`) is the keyword's key
        hints = {_key(name): hint for name, hint in get_type_hints(schema).items()}
        fields = {_key(f.name): f for f in dataclasses.fields(schema) if f.init}
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
            return schema(**{fields[name].name: value for name, value in values.items()})
        except (TypeError, ValueError) as exc:
            self._rule_failed(schema, key, line, str(exc))
            raise _Invalid(_assemble(schema, values)) from None

    def _rule_failed(self, schema: type, key: str, line: int, message: str) -> None:
        """A schema's own rule refused the values: the issue names the field its message
        starts with ("agent_id ...", "mqtt.url must ..."), at that field's line."""
        first = message.split(" ", 1)[0]
        names = {_key(f.name) for f in dataclasses.fields(schema)}
        field_key = ""
        if first in names:
            field_key = f"{key}.{first}" if key else first
        elif key and first.startswith(f"{key}.") and first[len(key) + 1 :].split("[")[0] in names:
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


def _key(name: str) -> str:
    """A field's key in the file: `from_` is `from`, every other name itself."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def _assemble(schema: type, values: dict[str, Any]) -> Any:
    """An instance of `schema` with these values and the defaults, without its checks."""
    obj: Any = object.__new__(schema)
    for spec in dataclasses.fields(schema):
        if not spec.init:
            continue
        if _key(spec.name) in values:
            value = values[_key(spec.name)]
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
