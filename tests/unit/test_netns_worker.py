"""Where `run_in_netns` runs its work: a worker thread steps in and back itself; the main thread
never moves; a thread that cannot step back ends the process (setns(2) replaced: no root)."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from weaved.attach import netns


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every setns as (thread, fd), without moving anything."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(netns, "_setns", lambda fd: calls.append((threading.get_ident(), fd)))
    return calls


def test_a_worker_thread_does_the_work_itself_and_steps_back(
    entered: list[tuple[int, int]],
) -> None:
    with ThreadPoolExecutor(1) as pool:
        worker, ran_on = pool.submit(
            lambda: (threading.get_ident(), netns.run_in_netns(1234, threading.get_ident))
        ).result()
    assert ran_on == worker
    assert [t for t, _ in entered] == [worker, worker]
    assert entered[0][1] == 1234 and entered[1][1] != 1234  # in, then back home


def test_the_main_thread_never_moves(entered: list[tuple[int, int]]) -> None:
    ran_on = netns.run_in_netns(1234, threading.get_ident)
    assert ran_on != threading.get_ident()
    assert {t for t, _ in entered} == {ran_on}


def test_the_work_is_undone_when_it_raises(entered: list[tuple[int, int]]) -> None:
    def fail() -> None:
        raise ValueError("inside")

    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="inside"):
        pool.submit(lambda: netns.run_in_netns(1234, fail)).result()
    assert len(entered) == 2  # stepped back all the same


STUCK = """
import logging, threading
from weaved.attach import netns
logging.basicConfig()
calls = []
def setns(fd):
    calls.append(fd)
    if len(calls) == 2:
        raise OSError(1, "refused")
netns._setns = setns
worker = threading.Thread(target=lambda: netns.run_in_netns(1234, lambda: None))
worker.start()
worker.join()
print("went on")
"""


def test_a_thread_that_cannot_step_back_ends_the_process() -> None:
    proc = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 70
    assert "went on" not in proc.stdout
    assert "cannot return a thread to its network namespace" in proc.stderr


def test_joining_the_process_namespace_enters_the_main_threads(
    entered: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread started inside a container (the announcements' one) moves to the process's
    namespace: /proc/self/ns/net, the main thread's (/proc/self is the thread group's)."""
    opened: list[str] = []
    real_open = netns.os.open

    def spy(path: str, flags: int) -> int:
        opened.append(path)
        return real_open("/dev/null", flags)

    monkeypatch.setattr(netns.os, "open", spy)
    netns.join_the_process_netns()
    assert opened == ["/proc/self/ns/net"] and len(entered) == 1
