"""Containers in the daemon: attach/detach with IPAM addresses and DNS names, re-observed (not
recreated) after a restart, released when the container dies or its namespace disappears.

Beside it: `addresses.py` (what a request means in IPAM's terms), `weavedns.py` (names,
resolv.conf), `docker_follow.py` (Docker's events), `routes.py` (the control socket) and
`store.py` (`<state>/attachments.json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from weaved.attach import (
    Attachment,
    AttachmentState,
    Detached,
    Target,
    TargetKind,
    attach,
    detach,
    observe_attachments,
    reassert,
    resolve_target,
)
from weaved.attach.addresses import addresses_for, held_by, release, to_detach
from weaved.attach.converging import Converges
from weaved.attach.docker_follow import DockerFollower, EventSource
from weaved.attach.inflight import InFlight
from weaved.attach.linkwatch import LinkEvents
from weaved.attach.observe import changed_inside, container_veths
from weaved.attach.plugged_part import PluggedPart
from weaved.attach.requests import AttachRequest, DetachRequest
from weaved.attach.routes import attach_routes
from weaved.attach.weavedns import dns_routes, register_names, remove_resolv_conf
from weaved.compile.antispoof import Pair, pairs_of
from weaved.compile.dns import uses_link_address
from weaved.control import Handler
from weaved.dataplane.nftsets import remove_elements
from weaved.dns.part import DnsPart
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import WeavedError
from weaved.integrations.docker_client import docker_url
from weaved.integrations.docker_events import watch_docker_events
from weaved.ipam.address import CIDR
from weaved.ipam.errors import PersistError
from weaved.ipam.part import IpamPart, Wait
from weaved.model.addresses import ipv4_network
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.part import Host
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)

STORE = "attachments.json"
WATCH_SECONDS = 5.0
# Every check sees veths come and go from the kernel's link announcements (linkwatch.py; a
# link dump only when they did), lists the host's links (if_nameindex(3)) and looks at each
# container's namespace path every FULL_EVERY checks, and enters a few containers' namespaces
# in turn to find what was changed inside by hand (e.g. an
# address removed): each container once a minute up to 120 containers, and never more than
# INSIDE_PER_CHECK namespaces a check (1 000 containers: each every ~8 minutes), so a host's
# idle cost does not grow with its containers (entering all 1 000 at once took ~2 s of CPU).
INSIDE_EVERY = 12
INSIDE_PER_CHECK = 10
FULL_EVERY = 12  # checks: the full host-side check once a minute (a namespace whose path went)
SETTLE_SECONDS = 60.0  # longest a raced call waits for the converges it overlapped
FIRST_LOOK_SECONDS = 10.0  # longest an attach waits for the first look after a start


class AttachPart(PluggedPart[Attachment]):
    name = "attach"

    def __init__(
        self,
        spec: Spec,
        state_dir: Path,
        ipam: IpamPart,
        dns: DnsPart | None,
        events: EventSource = watch_docker_events,
    ) -> None:
        super().__init__(
            spec, state_dir, ipam, dns, store=STORE, from_json=Attachment.from_json, lost=_LOST
        )
        self.docker = DockerFollower(self, events)
        # Containers whose addresses are claimed and names registered by this process: the
        # periodic check only acts on what changed (a `dns-remove` sticks until re-attached).
        self._adopted: set[str] = set()
        # attach/detach bump the epoch and stamp the container: a resync that observed the
        # kernel before that leaves the container alone (its view is older than the call's).
        self._epoch = 0
        self._touched: dict[str, int] = {}
        # Attach/detach of different containers run at once, off the dataplane thread.
        self._inflight = InFlight()
        # An attach makes what a converge would for it and asks for none (converging.py),
        # unless it brings a subnet the isolation rules do not name yet.
        self._converges = Converges()
        self._settling: set[asyncio.Task[None]] = set()
        self._subnets: frozenset[ipaddress.IPv4Network] = frozenset()
        self._pruned = False  # IPAM forgets containers that vanished while we were down, once
        self._inside_after = ""  # the last container looked into (see _inside_turn)
        self._links = LinkEvents()  # container veths announced since the last check
        self._checks = 0
        self._first_look = asyncio.Event()  # attach allocates after that (Weave: after reclaim)
        self.waits: dict[str, Wait] = {}  # attach request id → its place in IPAM's queue
        self.also_live: Callable[[], set[str]] = set  # IPAM owners other parts keep (CNI)
        self.also_ps: Callable[[], str] = str  # `weaved ps` lines of other parts
        if dns is not None:
            dns.container_key = self.key_for

    @property
    def docker_url(self) -> str:
        return _docker_url_of(self.spec)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        self.records = self._load()
        self._links.open()
        self._spawn(self._watch_namespaces(), "attach-watch")
        self._spawn(self.docker.run(), "attach-docker")

    def spec_changed(self, spec: Spec) -> None:
        moved = _docker_url_of(spec) != self.docker_url
        self.spec = spec
        if moved:
            self.docker.moved.set()

    def _touch(self, key: str) -> None:
        self._epoch += 1
        self._touched[key] = self._epoch

    # --- re-observation: restarts, dead containers, vanished namespaces -----------------
    async def resync(self, *, deep: bool = True, inside: int = 0) -> None:
        """Compare what is attached with what we knew; nothing is recreated, and only what
        changed is acted on (claims, DNS names, the saved list, a reconcile). Not `deep`:
        containers whose veth is unchanged are not looked into (see observe_attachments),
        except the next `inside` ones in turn."""
        url = self.docker_url
        epoch = self._epoch
        first = not self._pruned
        known = list(self.records.values())
        look: bool | set[str] = deep or first
        busy = self._inflight.veths()
        self._checks += 1
        full = self._checks % FULL_EVERY == 0
        if not look and (
            not (self._links.moved(busy) or full) or await self._quiet_host(known, busy, full)
        ):
            turn = [a for a in self._inside_turn(known, inside) if a.veth not in busy]
            if not turn:
                return  # the usual case: no netlink dump decoded, no namespace entered
            changed_veths = await self._plumbing.run(lambda: changed_inside(turn))
            if not changed_veths:
                return
            look = set(changed_veths)
        seen = await self._plumbing.run(lambda: observe_attachments(url, known, deep=look))
        changed = False
        async with self._lock:
            for a in seen:
                key = a.target.key
                if self._touched.get(key, 0) > epoch or key in self._inflight:
                    continue  # attached or detached while we looked: that call knows better
                if a.state is AttachmentState.ATTACHED:
                    changed = await self._adopt(a) or changed
                    continue
                if a.state is AttachmentState.ORPHANED:
                    await self._plumbing.run(partial(detach, a.target, None))
                    self._forget(a.target, died=not first)
                elif (again := await self._replug(a)) is not None:
                    self.records[a.target.key] = again
                else:
                    # Gone while we were down (first look): freed now, as Weave's PruneOwned.
                    self._forget(a.target, died=not first)
                changed = True
            if first:
                self._prune(seen, epoch)
            self._touched = {k: e for k, e in self._touched.items() if e > epoch}
            if changed:
                self._save()
        if changed:
            self.host.mark_dirty("attachments")

    async def _quiet_host(self, known: list[Attachment], busy: frozenset[str], full: bool) -> bool:
        """True when the host's container veths are the ones recorded (`nothing_moved`), those
        of calls under way when the check began (`busy`) or now left out on both sides. An
        attach begun after the check took `known` made a veth before the links were listed:
        with 10 at once nearly every check saw one, and took it for news (a full look: ~1 s
        of GIL with 1 000 containers); it is recorded or under way by the time of comparing.
        Namespace paths and processes are looked at on the `full` check only, as when no link
        moved: a stat each, ~9 % of the GIL while attaches came and went at 1 000."""
        present = await self._plumbing.run(lambda: container_veths(known, paths=full))
        if present is None:
            return False
        busy = busy | self._inflight.veths()
        before = {(a.veth, a.veth_index) for a in known}
        now = {(a.veth, a.veth_index) for a in self.records.values()}
        made = {p for p in present - before - now if p[0] not in busy}
        gone = {p for p in (before & now) - present if p[0] not in busy}
        return not made and not gone

    async def _replug(self, gone: Attachment) -> Attachment | None:
        """A container whose host-side veth vanished while its namespace lives is plugged in
        again with the addresses it had (the pair is recreated, as attach does); None when the
        namespace is gone too (the container is released)."""
        previous = self.records.get(gone.target.key)
        if previous is None or not previous.addresses:
            return None
        try:
            again = await self._plug(
                previous.target, previous.addresses, previous.multicast_route, previous.veth
            )
        except (WeavedError, OSError) as exc:
            log.warning(
                "container %s lost its host veth %s and cannot be plugged in again (%s);"
                " releasing it",
                gone.target.label,
                gone.veth,
                (str(exc).splitlines() or ["?"])[0],
            )
            return None
        log.warning(
            "host veth %s of container %s was deleted: recreated with %s",
            gone.veth,
            gone.target.label,
            ",".join(str(i) for i in again.addresses),
        )
        return replace(again, dns=previous.dns)

    async def _adopt(self, a: Attachment) -> bool:
        """An attachment seen alive; claims and names only when new to us or re-addressed.
        True if anything worth saving changed."""
        key = a.target.key
        before = self.records.get(key)
        if before is not None and not before.dns:
            a = replace(a, dns=False)  # observed veths do not say it; the record does
        self.records[key] = a
        if key in self._adopted and before is not None and before.addresses == a.addresses:
            return before.to_json() != a.to_json()
        if key not in self._adopted:
            log.info("attachment re-observed target=%s", a.target.label)
        held = set(before.addresses) if before is not None and key in self._adopted else set()
        for iface in a.addresses:
            if iface in held:
                continue
            try:
                # Never waits: before the ring exists it is recorded and finished later.
                await self.ipam.claim(
                    key, CIDR.parse(iface.with_prefixlen), no_error_on_unknown=True
                )
            except WeavedError as exc:
                log.error("cannot re-claim %s for %s: %s", iface, a.target.label, exc)
        self._adopted.add(key)
        if self.dns is not None and held:
            self.dns.service.unregister_container(key)
        if a.dns:
            await self._register_dns(a.target, a.addresses)
        return True

    def _prune(self, seen: list[Attachment], epoch: int) -> None:
        """Right after start: IPAM forgets containers that are not attached any more."""
        live = {a.target.key for a in seen if a.state is AttachmentState.ATTACHED}
        live |= {k for k, e in self._touched.items() if e > epoch}
        live |= self.also_live()
        gone = self.ipam.allocator.prune_owned(live, time.time())
        self._pruned = True
        if gone:
            log.info(
                "released the addresses of containers gone while weaved was down: %s",
                " ".join(gone),
            )

    def _forget(self, target: Target, *, died: bool) -> None:
        """A container is gone: names now, addresses after Weave's grace period (`died`) or
        now."""
        self._adopted.discard(target.key)
        if self.records.pop(target.key, None) is None and not died:
            return
        if died:
            self.ipam.allocator.container_died(target.key, time.time())
        else:
            self.ipam.release(target.key)
        if self.dns is not None:
            self.dns.service.unregister_container(target.key)
        if target.kind is TargetKind.NETNS:
            remove_resolv_conf(target.name)
        log.info("container gone target=%s", target.label)

    def _inside_turn(self, known: list[Attachment], count: int) -> list[Attachment]:
        """The next `count` of `known` (by key, going round) to look into."""
        ordered = sorted(known, key=lambda a: a.target.key)
        after = [a for a in ordered if a.target.key > self._inside_after] or ordered
        turn = after[:count]
        if turn:
            self._inside_after = turn[-1].target.key if len(turn) < len(after) else ""
        return turn

    async def _watch_namespaces(self) -> None:
        await asyncio.sleep(0)
        checks = 0
        while True:
            inside = min(INSIDE_PER_CHECK, -(-len(self.records) // INSIDE_EVERY))
            try:
                await self.resync(deep=checks == 0, inside=inside)
            except WeavedError as exc:
                log.error("attachment resync failed: %s", exc)
            self._first_look.set()
            checks += 1
            await asyncio.sleep(WATCH_SECONDS)

    async def container_died(self, key: str) -> None:
        """Docker said the container died: released as Weave does (names now, addresses
        after the grace period)."""
        known = self.records.get(key)
        if known is not None:
            async with self._lock:
                self._forget(known.target, died=True)
                self._save()

    # --- attach / detach ----------------------------------------------------------------
    async def _plug(
        self,
        target: Target,
        addresses: Sequence[ipaddress.IPv4Interface],
        multicast: bool,
        veth: str,
    ) -> Attachment:
        """Plug `target` in on a plumbing thread (the spec's MTU, weaveDNS's route).
        Checksum offload stays on: sleeve's TAP carries partial checksums in its virtio-net
        header (or completes them for Weave peers) and fastdp is ~3.5x faster with it."""
        mtu, onlink = self.spec.mtu, dns_routes(self.spec)
        back = DNS_LINK_ADDRESS if uses_link_address(self.spec) else ""
        return await self._plumbing.run(
            lambda: attach(
                target,
                addresses,
                mtu,
                multicast,
                tx_checksum_off=False,
                onlink_routes=onlink,
                route_back_from=back,
                veth=veth,
            )
        )

    async def _register_dns(
        self, target: Target, addresses: Sequence[ipaddress.IPv4Interface]
    ) -> None:
        if self.dns is not None:
            await register_names(self.dns, self.spec, self.docker_url, target, addresses)

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


_LOST = "attachments will be re-observed"


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


def _docker_url_of(spec: Spec) -> str:
    explicit = "socket" in spec.docker.model_fields_set
    return docker_url(spec.docker.socket if explicit else None)
