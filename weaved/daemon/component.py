"""The parts of the daemon (mesh, IPAM, DNS, …) and what the daemon asks of each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weaved.daemon.control import Handler
from weaved.engine.reconcile import RuntimeFacts
from weaved.model.resources import State
from weaved.spec.models import Spec

if TYPE_CHECKING:
    from weaved.daemon.service import Daemon


class Component:
    """Defaults for every hook, so a part overrides only what it has."""

    name = "component"

    async def start(self, daemon: Daemon) -> None:
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
