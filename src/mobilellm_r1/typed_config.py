"""Typed configs from YAML: nested dataclasses, checked field by field, with CLI overrides.

    cfg = load_config(MixtureConfig, "recipe.yaml", overrides=["seq_len=4096", "sources.0.weight=2"])

Every error names the file and the dotted field path (`recipe.yaml: sources.3.weight: expected
float, got 'abc'`), and the `--set` when the value came from one (`... (the value comes from
--set steps=abc, not the file)`). Unknown keys are errors, not silently ignored. Floats must be finite; a field
declared with `bounded(default, ge=..., gt=..., le=..., lt=...)` must also lie in its range (each
item of a list). YAML aliases are refused (an alias bomb expands exponentially), and values are
shown shortened, so no message grows past a few hundred characters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


MAX_MESSAGE = 600  # characters of an error message
_REPR = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 120, 120
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 6


class ConfigError(ValueError):
    """A recipe that does not match its dataclass; the message names file and field.

    `field` is the dotted path of the offending field (None when the error is not about one)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(shorten(message, MAX_MESSAGE))
        self.field = field


def show(value: Any) -> str:
    """A value's repr for an error message: nested and long values cut (about 200 characters at most)."""
    return shorten(_REPR.repr(value), 200)


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text):,} chars)"


_COMPARISONS = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("le", "<=", operator.le),
    ("lt", "<", operator.lt),
)


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}", field=where)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a numeric field must lie in (each bound optional)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None when it is inside."""
        for name, symbol, compare in _COMPARISONS:
            bound = getattr(self, name)
            if bound is not None and not compare(value, bound):
                return f"must be {symbol} {bound:g}, got {show(value)}"
        return None

    def check(self, value: Any, where: str) -> None:
        """Raise ConfigError naming `where` if `value` (or an item of a list value) is out of range."""
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(item, f"{where}.{i}")
        elif isinstance(value, (int, float)) and (problem := self.problem(value)):
            raise _fail(where, problem)


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose loaded value must satisfy the bounds (checked by `from_dict`)."""
    meta = {"bounds": Bounds(ge=ge, gt=gt, le=le, lt=lt)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert_scalar(tp: type, value: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(where, f"expected bool, got {show(value)}")
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"expected {tp.__name__}, got {show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(where, f"expected a finite number, got {value}")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise _fail(where, f"expected int, got {show(value)}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, f"expected str, got {show(value)}")
        return value
    return value


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp` (dataclass, list, dict, Optional, Literal)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _fail(where, f"expected one of {list(allowed)}, got {show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, f"expected a list, got {show(value)}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_convert(item, v, f"{where}.{i}") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"expected a mapping, got {show(value)}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    return _convert_scalar(tp, value, where)


def _convert_union(tp: Any, value: Any, where: str) -> Any:
    options = typing.get_args(tp)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _convert(option, value, where)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise _fail(where, f"{show(value)} matches none of {tp}")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, converting and checking every field (types, bounds)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise _fail(where, f"expected a mapping for {_type_name(cls)}, got {show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _fail(
            where, f"unknown field(s) {shorten(', '.join(map(str, unknown)), 200)} for {_type_name(cls)}"
        )
    kwargs = {}
    for name in fields:
        if name in data:
            path = f"{where}.{name}" if where else name
            kwargs[name] = _convert(hints[name], data[name], path)
            if bounds := fields[name].metadata.get("bounds"):
                bounds.check(kwargs[name], path)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _fail(where, f"missing field(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise _fail(where, str(err)) from err


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: `*name` is an error (no billion-laughs expansion)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{shorten(event.anchor, 40)}) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """YAML text -> data, safely (plain types only) and without aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass


def apply_overrides(data: dict, overrides: list[str], where: str = "--set") -> dict:
    """Apply `a.b.0.c=value` overrides (value parsed as YAML) to nested dicts/lists, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: expected key=value, got {show(item)}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: i + 1]), where)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{where} {shorten(item, 200)}: invalid YAML value ({err})") from err
        _assign(node, parts[-1], value, key, where)
    return data


def _child(node: Any, part: str, path: str, where: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"{where}: {path}: no list item {show(part)}")
        return node[int(part)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise ConfigError(f"{where}: {path}: cannot descend into {show(node)}")


def _assign(node: Any, part: str, value: Any, key: str, where: str) -> None:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"{where}: {key}: no list item {show(part)}")
        node[int(part)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"{where}: {key}: cannot set a field of {show(node)}")


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path` (aliases refused), with errors that name the file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"recipe not found: {p}")
    try:
        data = parse_yaml(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def build_config(cls: type[T], data: dict, source: str, overrides: list[str] | None = None) -> T:
    """Apply `key=value` overrides to `data` and build `cls`. Errors name `source` (the file, or e.g.
    `command line`) and the field, and the `--set` when that is where the bad value came from."""
    overrides = list(overrides or [])
    apply_overrides(data, overrides)
    try:
        return from_dict(cls, data, where="")
    except ConfigError as err:
        origin = _override_of(err.field, overrides)
        note = f" (the value comes from --set {shorten(origin, 200)}, not the file)" if origin else ""
        raise ConfigError(f"{source}: {str(err).lstrip(': ')}{note}", field=err.field) from err


def _override_of(field: str | None, overrides: list[str]) -> str | None:
    """The last override that set `field` or a field inside it (or a section holding it)."""
    if not field:
        return None
    for item in reversed(overrides):
        key = item.split("=", 1)[0].strip()
        if key == field or key.startswith(f"{field}.") or field.startswith(f"{key}."):
            return item
    return None


def load_config(cls: type[T], path: str | os.PathLike, overrides: list[str] | None = None) -> T:
    """Read YAML `path`, apply `key=value` overrides, build `cls`; errors name file, field (and `--set`)."""
    return build_config(cls, read_yaml(path), str(path), overrides)
