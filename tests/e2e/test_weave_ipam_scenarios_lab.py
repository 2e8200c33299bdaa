"""Weave Net's own IPAM integration scenarios (its `test/*.sh`), re-expressed for weaved in lab
hosts: 320 (claims before the ring exists), 335 (rmpeer right after a kill), 370 (addresses of
containers gone while the daemon was down), 390 (peer name across a lost bridge) and reset
(issue 11.5). Weave's steps and assertions are kept; `docker run` is a named network namespace
attached by the host's daemon."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LabFactory
from tests.helpers import wait_for
from weaved.errors import ApplyError
from weaved.lab import netns
from weaved.lab.lab import Lab, host_address, peer_name
from weaved.spec.models import DNS_LINK_ADDRESS

pytestmark = pytest.mark.timeout(300)


def spec(
    index: int, targets: list[int], universe: str, *, name: bool = True, extra: str = ""
) -> str:
    who = f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n' if name else ""
    return (
        "version: 1\n"
        f"{who}"
        f"peers: [{', '.join(host_address(t) for t in targets)}]\n"
        f"ipalloc: {{range: {universe}}}\n"
        f"{extra}"
    )


def attach(lab: Lab, host: str, name: str, *addresses: str) -> list[str]:
    """`weave run`: a new container attached on `host`; the addresses `attach` printed."""
    return lab.add_container(host, name, list(addresses)).split()


def new_container(lab: Lab, host: str, name: str) -> None:
    """A namespace the lab cleans up, not attached yet."""
    state = lab.load()
    assert state is not None
    netns.add_netns(name)
    state.containers[name] = host
    lab.save(state)


def weaved_in(lab: Lab, host: str, *argv: str) -> subprocess.Popen[str]:
    h = lab.host(host)
    return subprocess.Popen(
        netns.exec_argv(h.netns, [sys.executable, "-m", "weaved", *argv]),
        env={**os.environ, **h.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ipam_status(lab: Lab, host: str) -> str:
    return lab.exec(host, ["weaved", "status", "ipam"], capture=True).stdout


def ping(lab: Lab, container: str, ip: str) -> bool:
    return lab.in_container(container, ["ping", "-c1", "-W2", ip]).returncode == 0


def forget_ipam(lab: Lab, host: str) -> None:
    """Weave's `docker rm -v weavedb`: the persisted IPAM data goes."""
    (lab.host(host).state_dir / "ipam.json").unlink(missing_ok=True)


# ---- 320: claims before the ring exists -------------------------------------------------------


def test_320_claims_wait_for_the_ring_and_out_of_range_ones_do_not(
    lab_factory: LabFactory,
) -> None:
    universe, c1, c4 = "10.2.0.0/16", "10.2.128.1", "10.2.128.4"
    lab = lab_factory("wsi320", {1: spec(1, [2], universe), 2: spec(2, [1], universe)})
    lab.wait_mesh()
    assert attach(lab, "host1", "wsi320c1", f"{c1}/12") == [c1]
    attach(lab, "host2", "wsi320c2")
    wait_for(lambda: ping(lab, "wsi320c2", c1), timeout=20, interval=0.5)

    # A blank ring, formed in reverse order: c1's address must be claimed from host2.
    lab.stop_host("host1")
    lab.stop_host("host2")
    forget_ipam(lab, "host1")
    forget_ipam(lab, "host2")
    lab.start_host("host2")
    lab.start_host("host1")
    status = lambda: lab.exec("host2", ["weaved", "status"], capture=True).stdout  # noqa: E731
    wait_for(lambda: "Status: ready" in status(), timeout=40, interval=0.5)
    (c3,) = attach(lab, "host2", "wsi320c3")
    assert c3 != c1  # host2 did not hand out the address c1 still uses
    wait_for(lambda: ping(lab, "wsi320c1", c3), timeout=20, interval=0.5)

    # host1 alone without persisted data cannot form the ring: an in-range claim waits …
    lab.stop_host("host1")
    lab.stop_host("host2")
    forget_ipam(lab, "host1")
    lab.start_host("host1")
    new_container(lab, "host1", "wsi320c4")
    started = time.monotonic()
    timed = lab.exec(
        "host1", ["weaved", "attach", "--timeout", "4", f"{c4}/12", "wsi320c4"], capture=True
    )
    assert timed.returncode != 0 and time.monotonic() - started >= 4
    assert "not initialized yet" in timed.stderr  # said while waiting, and in the error
    assert "awaiting consensus (quorum: 2, known: 1)" in timed.stderr
    # … while one outside the range does not.
    started = time.monotonic()
    assert attach(lab, "host1", "wsi320c5", "10.3.0.1/12") == ["10.3.0.1"]
    assert time.monotonic() - started < 10

    waiting = weaved_in(lab, "host1", "attach", f"{c4}/12", "wsi320c4")
    # host2 starts once the attach says it waits (a fixed sleep let a loaded host start host2
    # before the attach had even reached the daemon: then it never waited).
    assert waiting.stderr is not None
    said = waiting.stderr.readline()
    assert "waiting for IPAM" in said and waiting.poll() is None  # still waiting for host2
    lab.start_host("host2")
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, said + err
    assert out.split() == [c4]


# ---- 335: rmpeer a second after a kill -9 -------------------------------------------------


def test_335_rmpeer_right_after_a_kill_reclaims_at_once(lab_factory: LabFactory) -> None:
    universe = "10.32.0.0/12"
    lab = lab_factory(
        "wsi335",
        {
            1: spec(1, [], universe),  # alone at first: all the space becomes host1's
            2: spec(2, [1], universe),
            3: spec(3, [1], universe),
        },
    )
    attach(lab, "host1", "wsi335c1")
    for host in ("host2", "host3"):  # `weave prime`: the ring has reached them
        wait_for(lambda h=host: "host1" in ipam_status(lab, h), timeout=30, interval=0.5)
    assert lab.exec("host1", ["weaved", "rmpeer", "host2"], capture=True).returncode != 0

    pid = lab.host("host1").pid
    os.kill(pid, signal.SIGKILL)  # the weaver process, not a clean stop
    os.waitpid(pid, 0)
    time.sleep(1)
    done = lab.exec("host2", ["weaved", "rmpeer", "host1"], capture=True)
    assert done.returncode == 0, done.stderr
    assert "IPs taken over from host1" in done.stdout
    for host, name in (("host2", "wsi335c2"), ("host3", "wsi335c3")):
        new_container(lab, host, name)
        got = lab.exec(host, ["weaved", "attach", "--timeout", "5", name], capture=True)
        assert got.returncode == 0, got.stderr
        assert ipaddress.IPv4Address(got.stdout.strip()) in ipaddress.IPv4Network(universe)


# ---- 370: persisted IPAM, containers gone while the daemon was down ------------------------


def test_370_containers_gone_while_down_are_freed_at_start(lab_factory: LabFactory) -> None:
    universe = "10.32.0.0/12"
    expose = "expose: [{cidr: 'net:default'}]\n"
    lab = lab_factory(
        "wsi370",
        {1: spec(1, [2], universe, extra=expose), 2: spec(2, [1], universe)},
    )
    lab.wait_mesh()
    wait_for(lambda: exposed(lab, "host1") is not None, timeout=40, interval=0.5)
    expose_ip = exposed(lab, "host1")
    (c1,) = attach(lab, "host1", "wsi370c1")
    attach(lab, "host2", "wsi370c2")
    wait_for(lambda: ping(lab, "wsi370c2", c1), timeout=20, interval=0.5)
    (c3a,) = attach(lab, "host2", "wsi370c3a")

    lab.stop_host("host1")
    lab.stop_host("host2")
    netns.delete_netns("wsi370c3a")  # the container goes while weave is down

    lab.start_host("host2")  # alone: its persisted ring, not a new one
    (c3,) = attach(lab, "host2", "wsi370c3")
    assert c3 != c1
    assert c3 == c3a  # freed at start, not after a grace period

    # Restarted without any reclaim: the exposed address is not given to a container.
    lab.start_host("host1")
    (c4,) = attach(lab, "host1", "wsi370c4")
    assert c4 != expose_ip and exposed(lab, "host1") == expose_ip


def exposed(lab: Lab, host: str) -> str | None:
    out = lab.exec(host, ["ip", "-4", "-o", "addr", "show", "dev", "weave"], capture=True).stdout
    for line in out.splitlines():
        if "weave:wd" in line and DNS_LINK_ADDRESS not in line:  # not weaveDNS's address
            return line.split()[3].split("/")[0]
    return None


# ---- 390: the peer name across a lost bridge --------------------------------------------------


def rot8(text: str) -> str:
    return text.translate(str.maketrans("0123456789abcdef", "89abcdef01234567"))


def test_390_peer_name_from_bridge_then_persisted_then_machine_ids(
    lab_factory: LabFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_root, sys_root = tmp_path / "root", tmp_path / "sys"
    (host_root / "etc").mkdir(parents=True)
    (sys_root / "class/dmi/id").mkdir(parents=True)
    (sys_root / "class/dmi/id/product_uuid").write_text("4c4c4544-0042-3510-8057-b4c04f564433\n")
    machine_id = host_root / "etc/machine-id"
    original = "5a1f0c2e9b7d4e3f8a6b1c0d2e3f4a51\n"
    machine_id.write_text("")  # blank to begin with: the name comes from the uuid alone
    monkeypatch.setenv("WEAVED_HOST_ROOT", str(host_root))
    monkeypatch.setenv("WEAVED_SYS_ROOT", str(sys_root))
    lab = lab_factory("wsi390", {1: spec(1, [], "10.32.0.0/12", name=False)})

    def name() -> str:
        report = json.loads(lab.exec("host1", ["weaved", "report"], capture=True).stdout)
        return str(report["Router"]["Name"])

    def remove_bridge() -> None:
        lab.exec("host1", ["ip", "link", "del", "weave"], capture=True)

    first = name()
    machine_id.write_text(original)
    lab.stop_host("host1")
    lab.start_host("host1")
    assert name() == first  # from the bridge

    lab.stop_host("host1")
    remove_bridge()
    lab.start_host("host1")
    assert name() == first  # from IPAM's persisted data
    log = (Path(lab.host("host1").dir) / "daemon.log").read_text()
    assert "deleting persisted data for peer name" not in log

    assert lab.exec("host1", ["weaved", "reset"], capture=True).returncode == 0
    lab.start_host("host1")
    third = name()
    assert third != first  # everything removed: machine-id and uuid

    machine_id.write_text(rot8(original))
    lab.stop_host("host1")
    remove_bridge()
    lab.start_host("host1")
    assert name() != third


# ---- reset (issue 11.5): nothing may make two holders of one address ------------------------


def test_reset_deletes_ipam_data_so_a_relaunch_takes_nothing_back(
    lab_factory: LabFactory,
) -> None:
    universe = "10.32.0.0/12"
    expose = "expose: [{cidr: 'net:default'}]\n"
    lab = lab_factory(
        "wsi115", {1: spec(1, [2], universe), 2: spec(2, [1], universe, extra=expose)}
    )
    lab.wait_mesh()
    wait_for(lambda: exposed(lab, "host2") is not None, timeout=40, interval=0.5)
    old = exposed(lab, "host2")
    out = lab.exec("host2", ["weaved", "reset"], capture=True)
    assert out.returncode == 0 and "went to a live peer" in out.stdout
    assert not (lab.host("host2").state_dir / "ipam.json").exists()
    # host1 owns the whole range now and hands out what host2 had.
    taken = [attach(lab, "host1", f"wsi115c{i}")[0] for i in range(3)]
    lab.start_host("host2")
    wait_for(lambda: exposed(lab, "host2") is not None, timeout=40, interval=0.5)
    assert exposed(lab, "host2") not in taken
    assert old in taken or exposed(lab, "host2") != old
    assert len(set(taken)) == 3


def test_attach_raises_apply_error_for_bad_subnets(lab_factory: LabFactory) -> None:
    """Weave test 500's error conditions, refused at once (they used to hang)."""
    lab = lab_factory("wsi500e", {1: spec(1, [], "10.2.3.0/24")})
    for word in ("net:10.2.3.2/30", "net:10.2.3.2/31"):
        started = time.monotonic()
        with pytest.raises(ApplyError, match=r"too small|not a subnet"):
            attach(lab, "host1", f"wsie{word[-2:]}", word)
        assert time.monotonic() - started < 10


# ---- issue 11.6/11.10: what waits for IPAM says so ------------------------------------------


def test_expose_and_apply_say_what_an_ipam_address_waits_for(lab_factory: LabFactory) -> None:
    """No quorum (3 peers expected, 1 here): `expose net:default` waits and says why, as
    Weave's expose waits; `apply` does not claim to be in sync meanwhile."""
    text = spec(1, [], "10.32.0.0/12").replace(
        "range: 10.32.0.0/12}", "range: 10.32.0.0/12, init: {mode: consensus, peer_count: 3}}"
    )
    lab = lab_factory("wsi116", {1: text})
    waiting = weaved_in(lab, "host1", "expose", "net:default")
    time.sleep(4)
    assert waiting.poll() is None  # still waiting for an address
    waiting.kill()
    _, err = waiting.communicate(timeout=10)
    assert "net:default: waiting for IPAM" in err
    assert "awaiting consensus (quorum: 2, known: 1)" in err
    applied = lab.exec("host1", ["weaved", "apply"], capture=True)
    assert applied.returncode == 0, applied.stderr
    assert "Already in sync" not in applied.stdout
    assert "expose[0] net:default: waiting for IPAM" in applied.stdout
