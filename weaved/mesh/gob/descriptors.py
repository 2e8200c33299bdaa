"""Gob type descriptors (frozen, hashable), Go's zero values, and the types that describe types.

Descriptors: the predeclared `BOOL` ... `INTERFACE` (ids 1-8), `Struct` of `Field`s, `Slice`,
`Map`, `Array` and `Opaque` (a GobEncoder/BinaryMarshaler/TextMarshaler's own bytes). The
bootstrap types (ids 16-23, `WIRE_TYPE` at their root) are how definitions travel on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIRST_USER_ID = 65
MAX_DEPTH = 64
"""Deepest type nesting accepted from the wire (Weave's deepest is 6); keeps recursion bounded."""


class GobType:
    """Base of the type descriptors; every descriptor is a frozen, hashable dataclass."""

    __slots__ = ()


@dataclass(frozen=True)
class Primitive(GobType):
    """A predeclared type (ids 1-8); use the module singletons."""

    name: str
    id: int


BOOL = Primitive("bool", 1)
INT = Primitive("int", 2)
UINT = Primitive("uint", 3)
FLOAT = Primitive("float", 4)
BYTES = Primitive("[]byte", 5)
STRING = Primitive("string", 6)
COMPLEX = Primitive("complex", 7)
INTERFACE = Primitive("interface", 8)
PRIMITIVES = {p.id: p for p in (BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE)}


@dataclass(frozen=True)
class Field:
    """A struct field; `pointer` marks a Go `*Struct` field, which may be nil (None)."""

    name: str
    type: GobType
    pointer: bool = False


@dataclass(frozen=True)
class Struct(GobType):
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Slice(GobType):
    elem: GobType
    name: str = ""


@dataclass(frozen=True)
class Map(GobType):
    key: GobType
    elem: GobType
    name: str = ""


@dataclass(frozen=True)
class Array(GobType):
    """A fixed-length Go array (unused by Weave)."""

    elem: GobType
    length: int
    name: str = ""


@dataclass(frozen=True)
class Opaque(GobType):
    """A type with its own GobEncoder/BinaryMarshaler/TextMarshaler bytes; decoded as bytes."""

    name: str
    kind: str = "GobEncoder"


def map_as_pairs(key: GobType) -> bool:
    """Maps whose keys would decode to unhashable values are lists of pairs."""
    return not isinstance(key, Primitive) or key.id == INTERFACE.id


def zero_value(typ: GobType) -> Any:
    """Go's zero value of `typ` in our Python representation (a fresh object each call)."""
    if isinstance(typ, Primitive):
        return _PRIMITIVE_ZEROS[typ.id]
    if isinstance(typ, Struct):
        return {f.name: field_zero(f) for f in typ.fields}
    if isinstance(typ, Slice):
        return []
    if isinstance(typ, Array):
        return [zero_value(typ.elem) for _ in range(typ.length)]
    if isinstance(typ, Opaque):
        return b""
    return None  # a nil map


_PRIMITIVE_ZEROS: dict[int, Any] = {1: False, 2: 0, 3: 0, 4: 0.0, 5: b"", 6: "", 7: 0j, 8: None}


def field_zero(f: Field) -> Any:
    return None if f.pointer and isinstance(f.type, Struct) else zero_value(f.type)


# The predeclared types that describe types (ids 16-23), used to read and write definitions.
_COMMON_TYPE = Struct("CommonType", (Field("Name", STRING), Field("Id", INT)))
_ARRAY_TYPE = Struct(
    "arrayType", (Field("CommonType", _COMMON_TYPE), Field("Elem", INT), Field("Len", INT))
)
_FIELD_TYPE = Struct("fieldType", (Field("Name", STRING), Field("Id", INT)))
_FIELD_LIST = Slice(_FIELD_TYPE)
_SLICE_TYPE = Struct("sliceType", (Field("CommonType", _COMMON_TYPE), Field("Elem", INT)))
_STRUCT_TYPE = Struct(
    "structType", (Field("CommonType", _COMMON_TYPE), Field("Field", _FIELD_LIST))
)
_MAP_TYPE = Struct(
    "mapType", (Field("CommonType", _COMMON_TYPE), Field("Key", INT), Field("Elem", INT))
)
_GOB_ENCODER_TYPE = Struct("gobEncoderType", (Field("CommonType", _COMMON_TYPE),))
_OPAQUE_KINDS = ("GobEncoder", "BinaryMarshaler", "TextMarshaler")
WIRE_TYPE = Struct(
    "wireType",
    (
        Field("ArrayT", _ARRAY_TYPE, pointer=True),
        Field("SliceT", _SLICE_TYPE, pointer=True),
        Field("StructT", _STRUCT_TYPE, pointer=True),
        Field("MapT", _MAP_TYPE, pointer=True),
        *(Field(k + "T", _GOB_ENCODER_TYPE, pointer=True) for k in _OPAQUE_KINDS),
    ),
)
BOOTSTRAP: dict[int, GobType] = {
    16: WIRE_TYPE,
    17: _ARRAY_TYPE,
    18: _COMMON_TYPE,
    19: _SLICE_TYPE,
    20: _STRUCT_TYPE,
    21: _FIELD_TYPE,
    22: _FIELD_LIST,
    23: _MAP_TYPE,
}
