"""Go's encoding/gob as Weave Net 2.8.1 speaks it (FACTS.md §8, §11). Pure: bytes in, values out.

Types are described by frozen descriptors (`Struct`, `Slice`, `Map`, the predeclared `BOOL` ...);
Python values map to them as:

    BOOL bool, INT/UINT int, FLOAT float, COMPLEX complex, BYTES bytes, STRING str,
    Struct dict[str, Any], Slice/Array list, Map dict -- except a map whose key type is not
    predeclared (Weave: the IPAM Paxos map, keyed by a struct): list[tuple[key, value]], order kept.

Zero values follow Go. The encoder omits zero-valued struct fields, with Go's exceptions: a
non-pointer struct (or array) field is always sent, a pointer struct field (`Field(...,
pointer=True)`) is sent unless None/missing, and a map field is sent unless None/missing, even
when empty (Go omits only nil maps; a live weaver sends an empty IPAM `Paxos` map before any
ring while a "no Paxos" state omits it, so the difference is kept). Decoding with an
`expect` descriptor fills absent fields the way Go leaves them: nil pointer and nil map -> None,
slices -> [], other kinds -> their zero value. So decode-then-encode reproduces Go's bytes.

Strings are UTF-8 with `surrogateescape`: Go strings may hold any bytes and we keep them intact.
"""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from weaved.errors import Bug, ProtocolError

__all__ = [
    "BOOL",
    "BYTES",
    "COMPLEX",
    "FLOAT",
    "INT",
    "INTERFACE",
    "MAX_DEPTH",
    "STRING",
    "UINT",
    "Array",
    "Decoder",
    "Encoder",
    "Field",
    "GobError",
    "GobType",
    "GobValueError",
    "Map",
    "Opaque",
    "Primitive",
    "Slice",
    "Struct",
    "decode_all",
    "decode_one",
    "encode_one",
    "message_spans",
    "zero_value",
]

FIRST_USER_ID = 65
MAX_DEPTH = 64
"""Deepest type nesting accepted from the wire (Weave's deepest is 6); keeps recursion bounded."""

_MAX_UINT = (1 << 64) - 1
_MIN_INT = -(1 << 63)
_MAX_INT = (1 << 63) - 1
_MAX_TYPE_NAME = 1024  # Go refuses longer interface type names too

# What one remote message may cost us, checked before allocating (a 10 MiB message of 1-byte
# empty structs would otherwise become 10 M dicts: gigabytes). Weave's largest types have a
# dozen fields and its largest messages decode to a few MB.
MAX_FIELDS = 1024
"""Fields of one struct type definition."""
MAX_TYPES = 1024
"""Type definitions in one stream."""
MAX_DECODED_COST = 48 * 1024 * 1024
"""Estimated bytes of Python objects one message may decode to."""
_SLOT_COST = 64  # a list or dict slot plus a small object
_STRUCT_COST = 256  # a dict
_RAW_COST = 48  # the header of a bytes or str object


class GobError(ProtocolError):
    """Malformed gob input: the peer sent garbage (never raised for our own encoding bugs)."""


class GobValueError(Bug, ValueError):
    """A Python value does not fit the type descriptor it was encoded with: a weaved bug."""


# --------------------------------------------------------------------------- type descriptors


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
_PRIMITIVES = {p.id: p for p in (BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE)}


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


def _pairs(key: GobType) -> bool:
    """Maps whose keys would decode to unhashable values are lists of pairs."""
    return not isinstance(key, Primitive) or key.id == INTERFACE.id


def zero_value(typ: GobType) -> Any:
    """Go's zero value of `typ` in our Python representation (a fresh object each call)."""
    if isinstance(typ, Primitive):
        return _PRIMITIVE_ZEROS[typ.id]
    if isinstance(typ, Struct):
        return {f.name: _field_zero(f) for f in typ.fields}
    if isinstance(typ, Slice):
        return []
    if isinstance(typ, Array):
        return [zero_value(typ.elem) for _ in range(typ.length)]
    if isinstance(typ, Opaque):
        return b""
    return None  # a nil map


_PRIMITIVE_ZEROS: dict[int, Any] = {1: False, 2: 0, 3: 0, 4: 0.0, 5: b"", 6: "", 7: 0j, 8: None}


def _field_zero(f: Field) -> Any:
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
_WIRE_TYPE = Struct(
    "wireType",
    (
        Field("ArrayT", _ARRAY_TYPE, pointer=True),
        Field("SliceT", _SLICE_TYPE, pointer=True),
        Field("StructT", _STRUCT_TYPE, pointer=True),
        Field("MapT", _MAP_TYPE, pointer=True),
        *(Field(k + "T", _GOB_ENCODER_TYPE, pointer=True) for k in _OPAQUE_KINDS),
    ),
)
_BOOTSTRAP: dict[int, GobType] = {
    16: _WIRE_TYPE,
    17: _ARRAY_TYPE,
    18: _COMMON_TYPE,
    19: _SLICE_TYPE,
    20: _STRUCT_TYPE,
    21: _FIELD_TYPE,
    22: _FIELD_LIST,
    23: _MAP_TYPE,
}


# --------------------------------------------------------------------------- encoding


def _put_uint(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        out.append(256 - len(raw))
        out += raw


def _put_int(out: bytearray, n: int) -> None:
    _put_uint(out, (n << 1) if n >= 0 else ((~n << 1) | 1))


def _float_bits(x: float) -> int:
    # Go sends the IEEE bits byte-reversed so that small exponents give short encodings.
    return int.from_bytes(_struct.pack("<d", x), "big")


def _bits_float(u: int) -> float:
    return float(_struct.unpack("<d", u.to_bytes(8, "big"))[0])


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
    _put_int(out, v)


def _enc_uint(v: Any, out: bytearray) -> None:
    if not _is_int(v) or not 0 <= v <= _MAX_UINT:
        raise GobValueError(f"uint64 expected, got {v!r:.60}")
    _put_uint(out, v)


def _enc_float(v: Any, out: bytearray) -> None:
    if not isinstance(v, float) and not _is_int(v):
        raise GobValueError(f"float expected, got {type(v).__name__}")
    try:
        bits = _float_bits(float(v))
    except OverflowError:
        raise GobValueError(f"{v!r:.60} does not fit a float64") from None
    _put_uint(out, bits)


def _enc_complex(v: Any, out: bytearray) -> None:
    if not isinstance(v, complex | float) and not _is_int(v):
        raise GobValueError(f"complex expected, got {type(v).__name__}")
    try:
        c = complex(v)
    except OverflowError:
        raise GobValueError(f"{v!r:.60} does not fit a complex128") from None
    _put_uint(out, _float_bits(c.real))
    _put_uint(out, _float_bits(c.imag))


def _enc_bytes(v: Any, out: bytearray) -> None:
    if not isinstance(v, bytes | bytearray | memoryview):
        raise GobValueError(f"bytes expected, got {type(v).__name__}")
    raw = bytes(v)
    _put_uint(out, len(raw))
    out += raw


def _enc_string(v: Any, out: bytearray) -> None:
    if not isinstance(v, str):
        raise GobValueError(f"str expected, got {type(v).__name__}")
    try:
        raw = v.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise GobValueError(f"string not encodable: {e}") from None
    _put_uint(out, len(raw))
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


class Encoder:
    """One gob stream (type ids from 65 in first-use order, each type defined once per stream)."""

    def __init__(self) -> None:
        self._ids: dict[GobType, int] = {}
        self._next_id = FIRST_USER_ID
        self._sent: set[GobType] = set()
        self._encoders: dict[GobType, _Enc] = {}

    def encode(self, typ: GobType, value: Any) -> bytes:
        """The messages needed for `value`: type definitions not yet sent, then the value."""
        out = bytearray()
        self._assign_ids(typ)
        # Definitions count as sent only once the value encoded, so a value that does not fit
        # leaves the stream as it was.
        pending: set[GobType] = set()
        self._send_definitions(typ, out, pending)
        body = bytearray()
        _put_int(body, self._type_id(typ))
        if not isinstance(typ, Struct):
            body.append(0)  # a top-level non-struct is a "singleton" field 0
        self._encoder(typ)(value, body)
        _put_uint(out, len(body))
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
        _put_int(body, -self._ids[typ])
        self._encoder(_WIRE_TYPE)(self._wire_value(typ), body)
        _put_uint(out, len(body))
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
                _put_uint(out, i - prev)
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
            _put_uint(out, len(v))
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
            _put_uint(out, len(items))
            for pair in items:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise GobValueError("map entries must be (key, value) pairs")
                key_enc(pair[0], out)
                elem_enc(pair[1], out)

        return enc


def encode_one(typ: GobType, value: Any) -> bytes:
    """`value` as a complete gob stream of its own (a fresh Encoder)."""
    return Encoder().encode(typ, value)


# --------------------------------------------------------------------------- decoding


class _Budget:
    """What is left of `MAX_DECODED_COST` for one message (shared by its sub-readers)."""

    __slots__ = ("left",)

    def __init__(self, left: int = MAX_DECODED_COST) -> None:
        self.left = left

    def charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise GobError(f"message would decode to more than {MAX_DECODED_COST >> 20} MiB")


class _Reader:
    """A cursor over one message (or part of one); every read is bounds-checked."""

    __slots__ = ("budget", "buf", "depth", "end", "pos")

    def __init__(
        self, buf: bytes, pos: int, end: int, depth: int = 0, budget: _Budget | None = None
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.depth = depth
        self.budget = budget if budget is not None else _Budget()

    def uint(self) -> int:
        p = self.pos
        if p >= self.end:
            raise GobError("truncated value")
        b = self.buf[p]
        if b < 0x80:
            self.pos = p + 1
            return b
        n = 256 - b
        if n > 8:
            raise GobError(f"bad integer length byte {b:#04x}")
        q = p + 1 + n
        if q > self.end:
            raise GobError("truncated integer")
        self.pos = q
        return int.from_bytes(self.buf[p + 1 : q], "big")

    def sint(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def boolean(self) -> bool:
        return self.uint() != 0

    def floating(self) -> float:
        return _bits_float(self.uint())

    def complex_(self) -> complex:
        real = _bits_float(self.uint())
        return complex(real, _bits_float(self.uint()))

    def raw(self) -> bytes:
        n = self.uint()
        if n > self.end - self.pos:
            raise GobError(f"length {n} beyond the message")
        budget = self.budget  # (inlined charge: this is the decoder's hottest path)
        budget.left -= n + _RAW_COST
        if budget.left < 0:
            budget.charge(0)
        p = self.pos
        self.pos = p + n
        return self.buf[p : p + n]

    def string(self) -> str:
        return self.raw().decode("utf-8", "surrogateescape")

    def count(self, per_item: int = 1) -> int:
        """An element count; each element takes at least one byte, which bounds it."""
        n = self.uint()
        if n * per_item > self.end - self.pos:
            raise GobError(f"count {n} beyond the message")
        self.budget.charge(n * per_item * _SLOT_COST)
        return n


_Dec = Callable[[_Reader], Any]

_PRIMITIVE_DECODERS: dict[int, _Dec] = {
    1: _Reader.boolean,
    2: _Reader.sint,
    3: _Reader.uint,
    4: _Reader.floating,
    5: _Reader.raw,
    6: _Reader.string,
    7: _Reader.complex_,
}

_COMPILE_CACHE_LIMIT = 1024


class Decoder:
    """One gob stream; keeps type definitions across calls.

    A message is consumed only when it decodes completely, so after a "truncated" GobError
    more data may be fed and `next` retried; any other GobError means the stream is unusable.
    """

    _shared_wire_dec: _Dec | None = None

    def __init__(self, data: bytes = b"", start: int = 0) -> None:
        self._buf = bytes(data)  # no copy when `data` is bytes: `start` spares slicing it
        self._pos = start
        self._defs: dict[int, dict[str, Any]] = {}
        self._types: dict[int, GobType] = {}
        self._heights: dict[int, int] = {}
        # (id(wire), id(expect)) -> (wire, expect, decoder); holding both keeps the ids valid.
        self._decoders: dict[tuple[int, int], tuple[GobType, GobType | None, _Dec]] = {}
        self._last_type: GobType | None = None
        self._sealed = False  # set while decode_value runs: no definitions may arrive
        # The definitions' decoder is the same for every stream: compiled once, shared.
        wire_dec = Decoder._shared_wire_dec
        if wire_dec is None:
            wire_dec = Decoder._shared_wire_dec = self._compile(_WIRE_TYPE, None)
        self._wire_dec = wire_dec

    def feed(self, data: bytes) -> None:
        self._buf = self._buf[self._pos :] + bytes(data)
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos >= len(self._buf)

    @property
    def last_type(self) -> GobType | None:
        """The wire's descriptor of the value `next` returned last (names as the sender sent)."""
        return self._last_type

    def wire_type(self, type_id: int) -> GobType:
        """The descriptor of a type id as defined in this stream so far."""
        try:
            return self._resolve(type_id, 0, set())
        except RecursionError:
            raise GobError("type definitions nested too deeply") from None

    def next(self, expect: GobType | None = None) -> Any:
        """Read definitions as needed and return the next value.

        expect=None: generic decoding from the wire's definitions (a struct becomes a dict of the
        fields present on the wire). With `expect`: Go's rules -- struct fields matched by name,
        absent ones filled with zero values, unknown wire fields dropped, kind mismatch -> GobError.
        """
        try:
            return self._next(expect)
        except RecursionError:
            raise GobError("value nested too deeply") from None

    def _next(self, expect: GobType | None) -> Any:
        buf = self._buf
        while True:
            if self._pos >= len(buf):
                raise GobError("truncated stream: no value")
            head = _Reader(buf, self._pos, len(buf))
            length = head.uint()
            if length == 0:
                raise GobError("empty message")
            if length > head.end - head.pos:
                raise GobError(f"truncated message: {length} bytes announced")
            end = head.pos + length
            r = _Reader(buf, head.pos, end)
            type_id = r.sint()
            if type_id < 0:
                self._define(-type_id, r)
                if r.pos != end:
                    raise GobError("extra bytes after a type definition")
                self._pos = end
                continue
            value, wire = self._decode_top(type_id, expect, r)
            if r.pos != end:
                raise GobError("extra bytes after a value")
            self._pos = end
            self._last_type = wire
            return value

    def decode_value(self, data: bytes, start: int, end: int, expect: GobType) -> Any:
        """The one value message `data[start:end]` (length prefix included), decoded with the
        definitions this stream has read so far. A definition inside is refused, so a cached,
        primed decoder keeps its types whatever a peer sends; the stream position is untouched."""
        try:
            head = _Reader(data, start, end)
            length = head.uint()
            if length == 0 or length != head.end - head.pos:
                raise GobError("value message length does not match its span")
            r = _Reader(data, head.pos, end)
            type_id = r.sint()
            if type_id < 0 or type_id in _BOOTSTRAP:
                raise GobError(f"a value message expected, got type id {type_id}")
            self._sealed = True
            value, _ = self._decode_top(type_id, expect, r)
        except RecursionError:
            raise GobError("value nested too deeply") from None
        finally:
            self._sealed = False
        if r.pos != end:
            raise GobError("extra bytes after a value")
        return value

    def _decode_top(self, type_id: int, expect: GobType | None, r: _Reader) -> tuple[Any, GobType]:
        wire = self._resolve(type_id, 0, set())
        r.depth = self._heights.get(type_id, 1)
        dec = self._compile(wire, expect)
        if not isinstance(wire, Struct) and r.uint() != 0:
            raise GobError("non-zero delta for a top-level non-struct value")
        if isinstance(expect, Struct) and isinstance(wire, Struct) and wire.fields:
            # Go refuses a struct value when none of the wire's fields is known locally.
            wanted = {f.name for f in expect.fields}
            if expect.fields and not any(f.name in wanted for f in wire.fields):
                raise GobError(f"no wire field of {wire.name!r} matches {expect.name!r}")
        return dec(r), wire

    # ---- definitions

    def _define(self, type_id: int, r: _Reader) -> None:
        if self._sealed:
            raise GobError("a type definition inside a value decoded with decode_value")
        if type_id < FIRST_USER_ID or type_id in self._defs:
            raise GobError(f"duplicate or reserved type id {type_id} defined")
        if len(self._defs) >= MAX_TYPES:
            raise GobError(f"more than {MAX_TYPES} type definitions in one stream")
        wire = self._wire_dec(r)
        kinds = [k for k in wire if wire[k] is not None]
        if len(kinds) != 1:
            raise GobError(f"type {type_id} definition has {len(kinds)} kinds")
        struct_t = wire.get("StructT")
        if struct_t is not None and len(struct_t.get("Field", [])) > MAX_FIELDS:
            raise GobError(f"type {type_id}: more than {MAX_FIELDS} struct fields")
        self._defs[type_id] = wire

    def _resolve(self, type_id: int, depth: int, visiting: set[int]) -> GobType:
        """The descriptor of a type id; definitions may have arrived in any order."""
        known = _PRIMITIVES.get(type_id) or _BOOTSTRAP.get(type_id) or self._types.get(type_id)
        if known is not None:
            return known
        wire = self._defs.get(type_id)
        if wire is None:
            raise GobError(f"unknown type id {type_id}")
        if type_id in visiting:
            raise GobError(f"recursive type {type_id} is not supported")
        if depth >= MAX_DEPTH:
            raise GobError("type definitions nested too deeply")
        visiting.add(type_id)

        def sub(ref: object) -> GobType:
            if not isinstance(ref, int):
                raise GobError("bad type reference")
            return self._resolve(ref, depth + 1, visiting)

        kind, body = next((k, v) for k, v in wire.items() if v is not None)
        name = body.get("CommonType", {}).get("Name", "")
        typ: GobType
        refs: list[object]
        if kind == "StructT":
            fields = body.get("Field", [])
            refs = [f.get("Id", 0) for f in fields]
            names = [f.get("Name", "") for f in fields]
            if "" in names or len(set(names)) != len(names):
                raise GobError(f"struct {name!r}: empty or duplicate field names")
            typ = Struct(name, tuple(Field(n, sub(i)) for n, i in zip(names, refs, strict=True)))
        elif kind == "SliceT":
            refs = [body.get("Elem", 0)]
            typ = Slice(sub(refs[0]), name)
        elif kind == "MapT":
            refs = [body.get("Key", 0), body.get("Elem", 0)]
            typ = Map(sub(refs[0]), sub(refs[1]), name)
        elif kind == "ArrayT":
            refs = [body.get("Elem", 0)]
            length = body.get("Len", 0)
            if length < 0:
                raise GobError("negative array length")
            typ = Array(sub(refs[0]), length, name)
        else:
            refs = []
            typ = Opaque(name, kind[:-1])
        visiting.discard(type_id)
        height = 1 + max((self._height(i) for i in refs), default=0)
        if height > MAX_DEPTH:  # a deep chain can be built up one cached definition at a time
            raise GobError("type definitions nested too deeply")
        self._heights[type_id] = height
        self._types[type_id] = typ
        return typ

    def _height(self, ref: object) -> int:
        return self._heights.get(ref, 1) if isinstance(ref, int) else 1

    # ---- compiled decoders, per (wire descriptor, expected descriptor)

    def _compile(self, wire: GobType, expect: GobType | None) -> _Dec:
        key = (id(wire), id(expect))
        hit = self._decoders.get(key)
        if hit is not None:
            return hit[2]
        dec = self._build(wire, expect)
        if len(self._decoders) >= _COMPILE_CACHE_LIMIT:
            self._decoders.clear()
        self._decoders[key] = (wire, expect, dec)
        return dec

    def _build(self, wire: GobType, expect: GobType | None) -> _Dec:
        if isinstance(wire, Primitive):
            if expect is not None and expect != wire:
                raise GobError(f"type mismatch: want {_describe(expect)}, got {wire.name}")
            if wire is INTERFACE:
                return self._decode_interface
            return _PRIMITIVE_DECODERS[wire.id]
        if expect is not None and type(expect) is not type(wire):
            raise GobError(f"type mismatch: want {_describe(expect)}, got {_describe(wire)}")
        if isinstance(wire, Struct):
            assert expect is None or isinstance(expect, Struct)
            return self._build_struct(wire, expect)
        if isinstance(wire, Slice):
            assert expect is None or isinstance(expect, Slice)
            return _list_decoder(self._compile(wire.elem, expect and expect.elem), None)
        if isinstance(wire, Array):
            assert expect is None or isinstance(expect, Array)
            if expect is not None and expect.length != wire.length:
                raise GobError(f"array length mismatch: want {expect.length}, got {wire.length}")
            return _list_decoder(self._compile(wire.elem, expect and expect.elem), wire.length)
        if isinstance(wire, Map):
            assert expect is None or isinstance(expect, Map)
            key_dec = self._compile(wire.key, expect and expect.key)
            elem_dec = self._compile(wire.elem, expect and expect.elem)
            return _map_decoder(key_dec, elem_dec, _pairs(expect.key if expect else wire.key))
        return _Reader.raw  # Opaque: the marshaller's bytes

    def _build_struct(self, wire: Struct, expect: Struct | None) -> _Dec:
        plan: list[tuple[str | None, _Dec]] = []
        if expect is None:
            plan = [(f.name, self._compile(f.type, None)) for f in wire.fields]
            absent: list[Field] = []
        else:
            local = {f.name: f for f in expect.fields}
            for f in wire.fields:
                lf = local.get(f.name)
                if lf is None:  # unknown to us: decode and drop, as Go does
                    plan.append((None, self._compile(f.type, None)))
                else:
                    plan.append((f.name, self._compile(f.type, lf.type)))
            absent = list(expect.fields)
        count = len(plan)

        def dec(r: _Reader) -> dict[str, Any]:
            budget = r.budget
            budget.left -= _STRUCT_COST
            if budget.left < 0:
                budget.charge(0)
            out: dict[str, Any] = {}
            num = -1
            uint = r.uint
            while True:
                delta = uint()
                if delta == 0:
                    break
                num += delta
                if num >= count:
                    raise GobError(f"field number {num} out of range for {wire.name!r}")
                name, fdec = plan[num]
                value = fdec(r)
                if name is not None:
                    out[name] = value
            for f in absent:
                if f.name not in out:
                    out[f.name] = _field_zero(f)
            return out

        return dec

    def _decode_interface(self, r: _Reader) -> Any:
        """An interface value: concrete type name, inline definitions, id, length, value."""
        name = r.raw()
        if not name:
            return None  # a nil interface
        if len(name) > _MAX_TYPE_NAME:
            raise GobError("interface type name too long")
        while True:
            type_id = r.sint()
            if type_id >= 0:
                break
            self._define(-type_id, r)
            if r.pos < r.end:
                r.uint()  # Go puts a (meaningless) message length after each inline definition
        wire = self._resolve(type_id, 0, set())
        depth = r.depth + self._heights.get(type_id, 1)
        if depth > MAX_DEPTH:
            raise GobError("interface values nested too deeply")
        n = r.uint()
        if n > r.end - r.pos:
            raise GobError("interface value beyond the message")
        sub = _Reader(r.buf, r.pos, r.pos + n, depth, r.budget)
        if not isinstance(wire, Struct) and sub.uint() != 0:
            raise GobError("non-zero delta for an interface's value")
        value = self._compile(wire, None)(sub)
        if sub.pos != sub.end:
            raise GobError("extra bytes in an interface value")
        r.pos = sub.end
        return value


def _list_decoder(elem: _Dec, length: int | None) -> _Dec:
    def dec(r: _Reader) -> list[Any]:
        n = r.count()
        if length is not None and n != length:
            raise GobError(f"array of {length} expected, {n} sent")
        return [elem(r) for _ in range(n)]

    return dec


def _map_decoder(key: _Dec, elem: _Dec, pairs: bool) -> _Dec:
    def dec(r: _Reader) -> Any:
        n = r.count(2)
        if pairs:
            return [(key(r), elem(r)) for _ in range(n)]
        out: dict[Any, Any] = {}
        for _ in range(n):
            k = key(r)
            out[k] = elem(r)
        return out

    return dec


def _describe(typ: GobType) -> str:
    if isinstance(typ, Primitive):
        return typ.name
    name = getattr(typ, "name", "")
    return f"{type(typ).__name__.lower()} {name!r}" if name else type(typ).__name__.lower()


def message_spans(data: bytes, start: int = 0) -> list[tuple[int, int, int]]:
    """(type id, start, end) of each message of a complete stream, without decoding them
    (a definition has a negative id); raises GobError on a truncated or malformed framing."""
    spans: list[tuple[int, int, int]] = []
    pos, size = start, len(data)
    while pos < size:
        b = data[pos]  # the length and the type id, inlined: this runs per gossiped peer
        if b < 0x80:
            length, body = b, pos + 1
        else:
            body = pos + 1 + 256 - b
            if b < 0xF8 or body > size:
                raise GobError("bad or truncated message length")
            length = int.from_bytes(data[pos + 1 : body], "big")
        end = body + length
        if length == 0 or end > size:
            raise GobError("empty or truncated message")
        b = data[body]
        if b < 0x80:
            u = b
        else:
            q = body + 1 + 256 - b
            if b < 0xF8 or q > end:
                raise GobError("bad or truncated type id")
            u = int.from_bytes(data[body + 1 : q], "big")
        spans.append((~(u >> 1) if u & 1 else u >> 1, pos, end))
        pos = end
    return spans


def decode_one(data: bytes, expect: GobType | None = None) -> Any:
    """Exactly one value from a complete stream; anything after it is an error."""
    dec = Decoder(data)
    value = dec.next(expect)
    if not dec.at_end():
        raise GobError("trailing bytes after the value")
    return value


def decode_all(data: bytes) -> list[Any]:
    """Every value of a complete stream, decoded generically."""
    dec = Decoder(data)
    values = []
    while not dec.at_end():
        values.append(dec.next())
    return values
