"""weaveDNS across lab hosts: gossiped names answer everywhere (dig), removals win, and a name
removed while a host was partitioned is gone there too once the partition heals."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from weaved.lab.lab import Lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab("dns3")
    lab.up(3, resync=2.0)  # examples/lab: each host exposes 10.2.1.N with name hostN.weave.local.
    try:
        yield lab
    finally:
        lab.down()


def server(lab: Lab, host: str) -> str:
    """Where the host's weaveDNS listens (the address `weaved dns-args` gives containers)."""
    args = lab.exec(host, ["weaved", "dns-args"], capture=True).stdout.split()
    return args[0].removeprefix("--dns=")


def dig(lab: Lab, host: str, *args: str) -> str:
    server_ = "@" + server(lab, host)
    proc = lab.exec(host, ["dig", "+short", "+time=2", "+tries=1", server_, *args], capture=True)
    return proc.stdout.strip()


def test_every_host_answers_for_every_host(lab: Lab) -> None:
    for asker in ("host1", "host2", "host3"):
        for name in ("host1", "host2", "host3"):
            wait_for(
                lambda a=asker, n=name: dig(lab, a, f"{n}.weave.local") == f"10.2.1.{n[-1]}",
                timeout=20,
                interval=0.3,
            )
    assert dig(lab, "host1", "HOST2.Weave.Local") == "10.2.1.2"  # case-insensitive
    assert dig(lab, "host2", "-x", "10.2.1.3") == "host3.weave.local."
    assert dig(lab, "host3", "+tcp", "host1.weave.local") == "10.2.1.1"


def test_unknown_name_is_nxdomain(lab: Lab) -> None:
    at = "@" + server(lab, "host1")
    proc = lab.exec("host1", ["dig", "+time=2", "+tries=1", at, "nobody.weave.local"], capture=True)
    assert "status: NXDOMAIN" in proc.stdout


def test_dns_add_lookup_and_remove(lab: Lab) -> None:
    lab.exec(
        "host1",
        ["weaved", "dns-add", "10.2.1.50", "10.2.1.51", "-h", "svc.weave.local."],
        capture=True,
    )
    wait_for(
        lambda: sorted(dig(lab, "host3", "svc.weave.local").split()) == ["10.2.1.50", "10.2.1.51"],
        timeout=20,
        interval=0.3,
    )
    out = lab.exec("host2", ["weaved", "dns-lookup", "svc"], capture=True).stdout.split()
    assert sorted(out) == ["10.2.1.50", "10.2.1.51"]
    status = lab.exec("host2", ["weaved", "status", "dns"], capture=True).stdout
    assert "svc" in status and "10.2.1.50" in status
    lab.exec("host1", ["weaved", "dns-remove", "10.2.1.50", "-h", "svc.weave.local."], capture=True)
    wait_for(lambda: dig(lab, "host3", "svc.weave.local") == "10.2.1.51", timeout=20, interval=0.3)


def test_name_removed_during_a_partition_is_gone_after_it_heals(lab: Lab) -> None:
    lab.exec("host1", ["weaved", "dns-add", "10.2.1.77", "-h", "stale.weave.local."], capture=True)
    wait_for(
        lambda: dig(lab, "host3", "stale.weave.local") == "10.2.1.77", timeout=20, interval=0.3
    )
    # Cut host3's underlay link: a partition.
    lab_ip = ["ip", "-n", f"wd-{lab.name}-u", "link", "set", "h3"]
    subprocess.run([*lab_ip, "down"], check=True)
    try:
        lab.exec(
            "host1", ["weaved", "dns-remove", "10.2.1.77", "-h", "stale.weave.local."], capture=True
        )
        wait_for(lambda: dig(lab, "host2", "stale.weave.local") == "", timeout=20, interval=0.3)
        assert dig(lab, "host3", "stale.weave.local") == "10.2.1.77"  # host3 cannot know yet
    finally:
        subprocess.run([*lab_ip, "up"], check=True)
    wait_for(lambda: dig(lab, "host3", "stale.weave.local") == "", timeout=60, interval=0.5)
    wait_for(lambda: dig(lab, "host3", "host1.weave.local") == "10.2.1.1", timeout=60, interval=0.5)


def test_dns_args(lab: Lab) -> None:
    out = lab.exec("host2", ["weaved", "dns-args"], capture=True).stdout.strip()
    address = out.split()[0].removeprefix("--dns=")
    assert out.endswith(" --dns-search=weave.local.")
    # weaveDNS's link address, the same on every host (reached through ethwe, see README)
    assert address == "169.254.53.53"
