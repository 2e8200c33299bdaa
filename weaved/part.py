"""The parts of the daemon (mesh, IPAM, DNS, …): what the daemon asks of each (`Component`)
and what each sees of the daemon (`Host`).

Each part lives in its capability's folder (`mesh/part.py`, `ipam/part.py`, …); `weaved.daemon`
imports the parts and wires them, never the other way round: a part knows the daemon only as
the `Host` protocol below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from weaved.control import Handler
from weaved.dataplane.base import Dataplane
from weaved.engine.reconcile import RuntimeFacts
from weaved.model.resources import State
from weaved.spec.models import Spec

T = TypeVar("T")


class LastConverge(Protocol):
    """The last reconciliation, as a part may read it (metrics)."""

    @property
    def error(self) -> str | None: ...
    @property
    def writes(self) -> int: ...
    @property
    def seconds(self) -> float: ...


class ReconcileState(Protocol):
    """The reconciler's counters, as a part may read them (metrics)."""

    @property
    def converges(self) -> int: ...
    @property
    def spec_error(self) -> str | None: ...
    @property
    def last(self) -> LastConverge | None: ...


class Host(Protocol):
    """What a part sees of the daemon (`weaved.daemon.service.Daemon` is the one there is)."""

    @property
    def leaving(self) -> bool:
        """`weaved reset` asked us to hand our IPAM space to a live peer and stop."""
        ...

    @property
    def state(self) -> ReconcileState: ...

    @property
    def rollbacks(self) -> int:
        """Changed specs rolled back because their probes failed."""
        ...

    def mark_dirty(self, reason: str = "trigger") -> None:
        """Something changed: converge soon."""

    async def on_dataplane(self, fn: Callable[[Dataplane], T]) -> T:
        """Run `fn` on the one thread that does kernel work."""
        ...

    def status_text(self) -> str:
        """`weaved status` as Weave prints it."""
        ...

    def control_routes(self) -> dict[tuple[str, str], Handler]:
        """Every control API endpoint of the daemon and its parts."""
        ...


class Component:
    """Defaults for every hook, so a part overrides only what it has."""

    name = "component"

    async def start(self, daemon: Host) -> None:
        """Called once, before the first converge."""

    async def stop(self) -> None:
        """Called once at shutdown, in reverse start order."""

    def routes(self) -> dict[tuple[str, str], Handler]:
        """Control API endpoints this part serves."""
        return {}

    def status_section(self) -> str | None:
        """This part's block in `weaved status` (Weave's `        Service: …` layout)."""
        return None

    def report(self) -> tuple[str, Any] | None:
        """(key, value) of this part in `weaved report`."""
        return None

    def spec_changed(self, spec: Spec) -> None:
        """A new valid spec is in force."""

    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        """Add what this part knows to the facts compile uses (e.g. IPAM allocations)."""
        return facts

    def desired(self, spec: Spec) -> State:
        """Objects this part owns outside the kernel (e.g. mesh targets), as wanted."""
        return State()

    def observed(self) -> State:
        """The same objects as they are now."""
        return State()

    def problems(self) -> list[str]:
        """Things a person must act on (one line each), shown by `weaved status`."""
        return []

    def converge(self, spec: Spec) -> int:
        """Make `observed()` match `desired(spec)`; returns the number of changes made."""
        return 0
