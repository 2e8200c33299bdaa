"""Weave Net's test 500 (attach/detach/expose/hide with several addresses, every address form)
on one lab host, then what the periodic attachment check must not do: undo a `dns-remove`,
grow IPAM's state, re-claim a detached container, or lose an expose's name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from weaved.attach.reobserve import WATCH_SECONDS
from weaved.lab.lab import Lab, peer_name
from weaved.spec.models import DNS_LINK_ADDRESS

pytestmark = pytest.mark.timeout(300)

NAME = "wsm-multicidr"
FQDN = f"{NAME}.weave.local."


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    spec_dir = tmp_path_factory.mktemp("wsm")
    (spec_dir / "host1.yaml").write_text(
        "version: 1\n"
        f'peer: {{name: "{peer_name(1)}", nickname: host1}}\n'
        "peers: []\n"
        "ipalloc: {range: 10.2.3.0/24}\n"
        "dns: {listen: '127.0.0.1:53'}\n"
    )
    lab = Lab("wsm500")
    lab.up(1, spec_dir=spec_dir, resync=2.0)
    try:
        yield lab
    finally:
        lab.down()


def weaved(lab: Lab, *argv: str) -> str:
    done = lab.exec("host1", ["weaved", *argv], capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ps(lab: Lab, target: str) -> list[str]:
    """The addresses `weaved ps TARGET` lists (Weave's `assert_container_cidrs`)."""
    line = weaved(lab, "ps", target)
    return line.split()[2:] if line else []


def records(lab: Lab, fqdn: str) -> list[str]:
    return sorted(lab.exec("host1", ["weaved", "dns-lookup", fqdn], capture=True).stdout.split())


def bridge(lab: Lab) -> list[str]:
    out = lab.exec("host1", ["ip", "-4", "-o", "addr", "show", "dev", "weave"], capture=True)
    addresses = (line.split()[3] for line in out.stdout.splitlines())
    return sorted(a for a in addresses if not a.startswith(f"{DNS_LINK_ADDRESS}/"))


def test_500_several_addresses_in_every_form(lab: Lab) -> None:
    lab.add_container("host1", NAME, ["10.2.1.1/24", "ip:10.2.2.1/24", "net:10.2.3.0/24"])
    assert ps(lab, NAME) == ["10.2.1.1/24", "10.2.2.1/24", "10.2.3.1/24"]
    assert records(lab, FQDN) == ["10.2.1.1", "10.2.2.1", "10.2.3.1"]

    # Remove two of them, then the remaining one (`net:` means its IPAM address there).
    assert weaved(lab, "detach", "ip:10.2.2.1/24", "net:10.2.3.0/24", NAME) == "10.2.2.1 10.2.3.1"
    assert ps(lab, NAME) == ["10.2.1.1/24"] and records(lab, FQDN) == ["10.2.1.1"]
    assert weaved(lab, "detach", "10.2.1.1/24", NAME) == "10.2.1.1"
    assert ps(lab, NAME) == [] and records(lab, FQDN) == []

    # Put one back, then the other two: `attach` prints the addresses of this call.
    assert weaved(lab, "attach", "10.2.1.1/24", NAME) == "10.2.1.1"
    assert weaved(lab, "attach", "ip:10.2.2.1/24", "net:10.2.3.0/24", NAME) == "10.2.2.1 10.2.3.1"
    assert ps(lab, NAME) == ["10.2.1.1/24", "10.2.2.1/24", "10.2.3.1/24"]
    assert records(lab, FQDN) == ["10.2.1.1", "10.2.2.1", "10.2.3.1"]

    # Expose three, hide two, then the last one.
    assert weaved(lab, "expose", "10.2.1.2/24", "ip:10.2.2.2/24", "net:10.2.3.0/24") == (
        "10.2.1.2 10.2.2.2 10.2.3.2"
    )
    wanted = ["10.2.1.2/24", "10.2.2.2/24", "10.2.3.2/24"]
    wait_for(lambda: bridge(lab) == wanted, timeout=20, interval=0.3)
    assert weaved(lab, "hide", "ip:10.2.2.2/24", "net:10.2.3.0/24") == "10.2.2.2 10.2.3.2"
    wait_for(lambda: bridge(lab) == ["10.2.1.2/24"], timeout=20, interval=0.3)
    assert weaved(lab, "hide", "10.2.1.2/24") == "10.2.1.2"
    wait_for(lambda: bridge(lab) == [], timeout=20, interval=0.3)

    # `detach` alone releases the default subnet's IPAM address only, and IPAM reuses it.
    assert weaved(lab, "detach", NAME) == "10.2.3.1"
    assert ps(lab, NAME) == ["10.2.1.1/24", "10.2.2.1/24"]
    lab.add_container("host1", "wsm-c2", ["net:10.2.3.0/24"])
    assert ps(lab, "wsm-c2") == ["10.2.3.1/24"]


def test_dns_remove_sticks_until_the_container_is_attached_again(lab: Lab) -> None:
    lab.add_container("host1", "wsm-quiet", ["10.2.5.1/24"])
    name = "wsm-quiet.weave.local."
    assert records(lab, name) == ["10.2.5.1"]
    weaved(lab, "dns-remove", "wsm-quiet")
    assert records(lab, name) == []
    time.sleep(2.5 * WATCH_SECONDS)  # several periodic checks
    assert records(lab, name) == []
    weaved(lab, "attach", "10.2.5.2/24", "wsm-quiet")  # re-attached: its name is back
    assert records(lab, name) == ["10.2.5.1", "10.2.5.2"]


def test_periodic_checks_change_nothing_when_nothing_changed(lab: Lab) -> None:
    """An address outside the range used to be appended to ipam.json at every check, and
    every attachment's name re-registered."""
    lab.add_container("host1", "wsm-steady", ["10.2.6.1/24"])
    host = lab.host("host1")
    ipam = Path(host.state_dir, "ipam.json")
    attachments = Path(host.state_dir, "attachments.json")
    time.sleep(1.5 * WATCH_SECONDS)
    changes = attachments.with_name("attachments.json.log")

    def now() -> tuple[bytes, bytes, bytes, int]:
        logged = changes.read_bytes() if changes.exists() else b""
        return ipam.read_bytes(), attachments.read_bytes(), logged, ipam.stat().st_mtime_ns

    before = now()
    log_size = Path(host.dir, "daemon.log").stat().st_size
    time.sleep(3.5 * WATCH_SECONDS)
    assert now() == before
    assert ipam.read_text().count("10.2.6.1") == 1
    quiet = Path(host.dir, "daemon.log").read_text(errors="replace")[log_size:]
    assert "dns entry added" not in quiet and "re-observed" not in quiet


def test_a_detach_racing_the_periodic_check_stays_detached(lab: Lab) -> None:
    lab.add_container("host1", "wsm-race", ["10.2.7.1/24"])
    deadline = time.monotonic() + 2 * WATCH_SECONDS
    rounds = 0
    while time.monotonic() < deadline:  # attach/detach across at least one check
        weaved(lab, "detach", "10.2.7.1/24", "wsm-race")
        weaved(lab, "attach", "10.2.7.1/24", "wsm-race")
        rounds += 1
    weaved(lab, "detach", "10.2.7.1/24", "wsm-race")
    time.sleep(2.5 * WATCH_SECONDS)
    assert ps(lab, "wsm-race") == [] and records(lab, "wsm-race.weave.local.") == []
    assert "10.2.7.1" not in Path(lab.host("host1").state_dir, "ipam.json").read_text()
    assert rounds >= 2


def test_expose_names_follow_the_spec_live(lab: Lab) -> None:
    """Issue 11.6: `-h` on an existing entry, registered without a restart; `hide` removes
    the name; `expose net:` waits for its address and prints it."""
    assert weaved(lab, "expose", "10.2.8.1/24") == "10.2.8.1"
    assert weaved(lab, "expose", "10.2.8.1/24", "-h", "wsm-gw.weave.local") == "10.2.8.1"
    wait_for(lambda: records(lab, "wsm-gw.weave.local.") == ["10.2.8.1"], timeout=10, interval=0.3)
    assert weaved(lab, "hide", "10.2.8.1/24") == "10.2.8.1"
    wait_for(lambda: records(lab, "wsm-gw.weave.local.") == [], timeout=10, interval=0.3)
    got = weaved(lab, "expose", "net:default", "-h", "wsm-host.weave.local")
    assert got.startswith("10.2.3.")
    wait_for(lambda: records(lab, "wsm-host.weave.local.") == [got], timeout=10, interval=0.3)
    applied = weaved(lab, "apply")
    assert "Already in sync" in applied or "Applied" in applied
    assert weaved(lab, "hide", "net:default") == got
