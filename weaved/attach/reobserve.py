"""The attach part's records kept true to the kernel: re-observed (not recreated) after a
restart and every `WATCH_SECONDS`, containers that died or whose namespace vanished released,
a host veth deleted by hand made again. `part.py` builds attach and detach on it.
"""

from __future__ import annotations

import asyncio
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
    Target,
    TargetKind,
    attach,
    detach,
    observe_attachments,
)
from weaved.attach.converging import Converges
from weaved.attach.inflight import InFlight
from weaved.attach.linkwatch import LinkEvents
from weaved.attach.observe import changed_inside, container_veths
from weaved.attach.plugged_part import PluggedPart
from weaved.attach.weavedns import dns_routes, register_names, remove_resolv_conf
from weaved.compile.dns import uses_link_address
from weaved.dns.part import DnsPart
from weaved.errors import WeavedError
from weaved.integrations.docker_client import docker_url
from weaved.ipam.address import CIDR
from weaved.ipam.part import IpamPart
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


class ReobservedPart(PluggedPart[Attachment]):
    """The records and what keeps them true; the kernel work of a plug (`_plug`)."""

    def __init__(self, spec: Spec, state_dir: Path, ipam: IpamPart, dns: DnsPart | None) -> None:
        super().__init__(
            spec, state_dir, ipam, dns, store=STORE, from_json=Attachment.from_json, lost=_LOST
        )
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
        self._pruned = False  # IPAM forgets containers that vanished while we were down, once
        self._inside_after = ""  # the last container looked into (see _inside_turn)
        self._links = LinkEvents()  # container veths announced since the last check
        self._checks = 0
        self._first_look = asyncio.Event()  # attach allocates after that (Weave: after reclaim)
        self.also_live: Callable[[], set[str]] = set  # IPAM owners other parts keep (CNI)

    @property
    def docker_url(self) -> str:
        return docker_url_of(self.spec)

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

    # --- the kernel work of a plug -------------------------------------------------------
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


_LOST = "attachments will be re-observed"


def docker_url_of(spec: Spec) -> str:
    explicit = "socket" in spec.docker.model_fields_set
    return docker_url(spec.docker.socket if explicit else None)
