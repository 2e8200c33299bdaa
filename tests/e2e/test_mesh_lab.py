"""The mesh in the lab: lines and rings of hosts converge, a dead middle host is routed around
(discovery) or partitions the mesh (no discovery), wrong passwords and connection limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import wait_for
from weaved.lab.lab import Lab, host_address, peer_name


def spec(index: int, targets: list[int], **extra: str) -> str:
    lines = [
        "version: 1",
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}',
        f"peers: [{', '.join(host_address(t) for t in targets)}]",
        f"expose: [{{cidr: 10.2.1.{index}/24}}]",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def report(lab: Lab, host: str) -> dict[str, Any]:
    proc = lab.exec(host, ["weaved", "report"], capture=True)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def peers_seen(lab: Lab, host: str) -> set[str]:
    return {p["NickName"] for p in report(lab, host)["Router"]["Peers"] or []}


def established(lab: Lab, host: str) -> set[str]:
    router = report(lab, host)["Router"]
    return {
        c["Info"].split("(")[-1].rstrip(")")
        for c in router["Connections"] or []
        if c["State"] == "established"
    }


def all_hosts(n: int) -> set[str]:
    return {f"host{i}" for i in range(1, n + 1)}


# Five daemons start at once: a first attempt that came before its target listened is retried
# after Weave's backoff (1-3 s, then 1.5-4.5 s, 2.25-6.75 s, ...). In one CI run a line of five
# took over 30 s to form (likely that, on a loaded 2-core machine).
FORMED = 90


def test_line_of_five_converges_and_routes_around_a_dead_middle(lab_factory: Any) -> None:
    lab = lab_factory("ml5", {i: spec(i, [i - 1] if i > 1 else []) for i in range(1, 6)})
    for i in range(1, 6):
        wait_for(lambda h=f"host{i}": peers_seen(lab, h) == all_hosts(5), FORMED, interval=0.5)
    # Discovery turns the line into a full mesh, so losing host3 loses nobody else.
    wait_for(
        lambda: established(lab, "host1") >= {"host2", "host4", "host5"}, timeout=30, interval=0.5
    )
    lab.stop_host("host3")
    for h in ("host1", "host2", "host4", "host5"):
        wait_for(
            lambda h=h: peers_seen(lab, h) == all_hosts(5) - {"host3"}, timeout=30, interval=0.5
        )
    assert "host5" in established(lab, "host1")


def test_line_without_discovery_partitions(lab_factory: Any) -> None:
    lab = lab_factory(
        "mlnd", {i: spec(i, [i - 1] if i > 1 else [], discovery="false") for i in range(1, 6)}
    )
    for i in range(1, 6):
        wait_for(lambda h=f"host{i}": peers_seen(lab, h) == all_hosts(5), FORMED, interval=0.5)
    assert established(lab, "host1") == {"host2"}  # no discovery: only the configured link
    lab.stop_host("host3")
    wait_for(lambda: peers_seen(lab, "host1") == {"host1", "host2"}, timeout=30, interval=0.5)
    wait_for(lambda: peers_seen(lab, "host5") == {"host4", "host5"}, timeout=30, interval=0.5)


def test_ring_of_five_converges(lab_factory: Any) -> None:
    lab = lab_factory(
        "mr5", {i: spec(i, [i - 1 if i > 1 else 5], discovery="false") for i in range(1, 6)}
    )
    for i in range(1, 6):
        wait_for(lambda h=f"host{i}": peers_seen(lab, h) == all_hosts(5), FORMED, interval=0.5)
        left, right = (i - 2) % 5 + 1, i % 5 + 1
        wait_for(
            lambda h=f"host{i}", a=left, b=right: established(lab, h) == {f"host{a}", f"host{b}"},
            timeout=30,
            interval=0.5,
        )


def test_wrong_password_is_refused_and_reported(lab_factory: Any, tmp_path: Path) -> None:
    for name, secret in (("a", "one password"), ("b", "another password")):
        path = tmp_path / f"pw-{name}"
        path.write_text(secret + "\n")
        path.chmod(0o600)
    lab = lab_factory(
        "mpw",
        {
            1: spec(1, [], password_file=str(tmp_path / "pw-a")),
            2: spec(2, [1], password_file=str(tmp_path / "pw-b")),
        },
    )

    def refused() -> bool:
        out = lab.exec("host2", ["weaved", "status", "connections"], capture=True).stdout
        return "192.0.2.11:6783" in out and "failed" in out

    wait_for(refused, timeout=30, interval=0.5)
    out = lab.exec("host2", ["weaved", "status", "connections"], capture=True).stdout
    line = next(text for text in out.splitlines() if "192.0.2.11" in text)
    assert "retry:" in line  # the reason, then when it will be tried again
    assert peers_seen(lab, "host1") == {"host1"}
    status = lab.exec("host1", ["weaved", "status"], capture=True).stdout
    assert "Encryption: enabled" in status


def test_matching_password_gives_an_encrypted_mesh(lab_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("shared secret\n")
    path.chmod(0o600)
    lab = lab_factory(
        "mpe", {i: spec(i, [1] if i > 1 else [], password_file=str(path)) for i in (1, 2)}
    )
    wait_for(lambda: established(lab, "host2") == {"host1"}, timeout=30, interval=0.5)
    out = lab.exec("host2", ["weaved", "status", "connections"], capture=True).stdout
    assert "encrypted" in out


def test_connection_limit_is_honoured(lab_factory: Any) -> None:
    lab = lab_factory(
        "mcl",
        {
            1: spec(1, [], conn_limit="1", discovery="false"),
            2: spec(2, [1], discovery="false"),
            3: spec(3, [1], discovery="false"),
        },
    )
    wait_for(lambda: len(established(lab, "host1")) == 1, timeout=30, interval=0.5)
    for _ in range(3):
        assert len(established(lab, "host1")) <= 1


def test_connect_and_forget_edit_the_spec_and_reconcile(lab_factory: Any) -> None:
    lab = lab_factory("mcf", {1: spec(1, []), 2: spec(2, [], discovery="false")})
    assert established(lab, "host2") == set()
    text = lab.exec("host2", ["weaved", "plan"], capture=True).stdout
    assert "No changes" in text
    lab.exec("host2", ["weaved", "connect", host_address(1)], capture=True)
    path = Path(lab.host("host2").spec)
    assert "192.0.2.11" in path.read_text() and "nickname: host2" in path.read_text()
    wait_for(lambda: established(lab, "host2") == {"host1"}, timeout=30, interval=0.5)
    lab.exec("host2", ["weaved", "forget", host_address(1)], capture=True)
    targets = lambda: lab.exec("host2", ["weaved", "status", "targets"], capture=True).stdout  # noqa: E731
    wait_for(lambda: "192.0.2.11" not in targets(), timeout=10, interval=0.3)
