"""The libnftables binding (Debian's python3-nftables), with a clear error when it is missing."""

from __future__ import annotations

from typing import Any

from weaved.errors import DependencyError


def load_binding() -> Any:
    """A new libnftables context."""
    try:
        import nftables
    except ImportError as exc:
        raise DependencyError(
            "cannot import the libnftables binding 'nftables'\n"
            "  hint: apt-get install python3-nftables (bootstrap.sh links it into the venv)"
        ) from exc
    return nftables.Nftables()
