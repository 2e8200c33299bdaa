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
            r'weave_connections\{encryption="",state="established",type="(fastdp|sleeve)"\} 1\n',
            text,
        )
        assert "weave_max_ips 1.048576e+06" in text
        # Weave counts this peer's own entries (host1's exposed name), not the mesh's.
        assert "\nweave_dns_entries 1\n" in text
        # Go's number format, as Weave prints it: `1`, never `1.0`.
        assert "\nweaved_converged 1\n" in text and "\nweaved_spec_valid 1\n" in text
        assert ".0\n" not in text
        status = lab.exec(
            "host1", ["curl", "-s", "http://127.0.0.1:6782/status"], capture=True
        ).stdout
        assert "Service: router" in status and "Service: reconciler" in status
    finally:
        lab.down()
