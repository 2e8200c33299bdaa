"""Why a mesh connection ended or was refused: one vocabulary for logs, status and tests."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["NEVER_RETRY", "CloseReason", "Closed"]


class CloseReason(StrEnum):
    # handshake
    HEADER_TIMEOUT = "header-timeout"
    BAD_HEADER = "bad-protocol-header"
    VERSION_INCOMPATIBLE = "version-incompatible"
    VERSION_UNSUPPORTED = "version-unsupported"
    EXPECTED_ENCRYPTION = "peer-unencrypted"
    EXPECTED_NO_ENCRYPTION = "peer-encrypted"
    BAD_CRYPTO_FLAG = "bad-encryption-flag"
    DECRYPT_FAILED = "decrypt-failed"
    BAD_FEATURES = "bad-features"
    FLAVOUR_MISMATCH = "peer-name-flavour-mismatch"
    # registration
    CONNECT_TO_SELF = "connect-to-self"
    NAME_COLLISION = "peer-name-collision"
    UNKNOWN_PEER = "unknown-peer"
    CONNECTION_LIMIT = "connection-limit"
    DUPLICATE = "duplicate-connection"
    NO_OVERLAY = "no-common-overlay"
    # running connection
    FRAMING = "framing-error"
    PROTOCOL_ERROR = "protocol-error"
    GOSSIP_ERROR = "gossip-rejected"
    READ_TIMEOUT = "read-timeout"
    OVERLAY_FAILED = "overlay-failed"
    EOF = "closed-by-peer"
    RESET = "reset-by-peer"
    IO_ERROR = "io-error"
    DIAL_FAILED = "dial-failed"
    SHUTDOWN = "shutdown"
    RECONFIGURED = "settings-changed"
    FORGOTTEN = "target-forgotten"


NEVER_RETRY = frozenset({CloseReason.CONNECT_TO_SELF, CloseReason.NAME_COLLISION})
"""Targets that ended this way are not dialled again (Weave's nextTryNever)."""


@dataclass(frozen=True)
class Closed:
    """A connection end: the typed reason plus the human detail (Weave's error text)."""

    reason: CloseReason
    detail: str

    def __str__(self) -> str:
        return self.detail
