"""The gob codec's two errors: the peer's garbage, and our own values that do not fit."""

from __future__ import annotations

from weaved.errors import Bug, ProtocolError


class GobError(ProtocolError):
    """Malformed gob input: the peer sent garbage (never raised for our own encoding bugs)."""


class GobValueError(Bug, ValueError):
    """A Python value does not fit the type descriptor it was encoded with: a weaved bug."""
