"""Containers in the daemon: attach/detach with IPAM addresses and DNS names, re-observed (not
recreated) after a restart, released when the container dies or its namespace disappears
(`reobserve.py`, which this part builds on).

Beside it: `addresses.py` (what a request means in IPAM's terms), `weavedns.py` (names,
resolv.conf), `docker_follow.py` (Docker's events), `routes.py` (the control socket) and
`store.py` (`<state>/attachments.json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from weaved.attach import (
    Attachment,
    Detached,
    Target,
    TargetKind,
    detach,
    reassert,
    resolve_target,
)
from weaved.attach.addresses import addresses_for, held_by, release, to_detach
from weaved.attach.docker_follow import DockerFollower, EventSource
from weaved.attach.reobserve import ReobservedPart, docker_url_of
from weaved.attach.requests import AttachRequest, DetachRequest
from weaved.attach.routes import attach_routes
from weaved.attach.weavedns import remove_resolv_conf
from weaved.compile.antispoof import Pair, pairs_of
from weaved.compile.dns import uses_link_address
from weaved.control import Handler
from weaved.dataplane.nftsets import remove_elements
from weaved.dns.part import DnsPart
from weaved.engine.reconcile import RuntimeFacts
from weaved.integrations.docker_events import watch_docker_events
from weaved.ipam.errors import PersistError
from weaved.ipam.part import IpamPart, Wait
from weaved.model.addresses import ipv4_network
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.part import Host
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)

SETTLE_SECONDS = 60.0  # longest a raced call waits for the converges it overlapped
FIRST_LOOK_SECONDS = 10.0  # longest an attach waits for the first look after a start


class AttachPart(ReobservedPart):
    name = "attach"

    def __init__(
        self,
        spec: Spec,
        state_dir: Path,
        ipam: IpamPart,
        dns: DnsPart | None,
        events: EventSource = watch_docker_events,
    ) -> None:
        super().__init__(spec, state_dir, ipam, dns)
        self.docker = DockerFollower(self, events)
        self._settling: set[asyncio.Task[None]] = set()
        self._subnets: frozenset[ipaddress.IPv4Network] = frozenset()
        self.waits: dict[str, Wait] = {}  # attach request id → its place in IPAM's queue
        self.also_ps: Callable[[], str] = str  # `weaved ps` lines of other parts
        if dns is not None:
            dns.container_key = self.key_for

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        self.records = self._load()
        self._links.open()
        self._spawn(self._watch_namespaces(), "attach-watch")
        self._spawn(self.docker.run(), "attach-docker")

    def spec_changed(self, spec: Spec) -> None:
        moved = docker_url_of(spec) != self.docker_url
        self.spec = spec
        if moved:
            self.docker.moved.set()

    # --- attach / detach ----------------------------------------------------------------
    async def attach(
        self, request: AttachRequest, wait: Wait | None = None
    ) -> tuple[Attachment, list[ipaddress.IPv4Interface]]:
        """Plug the target in with the request's addresses; returns the attachment and the
        addresses of this call (what `weaved attach` prints). Attaches of different
        containers run at once; the converge it asks for is not waited for (the veth is
        already a port of the bridge as the plan wants it)."""
        url = self.docker_url
        target = await self._plumbing.run(lambda: resolve_target(request.target, url))
        veth = self._veth_of(target)
        async with self._inflight.hold(target.key, veth, target.second_veth):
            self._touch(target.key)
            since = self._converges.since()
            # After a restart, addresses of containers gone meanwhile are freed first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_look.wait(), FIRST_LOOK_SECONDS)
            held = {c.addr for c in self.ipam.allocator.lookup(target.key)}
            addresses = await addresses_for(
                self.ipam, self.spec, target, request.addresses, wait, durable=False
            )
            multicast = (
                self.spec.multicast_route
                if request.multicast_route is None
                else request.multicast_route
            )
            plugged = await self._plug_while_ipam_writes(
                target, addresses, multicast, veth, [a for a in addresses if int(a.ip) not in held]
            )
            attached = replace(plugged, dns=request.dns)
            async with self._lock:
                self._touch(target.key)
                self.records[target.key] = attached
                self._adopted.add(target.key)
            await self._persist()
            if request.dns:  # not with Weave's `attach --without-dns` (kept in the record)
                await self._register_dns(target, attached.addresses)
        if self._converges.raced(since):
            self._settle(target, attached.veth, [a.ip for a in addresses], present=True)
        known = self._known_subnets()
        if any(a.network not in known for a in attached.addresses):
            self.host.mark_dirty("attach in a new subnet")
        log.info(
            "attached target=%s addresses=%s", target.label, ",".join(str(a) for a in addresses)
        )
        return attached, addresses

    async def _plug_while_ipam_writes(
        self,
        target: Target,
        addresses: list[ipaddress.IPv4Interface],
        multicast: bool,
        veth: str,
        taken: list[ipaddress.IPv4Interface],
    ) -> Attachment:
        """Plug in while IPAM writes the addresses to disk (~30 ms of an attach waited for
        that write first with 10 at once); return once both are done. If the write fails,
        the addresses this call newly `taken` leave the container and IPAM again (nothing is
        left half done) and the write's error is raised."""
        on_disk = asyncio.ensure_future(self.ipam.synced())
        try:
            plugged = await self._plug(target, addresses, multicast, veth)
        except BaseException:
            on_disk.cancel()  # the allocation stays the container's, as before (written soon)
            raise
        try:
            await on_disk
        except PersistError:
            if taken:
                await self._plumbing.run(lambda: detach(target, taken, veth))
                release(self.ipam, target, taken)
            raise
        return plugged

    async def detach(self, request: DetachRequest) -> list[ipaddress.IPv4Interface]:
        """Weave's detach: the addresses named (`net:` ones: the container's IPAM address in
        that subnet), with none named the one IPAM gave it in the default subnet."""
        url = self.docker_url
        target = await self._plumbing.run(lambda: resolve_target(request.target, url))
        veth = self._veth_of(target)
        async with self._inflight.hold(target.key, veth, target.second_veth):
            self._touch(target.key)
            since = self._converges.since()
            held = held_by(target, self.records)
            wanted = to_detach(
                self.ipam, self.spec, target, held, request.addresses, request.target
            )
            detached = await self._plumbing.run(lambda: detach(target, wanted, veth))
            await self._plumbing.run(lambda: remove_elements(self._unsent(target, detached)))
            async with self._lock:
                self._touch(target.key)
                self._unrecord(target, wanted, detached)
            await self._persist()
        if self._converges.raced(since):
            self._settle(target, veth, [a.ip for a in wanted], present=False)
        return list(wanted)

    def _veth_of(self, target: Target) -> str:
        """The container's host veth as recorded (a named netns's may have its second name,
        model.netns_veth_ids), else the one its target names."""
        known = self.records.get(target.key)
        return known.veth if known is not None else target.veth

    def _unsent(self, target: Target, detached: Detached) -> list[Pair]:
        """The (port, address) pairs of a record the detach drops whole that the kernel work
        did not take out of the anti-spoofing set (its namespace was gone already)."""
        known = self.records.get(target.key)
        if known is None or not (detached.veth_removed or not detached.remaining):
            return []
        return pairs_of(
            known.veth, {i.ip for i in known.addresses} - {i.ip for i in detached.removed}
        )

    def _unrecord(
        self, target: Target, removed: list[ipaddress.IPv4Interface], detached: Detached
    ) -> None:
        """A detach's addresses back to IPAM, its names out of weaveDNS, its record updated."""
        release(self.ipam, target, removed)
        if self.dns is not None:
            for iface in removed:
                self.dns.service.dns_remove(target.key, [str(iface.ip)])
        if detached.veth_removed or not detached.remaining:
            self._adopted.discard(target.key)
            self.records.pop(target.key, None)
            if target.kind is TargetKind.NETNS:
                remove_resolv_conf(target.name)
            log.info("detached target=%s (no address left)", target.label)
        else:
            known = self.records.get(target.key)
            if known is not None:
                self.records[target.key] = replace(known, addresses=detached.remaining)

    def key_for(self, text: str) -> str:
        """An attached container as the user names it (name, netns, PID, short or full ID) →
        the identity its addresses and names are kept under; unknown text is kept as is."""
        for key, a in self.records.items():
            t = a.target
            if text in (key, t.name, t.label) or (len(text) >= 12 and key.startswith(text)):
                return key
        return text

    # --- facts, views, API --------------------------------------------------------------
    def _known_subnets(self) -> frozenset[ipaddress.IPv4Network]:
        """Subnets the firewall's isolation rules already name (compile/firewall._subnets):
        the default subnet and those of the containers the last converge knew."""
        default = self.spec.ipalloc.default_subnet or self.spec.ipalloc.range
        return self._subnets | {ipv4_network(default)}  # remembered: asked at each attach

    def _settle(
        self, target: Target, veth: str, ips: list[ipaddress.IPv4Address], *, present: bool
    ) -> None:
        """After the converges that overlapped an attach (detach) have finished, make its
        elements and route back again (remove them again), unless a later call for the
        container changed its addresses meanwhile."""

        async def settle() -> None:
            await self._converges.settled(SETTLE_SECONDS)
            async with self._inflight.hold(target.key):
                known = self.records.get(target.key)
                held = {a.ip for a in known.addresses} if known is not None else set()
                mine = [ip for ip in ips if (ip in held) is present]
                back = DNS_LINK_ADDRESS if uses_link_address(self.spec) else ""
                await self._plumbing.run(lambda: reassert(veth, mine, back, present=present))

        task = asyncio.create_task(settle(), name="attach-settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        self._converges.facts_taken()
        ports = tuple(
            WantedPort(a.veth, CONTAINER_FLAGS, f"container {a.target.label}")
            for a in self.records.values()
        )
        out = with_containers(facts, ports, {a.veth: a.addresses for a in self.records.values()})
        self._subnets = frozenset(ipaddress.IPv4Network(n) for n in out.container_subnets)
        return out

    def converge(self, spec: Spec) -> int:
        self._converges.converged()
        return 0

    async def stop(self) -> None:
        for task in list(self._settling):
            task.cancel()
        await asyncio.gather(*self._settling, return_exceptions=True)
        await super().stop()
        self._links.close()

    def routes(self) -> dict[tuple[str, str], Handler]:
        return attach_routes(self)


def with_containers(
    facts: RuntimeFacts,
    ports: tuple[WantedPort, ...],
    addresses: dict[str, tuple[ipaddress.IPv4Interface, ...]],
) -> RuntimeFacts:
    """`facts` plus the containers a part plugged in: their veths as ports of the bridge, and
    their addresses by veth and subnets (for the firewall and routes)."""
    subnets = {str(i.network) for each in addresses.values() for i in each}
    ips = {veth: tuple(str(i.ip) for i in each) for veth, each in addresses.items()}
    return replace(
        facts,
        container_subnets=tuple(sorted({*facts.container_subnets, *subnets})),
        ports=facts.ports + ports,
        container_ports=tuple(sorted({**dict(facts.container_ports), **ips}.items())),
    )
