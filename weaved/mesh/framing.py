"""Length-prefixed message framing of protocol v2, optionally sealed (FACTS.md §2.1). Pure.

Each direction is a run of `[u32 BE length][body]`; with a password each body is a NaCl
secretbox and the length counts the sealed bytes. A length over 10 MiB is an error, and is
refused from the prefix alone, before any of the body is buffered. Before the handshake is
done (nobody is authenticated yet) the reader's limit is `HANDSHAKE_MAX_MESSAGE`: the features
message is a few hundred bytes.
"""

from __future__ import annotations

import struct

from weaved.errors import ProtocolError
from weaved.mesh.crypto import DecryptError, TcpOpener, TcpSealer

__all__ = [
    "HANDSHAKE_MAX_MESSAGE",
    "MAX_MESSAGE_SIZE",
    "FramingError",
    "MessageReader",
    "MessageWriter",
]

MAX_MESSAGE_SIZE = 10 * 1024 * 1024
HANDSHAKE_MAX_MESSAGE = 64 * 1024
_LEN = struct.Struct(">I")


class FramingError(ProtocolError):
    """The remote's byte stream does not follow the framing (or does not decrypt)."""


class MessageWriter:
    def __init__(self, sealer: TcpSealer | None = None) -> None:
        self._sealer = sealer

    def frame(self, body: bytes) -> bytes:
        payload = self._sealer.seal(body) if self._sealer is not None else body
        if len(payload) > MAX_MESSAGE_SIZE:
            raise FramingError(
                f"outgoing message exceeds maximum size: {len(payload)} > {MAX_MESSAGE_SIZE}"
            )
        return _LEN.pack(len(payload)) + payload


class MessageReader:
    """Feed bytes as they arrive; get whole message bodies (opened) back."""

    def __init__(self, opener: TcpOpener | None = None, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._opener = opener
        self._buf = bytearray()
        self.max_size = max_size

    def set_opener(self, opener: TcpOpener | None) -> None:
        self._opener = opener

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending_length(self) -> int:
        """The announced length of the message being received (0: none, or refused)."""
        if len(self._buf) < _LEN.size:
            return 0
        (length,) = _LEN.unpack_from(self._buf)
        return int(length) if length <= self.max_size else 0

    def next_message(self) -> bytes | None:
        """One message body, or None if more bytes are needed. Raises `FramingError`."""
        if len(self._buf) < _LEN.size:
            return None
        (length,) = _LEN.unpack_from(self._buf)
        if length > self.max_size:
            raise FramingError(f"incoming message exceeds maximum size: {length} > {self.max_size}")
        if len(self._buf) < _LEN.size + length:
            return None
        with memoryview(self._buf) as view:  # one copy (a bytearray slice would be two)
            payload = bytes(view[_LEN.size : _LEN.size + length])
        del self._buf[: _LEN.size + length]
        if self._opener is None:
            return payload
        try:
            return self._opener.open(payload)
        except DecryptError as e:
            raise FramingError(str(e)) from e

    def messages(self, data: bytes = b"") -> list[bytes]:
        if data:
            self.feed(data)
        out: list[bytes] = []
        while (msg := self.next_message()) is not None:
            out.append(msg)
        return out
