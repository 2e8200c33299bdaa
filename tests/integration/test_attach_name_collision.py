"""Two named network namespaces whose veth names collide (six hex digits of a SHA-256: about
3 % of hosts with 1 000 named namespaces hold such a pair), for real (root): both attach, the
second under its second name; a restarted daemon finds both (the second is no orphan to
detach); re-attaching and detaching the second leaves the first's anti-spoofing elements."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, named_namespaces, sh, stop_process, wait_for
from weaved.attach.model import Target, TargetKind
from weaved.control import Client

pytestmark = pytest.mark.timeout(120)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:d2"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


def colliding_names(prefix: str) -> tuple[str, str]:
    """Two names starting with `prefix` whose first veth names are the same (a birthday
    search: ~5 000 names on average among 16.7 million short hashes)."""
    seen: dict[str, str] = {}
    for i in range(200_000):
        name = f"{prefix}{i}"
        short = hashlib.sha256(name.encode()).hexdigest()[:6]
        if short in seen:
            return seen[short], name
        seen[short] = name
    raise AssertionError("no collision found")


def target(name: str) -> Target:
    return Target(TargetKind.NETNS, f"netns:{name}", name, None, f"/run/netns/{name}")


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    names = colliding_names(f"wdnc-{secrets.token_hex(2)}-")
    with named_namespaces(names):
        yield names


def elements(host: Netns) -> set[tuple[str, str]]:
    out = host.run(["nft", "-j", "list", "set", "bridge", "weaved", "ports"]).stdout
    found = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
    return {tuple(e["concat"]) for e in found[0].get("elem", [])}


def test_named_namespaces_whose_veth_names_collide_both_attach_and_stay(
    tmp_path: Path, pair: tuple[str, str]
) -> None:
    first, second = pair
    assert target(first).veth == target(second).veth
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    log = tmp_path / "daemon.log"
    with Netns("wdnc") as host:

        def daemon() -> Client:
            proc = host.popen_weaved(spec, "daemon", log=log)
            procs.append(proc)
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(
                lambda: "converged at" in host.weaved(spec, "status", check=False).stdout,
                timeout=30,
            )
            return Client(str(tmp_path / "weaved.sock"))

        def attach(name: str, *addresses: str) -> None:
            body = {"target": name, "addresses": list(addresses), "timeout": 30}
            client.call("POST", "/attach", body, timeout=60)

        def links() -> set[str]:
            return set(host.run(["ip", "-o", "link", "show"]).stdout.split())

        procs: list = []
        try:
            client = daemon()
            attach(first, "10.2.1.21/24")
            attach(second, "10.2.1.22/24")
            a, b = target(first).veth, target(second).second_veth
            assert {a, b} <= {w.rstrip(":").split("@")[0] for w in links()}
            assert {(a, "10.2.1.21"), (b, "10.2.1.22")} <= elements(host)
            sh(["ip", "netns", "exec", first, "ping", "-c1", "-W5", "10.2.1.22"])

            # A restart looks at every veth again: the second name is its namespace's too.
            assert stop_process(procs.pop()) == 0
            client = daemon()
            ps = client.call("POST", "/ps", {})["text"]
            assert "10.2.1.21" in ps and "10.2.1.22" in ps, ps
            attach(second, "10.2.1.22/24", "10.2.1.23/24")  # again, one address more
            assert (b, "10.2.1.23") in elements(host)
            for address in ("10.2.1.23/24", "10.2.1.22/24"):  # the last one takes the veth
                gone = {"target": second, "addresses": [address]}
                client.call("POST", "/detach", gone, timeout=60)
            assert b not in {w.rstrip(":").split("@")[0] for w in links()}
            wait_for(lambda: not any(v == b for v, _ in elements(host)), timeout=10)
            assert (a, "10.2.1.21") in elements(host)
            sh(["ip", "netns", "exec", first, "ping", "-c1", "-W5", "10.2.1.1"])
        finally:
            for proc in procs:
                assert stop_process(proc) == 0, log.read_text()[-3000:]
    assert "orphan" not in log.read_text().lower()
