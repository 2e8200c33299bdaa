"""The daemon's memory allocator settings, and freed memory given back to the kernel.

pyroute2 reads netlink through asyncio's datagram transport, which receives into a 256 KiB
buffer and shrinks it to the datagram's size. glibc's malloc raises its mmap threshold once
such a buffer is freed, after which every one comes from the heap and the shrunk tails leave
holes a later 256 KiB buffer does not fit: the heap grew by ~75 KiB per dump of a 200-port
bridge, never given back (RSS +0.5 to 1 MB per attach/detach cycle in
bench/reconcile/containers.py, with no Python object retained). A fixed threshold keeps
those buffers mmapped (returned to the kernel when freed), for a syscall per read; one
arena for all threads keeps what short-lived threads (one per container namespace entered)
free where the next can use it.

What stays is fragmentation: free pages between live objects, which glibc returns only on
malloc_trim(3). Attaching and detaching made ~0.3 MB of them per cycle; trimming every few
seconds (a few milliseconds each) gives them back.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt(3)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's default, fixed (setting it stops the dynamic raise)
ARENAS = 1
TRIM_SECONDS = 10.0


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its default and one arena; False where there is no
    glibc mallopt."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENAS))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return done


async def give_back_freed_memory(seconds: float = TRIM_SECONDS) -> None:
    """malloc_trim(3) every `seconds`, for as long as the daemon runs (nothing without glibc)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    while True:
        await asyncio.sleep(seconds)
        trim(0)
