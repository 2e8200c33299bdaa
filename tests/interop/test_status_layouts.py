"""Issue 10.9, the live comparison: every `status` layout of a weaved host byte-compared with
Weave Net 2.8.1's for the same mesh. Only what must differ is normalised: the viewer's name,
its own connections and targets, the Version line, and the sections only weaved has
(sleeve, fastdp, reconciler)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from tests.interop.conftest import MixedFactory, MixedLab, weaved_spec
from tests.interop.weave_host import wait_until

# Every host dials the two others: the same counts on each (2 targets, 2 connections, 3 peers
# with 6 connections); weaved's DNS listens on its exposed address.
EXPOSE = "expose:\n  - cidr: net:default\n"
WEAVED_ONLY_SECTIONS = ("sleeve", "fastdp", "reconciler")


@pytest.fixture(scope="module")
def views(mixed_lab_module: MixedFactory) -> dict[str, Any]:
    m = mixed_lab_module(
        {1: weaved_spec(1, [2, 3], EXPOSE), 2: weaved_spec(2, [1, 3], EXPOSE)},
        weave_peers=(1, 2),
    )
    _populate(m)
    subs = ("", "peers", "connections", "targets", "dns", "ipam")

    def settled() -> bool:
        weave = m.weave.status()
        return (
            "(with 6 established connections)" in weave
            and "Entries: 3" in weave
            and ("Entries: 3" in m.weaved("host1", "status"))
        )

    assert wait_until(settled, 60), m.weave.status() + m.weaved("host1", "status")
    weave_report = m.weave.exec(
        ["curl", "-sS", "-H", "Accept: application/json", "http://127.0.0.1:6784/report"]
    ).stdout
    return {
        "lab": m,
        "weave": {s: m.weave.status(s) for s in subs} | {"report": weave_report},
        "weaved": {s: m.weaved("host1", "status", *([s] if s else [])) for s in subs}
        | {"report": m.weaved("host1", "report")},
    }


def _populate(m: MixedLab) -> None:
    """A container with a DNS name on weaved's host1 and on Weave's host3."""
    lab = m.lab
    lab.add_container("host1", f"wd-{lab.name}-c1", hostname="c1.weave.local.")
    name3 = f"wd-{lab.name}-c3"
    ip3 = m.weave.add_container(name3).split("/")[0]
    m.weave.http(f"/name/{name3}/{ip3}?fqdn=c3.weave.local.", method="PUT")


def _sections(text: str) -> str:
    """The whole status without weaved's own sections, the viewer's name and the version."""
    blocks = text.split("\n\n")
    kept = [
        b for b in blocks if not any(f"Service: {s}\n" in b + "\n" for s in WEAVED_ONLY_SECTIONS)
    ]
    out = "\n\n".join(kept)
    out = re.sub(r"(?m)^        Version: .*$", "        Version: V", out)
    return re.sub(r"(?m)^(           Name: ).*$", r"\1NAME", out)


def test_status_whole(views: dict[str, Any]) -> None:
    weave, weaved = views["weave"][""], views["weaved"][""]
    assert weave.startswith("\n        Version: ") and weave.endswith("Entries: 3\n\n")
    assert weaved.startswith("\n        Version: ") and weaved.endswith("\n\n")
    assert "(version check update disabled)" in weaved.splitlines()[1]  # Weave's test 700
    assert _sections(weaved) == _sections(weave)


def test_status_peers_same_topology_same_bytes(views: dict[str, Any]) -> None:
    """Both print the gossiped topology: the same blocks (Go prints them in map order)."""

    def blocks(text: str) -> Counter[str]:
        out: list[str] = []
        for line in text.splitlines(True):
            if line.startswith("   "):
                out[-1] += line
            else:
                out.append(line)
        return Counter(out)

    assert not views["weaved"]["peers"].startswith("\n")
    if blocks(views["weaved"]["peers"]) != blocks(views["weave"]["peers"]):
        # gossip still settling when the views were taken (a connection just replaced):
        # both must agree once it has
        m = views["lab"]
        assert wait_until(
            lambda: blocks(m.weaved("host1", "status", "peers")) == blocks(m.weave.status("peers")),
            30,
        ), (m.weaved("host1", "status", "peers"), m.weave.status("peers"))


def test_status_dns_same_bytes(views: dict[str, Any]) -> None:
    weaved = views["weaved"]["dns"]
    assert weaved == views["weave"]["dns"]
    # Weave's test 700: `weave status dns | tr -s ' ' | cut -d ' ' -f 1` lists the names
    names = [line.split(" ")[0] for line in weaved.splitlines()]
    assert {"c1", "c3"} <= set(names) and "" not in names


def test_status_ipam_same_ring(views: dict[str, Any]) -> None:
    """The viewer's own line first (with its active count), then the others."""

    def lines(text: str) -> list[str]:
        return [re.sub(r" \(\d+ active\)$", " ", x) for x in text.splitlines()]

    weave, weaved = views["weave"]["ipam"], views["weaved"]["ipam"]
    assert weave.splitlines()[0].startswith("02:00:00:00:01:03(host3) ")
    assert weaved.splitlines()[0].startswith("02:00:00:00:01:01(host1) ")
    assert re.search(r"\(\d+ active\)$", weaved.splitlines()[0])
    assert sorted(lines(weaved)) == sorted(lines(weave))


def test_status_targets_as_given(views: dict[str, Any]) -> None:
    # Weave prints them in Go's map order
    assert sorted(views["weave"]["targets"].splitlines(True)) == ["192.0.2.11\n", "192.0.2.12\n"]
    assert views["weaved"]["targets"] == "192.0.2.12\n192.0.2.13\n"


CONNECTION = re.compile(r"^(->|<-) (\S+) +(\S+) +(\S+ \S+) ?(.*)$")


def _go_connection_line(line: str) -> str:
    """The line re-rendered with Weave's template (`%-21s %-11s`, info, attrs)."""
    m = CONNECTION.match(line)
    assert m is not None, line
    arrow, address, state, info, attrs = m.groups()
    return f"{arrow} {address:<21} {state:<11} {info} {attrs}"


def test_status_connections_layout(views: dict[str, Any]) -> None:
    weave = views["weave"]["connections"].splitlines()
    weaved = views["weaved"]["connections"].splitlines()
    assert len(weave) == len(weaved) == 2
    for line in weave + weaved:
        assert _go_connection_line(line) == line
    # sleeve to Weave: the same overlay and the same verified MTU as Weave reports
    to_weave = next(x for x in weaved if "(host3)" in x)
    assert re.search(r" established sleeve 02:00:00:00:01:03\(host3\) mtu=1438$", to_weave)
    assert all(re.search(r" established sleeve \S+ mtu=1438$", x) for x in weave)


def test_report_head_keys_and_layout(views: dict[str, Any]) -> None:
    """`weave report`: Go's MarshalIndent (4 spaces) and Weave's head, so templates such as
    `{{.VersionCheck.Enabled}}` (Weave's test 700) and the Router/IPAM/DNS objects read the
    same; weaved adds its own objects (Reconciler, Sleeve, FastDP)."""
    weave, weaved = json.loads(views["weave"]["report"]), json.loads(views["weaved"]["report"])
    assert list(weaved)[:3] == list(weave)[:3] == ["Ready", "Version", "VersionCheck"]
    assert weaved["Ready"] is True and weaved["VersionCheck"] == weave["VersionCheck"]
    for key in ("Router", "IPAM", "DNS"):
        assert list(weaved[key]) == list(weave[key]), key
    assert views["weaved"]["report"].startswith('{\n    "Ready": true,\n    "Version": ')


def test_after_a_weaved_peer_stops_both_report_it_alike(mixed_lab: MixedFactory) -> None:
    """host2 (weaved) stops: the failed target line (Go's dial error and retry time), the
    router counts, the IPAM ring with `- unreachable!` and the unreachable metrics read the
    same on weaved's host1 and Weave's host3."""
    m = mixed_lab(
        {1: weaved_spec(1, [2, 3], EXPOSE), 2: weaved_spec(2, [1, 3], EXPOSE)},
        weave_peers=(1, 2),
    )
    assert wait_until(lambda: "(with 6 established connections)" in m.weave.status(), 60)
    m.lab.stop_host("host2")

    def failed_line(text: str) -> str:
        line = next((x for x in text.splitlines() if "192.0.2.12:6783" in x), "")
        return re.sub(r", retry: .*$", ", retry: T ", line)

    def settled() -> bool:
        return all(
            "failed      dial tcp" in failed_line(t)
            for t in (m.weave.status("connections"), m.weaved("host1", "status", "connections"))
        ) and "unreachable!" in m.weaved("host1", "status", "ipam")

    assert wait_until(settled, 60), m.weave.status("connections")
    weave_conn = failed_line(m.weave.status("connections"))
    assert failed_line(m.weaved("host1", "status", "connections")) == weave_conn
    assert weave_conn.endswith(": connect: connection refused, retry: T ")
    assert _sections(m.weaved("host1", "status")) == _sections(m.weave.status())

    def ring(text: str) -> list[str]:
        return sorted(re.sub(r" \(\d+ active\)$", " ", x) for x in text.splitlines())

    weaved_ipam = m.weaved("host1", "status", "ipam")
    # weaved's addition, after Weave's lines and an empty line: how to reclaim the space
    table, _, hint = weaved_ipam.partition("\n\n")
    assert "weaved rmpeer" in hint
    assert ring(table) == ring(m.weave.status("ipam"))
    assert (
        "02:00:00:00:01:02(host2)                262144 IPs (25.0% of total) - unreachable!"
        in table
    )

    def unreachable(text: str) -> list[str]:
        return [x for x in text.splitlines() if x.startswith("weave_ipam_unreachable")]

    weaved_metrics = m.lab.exec(
        "host1", ["curl", "-s", "http://127.0.0.1:6782/metrics"], capture=True
    ).stdout
    assert (
        unreachable(weaved_metrics)
        == unreachable(m.weave.http("/metrics").stdout)
        == [
            "weave_ipam_unreachable_count 1",
            "weave_ipam_unreachable_percentage 25",
        ]
    )
