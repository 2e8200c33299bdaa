"""A daemon converging (`weaved apply` asked of it in a loop) while containers are attached
and detached at once, for real (root): no converge fails its verify because a call plugged
or unplugged a container between the converge's execute and its verify (before the fix:
about six "applied, but the kernel does not match" a second, on the anti-spoofing set's
elements), and once every container is detached the set is empty again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, bare_namespaces, stop_process, wait_for
from weaved.control import Client, DaemonError

pytestmark = pytest.mark.timeout(120)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:d1"}\nexpose: [{cidr: 10.2.1.1/24}]\n'
COUNT = 10
SECONDS = 15.0


@pytest.fixture
def containers() -> Iterator[list[str]]:
    with bare_namespaces("wdvr-c", COUNT) as names:
        yield names


def set_elements(host: Netns) -> list[object]:
    out = host.run(["nft", "-j", "list", "set", "bridge", "weaved", "ports"]).stdout
    found = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
    return list(found[0].get("elem", []))


def test_converges_racing_attaches_and_detaches_pass_their_verify(
    tmp_path: Path, containers: list[str]
) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    log = tmp_path / "daemon.log"
    errors: list[str] = []
    applies = [0]
    with Netns("wdvr") as host:
        proc = host.popen_weaved(spec, "daemon", "--resync", "1", log=log)
        try:
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(lambda: "converged at" in host.weaved(spec, "status").stdout, timeout=20)
            client = Client(str(tmp_path / "weaved.sock"))
            deadline = time.monotonic() + SECONDS

            def churn(name: str, address: str) -> None:
                body = {"target": name, "addresses": [address]}
                while time.monotonic() < deadline:
                    try:
                        client.call("POST", "/attach", {**body, "timeout": 30}, timeout=60)
                        client.call("POST", "/detach", body, timeout=60)
                    except DaemonError as exc:
                        errors.append(f"{name}: {exc}")

            def apply() -> None:
                while time.monotonic() < deadline:
                    try:
                        client.call("POST", "/apply", {}, timeout=60)
                        applies[0] += 1
                    except DaemonError as exc:
                        errors.append(f"apply: {exc}")

            threads = [
                threading.Thread(target=churn, args=(name, f"10.2.1.{20 + i}/24"))
                for i, name in enumerate(containers)
            ]
            threads.append(threading.Thread(target=apply))
            for t in threads:
                t.start()
            for t in threads:
                t.join(SECONDS + 60)
            assert applies[0] > 0
            client.call("POST", "/apply", {}, timeout=60)  # after the settles: nothing left
            wait_for(lambda: not set_elements(host), timeout=10)
        finally:
            assert stop_process(proc) == 0, log.read_text()[-3000:]
    verify = [e for e in errors if "does not match" in e]
    assert verify == [], f"{len(verify)} verify failures in {applies[0]} applies:\n{verify[0]}"
    assert errors == [], "\n".join(errors[:5])
    assert "does not match" not in log.read_text()
