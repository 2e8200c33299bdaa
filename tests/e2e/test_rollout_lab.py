"""GitOps rollout (issue 17): three hosts run one cluster file; a change that cuts a host off
the mesh rolls itself back on that host, a harmless one stays, and CI catches a range that
differs before any host sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.test_mesh_lab import established, report
from tests.helpers import wait_for
from weaved.lab.lab import Lab, host_address, peer_name

CONFIRM = 6


def cluster(extra_host2: str = "", shared: str = "") -> str:
    hosts = "".join(
        f"  host{i}:\n"
        f"    address: {host_address(i)}\n"
        f'    peer: {{name: "{peer_name(i)}", nickname: host{i}}}\n'
        f"    expose: [{{cidr: 10.2.1.{i}/24}}]\n" + (extra_host2 if i == 2 else "")
        for i in (1, 2, 3)
    )
    return (
        "version: 1\nkind: cluster\nshared:\n"
        f"  rollout: {{confirm: {CONFIRM}s}}\n" + shared + "hosts:\n" + hosts
    )


def publish(lab: Lab, text: str) -> None:
    """What a git pull on every host does: the same file everywhere."""
    for i in (1, 2, 3):
        path = lab.host(f"host{i}").spec
        tmp = path.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, path)


def status(lab: Lab, host: str) -> str:
    return lab.exec(host, ["weaved", "status"], capture=True).stdout


def meshed(lab: Lab) -> bool:
    return all(
        established(lab, f"host{i}") == {f"host{j}" for j in (1, 2, 3) if j != i} for i in (1, 2, 3)
    )


def test_cluster_file_rollout_rolls_back_a_cut_off_host_and_keeps_a_good_edit(
    lab_factory: Any, tmp_path: Path
) -> None:
    lab = lab_factory("gitops", {i: cluster() for i in (1, 2, 3)})
    wait_for(lambda: meshed(lab), timeout=60, interval=0.5)
    assert "peer: {name" not in lab.host("host2").spec.read_text()[:20]

    # host2 alone gets a password: its peers refuse it, the probes fail, it goes back.
    password = tmp_path / "password"
    password.write_text("only-on-host2\n")
    os.chmod(password, 0o600)
    publish(lab, cluster(f"    password_file: {password}\n"))
    started = time.monotonic()
    wait_for(
        lambda: "Rollback: rolled back at" in status(lab, "host2"),
        timeout=CONFIRM + 20,
        interval=0.3,
    )
    took = time.monotonic() - started
    assert took < CONFIRM + 10, took
    out = status(lab, "host2")
    assert "connected: failed" in out and "Encryption: disabled" in out
    log = lab.host("host2").log.read_text()
    assert "WARNING" in log and "ROLLED BACK" in log
    metrics = lab.exec(
        "host2", ["curl", "-s", "http://127.0.0.1:6782/metrics"], capture=True
    ).stdout
    assert "weaved_rollbacks_total 1\n" in metrics, metrics
    # The file stays as published (not in force); plan shows what it would change.
    assert "password_file" in lab.host("host2").spec.read_text()
    proc = lab.exec("host2", ["weaved", "plan", "--detailed-exitcode"], capture=True)
    assert proc.returncode == 2 and "rolled back at" in proc.stdout
    assert "password" in proc.stdout
    # host2 is meshed again; the others never changed anything.
    wait_for(lambda: meshed(lab), timeout=60, interval=0.5)
    for other in ("host1", "host3"):
        assert "Rollback" not in status(lab, other)
        assert "ROLLED BACK" not in lab.host(other).log.read_text()
    assert report(lab, "host2")["Reconciler"]["rollback"].startswith("rolled back at")

    # A restart keeps the rolled back file out of force (the state dir remembers it).
    lab.stop_host("host2")
    lab.start_host("host2", resync=2.0)
    wait_for(lambda: "Rollback: rolled back at" in status(lab, "host2"), timeout=30, interval=0.5)
    assert "Encryption: disabled" in status(lab, "host2")
    wait_for(lambda: meshed(lab), timeout=60, interval=0.5)

    # A service rule for every host, probes passing: it stays (and lifts the rollback).
    web = '  services:\n    export:\n      - {name: web, port: 8080, to: "10.2.1.1:80"}\n'
    publish(lab, cluster(shared=web))

    def has_web(host: str) -> bool:
        table = lab.exec(host, ["nft", "list", "table", "ip", "weaved"], capture=True).stdout
        return "tcp dport 8080 dnat to 10.2.1.1:80" in table

    for host in ("host1", "host2", "host3"):
        wait_for(lambda h=host: has_web(h), timeout=CONFIRM + 20, interval=0.5)
    time.sleep(CONFIRM + 2)  # past the confirm window: the probes passed, nothing went back
    for host in ("host1", "host2", "host3"):
        assert has_web(host) and "Rollback" not in status(lab, host), status(lab, host)
        proc = lab.exec(host, ["weaved", "plan", "--detailed-exitcode"], capture=True)
        assert proc.returncode == 0, proc.stdout
    assert meshed(lab)
    assert "ROLLED BACK" not in lab.host("host1").log.read_text()
    metrics = lab.exec("host2", ["curl", "-s", "http://127.0.0.1:6782/metrics"], capture=True)
    assert "weaved_rollbacks_total 0\n" in metrics.stdout  # none since host2's restart


def test_range_on_one_host_is_refused_by_validate_with_both_places(tmp_path: Path) -> None:
    text = cluster(extra_host2="    ipalloc: {range: 10.40.0.0/16}\n")
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "weaved", "validate", "--format", "github", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    (line,) = proc.stdout.splitlines()
    range_line = text.splitlines().index("    ipalloc: {range: 10.40.0.0/16}") + 1
    host1_line = text.splitlines().index("  host1:") + 1
    assert line.startswith(f"::error file={path},line={range_line},col=22,")
    assert "ipalloc.range is 10.40.0.0/16 on host2 but 10.32.0.0/12 on host1" in line
    assert f"{path}:{host1_line}:3" in line


def test_apply_confirm_takes_back_an_edit_the_daemon_applied_without_a_net(
    lab_factory: Any, tmp_path: Path
) -> None:
    from tests.e2e.test_mesh_lab import spec

    lab = lab_factory("gitops-ac", {1: spec(1, []), 2: spec(2, [1])})
    wait_for(lambda: established(lab, "host2") == {"host1"}, timeout=30, interval=0.5)
    password = tmp_path / "password"
    password.write_text("only-on-host2\n")
    os.chmod(password, 0o600)
    publish_to(lab, "host2", spec(2, [1]) + f"password_file: {password}\n")
    wait_for(lambda: "Encryption: enabled" in status(lab, "host2"), timeout=10, interval=0.3)
    started = time.monotonic()
    proc = lab.exec("host2", ["weaved", "apply", "--confirm", "4s"], capture=True)
    assert proc.returncode == 1 and "rolled back at" in proc.stderr, proc.stderr
    assert "peer 02:00:00:00:01:01 connected: failed" in proc.stderr
    assert time.monotonic() - started < 15
    assert "Encryption: disabled" in status(lab, "host2")
    wait_for(lambda: established(lab, "host2") == {"host1"}, timeout=30, interval=0.5)


def publish_to(lab: Lab, host: str, text: str) -> None:
    path = lab.host(host).spec
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)
