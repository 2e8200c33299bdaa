"""sd_notify: the datagrams systemd would receive."""

from __future__ import annotations

import socket
from pathlib import Path

from weaved.daemon.notify import reloading_message, sd_notify, status_line, watchdog_interval


def test_sd_notify_sends_one_datagram_to_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert sd_notify("READY=1\nSTATUS=in sync", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(4096) == b"READY=1\nSTATUS=in sync"
    assert not sd_notify("READY=1", {})


def test_watchdog_interval_is_half_of_watchdog_sec_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_status_and_reloading_messages() -> None:
    assert status_line(None, 0, 0, "resync") == "STATUS=in sync"
    assert status_line(None, 3, 5, "spec edit") == (
        "STATUS=converged (spec edit): 3 changes, 5 kernel writes"
    )
    assert status_line("nft: boom\nmore", 0, 0, "start") == "STATUS=error: nft: boom"
    assert reloading_message(5_000_000) == "RELOADING=1\nMONOTONIC_USEC=5000"
