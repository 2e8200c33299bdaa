"""Sleeve control for one connection (FACTS.md §2.3, §7.2, §7.3): sans-I/O.

Inputs are events (confirmed, special frame received, TCP control message, kernel said
EMSGSIZE, time passed); outputs are actions for the I/O shell to perform in order. The shell
owns the sockets and the sealing; this class owns heartbeats, the fragmentation test and the
path-MTU search, and decides when the connection is established or has failed.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from weaved.datapath.sleeve.wire import (
    ETHERNET_OVERHEAD,
    FRAG_TEST_SIZE,
    PMTU_TRIGGER_SIZE,
    UDP_OVERHEAD,
    heartbeat_frame,
    heartbeat_uid,
)

__all__ = [
    "DEFAULT_MTU",
    "FAST_HEARTBEAT",
    "HEARTBEAT_TIMEOUT",
    "SLOW_HEARTBEAT",
    "SUBTAG_FRAGMENTATION_RECEIVED",
    "SUBTAG_HEARTBEAT_ACK",
    "SUBTAG_PMTU_VERIFIED",
    "Action",
    "Established",
    "Failed",
    "RemoteAddrChanged",
    "SendControl",
    "SendSpecial",
    "SleeveControl",
    "UdpAddr",
]

log = logging.getLogger(__name__)

FAST_HEARTBEAT = 0.5
SLOW_HEARTBEAT = 10.0
HEARTBEAT_TIMEOUT = 60.0
FRAG_TEST_INTERVAL = 300.0
MTU_VERIFY_ATTEMPTS = 8
MTU_VERIFY_TIMEOUT = 0.010  # doubled with each attempt
MTU_LOWER_BOUND = 552
DEFAULT_MTU = 65535

SUBTAG_HEARTBEAT_ACK = 1
SUBTAG_FRAGMENTATION_RECEIVED = 2
SUBTAG_PMTU_VERIFIED = 3

UdpAddr = tuple[str, int]


@dataclass(frozen=True)
class SendSpecial:
    """Send `frame` (src us, dst remote) on the DF path (raw, DF set) or the normal one."""

    frame: bytes
    df: bool
    what: str


@dataclass(frozen=True)
class SendControl:
    subtag: int
    body: bytes = b""


@dataclass(frozen=True)
class Established:
    pass


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class RemoteAddrChanged:
    addr: UdpAddr


Action = SendSpecial | SendControl | Established | Failed | RemoteAddrChanged


class SleeveControl:
    def __init__(self, conn_uid: int, remote_addr: UdpAddr | None, overhead_df: int) -> None:
        self.conn_uid = conn_uid
        self.remote_addr = remote_addr
        self.overhead_df = overhead_df
        self.mtu = DEFAULT_MTU
        self.max_payload = DEFAULT_MTU - UDP_OVERHEAD
        self.stack_frag = False
        self.established = False
        self.failed = False
        self._interval = 0.0  # 0: not confirmed yet
        self._acked_heartbeat = False
        self._next_heartbeat: float | None = None
        self._heartbeat_deadline: float | None = None
        self._next_frag_test: float | None = None
        self._mtu_deadline: float | None = None
        self._mtu_tests_sent = 0
        self._mtu_highest_good = 0
        self._mtu_lowest_bad = 0
        self._mtu_candidate = 0

    # --- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.failed:
            return None
        times = [
            t
            for t in (
                self._next_heartbeat,
                self._heartbeat_deadline,
                self._next_frag_test,
                self._mtu_deadline,
            )
            if t is not None
        ]
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.failed:
            return actions
        if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
            self.failed = True
            return [Failed("timed out waiting for UDP heartbeat")]
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            actions += self._send_heartbeat(now)
        if self._next_frag_test is not None and now >= self._next_frag_test:
            self._next_frag_test = now + FRAG_TEST_INTERVAL
            actions += self._send_frag_test()
        if self._mtu_deadline is not None and now >= self._mtu_deadline:
            self._mtu_deadline = None
            actions += self._mtu_test_failed(now)
        return actions

    # --- events ---------------------------------------------------------------------------

    def confirm(self, now: float) -> list[Action]:
        if self._interval:
            return []
        self._interval = FAST_HEARTBEAT
        actions: list[Action] = []
        if self.remote_addr is not None:
            actions += self._send_heartbeat(now)
        self._heartbeat_deadline = now + HEARTBEAT_TIMEOUT
        return actions

    def on_heartbeat(self, frame: bytes, sender: UdpAddr, now: float) -> list[Action]:
        if heartbeat_uid(frame) != self.conn_uid:
            return []
        actions: list[Action] = []
        if self.remote_addr is None:
            self.remote_addr = sender
            actions.append(RemoteAddrChanged(sender))
            if self._interval:
                actions += self._send_heartbeat(now)
        elif self.remote_addr != sender:
            log.info("sleeve peer UDP address changed addr=%s:%d", *sender)
            self.remote_addr = sender
            actions.append(RemoteAddrChanged(sender))
        if not self._acked_heartbeat:
            self._acked_heartbeat = True
            actions.append(SendControl(SUBTAG_HEARTBEAT_ACK))
        if self._heartbeat_deadline is not None:
            self._heartbeat_deadline = now + HEARTBEAT_TIMEOUT
        return actions

    def on_frag_test(self, frame: bytes) -> list[Action]:
        if any(frame):
            return []
        return [SendControl(SUBTAG_FRAGMENTATION_RECEIVED)]

    def on_mtu_probe(self, frame: bytes) -> list[Action]:
        return [
            SendControl(SUBTAG_PMTU_VERIFIED, struct.pack(">H", len(frame) - ETHERNET_OVERHEAD))
        ]

    def on_control(self, subtag: int, body: bytes, now: float) -> list[Action]:
        if subtag == SUBTAG_HEARTBEAT_ACK:
            return self._heartbeat_acked(now)
        if subtag == SUBTAG_FRAGMENTATION_RECEIVED:
            self.stack_frag = True
            return []
        if subtag == SUBTAG_PMTU_VERIFIED:
            if len(body) < 2:
                log.warning("sleeve received truncated MTU test ack")
                return []
            mtu = struct.unpack(">H", body[:2])[0]
            if mtu != self._mtu_candidate:
                return []
            self._mtu_highest_good = mtu
            return self._search_mtu(now)
        log.info("sleeve ignoring unknown control message tag=%d", subtag)
        return []

    def on_send_too_big(self, underlay_pmtu: int, now: float) -> list[Action]:
        """The kernel refused a DF send (EMSGSIZE) and reported this path MTU."""
        mtu = underlay_pmtu - self.overhead_df
        if self._mtu_candidate and mtu >= self._mtu_candidate:
            return []
        self._mtu_highest_good = MTU_LOWER_BOUND
        self._mtu_lowest_bad = mtu + 1
        self._mtu_candidate = mtu
        self._mtu_tests_sent = 0
        self.max_payload = underlay_pmtu - UDP_OVERHEAD
        self.mtu = mtu
        return self._send_mtu_test(now)

    # --- internals ------------------------------------------------------------------------

    def _send_heartbeat(self, now: float) -> list[Action]:
        self._next_heartbeat = now + self._interval
        return [SendSpecial(heartbeat_frame(self.conn_uid), df=True, what="heartbeat")]

    def _heartbeat_acked(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self._interval != SLOW_HEARTBEAT:
            self._interval = SLOW_HEARTBEAT
            if self._next_heartbeat is not None:
                self._next_heartbeat = now + SLOW_HEARTBEAT
            if not self.established:
                self.established = True
                actions.append(Established())
        self._next_frag_test = now + FRAG_TEST_INTERVAL
        actions += self._send_frag_test()
        # An oversized DF send makes the kernel report the path MTU (EMSGSIZE), which starts
        # the probe search in on_send_too_big.
        actions.append(SendSpecial(bytes(PMTU_TRIGGER_SIZE), df=True, what="pmtu-trigger"))
        return actions

    def _send_frag_test(self) -> list[Action]:
        self.stack_frag = False
        return [SendSpecial(bytes(FRAG_TEST_SIZE), df=False, what="fragmentation-test")]

    def _send_mtu_test(self, now: float) -> list[Action]:
        self._mtu_deadline = now + MTU_VERIFY_TIMEOUT * (1 << self._mtu_tests_sent)
        self._mtu_tests_sent += 1
        frame = bytes(self._mtu_candidate + ETHERNET_OVERHEAD)
        return [SendSpecial(frame, df=True, what=f"mtu-probe {self._mtu_candidate}")]

    def _mtu_test_failed(self, now: float) -> list[Action]:
        if self._mtu_tests_sent < MTU_VERIFY_ATTEMPTS:
            return self._send_mtu_test(now)
        self._mtu_lowest_bad = self._mtu_candidate
        return self._search_mtu(now)

    def _search_mtu(self, now: float) -> list[Action]:
        if self._mtu_highest_good + 1 >= self._mtu_lowest_bad:
            mtu = self._mtu_highest_good
            log.info("sleeve effective MTU verified mtu=%d", mtu)
            self._mtu_deadline = None
            self._mtu_candidate = 0
            self.max_payload = mtu + self.overhead_df - UDP_OVERHEAD
            self.mtu = mtu
            return []
        self._mtu_candidate = (self._mtu_highest_good + self._mtu_lowest_bad) // 2
        self._mtu_tests_sent = 0
        return self._send_mtu_test(now)
