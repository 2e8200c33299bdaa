"""Apply with a safety net: after a changed spec is applied, probes must pass within the
confirm timeout, or the daemon converges back to the last good spec.

Probes are chosen before the change and run against the old spec first: one that cannot pass
now (a peer that is down anyway) is not held against the new spec. The defaults: every peer
connected now is connected again, and weaveDNS answers for a name it knows; the spec adds
ping, TCP connect, DNS name and command probes. A rolled back file stays on disk untouched
but not in force until its content changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from weaved.mesh.gossip_api import format_peer_name
from weaved.part import Component
from weaved.spec.models import ProbeSpec, Spec

log = logging.getLogger(__name__)
RECORD = "rolled-back.json"  # in the state dir: a restart keeps the refused file out of force
PROBE_SECONDS = 2.0  # one attempt of one probe
ROUND_PAUSE = 0.5


@dataclass(frozen=True)
class Probe:
    kind: str  # peer, dns-server, ping, tcp, dns, command
    target: str
    argv: tuple[str, ...] = ()

    def describe(self) -> str:
        return {
            "peer": f"peer {self.target} connected",
            "dns-server": f"weaveDNS answers for {self.target}",
            "ping": f"ping {self.target}",
            "tcp": f"TCP connect to {self.target}",
            "dns": f"{self.target} resolves",
            "command": f"command {' '.join(self.argv)!r} exits 0",
        }[self.kind]


def spec_probes(spec: Spec) -> list[Probe]:
    """The user's probes of `spec` (pure)."""
    return [_probe(p) for p in spec.rollout.probes]


def _probe(p: ProbeSpec) -> Probe:
    if p.ping is not None:
        return Probe("ping", p.ping)
    if p.tcp is not None:
        return Probe("tcp", p.tcp)
    if p.dns is not None:
        return Probe("dns", p.dns)
    return Probe("command", (p.command or [""])[0], tuple(p.command or ()))


@dataclass
class Rollback:
    at: float
    why: str
    digest: str  # the refused file's content; a new content lifts it
    bad_spec: Spec


@dataclass(frozen=True)
class Guard:
    good: Spec
    good_raw: bytes
    probes: tuple[Probe, ...]
    timeout: float


class _Config(Protocol):
    @property
    def state_dir(self) -> Path: ...


class _Daemon(Protocol):
    """What a rollout sees of the daemon (`service.Daemon`, which imports this module)."""

    @property
    def config(self) -> _Config: ...

    def part(self, name: str) -> Component | None: ...


class Rollout:
    def __init__(self, daemon: _Daemon) -> None:
        self.daemon = daemon
        self.rollbacks = 0
        self.last: Rollback | None = None
        self._record = daemon.config.state_dir / RECORD
        self._kept: dict[str, object] = _read_record(self._record)
        # the spec last applied without a net, and the guard `apply --confirm` would run
        self._unconfirmed: tuple[Spec, Guard] | None = None

    # --- the refused file, across restarts ------------------------------------------------
    def refuses(self, digest: str, spec: Spec) -> bool:
        """Whether `digest` is the content rolled back before (this run or a previous one);
        then it is remembered as in force nowhere, with `spec` what it would be."""
        if self.last is not None and self.last.digest == digest:
            return True
        if self._kept.get("digest") != digest:
            return False
        at = self._kept.get("at")
        why = str(self._kept.get("why", ""))
        self.last = Rollback(at if isinstance(at, float) else time.time(), why, digest, spec)
        log.warning(
            "the spec file is the one rolled back before (%s); the last good spec stays in force"
            " until the file changes",
            why,
        )
        return True

    def lift(self) -> None:
        """A new content of the file: what was rolled back is history."""
        self.last = None
        if self._kept:
            self._kept = {}
            self._record.unlink(missing_ok=True)

    # --- probes -------------------------------------------------------------------------
    def _connected_peers(self) -> set[str]:
        from weaved.mesh.part import MeshPart

        mesh = self.daemon.part("mesh")
        if not isinstance(mesh, MeshPart):
            return set()
        return {
            format_peer_name(c.peer)
            for c in mesh.router.status().connections
            if c.state.value == "established" and c.peer is not None
        }

    def _dns_listen(self) -> tuple[str, list[str]] | None:
        """weaveDNS's address and the names it knows, when it serves."""
        from weaved.dns.part import DnsPart

        dns = self.daemon.part("dns")
        if not isinstance(dns, DnsPart) or not dns.listen:
            return None
        return dns.listen, [e.hostname for e in dns.service.zone.entries() if e.live]

    def default_probes(self) -> list[Probe]:
        probes = [Probe("peer", name) for name in sorted(self._connected_peers())]
        dns = self._dns_listen()
        if dns is not None and dns[1]:
            probes.append(Probe("dns-server", dns[1][0]))
        return probes

    async def passes(self, probe: Probe) -> bool:
        try:
            return await asyncio.wait_for(self._run(probe), PROBE_SECONDS)
        except (TimeoutError, OSError):
            return False

    async def _run(self, probe: Probe) -> bool:
        if probe.kind == "peer":
            return probe.target in self._connected_peers()
        if probe.kind in ("dns-server", "dns"):
            return await self._dns_answers(probe.target)
        if probe.kind == "tcp":
            host, port = probe.target.rsplit(":", 1)
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        argv = ("ping", "-c", "1", "-W", "1", probe.target) if probe.kind == "ping" else probe.argv
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            return await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _dns_answers(self, name: str) -> bool:
        from dnslib import DNSRecord

        dns = self._dns_listen()
        if dns is None:
            return False
        host, _, port = dns[0].rpartition(":")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        query = DNSRecord.question(name, "A")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not answer.done():
                    answer.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=(host, int(port or 53))
        )
        try:
            transport.sendto(bytes(query.pack()))
            reply = DNSRecord.parse(await answer)
            return reply.header.rcode == 0 and bool(reply.rr)
        finally:
            transport.close()

    async def select(self, probes: list[Probe]) -> list[Probe]:
        """Of `probes`, those that pass now, under the spec still in force."""
        results = await asyncio.gather(*(self.passes(p) for p in probes))
        for probe, ok in zip(probes, results, strict=True):
            if not ok:
                log.info("rollout probe left out: it fails already probe=%r", probe.describe())
        return [p for p, ok in zip(probes, results, strict=True) if ok]

    async def failing(self, probes: tuple[Probe, ...], timeout: float) -> list[Probe]:
        """The probes still failing when `timeout` runs out (none: all passed)."""
        pending = list(probes)
        deadline = time.monotonic() + timeout
        while pending:
            results = await asyncio.gather(*(self.passes(p) for p in pending))
            pending = [p for p, ok in zip(pending, results, strict=True) if not ok]
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(ROUND_PAUSE, max(0.0, deadline - time.monotonic())))
        return pending

    # --- the daemon's hook ----------------------------------------------------------------
    async def prepare(
        self, good: Spec | None, good_raw: bytes, new: Spec, confirm: float | None
    ) -> Guard | None:
        """Before a changed spec is applied: the probes to hold it to, or None (no net)."""
        timeout = confirm or new.rollout.confirm
        if good is None or good == new or not timeout:
            return None
        self._unconfirmed = None
        wanted = (self.default_probes() if new.rollout.default_probes else []) + spec_probes(new)
        probes = await self.select(wanted)
        log.info(
            "rollout: applying a changed spec, confirming within %ss probes=%s",
            timeout,
            "; ".join(p.describe() for p in probes) or "none that pass now",
        )
        return Guard(good, good_raw, tuple(probes), float(timeout))

    def unguarded(
        self, good: Spec | None, good_raw: bytes, new: Spec, confirm: float | None
    ) -> Guard | None:
        """A change applied without a net is remembered with the peers connected before it,
        so that a later `weaved apply --confirm T` (the daemon picked the edit up first) can
        still hold it to its probes; that call returns the guard to run."""
        if good is not None and good != new:
            peers = [Probe("peer", name) for name in sorted(self._connected_peers())]
            probes = tuple(peers + spec_probes(new))
            self._unconfirmed = (new, Guard(good, good_raw, probes, 0))
            return None
        held = self._unconfirmed
        if confirm and held is not None and held[0] == new:
            self._unconfirmed = None
            log.info("rollout: confirming the spec in force within %ss", confirm)
            return Guard(held[1].good, held[1].good_raw, held[1].probes, float(confirm))
        return None

    def rolled_back(self, guard: Guard, bad: Spec, digest: str, failed: list[Probe]) -> None:
        why = "; ".join(f"{p.describe()}: failed" for p in failed)
        self.rollbacks += 1
        self.last = Rollback(time.time(), why, digest, bad)
        self._kept = {"digest": digest, "why": why, "at": self.last.at}
        try:
            self._record.write_text(json.dumps(self._kept) + "\n")
        except OSError as exc:  # costs only the memory of it across a restart
            log.warning("cannot record the rollback path=%s error=%s", self._record, exc.strerror)
        log.warning(
            "ROLLED BACK to the last good spec after %ss because %s; the spec file stays on"
            " disk but not in force until it changes",
            guard.timeout,
            why,
        )

    def status_line(self) -> str | None:
        if self.last is None:
            return None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.last.at))
        return f"rolled back at {stamp} because {self.last.why}"


def _read_record(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("digest"), str) else {}
