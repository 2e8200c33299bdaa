"""Weave's session crypto (FACTS.md §9): key agreement, TCP secretbox framing, sleeve seal/open.

Pure apart from drawing random private keys. Session keys and private keys never appear in
`repr` output or logs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from nacl import bindings
from nacl.exceptions import CryptoError

from weaved.errors import ProtocolError

__all__ = [
    "SECRETBOX_OVERHEAD",
    "SEQ_SIZE",
    "WINDOW_BITS",
    "DecryptError",
    "KeyPair",
    "ReplayWindow",
    "SleeveOpener",
    "SleeveSealer",
    "TcpOpener",
    "TcpSealer",
    "form_session_key",
    "sleeve_nonce",
    "tcp_nonce",
]

SECRETBOX_OVERHEAD = 16
KEY_SIZE = 32
SEQ_SIZE = 8
WINDOW_BITS = 20
_DF_BIT = 1 << 63
_OUTBOUND = 0x80
_TCP_MARKER = 0x40


class DecryptError(ProtocolError):
    """A sealed message did not open: wrong key, gap, replay or corruption."""


@dataclass(frozen=True)
class KeyPair:
    """A Curve25519 key pair, fresh per connection."""

    public: bytes
    private: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> KeyPair:
        public, private = bindings.crypto_box_keypair()
        return cls(bytes(public), bytes(private))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != KEY_SIZE:
            raise ValueError("private key must be 32 bytes")
        return cls(bytes(bindings.crypto_scalarmult_base(private)), private)


def form_session_key(remote_public: bytes, own_private: bytes, password: bytes) -> bytes:
    """SHA-256(NaCl box precompute(remote, own) || password): same at both ends."""
    if len(remote_public) != KEY_SIZE:
        raise DecryptError(f"remote public key must be 32 bytes, got {len(remote_public)}")
    shared = bindings.crypto_box_beforenm(remote_public, own_private)
    return hashlib.sha256(bytes(shared) + password).digest()


def tcp_nonce(sender_outbound: bool, seq: int) -> bytes:
    """Byte 0: 0x80 if the sender dialled, | 0x40 (TCP); bytes 16..23: BE message counter."""
    first = (_OUTBOUND if sender_outbound else 0) | _TCP_MARKER
    return bytes([first]) + bytes(15) + seq.to_bytes(8, "big")


def sleeve_nonce(sender_outbound: bool, seq_field: int) -> bytes:
    """Like the TCP nonce without the TCP marker; bytes 16..23 = the `seq|DF` field as sent."""
    first = _OUTBOUND if sender_outbound else 0
    return bytes([first]) + bytes(15) + seq_field.to_bytes(8, "big")


class TcpSealer:
    """Seals our direction of an encrypted TCP connection; one counter, from 0."""

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        self._key = session_key
        self._outbound = outbound
        self.seq = 0

    def __repr__(self) -> str:
        return f"TcpSealer(outbound={self._outbound}, seq={self.seq})"

    def seal(self, plaintext: bytes) -> bytes:
        nonce = tcp_nonce(self._outbound, self.seq)
        self.seq += 1
        return bytes(bindings.crypto_secretbox(plaintext, nonce, self._key))


class TcpOpener:
    """Opens the remote's direction; `outbound` is ours, so the sender's polarity is the other."""

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        self._key = session_key
        self._sender_outbound = not outbound
        self.seq = 0

    def __repr__(self) -> str:
        return f"TcpOpener(sender_outbound={self._sender_outbound}, seq={self.seq})"

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < SECRETBOX_OVERHEAD:
            raise DecryptError("Unable to decrypt TCP msg: shorter than the authenticator")
        nonce = tcp_nonce(self._sender_outbound, self.seq)
        try:
            plain = bytes(bindings.crypto_secretbox_open(sealed, nonce, self._key))
        except CryptoError as e:
            raise DecryptError("Unable to decrypt TCP msg") from e
        self.seq += 1
        return plain


class SleeveSealer:
    """Builds sleeve datagrams for one path (DF or non-DF) of one connection.

    Unencrypted: `[sender name][body]`. Encrypted: `[sender name][8 BE seq|DF<<63][secretbox]`.
    The counter advances at every seal, even if the kernel later refuses the send (Weave does
    the same: the PMTU trigger consumes DF seq 1)."""

    def __init__(
        self, sender_name: bytes, session_key: bytes | None, outbound: bool, df: bool
    ) -> None:
        self._prefix = sender_name
        self._key = session_key
        self._outbound = outbound
        self._df = df
        self.seq = 0

    def __repr__(self) -> str:
        return f"SleeveSealer(df={self._df}, encrypted={self._key is not None}, seq={self.seq})"

    @property
    def encrypted(self) -> bool:
        return self._key is not None

    @property
    def packet_overhead(self) -> int:
        """Bytes per datagram besides the frames (after the UDP header)."""
        extra = SEQ_SIZE + SECRETBOX_OVERHEAD if self._key is not None else 0
        return len(self._prefix) + extra

    def seal(self, body: bytes) -> bytes:
        if self._key is None:
            return self._prefix + body
        seq_field = self.seq | (_DF_BIT if self._df else 0)
        self.seq += 1
        nonce = sleeve_nonce(self._outbound, seq_field)
        sealed = bytes(bindings.crypto_secretbox(body, nonce, self._key))
        return self._prefix + seq_field.to_bytes(SEQ_SIZE, "big") + sealed


class ReplayWindow:
    """Seen sequence numbers of one stream, in 2^20-wide windows (current and previous)."""

    def __init__(self) -> None:
        self.current_window = 0
        self._used: set[int] = set()
        self._previous: set[int] = set()

    def accept(self, seq: int) -> bool:
        """Record `seq`; False if it is a replay or older than the previous window."""
        window = seq >> WINDOW_BITS
        delta = window - self.current_window
        if delta < -1:
            return False
        if delta == -1:
            used = self._previous
        else:
            if delta == 1:
                self._previous, self._used = self._used, set()
            elif delta > 1:
                self._previous, self._used = set(), set()
            self.current_window = window
            used = self._used
        offset = seq & ((1 << WINDOW_BITS) - 1)
        if offset in used:
            return False
        used.add(offset)
        return True


class SleeveOpener:
    """Opens the remote's sleeve datagrams (after the 6-byte sender name) for one connection.

    Returns the frames body, or None for a datagram that decrypted but must not be delivered
    (replay, or older than the previous window). Raises `DecryptError` when it does not open."""

    def __init__(self, session_key: bytes | None, outbound: bool) -> None:
        self._key = session_key
        self._sender_outbound = not outbound
        self._windows = {False: ReplayWindow(), True: ReplayWindow()}

    def __repr__(self) -> str:
        return f"SleeveOpener(encrypted={self._key is not None})"

    def open(self, packet: bytes) -> bytes | None:
        if self._key is None:
            return packet
        if len(packet) < SEQ_SIZE + SECRETBOX_OVERHEAD:
            raise DecryptError("message shorter than sequence number and authenticator")
        seq_field = int.from_bytes(packet[:SEQ_SIZE], "big")
        nonce = sleeve_nonce(self._sender_outbound, seq_field)
        try:
            body = bytes(bindings.crypto_secretbox_open(packet[SEQ_SIZE:], nonce, self._key))
        except CryptoError as e:
            raise DecryptError("Unable to decrypt msg") from e
        df = bool(seq_field & _DF_BIT)
        if not self._windows[df].accept(seq_field & (_DF_BIT - 1)):
            return None
        return body
