"""Gob's numbers on the wire: unsigned and zig-zag signed integers, byte-reversed floats."""

from __future__ import annotations

import struct as _struct


def put_uint(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        out.append(256 - len(raw))
        out += raw


def put_int(out: bytearray, n: int) -> None:
    put_uint(out, (n << 1) if n >= 0 else ((~n << 1) | 1))


def float_bits(x: float) -> int:
    # Go sends the IEEE bits byte-reversed so that small exponents give short encodings.
    return int.from_bytes(_struct.pack("<d", x), "big")


def bits_float(u: int) -> float:
    return float(_struct.unpack("<d", u.to_bytes(8, "big"))[0])
