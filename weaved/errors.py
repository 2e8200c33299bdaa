"""One exception tree; each class says who has to act."""

from __future__ import annotations


class WeavedError(Exception):
    """Base of every error weaved raises on purpose."""

    exit_code = 1


class SpecError(WeavedError):
    """The user must fix the spec file (one or more located problems)."""


class DependencyError(WeavedError):
    """Something weaved needs is not installed or not available on this host."""


class PrivilegeError(WeavedError):
    """The command needs root (CAP_NET_ADMIN)."""


class ConflictError(WeavedError):
    """Host state that weaved does not own conflicts with the spec (e.g. an overlapping route)."""


class ApplyError(WeavedError):
    """The kernel refused a change; nothing of the failed step was kept."""


class DaemonError(WeavedError):
    """The daemon is not running or its control API answered an error."""


class ProtocolError(WeavedError):
    """A remote peer sent something we cannot accept; the connection is dropped, never a crash."""


class UsageError(WeavedError):
    """The command line is wrong."""

    exit_code = 64


class Bug(WeavedError):
    """An internal invariant failed: a weaved bug to report."""
