"""Sleeve cases for bench/datapath/run.py: weaved's userspace data path between two hosts.

* sleeve, sleeve-encrypted — offloads off: Weave's format and per-frame behaviour, exactly
  what a Weave Net 2.8.1 peer gets (compared with Weave's own sleeve);
* sleeve-offload, sleeve-offload-encrypted — both peers weaved: TAP with virtio-net
  headers, 64 KB superframes in one datagram each;
* sleeve-offload-txoff — as sleeve-offload with TX checksum offload off in the containers
  (what `weaved attach` does): the kernel segments before the TAP.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from run import Case, Endpoints  # type: ignore[import-not-found]

from tests.tools.sleeve_testbed import Testbed

PASSWORD = "bench-secret"


def _start(offload: bool, password: str | None) -> Callable[[Testbed], None]:
    def start(bed: Testbed) -> None:
        bed.start_peer(1, offload=offload, password=password, log_level="WARNING")
        bed.start_peer(2, targets=[1], offload=offload, password=password, log_level="WARNING")
        bed.wait_routes([(1, 2), (2, 1)], timeout=45)
        if offload:
            bed.wait(
                "offload negotiated",
                lambda: bool(bed.status(1).get("datapath", {}).get("TapOffloads")),
                timeout=10,
            )
        time.sleep(0.5)

    return start


def _stop(bed: Testbed) -> None:
    bed.stop_peer(1)
    bed.stop_peer(2)


def _tx(bed: Testbed, on: bool) -> None:
    for host in bed.hosts:
        for c in host.containers:
            subprocess.run(
                c.argv("ethtool", "-K", "ethwe", "tx", "on" if on else "off"),
                capture_output=True,
                check=False,
            )


def _endpoints(bed: Testbed) -> Endpoints:
    a, b = bed.container(1), bed.container(2)
    return Endpoints(b.argv(), a.argv(), b.address)


def _pids(bed: Testbed) -> list[int]:
    return [h.proc.pid for h in bed.hosts if h.proc is not None]


def _case(name: str, offload: bool, password: str | None, reference: str | None, text: str) -> Case:
    return Case(
        name,
        _start(offload, password),
        _stop,
        _endpoints,
        weave_reference=reference,
        pids=_pids,
        description=text,
    )


def _txoff_case() -> Case:
    start = _start(True, None)

    def start_txoff(bed: Testbed) -> None:
        _tx(bed, False)
        start(bed)

    def stop_txoff(bed: Testbed) -> None:
        _stop(bed)
        _tx(bed, True)

    return Case(
        "sleeve-offload-txoff",
        start_txoff,
        stop_txoff,
        _endpoints,
        pids=_pids,
        description="offloads, containers' TX checksum offload off (as weaved attach)",
    )


CASES = [
    _case("sleeve", False, None, "plain", "Weave's format, no offloads, plain"),
    _case("sleeve-encrypted", False, PASSWORD, "encrypted", "Weave's format, encrypted"),
    _case("sleeve-offload", True, None, "plain", "weaved peers: vnet offloads, plain"),
    _case(
        "sleeve-offload-encrypted", True, PASSWORD, "encrypted", "weaved peers: offloads, encrypted"
    ),
    _txoff_case(),
]
