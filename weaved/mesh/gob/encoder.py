"""The gob encoder: Python values to Go's bytes, type definitions sent once per stream.

A struct field whose value is zero is omitted, with Go's exceptions (see the package docstring);
each descriptor's encoder is compiled once per process into a closure (it depends on the type
alone), shared by every stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from weaved.mesh.gob.descriptors import (
    FIRST_USER_ID,
    WIRE_TYPE,
    Array,
    GobType,
    Map,
    Opaque,
    Primitive,
    Slice,
    Struct,
    zero_value,
)
from weaved.mesh.gob.errors import GobValueError
from weaved.mesh.gob.varint import float_bits, put_int, put_uint

_MAX_UINT = (1 << 64) - 1
_MIN_INT = -(1 << 63)
_MAX_INT = (1 << 63) - 1


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_Enc = Callable[[Any, bytearray], None]


def _enc_bool(v: Any, out: bytearray) -> None:
    if not isinstance(v, bool):
        raise GobValueError(f"bool expected, got {type(v).__name__}")
    out.append(1 if v else 0)


def _enc_int(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not _MIN_INT <= v <= _MAX_INT:
        raise GobValueError(f"int64 expected, got {v!r:.60}")
    put_int(out, v)


def _enc_uint(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not 0 <= v <= _MAX_UINT:
        raise GobValueError(f"uint64 expected, got {v!r:.60}")
    put_uint(out, v)


def _enc_float(v: Any, out: bytearray) -> None:
    if not isinstance(v, float) and not _is_int(v):
        raise GobValueError(f"float expected, got {type(v).__name__}")
    try:
        bits = float_bits(float(v))
    except OverflowError:
        raise GobValueError(f"{v!r:.60} does not fit a float64") from None
    put_uint(out, bits)


def _enc_complex(v: Any, out: bytearray) -> None:
    if not isinstance(v, complex | float) and not _is_int(v):
        raise GobValueError(f"complex expected, got {type(v).__name__}")
    try:
        c = complex(v)
    except OverflowError:
        raise GobValueError(f"{v!r:.60} does not fit a complex128") from None
    put_uint(out, float_bits(c.real))
    put_uint(out, float_bits(c.imag))


def _enc_bytes(v: Any, out: bytearray) -> None:
    if not isinstance(v, bytes | bytearray | memoryview):
        raise GobValueError(f"bytes expected, got {type(v).__name__}")
    raw = bytes(v)
    put_uint(out, len(raw))
    out += raw


def _enc_string(v: Any, out: bytearray) -> None:
    if not isinstance(v, str):
        raise GobValueError(f"str expected, got {type(v).__name__}")
    try:
        raw = v.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise GobValueError(f"string not encodable: {e}") from None
    put_uint(out, len(raw))
    out += raw


def _enc_unsupported(v: Any, out: bytearray) -> None:
    raise GobValueError("encoding interface values is not supported")


_PRIMITIVE_ENCODERS: dict[int, _Enc] = {
    1: _enc_bool,
    2: _enc_int,
    3: _enc_uint,
    4: _enc_float,
    5: _enc_bytes,
    6: _enc_string,
    7: _enc_complex,
    8: _enc_unsupported,
}

# How a struct field is treated when its value is zero (see the module docstring).
_SEND_IF_NONZERO, _SEND_IF_NOT_NONE, _SEND_ALWAYS = 0, 1, 2


_COMPILED: dict[GobType, _Enc] = {}
"""Compiled encoders by type (descriptors are immutable; a handful exist)."""


class Encoder:
    """One gob stream (type ids from 65 in first-use order, each type defined once per stream)."""

    def __init__(self) -> None:
        self._ids: dict[GobType, int] = {}
        self._next_id = FIRST_USER_ID
        self._sent: set[GobType] = set()
        self._encoders = _COMPILED

    def encode(self, typ: GobType, value: Any) -> bytes:
        """The messages needed for `value`: type definitions not yet sent, then the value."""
        out = bytearray()
        self._assign_ids(typ)
        # Definitions count as sent only once the value encoded, so a value that does not fit
        # leaves the stream as it was.
        pending: set[GobType] = set()
        self._send_definitions(typ, out, pending)
        body = bytearray()
        put_int(body, self._type_id(typ))
        if not isinstance(typ, Struct):
            body.append(0)  # a top-level non-struct is a "singleton" field 0
        self._encoder(typ)(value, body)
        put_uint(out, len(body))
        out += body
        self._sent |= pending
        return bytes(out)

    def _type_id(self, typ: GobType) -> int:
        if isinstance(typ, Primitive):
            return typ.id
        return self._ids[typ]

    def _assign_ids(self, typ: GobType) -> None:
        # Go numbers a struct before its fields' types but a slice/map/array after its
        # element types; mirroring that makes our streams byte-identical to Go's.
        if isinstance(typ, Primitive) or typ in self._ids:
            return
        if isinstance(typ, Struct):
            self._new_id(typ)
            for f in typ.fields:
                self._assign_ids(f.type)
            return
        if isinstance(typ, Map):
            self._assign_ids(typ.key)
            self._assign_ids(typ.elem)
        elif isinstance(typ, Slice | Array):
            self._assign_ids(typ.elem)
        elif not isinstance(typ, Opaque):
            raise GobValueError(f"not a gob type descriptor: {typ!r:.80}")
        self._new_id(typ)

    def _new_id(self, typ: GobType) -> None:
        self._ids[typ] = self._next_id
        self._next_id += 1

    def _send_definitions(self, typ: GobType, out: bytearray, pending: set[GobType]) -> None:
        # Go sends a type's own definition before those of the types it refers to.
        if isinstance(typ, Primitive) or typ in self._sent or typ in pending:
            return
        pending.add(typ)
        body = bytearray()
        put_int(body, -self._ids[typ])
        self._encoder(WIRE_TYPE)(self._wire_value(typ), body)
        put_uint(out, len(body))
        out += body
        if isinstance(typ, Struct):
            for f in typ.fields:
                self._send_definitions(f.type, out, pending)
        elif isinstance(typ, Map):
            self._send_definitions(typ.key, out, pending)
            self._send_definitions(typ.elem, out, pending)
        elif isinstance(typ, Slice | Array):
            self._send_definitions(typ.elem, out, pending)

    def _wire_value(self, typ: GobType) -> dict[str, Any]:
        common = {"Name": getattr(typ, "name", ""), "Id": self._ids[typ]}
        if isinstance(typ, Struct):
            fields = [{"Name": f.name, "Id": self._type_id(f.type)} for f in typ.fields]
            return {"StructT": {"CommonType": common, "Field": fields}}
        if isinstance(typ, Slice):
            return {"SliceT": {"CommonType": common, "Elem": self._type_id(typ.elem)}}
        if isinstance(typ, Map):
            key, elem = self._type_id(typ.key), self._type_id(typ.elem)
            return {"MapT": {"CommonType": common, "Key": key, "Elem": elem}}
        if isinstance(typ, Array):
            elem = self._type_id(typ.elem)
            return {"ArrayT": {"CommonType": common, "Elem": elem, "Len": typ.length}}
        assert isinstance(typ, Opaque)
        return {typ.kind + "T": {"CommonType": common}}

    def _encoder(self, typ: GobType) -> _Enc:
        enc = self._encoders.get(typ)
        if enc is None:
            enc = self._compile(typ)
            self._encoders[typ] = enc
        return enc

    def _compile(self, typ: GobType) -> _Enc:
        if isinstance(typ, Primitive):
            return _PRIMITIVE_ENCODERS[typ.id]
        if isinstance(typ, Struct):
            return self._compile_struct(typ)
        if isinstance(typ, Slice | Array):
            return self._compile_list(typ)
        if isinstance(typ, Map):
            return self._compile_map(typ)
        if isinstance(typ, Opaque):
            return _enc_bytes
        raise GobValueError(f"not a gob type descriptor: {typ!r:.80}")

    def _compile_struct(self, typ: Struct) -> _Enc:
        plan: list[tuple[str, int, _Enc, int, GobType]] = []
        for i, f in enumerate(typ.fields):
            if isinstance(f.type, Struct) and f.pointer:
                mode = _SEND_IF_NOT_NONE
            elif isinstance(f.type, Struct | Array):
                mode = _SEND_ALWAYS
            elif isinstance(f.type, Map):
                mode = _SEND_IF_NOT_NONE
            else:
                mode = _SEND_IF_NONZERO
            plan.append((f.name, i, self._encoder(f.type), mode, f.type))
        names = frozenset(f.name for f in typ.fields)

        def enc(v: Any, out: bytearray) -> None:
            if not isinstance(v, Mapping):
                raise GobValueError(f"dict expected for struct {typ.name!r}")
            if not names.issuperset(v.keys()):
                unknown = sorted(map(str, set(v.keys()) - names))
                raise GobValueError(f"struct {typ.name!r} has no fields {unknown}")
            prev = -1
            for name, i, fenc, mode, ftype in plan:
                x = v.get(name)
                if x is None:
                    if mode != _SEND_ALWAYS:
                        continue
                    x = zero_value(ftype)
                elif mode == _SEND_IF_NONZERO and not x:
                    continue
                put_uint(out, i - prev)
                prev = i
                fenc(x, out)
            out.append(0)

        return enc

    def _compile_list(self, typ: Slice | Array) -> _Enc:
        elem_enc = self._encoder(typ.elem)
        length = typ.length if isinstance(typ, Array) else None

        def enc(v: Any, out: bytearray) -> None:
            if not isinstance(v, list | tuple):
                raise GobValueError(f"list expected for {typ!r:.60}")
            if length is not None and len(v) != length:
                raise GobValueError(f"array of {length} expected, got {len(v)} elements")
            put_uint(out, len(v))
            for x in v:
                elem_enc(x, out)

        return enc

    def _compile_map(self, typ: Map) -> _Enc:
        key_enc = self._encoder(typ.key)
        elem_enc = self._encoder(typ.elem)

        def enc(v: Any, out: bytearray) -> None:
            if v is None:  # a nil map outside a struct field (say in a slice) is sent empty, as Go
                out.append(0)
                return
            if isinstance(v, Mapping):
                items: Any = v.items()
            elif isinstance(v, list | tuple):
                items = v
            else:
                raise GobValueError(f"dict or list of pairs expected for {typ!r:.60}")
            put_uint(out, len(items))
            for pair in items:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise GobValueError("map entries must be (key, value) pairs")
                key_enc(pair[0], out)
                elem_enc(pair[1], out)

        return enc


_FRESH: dict[GobType, tuple[bytes, int, _Enc]] = {}
"""Per type: what a fresh stream sends before its first value (the definitions), the type's
id there and its encoder. Every handshake sends its features this way."""
_MAX_FRESH = 64


def encode_one(typ: GobType, value: Any) -> bytes:
    """`value` as a complete gob stream of its own (what a fresh Encoder writes)."""
    primed = _FRESH.get(typ)
    if primed is None:
        enc = Encoder()
        enc._assign_ids(typ)
        defs = bytearray()
        enc._send_definitions(typ, defs, set())
        primed = (bytes(defs), enc._type_id(typ), enc._encoder(typ))
        if len(_FRESH) < _MAX_FRESH:
            _FRESH[typ] = primed
    defs_bytes, type_id, encode_value = primed
    body = bytearray()
    put_int(body, type_id)
    if not isinstance(typ, Struct):
        body.append(0)  # a top-level non-struct is a "singleton" field 0
    encode_value(value, body)
    out = bytearray(defs_bytes)
    put_uint(out, len(body))
    out += body
    return bytes(out)
