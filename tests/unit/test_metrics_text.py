"""Metrics text written the way Weave Net 2.8.1's Go client writes it, and Weave's counts."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tests.wire import AVAILABLE, OUTPUTS, params
from weaved.dns.zone import Zone, ip_to_int
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.status import ConnectionState, LocalConnectionStatus, MeshStatus
from weaved.metrics.part import WeavedCollector, register_process_families
from weaved.metrics.text import go_float, render_metrics


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1.0, "1"),
        (2, "2"),
        (-1, "-1"),
        (0.5, "0.5"),
        (100000, "100000"),
        (123456, "123456"),
        (1048576, "1.048576e+06"),
        (1e6, "1e+06"),
        (16777216, "1.6777216e+07"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (33.333333333333336, "33.333333333333336"),
        (1.5e-10, "1.5e-10"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


_LINE = re.compile(r"^(?P<name>[a-z_]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def _weave_families(text: str) -> tuple[list[Metric], str]:
    """Weave's own weave_* families from a captured /metrics body, rebuilt with
    prometheus_client, and the captured text of those families."""
    families: list[Metric] = []
    kept: list[str] = []
    help_text: dict[str, str] = {}
    for line in text.splitlines(True):
        if line.startswith("# HELP weave_"):
            name, doc = line[len("# HELP ") :].rstrip("\n").split(" ", 1)
            help_text[name] = doc
        elif line.startswith("# TYPE weave_"):
            name, kind = line[len("# TYPE ") :].split()
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), help_text[name])
            else:
                family = GaugeMetricFamily(name, help_text[name], labels=[])
            families.append(family)
        elif line.startswith("weave_"):
            m = _LINE.match(line.rstrip("\n"))
            assert m is not None, line
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
            family = families[-1]
            sample_name = m["name"]
            family.add_sample(sample_name, labels, float(m["value"]))
        else:
            continue
        kept.append(line)
    return families, "".join(kept)


METRICS = params(sorted(OUTPUTS.glob("*/*/metrics.txt")) if AVAILABLE else [])


@pytest.mark.parametrize("path", METRICS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_weave_families_are_written_byte_for_byte_like_weave(path: Any) -> None:
    families, expected = _weave_families(path.read_text())
    assert families, "no weave_ metrics in the capture"
    # Shuffled order and label order must not matter: Go sorts both.
    assert render_metrics(reversed(families)) == expected


def _collector(status: MeshStatus, zone: Zone) -> WeavedCollector:
    mesh = SimpleNamespace(router=SimpleNamespace(status=lambda: status))
    dns = SimpleNamespace(service=SimpleNamespace(zone=zone))
    return WeavedCollector(cast(Any, mesh), None, cast(Any, dns))


US, THEM = PeerName(0x3E80E75A63A7), PeerName(0x2A9FF1998A21)


def _status(connections: tuple[LocalConnectionStatus, ...] = ()) -> MeshStatus:
    return MeshStatus(
        name=US,
        nickname="host1",
        port=6783,
        encryption=False,
        peer_discovery=True,
        peers=(),
        unicast_routes=(),
        broadcast_routes=(),
        connections=connections,
        targets=(),
        trusted_subnets=(),
    )


def test_dns_entries_counts_this_peers_own_live_entries_like_weave() -> None:
    """Issue 11.14: Weave counts the entries whose origin is this peer (dashboards sum the
    gauge over hosts); entries learnt from other peers and tombstones do not count."""
    zone = Zone(US)
    zone.add("c1.weave.local.", "c1", US, ip_to_int("10.32.0.1"))
    zone.add("c2.weave.local.", "c2", THEM, ip_to_int("10.32.0.2"))
    zone.add("gone.weave.local.", "gone", US, ip_to_int("10.32.0.3"))
    zone.tombstone(100, lambda e: e.container_id == "gone")
    text = render_metrics(_collector(_status(), zone).collect())
    assert "\nweave_dns_entries 1\n" in text


def test_connections_are_counted_both_ways_and_printed_as_integers() -> None:
    conns = (
        LocalConnectionStatus(
            "192.0.2.2:6783", True, ConnectionState.ESTABLISHED, "", {"name": "sleeve"}
        ),
    )
    text = render_metrics(_collector(_status(conns), Zone(US)).collect())
    assert (
        "# HELP weave_connection_terminations_total Number of peer-to-peer connections"
        " terminated.\n# TYPE weave_connection_terminations_total counter\n"
        "weave_connection_terminations_total 0\n"
        "# HELP weave_connections Number of peer-to-peer connections.\n"
        "# TYPE weave_connections gauge\n"
        'weave_connections{encryption="",state="established",type="sleeve"} 1\n'
        'weave_connections{encryption="yes",state="established",type="sleeve"} 0\n'
    ) in text
    assert ".0\n" not in text


@pytest.mark.skipif(not AVAILABLE, reason="../shared/weave-wire is absent (reference captures)")
def test_process_families_as_weaves() -> None:
    """Weave's body has Go's process_* families; ours has the same names, help and types
    (the values are this process's)."""
    captured = (OUTPUTS / "two-peers-encrypted" / "host2" / "metrics.txt").read_text()
    registry = CollectorRegistry(auto_describe=False)
    register_process_families(registry)
    ours = render_metrics(registry.collect())

    def heads(text: str) -> list[str]:
        return [
            ln for ln in text.splitlines() if ln.startswith(("# HELP process_", "# TYPE process_"))
        ]

    assert heads(ours) and heads(ours) == heads(captured)
    assert re.search(r"^process_resident_memory_bytes \d", ours, re.M)
    assert re.search(r"^process_virtual_memory_max_bytes -1$", ours, re.M)
