"""Status views against the outputs of live Weave Net 2.8.1 networks (weave-wire/outputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.wire import OUTPUTS
from weaved.dns import status
from weaved.dns.resolvconf import dns_args, render_resolv_conf
from weaved.dns.zone import Entry, ip_to_int
from weaved.mesh.gossip_api import PeerName

HOSTS = sorted(p for p in OUTPUTS.glob("*/*") if (p / "name.json").exists())


def _entries(host: Path) -> list[Entry]:
    raw = json.loads((host / "name.json").read_text()) or []
    return [
        Entry(
            e["ContainerID"],
            PeerName(e["Origin"]),
            ip_to_int(e["Addr"]),
            e["Hostname"],
            e["Version"],
            e["Tombstone"],
        )
        for e in raw
    ]


@pytest.mark.parametrize("host", HOSTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_status_dns_text(host: Path) -> None:
    expected = (host / "status-dns.txt").read_text()
    # Reverse the input order: the views must sort like Weave's table, not trust the input.
    assert status.render_status_dns(reversed(_entries(host)), "weave.local.") == expected


@pytest.mark.parametrize("host", HOSTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_status_summary_block(host: Path) -> None:
    text = (host / "status.txt").read_text()
    block = text[text.index("\n        Service: dns") :]
    got = status.render_status_summary("weave.local.", [], 1, _entries(host))
    assert block.startswith(got)


@pytest.mark.parametrize("host", HOSTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_name_json_body(host: Path) -> None:
    assert status.render_name_json(_entries(host)[::-1]) == (host / "name.json").read_text()


@pytest.mark.parametrize("host", HOSTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_report_dns_member(host: Path) -> None:
    report: dict[str, Any] = json.loads((host / "report.json").read_text())
    got = status.report("weave.local.", [], "127.0.0.1:53", 1, _entries(host))
    assert got == report["DNS"]
    # Same key order as Go's struct, so json.dumps(indent=4) lays it out the same.
    assert list(got) == list(report["DNS"])


def test_status_dns_pads_and_truncates_like_go_printf() -> None:
    e = Entry("0123456789abcdef", PeerName(0x2A9FF1998A21), ip_to_int("10.32.0.1"), "x.other.")
    assert status.render_status_dns([e], "weave.local.") == (
        "x.other.     10.32.0.1       0123456789ab 2a:9f:f1:99:8a:21\n"
    )


def test_summary_lists_upstreams() -> None:
    assert "       Upstream: 8.8.8.8, 1.1.1.1\n" in status.render_status_summary(
        "weave.local.", ["8.8.8.8", "1.1.1.1"], 1, []
    )


def test_lookup_text() -> None:
    assert status.render_lookup(["10.32.0.1", "10.32.0.2"]) == "10.32.0.1\n10.32.0.2\n"
    assert status.render_lookup([]) == ""


def test_resolv_conf_and_dns_args() -> None:
    assert render_resolv_conf("10.32.0.1", ndots=1, extra_search=["corp.example"]) == (
        "nameserver 10.32.0.1\nsearch weave.local. corp.example\noptions ndots:1\n"
    )
    assert render_resolv_conf("172.17.0.1") == "nameserver 172.17.0.1\nsearch weave.local.\n"
    assert dns_args("172.17.0.1") == "--dns=172.17.0.1 --dns-search=weave.local."
    assert dns_args("172.17.0.1", name="web") == (
        "--dns=172.17.0.1 --hostname=web.weave.local --dns-search=weave.local."
    )
    assert dns_args("172.17.0.1", search_given=True) == "--dns=172.17.0.1"
