"""What every `weaved` command module shares: printing and finding the running daemon."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from weaved.context import Context
from weaved.control import Client
from weaved.errors import DaemonError

Command = Callable[[argparse.Namespace, Context], int]
EXIT_CHANGES = 2


def say(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def daemon_for(ctx: Context) -> Client | None:
    """The running daemon serving this spec file, if any."""
    client = Client(str(ctx.socket_path))
    try:
        info = client.call("GET", "/ping", timeout=2.0)
    except DaemonError:
        return None
    if Path(info.get("spec", "")).resolve() != ctx.spec_path.resolve():
        return None
    return client
