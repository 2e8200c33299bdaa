"""Prometheus metrics and the plain-text status on the status port, inside a lab host."""

from __future__ import annotations

import re

from weaved.lab.lab import Lab


def test_metrics_and_status_port() -> None:
    lab = Lab("met2")
    lab.up(2, resync=2.0)
    try:
        lab.wait_mesh()
        text = lab.exec(
            "host1", ["curl", "-s", "http://127.0.0.1:6782/metrics"], capture=True
        ).stdout
        # one connection to the other host, on whichever data path it uses
        assert re.search(
            r'weave_connections\{encryption="",state="established",type="(fastdp|sleeve)"\} 1\.0',
            text,
        )
        assert "weave_max_ips 1.048576e+06" in text
        assert "weave_dns_entries 2.0" in text  # each host's exposed name: host1, host2
        assert "weaved_converged 1.0" in text and "weaved_spec_valid 1.0" in text
        status = lab.exec(
            "host1", ["curl", "-s", "http://127.0.0.1:6782/status"], capture=True
        ).stdout
        assert "Service: router" in status and "Service: reconciler" in status
    finally:
        lab.down()
