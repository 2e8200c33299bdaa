"""Wiring of the daemon process: the kernel dataplane and the components."""

from __future__ import annotations

import asyncio

from weaved.context import Context
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.dataplane.kernel import KernelDataplane


def run_daemon(ctx: Context, resync_seconds: float = 30.0) -> int:
    config = DaemonConfig(ctx.spec_path, ctx.state_dir, ctx.socket_path, resync_seconds)

    async def main() -> int:
        daemon = Daemon(config, KernelDataplane)
        return await daemon.run()

    return asyncio.run(main())
