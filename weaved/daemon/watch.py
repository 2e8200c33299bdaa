"""Watch the spec file: editors replace files, so the directory is watched and filtered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

log = logging.getLogger(__name__)


def name_filter(target: Path) -> Callable[[Change, str], bool]:
    """Only changes to `target`'s name in its directory: other files there (the daemon's own log,
    editors' swap files) must not trigger reloads. By name, not inode, so an editor's
    write-then-rename still counts."""
    directory, name = str(target.parent), target.name

    def wanted(_change: Change, path: str) -> bool:
        changed = Path(path)
        return changed.name == name and str(changed.parent) == directory

    return wanted


async def watch_file(
    path: Path, on_change: Callable[[], None], stop: asyncio.Event, what: str = "spec file"
) -> None:
    # watchfiles logs every batch at INFO; with a log file in the watched directory that batch
    # would be our own log line, again and again.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    target = path.resolve()
    async for _changes in awatch(
        target.parent,
        watch_filter=name_filter(target),
        stop_event=stop,
        debounce=100,
        step=20,
        recursive=False,
        rust_timeout=1000,
    ):
        log.info("%s changed path=%s", what, target)
        on_change()


FileKey = tuple[int, int, int, int, int] | None


def file_key(path: Path) -> FileKey:
    """What a fix of a file changes (mode, owner, content, replacement); None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ino)


async def poll_file(
    path: Path, on_change: Callable[[], None], seen: FileKey, interval: float = 0.5
) -> None:
    """Call `on_change` whenever `path` differs from `seen`, the key it had when it was read.

    A poll rather than inotify: a chmod made between reading the file and setting up a watch
    would be lost to a watch, never to a comparison with what was read (and a stat is cheap)."""
    while True:
        now = await asyncio.to_thread(file_key, path)
        if now != seen:
            seen = now
            log.info("password file changed path=%s", path)
            on_change()
        await asyncio.sleep(interval)
