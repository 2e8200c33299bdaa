"""The gob decoder: one stream's type definitions, then values, typed or generic.

Definitions may arrive in any order; each (wire type, expected type) pair is compiled once into a
closure. Hostile input is bounded: type count, fields per struct, nesting depth and the decoded
size (`reader.MAX_DECODED_COST`) are all checked before anything is allocated.
"""

from __future__ import annotations

from typing import Any

from weaved.mesh.gob.descriptors import (
    BOOTSTRAP,
    FIRST_USER_ID,
    INTERFACE,
    MAX_DEPTH,
    PRIMITIVES,
    WIRE_TYPE,
    Array,
    Field,
    GobType,
    Map,
    Opaque,
    Primitive,
    Slice,
    Struct,
    field_zero,
    map_as_pairs,
)
from weaved.mesh.gob.errors import GobError
from weaved.mesh.gob.reader import PRIMITIVE_DECODERS, STRUCT_COST, Dec, Reader

MAX_FIELDS = 1024
"""Fields of one struct type definition."""
MAX_TYPES = 1024
"""Type definitions in one stream."""
_MAX_TYPE_NAME = 1024  # Go refuses longer interface type names too
_COMPILE_CACHE_LIMIT = 1024


class Decoder:
    """One gob stream; keeps type definitions across calls.

    A message is consumed only when it decodes completely, so after a "truncated" GobError
    more data may be fed and `next` retried; any other GobError means the stream is unusable.
    """

    _shared_wire_dec: Dec | None = None

    def __init__(self, data: bytes = b"", start: int = 0) -> None:
        self._buf = bytes(data)  # no copy when `data` is bytes: `start` spares slicing it
        self._pos = start
        self._defs: dict[int, dict[str, Any]] = {}
        self._types: dict[int, GobType] = {}
        self._heights: dict[int, int] = {}
        # (id(wire), id(expect)) -> (wire, expect, decoder); holding both keeps the ids valid.
        self._decoders: dict[tuple[int, int], tuple[GobType, GobType | None, Dec]] = {}
        self._last_type: GobType | None = None
        self._sealed = False  # set while decode_value runs: no definitions may arrive
        # The definitions' decoder is the same for every stream: compiled once, shared.
        wire_dec = Decoder._shared_wire_dec
        if wire_dec is None:
            wire_dec = Decoder._shared_wire_dec = self._compile(WIRE_TYPE, None)
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
            head = Reader(buf, self._pos, len(buf))
            length = head.uint()
            if length == 0:
                raise GobError("empty message")
            if length > head.end - head.pos:
                raise GobError(f"truncated message: {length} bytes announced")
            end = head.pos + length
            r = Reader(buf, head.pos, end)
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
            head = Reader(data, start, end)
            length = head.uint()
            if length == 0 or length != head.end - head.pos:
                raise GobError("value message length does not match its span")
            r = Reader(data, head.pos, end)
            type_id = r.sint()
            if type_id < 0 or type_id in BOOTSTRAP:
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

    def _decode_top(self, type_id: int, expect: GobType | None, r: Reader) -> tuple[Any, GobType]:
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

    def _define(self, type_id: int, r: Reader) -> None:
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
        known = PRIMITIVES.get(type_id) or BOOTSTRAP.get(type_id) or self._types.get(type_id)
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

    def _compile(self, wire: GobType, expect: GobType | None) -> Dec:
        key = (id(wire), id(expect))
        hit = self._decoders.get(key)
        if hit is not None:
            return hit[2]
        dec = self._build(wire, expect)
        if len(self._decoders) >= _COMPILE_CACHE_LIMIT:
            self._decoders.clear()
        self._decoders[key] = (wire, expect, dec)
        return dec

    def _build(self, wire: GobType, expect: GobType | None) -> Dec:
        if isinstance(wire, Primitive):
            if expect is not None and expect != wire:
                raise GobError(f"type mismatch: want {_describe(expect)}, got {wire.name}")
            if wire is INTERFACE:
                return self._decode_interface
            return PRIMITIVE_DECODERS[wire.id]
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
            return _map_decoder(key_dec, elem_dec, map_as_pairs(expect.key if expect else wire.key))
        return Reader.raw  # Opaque: the marshaller's bytes

    def _build_struct(self, wire: Struct, expect: Struct | None) -> Dec:
        plan: list[tuple[str | None, Dec]] = []
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

        def dec(r: Reader) -> dict[str, Any]:
            budget = r.budget
            budget.left -= STRUCT_COST
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
                    out[f.name] = field_zero(f)
            return out

        return dec

    def _decode_interface(self, r: Reader) -> Any:
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
        sub = Reader(r.buf, r.pos, r.pos + n, depth, r.budget)
        if not isinstance(wire, Struct) and sub.uint() != 0:
            raise GobError("non-zero delta for an interface's value")
        value = self._compile(wire, None)(sub)
        if sub.pos != sub.end:
            raise GobError("extra bytes in an interface value")
        r.pos = sub.end
        return value


def _list_decoder(elem: Dec, length: int | None) -> Dec:
    def dec(r: Reader) -> list[Any]:
        n = r.count()
        if length is not None and n != length:
            raise GobError(f"array of {length} expected, {n} sent")
        return [elem(r) for _ in range(n)]

    return dec


def _map_decoder(key: Dec, elem: Dec, pairs: bool) -> Dec:
    def dec(r: Reader) -> Any:
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
