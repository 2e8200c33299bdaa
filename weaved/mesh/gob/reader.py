"""Reading one gob message safely: a bounds-checked cursor, the decoding budget, and the
framing of a complete stream (`message_spans`).

Every read is checked against the message's end, and what the decoded value will cost in
Python objects is charged before it is allocated (`MAX_DECODED_COST`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from weaved.mesh.gob.errors import GobError
from weaved.mesh.gob.varint import bits_float

# What one remote message may cost us, checked before allocating (a 10 MiB message of 1-byte
# empty structs would otherwise become 10 M dicts: gigabytes). Weave's largest types have a
# dozen fields and its largest messages decode to a few MB.
MAX_DECODED_COST = 48 * 1024 * 1024
"""Estimated bytes of Python objects one message may decode to."""
SLOT_COST = 64  # a list or dict slot plus a small object
STRUCT_COST = 256  # a dict
RAW_COST = 48  # the header of a bytes or str object


class Budget:
    """What is left of `MAX_DECODED_COST` for one message (shared by its sub-readers)."""

    __slots__ = ("left",)

    def __init__(self, left: int = MAX_DECODED_COST) -> None:
        self.left = left

    def charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise GobError(f"message would decode to more than {MAX_DECODED_COST >> 20} MiB")


class Reader:
    """A cursor over one message (or part of one); every read is bounds-checked."""

    __slots__ = ("budget", "buf", "depth", "end", "pos")

    def __init__(
        self, buf: bytes, pos: int, end: int, depth: int = 0, budget: Budget | None = None
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.depth = depth
        self.budget = budget if budget is not None else Budget()

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
        return bits_float(self.uint())

    def complex_(self) -> complex:
        real = bits_float(self.uint())
        return complex(real, bits_float(self.uint()))

    def raw(self) -> bytes:
        n = self.uint()
        if n > self.end - self.pos:
            raise GobError(f"length {n} beyond the message")
        budget = self.budget  # (inlined charge: this is the decoder's hottest path)
        budget.left -= n + RAW_COST
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
        self.budget.charge(n * per_item * SLOT_COST)
        return n


Dec = Callable[[Reader], Any]

PRIMITIVE_DECODERS: dict[int, Dec] = {
    1: Reader.boolean,
    2: Reader.sint,
    3: Reader.uint,
    4: Reader.floating,
    5: Reader.raw,
    6: Reader.string,
    7: Reader.complex_,
}


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
