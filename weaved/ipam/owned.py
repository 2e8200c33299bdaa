"""Which local container (or `weave:expose`) holds which addresses."""

from __future__ import annotations

from dataclasses import dataclass

from weaved.ipam.address import CIDR


@dataclass(frozen=True)
class Owned:
    """Addresses held by one identifier; `is_container` is False for e.g. `weave:expose`, which
    pruning by the list of live containers must not touch."""

    cidrs: tuple[CIDR, ...]
    is_container: bool = True
