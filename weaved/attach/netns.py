"""Work inside another network namespace, then back where the thread was.

setns(2) with CLONE_NEWNET changes only the calling thread. A worker thread (a plumbing thread)
enters the target namespace itself, runs the function (whose sockets, netlink included, and
/proc/sys/net writes all belong to that namespace) and steps back before it does anything else:
a thread started and joined per call cost ~0.25 ms of CPU and a few GIL hand-overs, every
attach's. The main thread never moves (Python runs signal handlers there, at any moment): its
work runs on a short-lived thread of its own. A thread that cannot step back ends the process
rather than go on in a container's namespace.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

from weaved.errors import Bug, WeavedError

T = TypeVar("T")
log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
THREAD_NETNS = "/proc/thread-self/ns/net"
PROCESS_NETNS = "/proc/self/ns/net"  # the main thread's: it never moves

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


class NetnsGone(WeavedError):
    """The namespace to work in no longer exists (its container died)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def inode_of(path: str) -> int:
    """The namespace's inode number (equal for two paths naming one namespace)."""
    return os.stat(path).st_ino


def current_netns_inode() -> int:
    return inode_of(THREAD_NETNS)


@contextmanager
def opened(path: str) -> Iterator[int]:
    """An fd of the namespace at `path`, held for the whole block (so it cannot vanish)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(f"network namespace {path} does not exist (any more)") from None
    except OSError as exc:
        raise NetnsGone(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def run_in_netns(netns_fd: int, fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run `fn()` inside the namespace `netns_fd`; return or raise what `fn` did. On a thread
    other than the main one, that thread does it (`timeout` does not apply)."""
    if threading.current_thread() is threading.main_thread():
        return _on_a_thread(netns_fd, fn, timeout)
    return _here(netns_fd, fn, _step_back)


def _here(netns_fd: int, fn: Callable[[], T], step_back: Callable[[int], None]) -> T:
    """`fn()` on this thread inside `netns_fd`, then `step_back(fd of where it was)`."""
    home = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            return fn()
        finally:
            step_back(home)
    finally:
        os.close(home)


def _step_back(home: int) -> None:
    try:
        _setns(home)
    except OSError as exc:
        _cannot_leave(exc)


def join_the_process_netns() -> None:
    """Move the calling thread to the process's namespace (the main thread's). A thread
    starts in the namespace of the thread that started it: one started by work inside a
    container would live there and hold that namespace, so its veth, for as long as it runs."""
    try:
        fd = os.open(PROCESS_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _cannot_leave(exc)
    try:
        _step_back(fd)
    finally:
        os.close(fd)


def _cannot_leave(exc: OSError) -> NoReturn:
    # Nothing may run in a container's namespace by accident: not this thread's next job.
    log.critical("cannot return a thread to its network namespace (%s); exiting", exc)
    os._exit(70)


def _on_a_thread(netns_fd: int, fn: Callable[[], T], timeout: float) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            # Step back even though the thread is about to end: nothing may ever run in a
            # namespace by accident (failing that is this thread's error, not the process's).
            result.append(_here(netns_fd, fn, _setns))
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=body, name="netns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Bug(f"work inside a network namespace did not finish within {timeout:.0f}s")
    if error:
        raise error[0]
    if not result:
        raise Bug("work inside a network namespace ended without a result")
    return result[0]
