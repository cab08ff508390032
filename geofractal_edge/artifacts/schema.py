"""Typed JSON: read a frozen dataclass from parsed JSON, checking every field once, and write it back.

`parse(cls, value, where)` walks the dataclass's type hints: str, int, float, bool, None unions,
tuple[T, ...], fixed tuples, dict[str, T], Literal, nested dataclasses and `JsonObject` (a JSON
object whose content is the family's own, kept as a read-only mapping). A wrong type, a missing
field or an unknown one raises SchemaError naming the field's path ("graph.inputs[1].range") and
what it should be. After its fields parse, a class may check itself in `__post_init__` and raise
`invalid(...)`. `dump(obj)` writes the same structure back to plain JSON values; parse(dump(x)) == x.
No torch, no numpy: the device reads manifests with this.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from geofractal_edge.errors import GfedgeError


class SchemaError(ValueError):
    """A JSON value that does not fit the schema; `path` names the field."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path or "(top)"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class JsonObject(Mapping):
    """A read-only JSON object (str keys, JSON values) whose fields are not part of the schema."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __hash__(self) -> int:
        return hash(repr(sorted(self._data)))

    def __repr__(self) -> str:
        return f"JsonObject({self._data!r})"

    def to_dict(self) -> dict:
        return _plain(self._data)


def invalid(field: str, problem: str) -> SchemaError:
    """For `__post_init__` checks: the parser prefixes the path of the object being built."""
    return SchemaError(field, problem)


def parse(cls: type, value: Any, where: str = "") -> Any:
    """`value` (parsed JSON) as an instance of `cls`, or SchemaError naming the first bad field."""
    return _parse(cls, value, where)


def dump(obj: Any) -> Any:
    """A schema object back to plain JSON values (dicts, lists, str, numbers, bool, None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("json", True)}
    if isinstance(obj, JsonObject):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {k: dump(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [dump(v) for v in obj]
    return obj


def describe(tp: Any) -> str:
    """A type as a reader would say it: "list of str", "int or null", "object"."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {describe(args[0])}"
        return f"list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (dict, Mapping):
        return f"object of {describe(args[1])}"
    if tp is JsonObject or tp is Any:
        return "object" if tp is JsonObject else "any JSON value"
    if dataclasses.is_dataclass(tp):
        return f"object ({tp.__name__})"
    return {str: "string", int: "integer", float: "number", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


@cache
def hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _parse(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, where)
    if origin in (Union, types.UnionType):
        return _parse_union(tp, args, value, where)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise SchemaError(where, f"must be {describe(tp)}, got {_show(value)}")
        return value
    if origin is tuple:
        return _parse_tuple(tp, args, value, where)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be {describe(tp)}, got {_show(value)}")
        return {_check_str(k, f"{where}.{k}" if where else k): _parse(args[1], v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if tp is JsonObject:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be an object, got {_show(value)}")
        return JsonObject(value)
    if tp is Any:
        return value
    return _parse_scalar(tp, value, where)


def _parse_dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(where, f"must be an object ({cls.__name__}), got {_show(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields) - set(getattr(cls, "_IGNORED", ())))
    if unknown:
        raise SchemaError(_join(where, unknown[0]), f"is not a field of {cls.__name__} (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(path, f"is missing ({describe(hints(cls)[name])})")
            continue
        kwargs[name] = _parse(hints(cls)[name], value[name], path)
    try:
        return cls(**kwargs)
    except SchemaError as exc:
        raise SchemaError(_join(where, exc.path) if exc.path != "(top)" else where, exc.problem) from None
    except GfedgeError as exc:  # a dataclass that validates itself with the user-error family
        raise SchemaError(where, exc.problem) from None


def _parse_union(tp: Any, args: tuple, value: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _parse(arg, value, where)
        except SchemaError as exc:
            errors.append(exc)
    deepest = max(errors, key=lambda e: len(e.path))
    if deepest.path != (where or "(top)"):
        raise deepest
    raise SchemaError(where, f"must be {describe(tp)}, got {_show(value)}")


def _parse_tuple(tp: Any, args: tuple, value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):  # JSON gives lists; Python callers may pass tuples
        raise SchemaError(where, f"must be {describe(tp)}, got {_show(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise SchemaError(where, f"must be {describe(tp)}, got {len(value)} items")
    return tuple(_parse(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _parse_scalar(tp: type, value: Any, where: str) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 63
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
        if ok:
            _check_str(value, where)
    else:
        raise TypeError(f"schema type {tp!r} is not supported")  # a bug in a schema, not in the JSON
    if not ok:
        raise SchemaError(where, f"must be {describe(tp)}, got {_show(value)}")
    return value


def _check_str(value: str, where: str) -> str:
    if "\x00" in value:
        raise SchemaError(where, "holds a NUL character")
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__.replace("dict", "an object").replace("list", "a list")
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


__all__ = ["JsonObject", "SchemaError", "describe", "dump", "invalid", "parse"]
