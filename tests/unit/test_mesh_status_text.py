"""Status texts and the report's router object, rebuilt from Weave's own outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.wire import AVAILABLE, OUTPUTS, needs_wire, params
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import parse_peer_name
from weaved.mesh.status import (
    BroadcastRoute,
    ConnectionState,
    LocalConnectionStatus,
    MeshStatus,
    PeerConnectionStatus,
    PeerStatus,
    RetryTime,
    UnicastRoute,
    go_time_string,
)
from weaved.mesh.status_text import (
    cli_status_text,
    go_json,
    render_connections,
    render_peers,
    render_status,
    render_status_router,
    render_targets,
    report_head,
    report_router,
)

CASES = params(
    sorted(str(p.parent.relative_to(OUTPUTS)) for p in OUTPUTS.glob("*/*/report.json"))
    if AVAILABLE
    else []
)
DATAPLANE_KEYS = ("Interface", "CaptureStats", "MACs")


def status_from_report(router: dict[str, Any]) -> MeshStatus:
    def name(text: str) -> PeerName:
        return parse_peer_name(text)

    return MeshStatus(
        name=name(router["Name"]),
        nickname=router["NickName"],
        port=router["Port"],
        encryption=router["Encryption"],
        peer_discovery=router["PeerDiscovery"],
        peers=tuple(
            PeerStatus(
                name(p["Name"]),
                p["NickName"],
                p["UID"],
                p["ShortID"],
                p["Version"],
                tuple(
                    PeerConnectionStatus(
                        name(c["Name"]),
                        c["NickName"],
                        c["Address"],
                        c["Outbound"],
                        c["Established"],
                    )
                    for c in p["Connections"] or []
                ),
            )
            for p in router["Peers"]
        ),
        unicast_routes=tuple(
            UnicastRoute(name(r["Dest"]), name(r["Via"])) for r in router["UnicastRoutes"]
        ),
        broadcast_routes=tuple(
            BroadcastRoute(name(r["Source"]), tuple(name(v) for v in r["Via"] or []))
            for r in router["BroadcastRoutes"]
        ),
        connections=tuple(
            LocalConnectionStatus(
                c["Address"], c["Outbound"], ConnectionState(c["State"]), c["Info"], c["Attrs"]
            )
            for c in router["Connections"] or []
        ),
        targets=tuple(router["Targets"] or []),
        trusted_subnets=tuple(router["TrustedSubnets"]),
        termination_count=router["TerminationCount"],
        overlay_diagnostics=router["OverlayDiagnostics"],
        protocol=router["Protocol"],
        protocol_min_version=router["ProtocolMinVersion"],
        protocol_max_version=router["ProtocolMaxVersion"],
    )


def _case(case: str) -> tuple[MeshStatus, dict[str, Any], Path]:
    d = OUTPUTS / case
    report = json.loads((d / "report.json").read_text())
    return status_from_report(report["Router"]), report, d


@pytest.mark.parametrize("case", CASES)
def test_status_router_section(case: str) -> None:
    s, _, d = _case(case)
    text = (d / "status.txt").read_text()
    start = text.index("        Service: router\n")
    end = text.index("\n        Service: ipam")
    assert render_status_router(s) == text[start:end]
    ipam_dns = text[end + 1 :].split("\n\n")
    assert (
        render_status(s, sections=[b if b.endswith("\n") else b + "\n" for b in ipam_dns]) == text
    )


@pytest.mark.parametrize("case", CASES)
def test_status_connections_targets_peers(case: str) -> None:
    s, _, d = _case(case)
    # Go prints map-ordered lists; compare lines (connections) and blocks (peers) as multisets.
    assert Counter(render_connections(s).splitlines(True)) == Counter(
        (d / "status-connections.txt").read_text().splitlines(True)
    )
    assert render_targets(s) == (d / "status-targets.txt").read_text()

    def blocks(text: str) -> Counter[str]:
        out: list[str] = []
        for line in text.splitlines(True):
            if line.startswith("   "):
                out[-1] += line
            else:
                out.append(line)
        return Counter(out)

    assert blocks(render_peers(s)) == blocks((d / "status-peers.txt").read_text())


@pytest.mark.parametrize("case", CASES)
def test_report_router_object(case: str) -> None:
    s, report, _ = _case(case)
    expected = report["Router"]
    extra = {k: expected[k] for k in DATAPLANE_KEYS if k in expected}
    got = report_router(s, extra)
    assert list(got) == list(expected)
    assert got == expected


@needs_wire
def test_quirks() -> None:
    s, _, _ = _case("two-peers-encrypted/host1")
    assert (
        "encrypted   sleeve 2a:9f:f1:99:8a:21(host2) encrypted=truemtu=1414\n"
        in render_connections(s)
    )
    s, _, _ = _case("three-peers-line/host1")
    line = next(x for x in render_connections(s).splitlines(True) if "failed" in x)
    assert line.endswith("m=+75.567415593 \n")
    assert go_json({"a": "<&>"}) == '{\n    "a": "\\u003c\\u0026\\u003e"\n}'


def test_go_time_string() -> None:
    # 2026-11-21 23:41:00.74934096 UTC, 75.567415593 s after start
    t = RetryTime(wall_ns=1795304460_749340960, monotonic_ns=75_567415593)
    assert go_time_string(t) == "2026-11-21 23:41:00.74934096 +0000 UTC m=+75.567415593"
    assert (
        go_time_string(RetryTime(1795304460 * 10**9, 2_500_000_000))
        == "2026-11-21 23:41:00 +0000 UTC m=+2.500000000"
    )


def _with_targets(targets: tuple[str, ...], port: int = 6783) -> MeshStatus:
    return MeshStatus(
        name=PeerName(1),
        nickname="h",
        port=port,
        encryption=False,
        peer_discovery=True,
        peers=(),
        unicast_routes=(),
        broadcast_routes=(),
        connections=(),
        targets=targets,
        trusted_subnets=(),
    )


def test_targets_print_as_given_without_the_mesh_port_the_spec_adds() -> None:
    """Weave test 700: `weave connect 10.2.2.1` then `status targets` prints `10.2.2.1`; the
    spec stores targets as host:port, so the mesh's own port is left off again."""
    s = _with_targets(("10.2.2.1:6783", "host2:6790", "[fd00::1]:6783"))
    assert render_targets(s) == "10.2.2.1\nhost2:6790\n[fd00::1]:6783\n"
    assert report_router(s)["Targets"] == ["10.2.2.1", "host2:6790", "[fd00::1]:6783"]
    # A mesh on another port: targets on the default port keep theirs.
    assert render_targets(_with_targets(("10.2.2.1:6783",), port=7000)) == "10.2.2.1:6783\n"
    assert render_targets(_with_targets(())) == ""


def test_cli_status_text_wraps_only_the_whole_status() -> None:
    body = "        Version: v\n\n        Service: router\n"
    assert cli_status_text(body, None) == "\n" + body + "\n"
    assert cli_status_text(body.rstrip("\n"), None) == "\n" + body + "\n"
    dns = "ca           10.32.0.1                 cA 3e:80:e7:5a:63:a7\n"
    assert cli_status_text(dns, "dns") == dns  # `weave status dns | cut -f1` sees entries
    assert cli_status_text("", "targets") == ""


@pytest.mark.parametrize("case", CASES)
def test_cli_status_text_is_weaves_for_every_captured_output(case: str) -> None:
    """The README of the outputs: the CLI adds one empty line before and after `/status`;
    `status SUB` is the body verbatim."""
    d = OUTPUTS / case
    status = (d / "status.txt").read_text()
    assert cli_status_text(status, None) == "\n" + status + "\n"
    for sub in ("peers", "connections", "targets", "dns", "ipam"):
        body = (d / f"status-{sub}.txt").read_text()
        assert cli_status_text(body, sub) == body
        assert not body.startswith("\n")


@pytest.mark.parametrize("case", CASES)
def test_report_head_is_weaves(case: str) -> None:
    """`weave report -f '{{.VersionCheck.Enabled}}'` (Weave's test 700) reads these keys."""
    report = json.loads((OUTPUTS / case / "report.json").read_text())
    want = {k: report[k] for k in ("Ready", "Version", "VersionCheck")}
    assert list(report)[:3] == list(want)
    assert report_head(report["Version"], report["Ready"]) == want
