"""Watch the spec file: editors replace files, so the directory is watched and filtered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from watchfiles import awatch

log = logging.getLogger(__name__)


async def watch_file(path: Path, on_change: Callable[[], None], stop: asyncio.Event) -> None:
    target = path.resolve()
    directory = target.parent
    async for changes in awatch(
        directory, stop_event=stop, debounce=100, step=20, recursive=False, rust_timeout=1000
    ):
        if any(Path(changed).resolve() == target for _kind, changed in changes):
            log.info("spec file changed path=%s", target)
            on_change()
