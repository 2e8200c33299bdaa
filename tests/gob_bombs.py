"""Hand-made hostile gob streams, shared by the unit bounds tests and the e2e attacker.

Each is a few bytes on the wire that would cost a naive decoder gigabytes or seconds.
"""

from __future__ import annotations

from weaved.mesh.gob.varint import put_int, put_uint

STRUCT_VALUE = b"\x03\x82\x00\x00"
"""A (3-byte) value message of type 65: an empty struct."""


def message(body: bytes | bytearray) -> bytes:
    """`body` with its gob length prefix."""
    out = bytearray()
    put_uint(out, len(body))
    return bytes(out + body)


def struct_definition(type_id: int, fields: int) -> bytes:
    """A gob definition of a struct with `fields` empty fieldType entries (1 byte each)."""
    b = bytearray()
    put_int(b, -type_id)
    b.append(3)  # wireType.StructT
    b += b"\x01\x01\x01x\x01"  # CommonType{Name: "x", Id: ...}
    put_int(b, type_id)
    b += b"\x00\x01"  # end CommonType; Field
    put_uint(b, fields)
    b += b"\x00" * fields
    b += b"\x00\x00"
    return message(b)


def struct_bomb(fields: int) -> bytes:
    """A struct type with `fields` empty fields (type 65), then a value of it."""
    return struct_definition(65, fields) + STRUCT_VALUE


def slice_bomb(elements: int) -> bytes:
    """`elements` empty structs in one slice: 1 byte each on the wire."""
    sl = bytearray()
    put_int(sl, -66)
    sl += b"\x02\x01\x01\x01s\x01"  # SliceT{CommonType{Name: "s", Id: 66}, Elem: 65}
    put_int(sl, 66)
    sl += b"\x00\x01"
    put_int(sl, 65)
    sl += b"\x00\x00"
    value = bytearray()
    put_int(value, 66)
    value.append(0)
    put_uint(value, elements)
    value += b"\x00" * elements
    return struct_definition(65, 0) + message(sl) + message(value)
