"""The daemon's memory allocator settings.

pyroute2 reads netlink through asyncio's datagram transport, which receives into a 256 KiB
buffer and shrinks it to the datagram's size. glibc's malloc raises its mmap threshold once
such a buffer is freed, after which every one comes from the heap and the shrunk tails leave
holes a later 256 KiB buffer does not fit: the heap grew by ~75 KiB per dump of a 200-port
bridge, never given back (RSS +0.5 to 1 MB per attach/detach cycle in
bench/reconcile/containers.py, with no Python object retained). A fixed threshold keeps
those buffers mmapped (returned to the kernel when freed), for a syscall per read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt(3)
MMAP_THRESHOLD = 128 * 1024  # glibc's default, fixed (setting it stops the dynamic raise)


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its default; False where there is no glibc mallopt."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return done
