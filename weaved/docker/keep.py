"""Addresses kept for `--restart=always` containers across a dockerd restart.

When dockerd stops, it gives every endpoint's address back (IpamDriver.ReleaseAddress) and, as
it starts again, asks for new ones for the containers it restarts — without saying which
container asks, nor the address it had. So an address Docker gives back while its API is down
(dockerd going away), held by a container that Docker restarts by itself (restart policy
`always` or `unless-stopped`), is kept; a request without `--ip` made while the API is still
down (dockerd restoring its containers) gets a kept address of the same pool back. Once the
API answers again, whatever nobody took is given back to IPAM. No new container can be run
while the API is down, so a kept address never goes to anyone else.

With several such containers in one pool, each gets one of the kept addresses, not
necessarily its own (Docker restores them in parallel). Pure: `part.py` does the I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RESTARTING_POLICIES = frozenset({"always", "unless-stopped"})


@dataclass(frozen=True)
class Kept:
    pool_id: str
    ident: str  # the IPAM identity still holding it
    address: str  # with prefix, as RequestAddress answers it
    container: str


@dataclass
class Keeper:
    # address (no prefix) → container ID, for containers Docker restarts by itself
    restarting: dict[str, str] = field(default_factory=dict)
    kept: list[Kept] = field(default_factory=list)

    def seen(self, restarting: dict[str, str]) -> None:
        """The watch's latest look at Docker (only while Docker answers)."""
        self.restarting = dict(restarting)

    def keeps(self, address: str) -> str | None:
        """The container an address given back would be kept for, if any."""
        return self.restarting.get(address.split("/")[0])

    def keep(self, kept: Kept) -> None:
        self.kept.append(kept)

    def take(self, pool_id: str) -> Kept | None:
        for index, kept in enumerate(self.kept):
            if kept.pool_id == pool_id:
                return self.kept.pop(index)
        return None

    def give_back(self) -> list[Kept]:
        """Docker answers again: what nobody took goes back to IPAM."""
        left, self.kept = self.kept, []
        return left

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(k) for k in self.kept]

    @staticmethod
    def kept_from_json(items: Any) -> list[Kept]:
        if not isinstance(items, list):
            return []
        return [
            Kept(str(i["pool_id"]), str(i["ident"]), str(i["address"]), str(i["container"]))
            for i in items
            if isinstance(i, dict) and {"pool_id", "ident", "address", "container"} <= set(i)
        ]
