"""The gratuitous ARP an attach leaves to a background thread (root: a packet socket)."""

from __future__ import annotations

import ipaddress
import logging
import time

import pytest

from weaved.attach.arp import announce_soon


def test_an_announcement_for_an_interface_gone_meanwhile_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A container detached right after its attach (ethwe gone before the delayed
    announcement left) is no problem to warn about: ten containers attached and detached in
    a loop logged a WARNING a few times a minute."""
    caplog.set_level(logging.DEBUG, logger="weaved.attach.arp")
    announce_soon("wdarpgone0", "02:00:00:00:00:01", [ipaddress.IPv4Address("10.2.1.9")])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not caplog.records:
        time.sleep(0.01)
    assert [r.levelname for r in caplog.records] == ["DEBUG"], caplog.text
    assert "wdarpgone0" in caplog.text
