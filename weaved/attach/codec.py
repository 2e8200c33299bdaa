"""Frozen dataclass records ↔ JSON objects, one rule for every record weaved keeps in a state
file (attachments, CNI attachments): each field by its name, in field order; enums and
addresses as text, tuples as lists, nested records as objects. Reading coerces each value to
its field's type; a missing field takes its default (None where None is allowed), a missing
field without one is a KeyError. A field marked `NOT_SAVED` is left out both ways.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import types
from typing import Any, Self, Union, get_args, get_origin, get_type_hints

NOT_SAVED = {"saved": False}  # dataclasses.field(metadata=NOT_SAVED)
_TEXT = (ipaddress.IPv4Interface, ipaddress.IPv4Address, ipaddress.IPv4Network)


class JsonRecord:
    """Mixin for a frozen dataclass: `to_json()` and `from_json(data)` by the rule above."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in _saved(type(self))}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in _saved(cls):
            if f.name in data:
                values[f.name] = _load(hints[f.name], data[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if type(None) not in get_args(hints[f.name]):
                    raise KeyError(f.name)
                values[f.name] = None
        return cls(**values)


_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def _saved(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple(f for f in dataclasses.fields(cls) if f.metadata.get("saved", True))
    return _FIELDS[cls]


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _dump(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, _TEXT):
        return str(value)
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value


def _load(kind: Any, value: Any) -> Any:
    origin, args = get_origin(kind), get_args(kind)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        return _load(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        return tuple(_load(args[0], v) for v in value)
    if isinstance(kind, type) and issubclass(kind, JsonRecord):
        return kind.from_json(value)
    if kind in (str, int, bool, float) or kind in _TEXT:
        return kind(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    raise TypeError(f"no JSON rule for {kind!r}")
