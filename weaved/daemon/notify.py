"""systemd's sd_notify protocol, a no-op outside systemd.

READY=1 after the first converge, STATUS=<one line> whenever the reconciler's state changes,
RELOADING=1 … READY=1 around the converge a SIGHUP asks for, WATCHDOG=1 every half of
WatchdogSec= from the event loop (a hung loop stops sending, systemd restarts the service),
STOPPING=1 on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping


def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never block the event loop on a receiver that does not read (a full queue drops it).
        sock.setblocking(False)
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def reloading_message(monotonic_ns: int | None = None) -> str:
    """RELOADING=1 with the MONOTONIC_USEC systemd ≥ 253 asks for (older ones ignore it)."""
    now = time.monotonic_ns() if monotonic_ns is None else monotonic_ns
    return f"RELOADING=1\nMONOTONIC_USEC={now // 1000}"


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), None when not asked for."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2_000_000


def status_line(error: str | None, changes: int, writes: int, reason: str) -> str:
    """STATUS=… as `systemctl status` shows it: one line."""
    if error:
        return f"STATUS=error: {error.splitlines()[0]}"
    if changes:
        return f"STATUS=converged ({reason}): {changes} changes, {writes} kernel writes"
    return "STATUS=in sync"


async def watchdog(interval: float, stop: asyncio.Event) -> None:
    """Ping from the event loop itself: if the loop hangs, the pings stop."""
    while not stop.is_set():
        sd_notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
