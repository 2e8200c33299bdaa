"""Prometheus metrics (Weave's names where Weave has them), read from the parts at scrape time
and written as Weave's Go client writes them (`text.py`). The status port that serves them
(default 127.0.0.1:6782, Weave's) is the HTTP API part's server (`weaved.httpapi`)."""

from __future__ import annotations

import logging
import resource
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from weaved.dns.part import DnsPart
from weaved.ipam.part import IpamPart
from weaved.ipam.status import ipam_status, unreachable_share
from weaved.mesh.part import MeshPart
from weaved.metrics.text import render_metrics
from weaved.part import Component, Host
from weaved.spec.models import Spec

log = logging.getLogger(__name__)


class WeavedCollector:
    """Read at scrape time from the parts; nothing is kept twice."""

    def __init__(self, mesh: MeshPart, ipam: IpamPart | None, dns: DnsPart | None) -> None:
        self.mesh = mesh
        self.ipam = ipam
        self.dns = dns
        self.daemon: Host | None = None

    def collect(self) -> Iterator[Metric]:
        status = self.mesh.router.status()
        connections = GaugeMetricFamily(
            "weave_connections",
            "Number of peer-to-peer connections.",
            labels=["encryption", "state", "type"],
        )
        # Weave's: for every (state, type) seen, both the encrypted and the plain count.
        counts: Counter[tuple[str, str, str]] = Counter()
        for c in status.connections:
            attrs = c.attrs or {}
            kind = str(attrs.get("name", "unknown"))
            for encryption in ("yes", ""):
                counts[(encryption, c.state.value, kind)] += 0
            counts[("yes" if attrs.get("encrypted") else "", c.state.value, kind)] += 1
        for labels, value in sorted(counts.items()):
            connections.add_metric(list(labels), value)
        yield connections
        yield CounterMetricFamily(
            "weave_connection_terminations",
            "Number of peer-to-peer connections terminated.",
            value=status.termination_count,
        )
        if self.dns is not None:
            # This peer's own live entries, as Weave counts them (dashboards sum over hosts).
            own = sum(
                1 for e in self.dns.service.zone.entries() if e.live and e.origin == status.name
            )
            yield GaugeMetricFamily("weave_dns_entries", "Number of DNS entries.", value=own)
        if self.ipam is not None:
            st = ipam_status(self.ipam.allocator, self.ipam.default_subnet())
            dead = unreachable_share(st)
            yield GaugeMetricFamily(
                "weave_ipam_pending_allocates",
                "Number of pending allocates.",
                value=len(st.pending_allocates),
            )
            yield GaugeMetricFamily(
                "weave_ipam_pending_claims",
                "Number of pending claims.",
                value=len(st.pending_claims),
            )
            yield GaugeMetricFamily(
                "weave_ipam_unreachable_count",
                "Number of unreachable peers.",
                value=len(dead.peers),
            )
            yield GaugeMetricFamily(
                "weave_ipam_unreachable_percentage",
                "Percentage of IP addresses owned  by unreachable peers.",
                value=100.0 * dead.fraction,
            )
            ips = GaugeMetricFamily("weave_ips", "Number of IP addresses.", labels=["state"])
            ips.add_metric(["local-used"], st.active_ips)
            yield ips
            yield GaugeMetricFamily(
                "weave_max_ips",
                "Size of IP address space used by allocator.",
                value=st.range_num_ips,
            )
        if self.daemon is not None:
            state = self.daemon.state
            yield CounterMetricFamily(
                "weaved_reconciles", "Reconciliations run.", value=state.converges
            )
            yield CounterMetricFamily(
                "weaved_rollbacks",
                "Changed specs rolled back because their probes failed.",
                value=self.daemon.rollbacks,
            )
            yield GaugeMetricFamily(
                "weaved_spec_valid",
                "1 when the spec file in force is valid.",
                value=0 if state.spec_error else 1,
            )
            last = state.last
            in_sync = 1 if last is not None and last.error is None else 0
            yield GaugeMetricFamily(
                "weaved_converged", "1 when the last reconciliation succeeded.", value=in_sync
            )
            if last is not None:
                yield GaugeMetricFamily(
                    "weaved_last_reconcile_writes",
                    "Kernel writes of the last reconciliation.",
                    value=last.writes,
                )
                yield GaugeMetricFamily(
                    "weaved_last_reconcile_seconds",
                    "Duration of the last reconciliation.",
                    value=last.seconds,
                )


class ProcessLimits:
    """Go's client also writes `process_virtual_memory_max_bytes` (RLIMIT_AS, -1 when
    unlimited); prometheus_client's ProcessCollector has the other `process_*` families."""

    def collect(self) -> Iterator[Metric]:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        yield GaugeMetricFamily(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            value=-1 if soft == resource.RLIM_INFINITY else soft,
        )


def register_process_families(registry: CollectorRegistry) -> None:
    """Weave's body has Go's process_* families (dashboards chart weave's memory with them)."""
    ProcessCollector(registry=registry)
    registry.register(ProcessLimits())


class MetricsPart(Component):
    name = "metrics"

    def __init__(
        self, spec: Spec, mesh: MeshPart, ipam: IpamPart | None, dns: DnsPart | None
    ) -> None:
        self.spec = spec
        self.collector = WeavedCollector(mesh, ipam, dns)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        register_process_families(self.registry)

    async def start(self, daemon: Host) -> None:
        self.collector.daemon = daemon

    def text(self) -> str:
        """The /metrics body."""
        return render_metrics(self.registry.collect())
