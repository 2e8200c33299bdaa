"""Protocol introduction, sans-I/O (FACTS.md §2.1, §2.2): bytes in, events out.

Both sides write the 7-byte header at once; after the remote's header we write the crypto
flag (and public key); after the remote's flag the features message (sealed when there is a
password). The handshake is done when the remote's features message has been read. Every
failure is a `HandshakeFailed` event with a typed reason; nothing raises to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from weaved.mesh import gob
from weaved.mesh.crypto import DecryptError, KeyPair, TcpOpener, TcpSealer, form_session_key
from weaved.mesh.framing import (
    HANDSHAKE_MAX_MESSAGE,
    MAX_MESSAGE_SIZE,
    FramingError,
    MessageReader,
    MessageWriter,
)
from weaved.mesh.gob.weave_types import FEATURES
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import SHORT_ID_BITS, PeerNameError, parse_peer_name
from weaved.mesh.reasons import Closed, CloseReason

__all__ = [
    "MAGIC",
    "PROTOCOL_MAX_VERSION",
    "PROTOCOL_MIN_VERSION",
    "FeatureError",
    "Handshake",
    "HandshakeDone",
    "HandshakeEvent",
    "HandshakeFailed",
    "RemoteIdentity",
    "SendBytes",
    "check_remote",
    "decode_features",
    "encode_features",
    "parse_features",
]

log = logging.getLogger(__name__)

MAGIC = b"weave"
PROTOCOL_MIN_VERSION = 1
PROTOCOL_MAX_VERSION = 2
HEADER_SIZE = len(MAGIC) + 2
KEY_SIZE = 32
REQUIRED_FEATURES = ("PeerNameFlavour", "Name", "NickName", "UID", "ConnID")
PEER_NAME_FLAVOUR = "mac"
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True)
class SendBytes:
    data: bytes


@dataclass(frozen=True)
class HandshakeDone:
    version: int
    features: dict[str, str]
    session_key: bytes | None = field(repr=False)
    reader: MessageReader = field(repr=False)  # already holds any bytes after the features
    writer: MessageWriter = field(repr=False)


@dataclass(frozen=True)
class HandshakeFailed:
    closed: Closed


HandshakeEvent = SendBytes | HandshakeDone | HandshakeFailed


def encode_features(features: Mapping[str, str]) -> bytes:
    """A fresh gob stream: the map type definition, then the value."""
    return gob.encode_one(FEATURES, dict(features))


def decode_features(body: bytes) -> dict[str, str]:
    value = gob.decode_one(body, FEATURES)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise gob.GobError("features message is not a map[string]string")
    return dict(value)


class Handshake:
    """One side's introduction. Call `start()` once, then `receive_data()` with every read."""

    def __init__(
        self,
        *,
        outbound: bool,
        features: Mapping[str, str],
        password: bytes | None,
        keypair: KeyPair | None = None,
        min_version: int = PROTOCOL_MIN_VERSION,
        max_version: int = PROTOCOL_MAX_VERSION,
    ) -> None:
        self.outbound = outbound
        self._features = dict(features)
        self._password = password
        self._keypair: KeyPair | None = None
        if password is not None:
            self._keypair = keypair if keypair is not None else KeyPair.generate()
        self._min = min_version
        self._max = max_version
        self._buf = bytearray()
        self._state = "header"
        self._version = 0
        self._session_key: bytes | None = None
        self._reader = MessageReader(max_size=HANDSHAKE_MAX_MESSAGE)
        self._writer = MessageWriter()
        self.finished = False

    def start(self) -> bytes:
        return MAGIC + bytes([self._min, self._max])

    @property
    def header_received(self) -> bool:
        return self._state != "header"

    def receive_data(self, data: bytes) -> list[HandshakeEvent]:
        if self.finished:
            return []
        self._buf += data
        events: list[HandshakeEvent] = []
        try:
            self._advance(events)
        except Exception as e:  # a peer's garbage must never escape as an exception
            log.debug("handshake decode failure", exc_info=True)
            events.append(self._fail(CloseReason.PROTOCOL_ERROR, f"handshake failed: {e}"))
        return events

    def eof(self) -> HandshakeFailed:
        """The remote closed before the handshake completed."""
        if self._state == "header":
            got = len(self._buf)
            if got == 0:
                detail = "failed to receive remote protocol header: EOF"
            else:
                detail = (
                    f"received incomplete remote protocol header ({got} octets instead of "
                    f"{HEADER_SIZE}): {list(self._buf)}; error: unexpected EOF"
                )
            return self._fail(CloseReason.BAD_HEADER, detail)
        return self._fail(CloseReason.EOF, "EOF" + self.closed_early_hint())

    def closed_early_hint(self) -> str:
        """Why a remote that hangs up during the key exchange most likely did so.

        A remote that cannot open our sealed features (another password), or that has no
        password while we sent a key (or the reverse), closes with a reset; the reset may
        overtake the bytes that would have told us which, so say what is likely."""
        if self._state not in ("crypto", "features"):
            return ""
        if self._password is None:
            return " (during the key exchange: the peer likely requires a password)"
        return " (during the key exchange: the password likely differs between the peers)"

    # --- internals ------------------------------------------------------------------------

    def _fail(self, reason: CloseReason, detail: str) -> HandshakeFailed:
        self.finished = True
        return HandshakeFailed(Closed(reason, detail))

    def _advance(self, events: list[HandshakeEvent]) -> None:
        if self._state == "header":
            if len(self._buf) < HEADER_SIZE:
                if self._buf[: len(MAGIC)] != MAGIC[: len(self._buf[: len(MAGIC)])]:
                    events.append(self._bad_header())
                return
            if self._buf[: len(MAGIC)] != MAGIC:
                events.append(self._bad_header())
                return
            their_min, their_max = self._buf[len(MAGIC)], self._buf[len(MAGIC) + 1]
            del self._buf[:HEADER_SIZE]
            lo, hi = max(self._min, their_min), min(self._max, their_max)
            if lo > hi:
                events.append(
                    self._fail(
                        CloseReason.VERSION_INCOMPATIBLE,
                        f"remote version range [{their_min},{their_max}] is incompatible "
                        f"with ours [{self._min},{self._max}]",
                    )
                )
                return
            if hi < 2:
                events.append(
                    self._fail(
                        CloseReason.VERSION_UNSUPPORTED,
                        f"remote speaks protocol version {hi} only; weaved supports version 2",
                    )
                )
                return
            self._version = hi
            if self._keypair is None:
                events.append(SendBytes(b"\x00"))
            else:
                events.append(SendBytes(b"\x01" + self._keypair.public))
            self._state = "crypto"
        if self._state == "crypto":
            if not self._buf:
                return
            flag = self._buf[0]
            if flag == 0:
                if self._password is not None:
                    events.append(
                        self._fail(
                            CloseReason.EXPECTED_ENCRYPTION,
                            "password specified, but peer requested an unencrypted connection",
                        )
                    )
                    return
                del self._buf[:1]
            elif flag == 1:
                if self._password is None:
                    events.append(
                        self._fail(
                            CloseReason.EXPECTED_NO_ENCRYPTION,
                            "no password specified, but peer requested an encrypted connection",
                        )
                    )
                    return
                if len(self._buf) < 1 + KEY_SIZE:
                    return
                remote_public = bytes(self._buf[1 : 1 + KEY_SIZE])
                del self._buf[: 1 + KEY_SIZE]
                assert self._keypair is not None
                key = form_session_key(remote_public, self._keypair.private, self._password)
                self._session_key = key
                self._reader.set_opener(TcpOpener(key, self.outbound))
                self._writer = MessageWriter(TcpSealer(key, self.outbound))
            else:
                events.append(
                    self._fail(CloseReason.BAD_CRYPTO_FLAG, f"Bad encryption flag {flag}")
                )
                return
            events.append(SendBytes(self._writer.frame(encode_features(self._features))))
            self._state = "features"
        if self._state == "features":
            self._reader.feed(bytes(self._buf))
            self._buf.clear()
            try:
                body = self._reader.next_message()
            except FramingError as e:
                reason = (
                    CloseReason.DECRYPT_FAILED
                    if isinstance(e.__cause__, DecryptError)
                    else CloseReason.FRAMING
                )
                detail = str(e)
                if reason is CloseReason.DECRYPT_FAILED:
                    detail += " (is the password the same on both peers?)"
                events.append(self._fail(reason, detail))
                return
            if body is None:
                return
            try:
                features = decode_features(body)
            except Exception as e:
                events.append(self._fail(CloseReason.BAD_FEATURES, f"bad features message: {e}"))
                return
            self.finished = True
            self._state = "done"
            self._reader.max_size = MAX_MESSAGE_SIZE  # introduced (and proved the password)
            events.append(
                HandshakeDone(
                    version=self._version,
                    features=features,
                    session_key=self._session_key,
                    reader=self._reader,
                    writer=self._writer,
                )
            )

    def _bad_header(self) -> HandshakeFailed:
        got = bytes(self._buf[: len(MAGIC)])
        return self._fail(
            CloseReason.BAD_HEADER, f"remote protocol header not recognised: {list(got)}"
        )


# --- features ---------------------------------------------------------------------------


class FeatureError(Exception):
    def __init__(self, reason: CloseReason, detail: str) -> None:
        super().__init__(detail)
        self.closed = Closed(reason, detail)


@dataclass(frozen=True)
class RemoteIdentity:
    name: PeerName
    nickname: str
    uid: int
    conn_id: int
    short_id: int | None
    trusted_by_remote: bool
    overlays: tuple[str, ...] | None  # None: the remote sent no Overlays feature


def _parse_uint(text: str, bits: int, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise FeatureError(CloseReason.BAD_FEATURES, f'{what}: invalid syntax "{text}"')
    value = int(text)
    if value >= 1 << bits:
        raise FeatureError(CloseReason.BAD_FEATURES, f'{what}: value out of range "{text}"')
    return value


def parse_features(features: Mapping[str, str]) -> RemoteIdentity:
    """Validate the remote's features as Weave does; raises `FeatureError`."""
    for key in REQUIRED_FEATURES:
        if key not in features:
            raise FeatureError(CloseReason.BAD_FEATURES, f"Field {key} is missing")
    flavour = features["PeerNameFlavour"]
    if flavour != PEER_NAME_FLAVOUR:
        raise FeatureError(
            CloseReason.FLAVOUR_MISMATCH,
            f"Peer name flavour mismatch (ours: '{PEER_NAME_FLAVOUR}', theirs: '{flavour}')",
        )
    try:
        name = parse_peer_name(features["Name"])
    except PeerNameError as e:
        raise FeatureError(CloseReason.BAD_FEATURES, str(e)) from e
    short_id: int | None = None
    if "ShortID" in features:
        short_id = _parse_uint(features["ShortID"], SHORT_ID_BITS, "ShortID")
    trusted = False
    if "Trusted" in features:
        text = features["Trusted"]
        if text in _GO_TRUE:
            trusted = True
        elif text not in _GO_FALSE:
            raise FeatureError(CloseReason.BAD_FEATURES, f'Trusted: invalid syntax "{text}"')
    uid = _parse_uint(features["UID"], 64, "UID")
    conn_id = _parse_uint(features["ConnID"], 64, "ConnID")
    overlays: tuple[str, ...] | None = None
    if "Overlays" in features:
        overlays = tuple(features["Overlays"].split(" "))
    return RemoteIdentity(
        name=name,
        nickname=features["NickName"],
        uid=uid,
        conn_id=conn_id,
        short_id=short_id,
        trusted_by_remote=trusted,
        overlays=overlays,
    )


def check_remote(remote: RemoteIdentity, our_name: PeerName, our_uid: int) -> Closed | None:
    """A remote with our name is either ourselves or a name collision; both never retried."""
    if remote.name != our_name:
        return None
    if remote.uid != our_uid:
        return Closed(
            CloseReason.NAME_COLLISION,
            f"peer names collision: remote {remote.nickname!r} uses our name with another UID",
        )
    return Closed(CloseReason.CONNECT_TO_SELF, "Cannot connect to ourself")
