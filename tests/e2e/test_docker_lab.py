"""Real Docker containers in the lab: each of two lab hosts runs its own private dockerd next to
its `weaved daemon`; containers are attached by name through the daemon (`weaved attach NAME`,
IPAM gives the address), talk across the hosts over ethwe (ping, weaveDNS names, TCP), vanish
from `weaved ps` and DNS when Docker removes them, and with `docker.auto_attach` are attached
as Docker starts them.

The specs are examples/lab/host{1,2}.yaml plus a `docker:` section naming the host's dockerd.
Each dockerd starts after its host's daemon (it lives in the host's namespace), as when
weaved.service comes up before docker.service: the daemon follows Docker once it answers.
Containers are given weaveDNS with `weaved dns-args NAME`, which adds a hostname in the weave
domain (`--hostname=NAME.weave.local`, as Weave documents); weaveDNS registers that hostname,
and for a container without one (Docker's default hostname is its short ID) the container's name.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_image import run_container
from tests.e2e.docker_lab import (
    HOSTS,
    SKIP_WITHOUT_DOCKER,
    SUBNET,
    Attached,
    DockerLab,
    dns_status,
    docker_lab,
    follows_docker,
    unique,
)
from tests.helpers import Dockerd, wait_for
from weaved.spec.edit import edit_spec

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker, SKIP_WITHOUT_DOCKER]


def _docker_section(_host: str, dockerd: Dockerd) -> str:
    return f"docker:\n  socket: unix://{dockerd.sock}\n  auto_attach: false\n"


@pytest.fixture(scope="module")
def dlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    with docker_lab(unique("dock"), tmp_path_factory, _docker_section) as (lab, dockerds):
        # Docker came up after weaved: each daemon follows it at its next attempt (≤ 30 s).
        for host in HOSTS:
            wait_for(lambda h=host: follows_docker(lab, h), timeout=60, interval=0.5)
        assert lab.wait_mesh(), "the lab hosts did not find each other"
        assert lab.wait_in_sync(), "weaved plan is not empty on every host"
        yield DockerLab(lab, dockerds)


@pytest.fixture(scope="module")
def pair(dlab: DockerLab) -> tuple[Attached, Attached]:
    """wdk-a on host1 and wdk-b on host2, attached by name, addresses from IPAM."""
    return dlab.attach("host1", "wdk-a"), dlab.attach("host2", "wdk-b")


def test_attach_by_name_through_the_daemon_and_ps(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    a, b = pair
    assert a.ip != b.ip
    for c in pair:
        ethwe = dlab.in_container(c, "ip", "-4", "addr", "show", "ethwe").stdout
        assert f"inet {c.ip}/12 " in ethwe
        mac = dlab.in_container(c, "cat", "/sys/class/net/ethwe/address").stdout.strip()
        line = f"{c.id[:12]} {mac} {c.ip}/12"
        assert line in dlab.ps(c.host).splitlines()  # Weave's layout: short ID, MAC, CIDR
        assert dlab.ps(c.host, c.name) == line + "\n"
        other = b if c is a else a
        assert c.id[:12] not in dlab.ps(other.host)  # each host lists its own containers
    # Attaching again by name is idempotent: the same address, nothing new.
    assert dlab.weaved("host1", "attach", "wdk-a").stdout.split() == [a.ip]


def test_containers_talk_across_hosts_by_address_name_and_tcp(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    a, b = pair
    for src, dst in ((a, b), (b, a)):
        route = dlab.in_container(src, "ip", "route", "get", dst.ip).stdout
        assert "dev ethwe" in route  # the weave network, not Docker's bridge
        ping = dlab.in_container(src, "ping", "-c", "2", "-W", "2", dst.ip)
        assert ping.returncode == 0, ping.stdout + ping.stderr

    # weaveDNS: each container asks its own host's server, which knows the other host's names.
    wait_for(lambda: dlab.lookup(a, "wdk-b.weave.local") == [b.ip], timeout=20, interval=0.5)
    wait_for(lambda: dlab.lookup(b, "wdk-a.weave.local") == [a.ip], timeout=20, interval=0.5)
    by_name = dlab.in_container(a, "ping", "-c", "1", "-W", "2", "wdk-b")  # search path
    assert by_name.returncode == 0 and f"({b.ip})" in by_name.stdout, by_name.stdout

    # TCP: busybox itself (~2 MB) from wdk-a to wdk-b, compared by checksum.
    want = dlab.in_container(a, "busybox", "md5sum", "/bin/busybox").stdout.split()[0]
    # The listener's stdin stays open (sleep), so it ends only when the sender closes.
    dlab.docker(b.host, "exec", "-d", b.name, "sh", "-c", "sleep 30 | nc -l -p 7000 > /tmp/got")

    def sent() -> bool:
        return dlab.in_container(a, "sh", "-c", f"nc {b.ip} 7000 < /bin/busybox").returncode == 0

    wait_for(sent, timeout=15, interval=0.3)  # until the listener is up

    def received() -> bool:
        out = dlab.in_container(b, "busybox", "md5sum", "/tmp/got").stdout.split()
        return out[:1] == [want]

    wait_for(received, timeout=15, interval=0.3)


def test_a_removed_container_leaves_ps_and_dns_on_every_host(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    _, b = pair
    dies = dlab.attach("host1", "wdk-dies")
    wait_for(lambda: dlab.lookup(b, "wdk-dies.weave.local") == [dies.ip], timeout=20, interval=0.5)
    assert f"wdk-dies {dies.ip} " in dns_status(dlab, "host2")

    # No `weaved detach`: the daemon hears Docker's die/destroy events (its periodic look at
    # the namespaces would notice too, a few seconds later).
    dlab.docker("host1", "rm", "-f", "wdk-dies")
    wait_for(lambda: dies.id[:12] not in dlab.ps("host1"), timeout=20, interval=0.5)
    wait_for(lambda: dlab.nxdomain(b, "wdk-dies.weave.local"), timeout=20, interval=0.5)
    assert "wdk-dies " not in dns_status(dlab, "host2")
    assert "wdk-dies " not in dns_status(dlab, "host1")
    # The survivors are untouched.
    assert dlab.lookup(b, "wdk-a.weave.local") == [pair[0].ip]


def test_auto_attach_attaches_containers_as_docker_starts_them(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    a, _ = pair
    spec = Path(dlab.lab.host("host2").spec)

    def auto(on: bool) -> None:
        edit_spec(spec, lambda doc: doc["docker"].__setitem__("auto_attach", on))
        dlab.weaved("host2", "apply")  # the daemon reads the edited spec now

    auto(True)
    try:
        # No `weaved attach`, no hostname: weaveDNS knows it by its container name.
        cid = dlab.run("host2", "wdk-auto", hostname=False)
        wait_for(lambda: "/12" in dlab.ps("host2", "wdk-auto"), timeout=20, interval=0.5)
        (line,) = dlab.ps("host2", "wdk-auto").splitlines()
        short, _mac, cidr = line.split()
        assert short == cid[:12]
        ip = cidr.split("/")[0]
        assert ipaddress.IPv4Address(ip) in SUBNET
        auto_c = Attached("wdk-auto", "host2", cid, ip)
        ethwe = dlab.in_container(auto_c, "ip", "-4", "addr", "show", "ethwe").stdout
        assert f"inet {cidr} " in ethwe
        ping = dlab.in_container(a, "ping", "-c", "2", "-W", "2", ip)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        wait_for(lambda: dlab.lookup(a, "wdk-auto.weave.local") == [ip], timeout=20, interval=0.5)
    finally:
        auto(False)


def test_attach_without_dns_rewrite_hosts_and_add_host_as_weave(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    """Weave's `attach --without-dns --rewrite-hosts --add-host NAME:ADDR`: no weaveDNS name;
    the container's /etc/hosts names its weave address and the extra host, and keeps them."""
    a, _ = pair
    dlab.run("host1", "wdk-hosts")  # --hostname=wdk-hosts.weave.local
    out = dlab.weaved(
        "host1", "attach", "--without-dns", "--rewrite-hosts", "--add-host", "db:10.32.9.1",
        "wdk-hosts",
    ).stdout  # fmt: skip
    (ip,) = out.split()
    c = Attached("wdk-hosts", "host1", "", ip)
    lines = dlab.in_container(c, "cat", "/etc/hosts").stdout.splitlines()
    assert lines[0] == "# created by Weave - BEGIN" and lines[-1] == "# created by Weave - END"
    assert f"{ip:<15} wdk-hosts.weave.local wdk-hosts" in lines, lines
    assert f"{'10.32.9.1':<15} db" in lines, lines
    ping = dlab.in_container(c, "ping", "-c", "1", "-W", "1", "db").stdout
    assert "(10.32.9.1)" in ping, ping  # the name comes from /etc/hosts
    # --without-dns: weaveDNS does not know it (the attach has returned: nothing is pending).
    assert "wdk-hosts " not in dns_status(dlab, "host1")
    assert dlab.nxdomain(a, "wdk-hosts.weave.local")
    # ... and that sticks across a daemon restart (the record keeps it; the kernel cannot).
    dlab.lab.stop_host("host1")
    dlab.lab.start_host("host1", resync=2.0)
    assert ip in dlab.ps("host1", "wdk-hosts")
    time.sleep(3)  # a resync or two: the restarted daemon has adopted the container again
    assert "wdk-hosts " not in dns_status(dlab, "host1")
    bad = dlab.weaved("host1", "attach", "--add-host", "db", "wdk-hosts", check=False)
    assert bad.returncode == 64 and "NAME:ADDRESS" in bad.stderr, bad


def test_hostname_rules_name_containers_in_weavedns(
    dlab: DockerLab, pair: tuple[Attached, Attached]
) -> None:
    """docker.hostname_match/hostname_replacement/hostname_from_label (Weave proxy's
    --hostname-* flags) decide a container's weaveDNS name."""
    a, _ = pair
    spec = Path(dlab.lab.host("host2").spec)
    rules = {
        "auto_attach": True,
        "hostname_match": "^app-(.*)$",
        "hostname_replacement": "my-$1",
        "hostname_from_label": "works.weave.hostname",
    }

    def set_rules(doc: Any) -> None:
        doc["docker"].update(rules)

    def unset_rules(doc: Any) -> None:
        for key in rules:
            doc["docker"].pop(key, None)

    edit_spec(spec, set_rules)
    dlab.weaved("host2", "apply")
    try:
        dns_args = dlab.weaved("host2", "dns-args").stdout.split()
        run_container(dlab.dockerds["host2"], "app-web", *dns_args)
        run_container(
            dlab.dockerds["host2"], "app-lbl", "--label", "works.weave.hostname=app-db", *dns_args
        )

        def ip_of(name: str) -> str:
            wait_for(lambda: "/12" in dlab.ps("host2", name), timeout=20, interval=0.5)
            return dlab.ps("host2", name).split()[2].split("/")[0]

        web, db = ip_of("app-web"), ip_of("app-lbl")
        # The name matched: `my-web`; the label's value replaced the name, then matched.
        wait_for(lambda: dlab.lookup(a, "my-web.weave.local") == [web], timeout=20, interval=0.5)
        wait_for(lambda: dlab.lookup(a, "my-db.weave.local") == [db], timeout=20, interval=0.5)
        assert dlab.nxdomain(a, "app-web.weave.local")
    finally:
        edit_spec(spec, unset_rules)
        dlab.weaved("host2", "apply")
        dlab.docker("host2", "rm", "-f", "app-web", "app-lbl", check=False)
