"""Mesh settings edited live (issue 11.8) and two hosts with one peer name (issue 11.9): each
edit either takes effect or `plan` and `status` say plainly that a restart is needed."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e.test_mesh_lab import established, report, spec
from tests.helpers import wait_for
from weaved.lab.lab import Lab, peer_name


def status(lab: Lab, host: str) -> str:
    return lab.exec(host, ["weaved", "status"], capture=True).stdout


def plan(lab: Lab, host: str) -> tuple[int, str]:
    proc = lab.exec(host, ["weaved", "plan", "--detailed-exitcode"], capture=True)
    return proc.returncode, proc.stdout + proc.stderr


def edit(lab: Lab, host: str, text: str) -> None:
    lab.host(host).spec.write_text(text)


def nicknames_seen(lab: Lab, host: str) -> set[str]:
    return {p["NickName"] for p in report(lab, host)["Router"]["Peers"] or []}


def test_live_settings_take_effect_and_restart_ones_are_reported(lab_factory: Any) -> None:
    lab = lab_factory("mset", {1: spec(1, []), 2: spec(2, [1])})
    wait_for(lambda: established(lab, "host2") == {"host1"}, timeout=30, interval=0.5)

    # nickname, discovery, trusted_subnets, conn_limit: live.
    live = spec(1, [], discovery="false", trusted_subnets="[192.0.2.0/24]", conn_limit="7")
    edit(lab, "host1", live.replace("nickname: host1", "nickname: renamed"))
    wait_for(lambda: "PeerDiscovery: disabled" in status(lab, "host1"), timeout=10, interval=0.3)
    out = status(lab, "host1")
    assert "TrustedSubnets: 192.0.2.0/24" in out and "(renamed)" in out
    assert "need a restart" not in out
    assert plan(lab, "host1")[0] == 0  # in sync: conn_limit included
    wait_for(lambda: "renamed" in nicknames_seen(lab, "host2"), timeout=20, interval=0.5)
    # The trust changed, so the connection was made again under it.
    wait_for(lambda: established(lab, "host2") == {"renamed"}, timeout=30, interval=0.5)

    # A password on both: connections are re-made encrypted.
    for i in (1, 2):
        pw = lab.host(f"host{i}").spec.parent / "password"
        pw.write_text("s3cret\n")
        os.chmod(pw, 0o600)
    base2 = spec(2, [1])
    edit(
        lab,
        "host1",
        live.replace("nickname: host1", "nickname: renamed")
        + f"password_file: {lab.host('host1').spec.parent / 'password'}\n",
    )
    edit(lab, "host2", base2 + f"password_file: {lab.host('host2').spec.parent / 'password'}\n")
    wait_for(lambda: "Encryption: enabled" in status(lab, "host2"), timeout=10, interval=0.3)
    wait_for(
        lambda: (
            "encrypted"
            in lab.exec("host2", ["weaved", "status", "connections"], capture=True).stdout
            and established(lab, "host2") == {"renamed"}
        ),
        timeout=30,
        interval=0.5,
    )

    # port and peer.name: restart needed, said by plan and status, nothing half-applied.
    moved = lab.host("host1").spec.read_text().replace(peer_name(1), "02:00:00:00:01:99")
    edit(lab, "host1", moved + "port: 6790\n")
    wait_for(lambda: "need a restart" in status(lab, "host1"), timeout=10, interval=0.3)
    out = status(lab, "host1")
    assert "need a restart: name, port (systemctl restart weaved)" in out
    assert f"Name: {peer_name(1)}(renamed)" in out  # still the running name, not a new one
    code, text = plan(lab, "host1")
    assert code == 2 and "needs a restart for name, port" in text
    assert established(lab, "host2") == {"renamed"}  # the mesh keeps running as it was
    edit(lab, "host1", moved.replace("02:00:00:00:01:99", peer_name(1)))
    wait_for(lambda: "need a restart" not in status(lab, "host1"), timeout=10, interval=0.3)
    assert plan(lab, "host1")[0] == 0


def test_two_hosts_with_one_peer_name_is_an_error_with_the_fix(lab_factory: Any) -> None:
    clone = spec(2, [1]).replace(peer_name(2), peer_name(1))
    lab = lab_factory("mcol", {1: spec(1, []), 2: clone})
    for host in ("host1", "host2"):
        wait_for(
            lambda h=host: "Problem: peer name collision" in status(lab, h),
            timeout=30,
            interval=0.5,
        )
    out = status(lab, "host2")
    assert "uses our peer name 02:00:00:00:01:01" in out
    assert "set `peer.name` in one host's spec" in out and "/etc/machine-id" in out
    code, text = plan(lab, "host1")
    assert code == 2 and "peer name collision" in text and "peer_name_unique" in text
    data = json.loads(lab.exec("host1", ["weaved", "report"], capture=True).stdout)
    assert any("collision" in p for p in data["Reconciler"]["problems"])
    log = lab.host("host1").log.read_text()
    assert "ERROR" in log and "peer name collision" in log
