"""An idle, healthy mesh is near silent at the default log level (issue 11.13: it used to log
~70 lines a minute: no-op converges, DNS entries re-added, duplicate-connection churn)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from weaved.lab.lab import Lab

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab("quietmesh")
    lab.up(2, resync=2.0)  # examples/lab specs: DNS, IPAM, fastdp; a no-op converge every 2 s
    try:
        yield lab
    finally:
        lab.down()


def test_idle_mesh_logs_almost_nothing(lab: Lab) -> None:
    hosts = [lab.host("host1"), lab.host("host2")]

    def established() -> bool:
        out = lab.exec("host1", ["weaved", "status", "connections"], capture=True).stdout
        return "established" in out

    wait_for(established, timeout=60, interval=0.5)
    time.sleep(5)  # path probes, PMTU discovery and the like settle
    marks = [len(h.log.read_text().splitlines()) for h in hosts]
    time.sleep(20)
    for host, mark in zip(hosts, marks, strict=True):
        idle = host.log.read_text().splitlines()[mark:]
        assert len(idle) <= 2, f"{host.name} logged while idle:\n" + "\n".join(idle)
