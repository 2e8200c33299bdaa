"""Containers (namespaces) in the lab: IPAM addresses without a central store, DNS names that
come and go with the containers, attachments that survive a daemon restart."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from weaved.errors import ApplyError
from weaved.lab.lab import Lab
from weaved.spec.edit import edit_spec

DEFAULT = ipaddress.IPv4Network("10.32.0.0/12")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab("ctr3")
    lab.up(3, resync=2.0)
    lab.wait_mesh()
    try:
        yield lab
    finally:
        lab.down()


def add(
    lab: Lab, host: str, name: str, *addresses: str, hostname: str | None = None
) -> list[ipaddress.IPv4Address]:
    """`weaved attach` prints the container's addresses, one a line, like Weave's."""
    out = lab.add_container(host, name, list(addresses), hostname)
    return [ipaddress.IPv4Address(line) for line in out.split()]


def resolve(lab: Lab, container: str, name: str, *extra: str) -> list[str]:
    proc = lab.in_container(container, ["dig", "+short", "+time=2", "+tries=2", *extra, name])
    return sorted(proc.stdout.split())


def ps(lab: Lab, host: str) -> str:
    return lab.exec(host, ["weaved", "ps"], capture=True).stdout


def test_attach_without_address_allocates_from_the_default_subnet(lab: Lab) -> None:
    a = add(lab, "host1", "ia1")
    b = add(lab, "host2", "ib1")
    c = add(lab, "host3", "ic1")
    addrs = [x[0] for x in (a, b, c)]
    assert all(x in DEFAULT for x in addrs) and len(set(addrs)) == 3
    assert "ia1 " in ps(lab, "host1") and f"{a[0]}/12" in ps(lab, "host1")
    status = lab.exec("host1", ["weaved", "status", "ipam"], capture=True).stdout
    assert "active" in status


def test_net_and_ip_forms_and_a_taken_address_is_refused(lab: Lab) -> None:
    (sub,) = add(lab, "host1", "ia2", "net:10.40.0.0/16")
    assert sub in ipaddress.IPv4Network("10.40.0.0/16") and f"{sub}/16" in ps(lab, "host1")
    (ip,) = add(lab, "host2", "ib2", "ip:10.36.7.7")
    assert ip == ipaddress.IPv4Address("10.36.7.7") and f"{ip}/12" in ps(lab, "host2")
    with pytest.raises(ApplyError, match=r"10\.36\.7\.7"):
        add(lab, "host3", "ic2", "ip:10.36.7.7")


def test_detach_releases_and_the_address_is_reused(lab: Lab) -> None:
    (first,) = add(lab, "host3", "ic3", "ip:10.44.9.9")
    lab.remove_container("ic3")
    (again,) = add(lab, "host3", "ic4", "ip:10.44.9.9")  # free again: no refusal
    assert again == first


def test_names_resolve_across_hosts_with_dig_and_busybox(lab: Lab) -> None:
    (x,) = add(lab, "host1", "nx")
    (y,) = add(lab, "host2", "ny")
    wait_for(lambda: resolve(lab, "nx", "ny.weave.local") == [str(y)], timeout=20, interval=0.3)
    assert resolve(lab, "ny", "nx") == [str(x)]  # unqualified: search path
    reverse = lab.in_container("ny", ["dig", "+short", "-x", str(x)]).stdout.strip()
    assert reverse == "nx.weave.local."
    out = lab.in_container("nx", ["busybox", "nslookup", "ny.weave.local"]).stdout
    assert str(y) in out


def test_same_hostname_on_every_host_gives_all_six(lab: Lab) -> None:
    addresses = []
    for host in ("host1", "host2", "host3"):
        for n in "ab":
            addresses += [
                str(a) for a in add(lab, host, f"web{host[-1]}{n}", hostname="web.weave.local.")
            ]
    wait_for(
        lambda: resolve(lab, "nx", "web.weave.local") == sorted(addresses), timeout=20, interval=0.3
    )
    orders = {
        tuple(lab.in_container("nx", ["dig", "+short", "web.weave.local"]).stdout.split())
        for _ in range(8)
    }
    assert len(orders) > 1  # shuffled: simple load balancing


def test_fifty_addresses_truncate_over_udp_and_arrive_over_tcp(lab: Lab) -> None:
    ips = [f"10.47.1.{i}" for i in range(1, 51)]
    lab.exec("host2", ["weaved", "dns-add", *ips, "-h", "many.weave.local."], capture=True)
    wait_for(
        lambda: len(resolve(lab, "nx", "many.weave.local", "+tcp")) == 50, timeout=20, interval=0.3
    )
    udp = lab.in_container("nx", ["dig", "+ignore", "+noedns", "many.weave.local"]).stdout
    assert " tc" in udp.split("flags:")[1].split(";")[0]
    small = lab.in_container("nx", ["dig", "+ignore", "+bufsize=700", "many.weave.local"]).stdout
    answers = [line for line in small.splitlines() if "\tA\t" in line]
    assert 0 < len(answers) < 50 and " tc" in small.split("flags:")[1].split(";")[0]


def test_killed_and_restarted_containers_come_and_go_five_times(lab: Lab) -> None:
    add(lab, "host2", "ky")
    for _ in range(5):
        (k,) = add(lab, "host1", "kk")
        wait_for(
            lambda k=k: resolve(lab, "ky", "kk.weave.local") == [str(k)],
            timeout=20,
            interval=0.3,
        )
        subprocess.run(["ip", "netns", "delete", "kk"], check=True)  # the container dies
        state = lab.load()
        assert state is not None
        state.containers.pop("kk", None)
        lab.save(state)
        wait_for(lambda: resolve(lab, "ky", "kk.weave.local") == [], timeout=30, interval=0.5)


def test_attachments_survive_a_daemon_restart(lab: Lab) -> None:
    (r,) = add(lab, "host3", "rs")
    add(lab, "host1", "rsq")  # asks from another host (the test runs alone too)
    before = ps(lab, "host3")
    lab.stop_host("host3")
    lab.start_host("host3")
    lab.wait_mesh()
    assert ps(lab, "host3") == before  # re-observed, not recreated
    assert lab.in_container("rs", ["ping", "-c1", "-W2", str(r)]).returncode == 0
    wait_for(lambda: resolve(lab, "rsq", "rs.weave.local") == [str(r)], timeout=30, interval=0.5)


def test_names_outside_the_domain_go_upstream(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A fake upstream (dnsmasq) in the lab's underlay answers one name and NXDOMAIN for the
    rest of its domain; weaveDNS forwards to it once the spec names it."""
    underlay = f"wd-{lab.name}-u"
    subprocess.run(["ip", "-n", underlay, "addr", "add", "192.0.2.1/24", "dev", "br0"], check=True)
    pidfile = tmp_path_factory.mktemp("dnsmasq") / "pid"
    dnsmasq = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            underlay,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=192.0.2.1",
            f"--pid-file={pidfile}",
            "--address=/known.example/203.0.113.7",
            "--local=/example/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        add(lab, "host1", "up1")  # its own asker: the test runs alone too
        spec = Path(lab.host("host1").spec)
        edit_spec(spec, lambda doc: doc["dns"].__setitem__("upstream", ["192.0.2.1"]))
        wait_for(
            lambda: resolve(lab, "up1", "known.example") == ["203.0.113.7"],
            timeout=20,
            interval=0.5,
        )
        out = lab.in_container("up1", ["dig", "+time=2", "nothing.example"]).stdout
        assert "status: NXDOMAIN" in out
        status = lab.exec("host1", ["weaved", "status"], capture=True).stdout
        assert "Upstream: 192.0.2.1" in status
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(10)
