"""Containers in the daemon: attach/detach with IPAM addresses and DNS names, re-observed (not
recreated) after a restart, released when the container dies or its namespace disappears."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
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
    resolve_target,
)
from weaved.attach.cidr_env import container_addresses
from weaved.attach.cli import (
    AddressArg,
    AddressKind,
    AttachRequest,
    DetachRequest,
    PsRequest,
    ps_text,
)
from weaved.attach.hostname import dns_name, rules_of
from weaved.attach.observe import observe_bridge
from weaved.attach.ps import show_addrs
from weaved.compile.dns import uses_link_address
from weaved.control import Handler, Request, Response
from weaved.dataplane.base import Dataplane
from weaved.dns.part import DnsPart
from weaved.dns.resolvconf import render_resolv_conf
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import ApplyError, DependencyError, UsageError, WeavedError
from weaved.integrations.docker_client import (
    ContainerInfo,
    connect,
    docker_url,
    inspect_container,
    plugin_name,
    running_containers,
)
from weaved.integrations.docker_events import (
    ContainerEvent,
    EventAction,
    missed_starts,
    watch_docker_events,
)
from weaved.ipam.address import CIDR
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart, Wait, subnet_for
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.part import Component, Host
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)

STORE = "attachments.json"
NETNS_ETC = Path("/etc/netns")
RESOLV_MARK = "# written by weaved: weaveDNS for this namespace\n"
WATCH_SECONDS = 5.0
# Every check sees veths come and go (one link dump); every DEEP_EVERY-th also enters each
# container's namespace to find what was changed inside by hand (e.g. an address removed).
DEEP_EVERY = 12
FIRST_LOOK_SECONDS = 10.0  # longest an attach waits for the first look after a start

# Docker's events at a URL, each (re)connection first announced by a RESYNC (see docker_events).
EventSource = Callable[[str, float], AsyncGenerator[ContainerEvent, None]]


def write_resolv_conf(netns_name: str, text: str) -> None:
    """`ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf."""
    directory = NETNS_ETC / netns_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "resolv.conf"
    if path.exists() and not path.read_text().startswith(RESOLV_MARK):
        log.info("not replacing %s: it was not written by weaved", path)
        return
    if path.exists() and path.read_text() == RESOLV_MARK + text:
        return  # as wanted already: no write
    _write_atomically(path, path.with_suffix(".weaved-tmp"), RESOLV_MARK + text)


def _write_atomically(path: Path, tmp: Path, text: str) -> None:
    """Replace `path`; a write that fails (a full disk) leaves no temporary file behind."""
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_resolv_conf(netns_name: str) -> None:
    path = NETNS_ETC / netns_name / "resolv.conf"
    with contextlib.suppress(OSError):
        if path.read_text().startswith(RESOLV_MARK):
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()


class AttachPart(Component):
    name = "attach"

    def __init__(
        self,
        spec: Spec,
        state_dir: Path,
        ipam: IpamPart,
        dns: DnsPart | None,
        events: EventSource = watch_docker_events,
    ) -> None:
        self.spec = spec
        self.ipam = ipam
        self.dns = dns
        self.store = state_dir / STORE
        self.known: dict[str, Attachment] = {}
        self._daemon: Host | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._events = events
        self._docker_moved = asyncio.Event()  # `docker.socket` changed: follow the new one
        self._started_at = time.time()  # starts from then on are ours to follow
        # Containers whose addresses are claimed and names registered by this process: the
        # periodic check only acts on what changed (a `dns-remove` sticks until re-attached).
        self._adopted: set[str] = set()
        self._without_dns: set[str] = set()  # attached with `--without-dns` (this run)
        # attach/detach bump the epoch and stamp the container: a resync that observed the
        # kernel before that leaves the container alone (its view is older than the call's).
        self._epoch = 0
        self._touched: dict[str, int] = {}
        self._pruned = False  # IPAM forgets containers that vanished while we were down, once
        self._first_look = asyncio.Event()  # attach allocates after that (Weave: after reclaim)
        self._waits: dict[str, Wait] = {}  # attach request id → its place in IPAM's queue
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
        self.known = self._load()
        self._tasks.append(asyncio.create_task(self._watch_namespaces(), name="attach-watch"))
        self._tasks.append(asyncio.create_task(self._docker_events(), name="attach-docker"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spec_changed(self, spec: Spec) -> None:
        moved = _docker_url_of(spec) != self.docker_url
        self.spec = spec
        if moved:
            self._docker_moved.set()

    def _load(self) -> dict[str, Attachment]:
        try:
            raw = json.loads(self.store.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read %s (%s); attachments will be re-observed", self.store, exc)
            return {}
        out: dict[str, Attachment] = {}
        for item in raw.get("attachments", []):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                a = Attachment.from_json(item)
                out[a.target.key] = a
        return out

    def _save(self) -> None:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        data = {"attachments": [a.to_json() for a in self.known.values()]}
        try:
            text = json.dumps(data, indent=1)
            _write_atomically(self.store, self.store.with_suffix(".tmp"), text)
        except OSError as exc:
            raise ApplyError(
                f"cannot write {self.store}: {exc.strerror}\n"
                "  hint: check free space and permissions of the state directory"
            ) from None

    def _touch(self, key: str) -> None:
        self._epoch += 1
        self._touched[key] = self._epoch

    # --- re-observation: restarts, dead containers, vanished namespaces -----------------
    async def resync(self, *, deep: bool = True) -> None:
        """Compare what is attached with what we knew; nothing is recreated, and only what
        changed is acted on (claims, DNS names, the saved list, a reconcile). Not `deep`:
        containers whose veth is unchanged are not looked into (see observe_attachments)."""
        assert self._daemon is not None
        url = self.docker_url
        epoch = self._epoch
        first = not self._pruned
        known = list(self.known.values())
        deep = deep or first
        seen = await self._daemon.on_dataplane(
            lambda _dp: observe_attachments(url, known, deep=deep)
        )
        changed = False
        async with self._lock:
            for a in seen:
                if self._touched.get(a.target.key, 0) > epoch:
                    continue  # attached or detached while we looked: that call knows better
                if a.state is AttachmentState.ATTACHED:
                    changed = await self._adopt(a) or changed
                    continue
                if a.state is AttachmentState.ORPHANED:
                    await self._daemon.on_dataplane(_detach_job(a.target))
                    self._forget(a.target, died=not first)
                elif (again := await self._replug(a)) is not None:
                    self.known[a.target.key] = again
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
            self._daemon.mark_dirty("attachments")

    async def _replug(self, gone: Attachment) -> Attachment | None:
        """A container whose host-side veth vanished while its namespace lives is plugged in
        again with the addresses it had (the pair is recreated, as attach does); None when the
        namespace is gone too (the container is released)."""
        assert self._daemon is not None
        previous = self.known.get(gone.target.key)
        if previous is None or not previous.addresses:
            return None
        mtu, multicast = self.spec.mtu, previous.multicast_route
        try:
            again = await self._daemon.on_dataplane(
                lambda _dp: attach(
                    previous.target,
                    previous.addresses,
                    mtu,
                    multicast,
                    tx_checksum_off=False,
                    onlink_routes=dns_routes(self.spec),
                )
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
        return again

    async def _adopt(self, a: Attachment) -> bool:
        """An attachment seen alive; claims and names only when new to us or re-addressed.
        True if anything worth saving changed."""
        key = a.target.key
        before = self.known.get(key)
        self.known[key] = a
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
        if key not in self._without_dns:
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
        self._without_dns.discard(target.key)
        if self.known.pop(target.key, None) is None and not died:
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

    async def _watch_namespaces(self) -> None:
        await asyncio.sleep(0)
        checks = 0
        while True:
            try:
                await self.resync(deep=checks % DEEP_EVERY == 0)
            except WeavedError as exc:
                log.error("attachment resync failed: %s", exc)
            self._first_look.set()
            checks += 1
            await asyncio.sleep(WATCH_SECONDS)

    async def _docker_events(self) -> None:
        """Follow the Docker the spec names, whenever it answers; a new `docker.socket` in the
        spec replaces the watch."""
        while True:
            self._docker_moved.clear()
            follower = asyncio.create_task(
                self._follow_docker(self.docker_url), name="attach-docker-follow"
            )
            try:
                await self._docker_moved.wait()
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            log.info("docker.socket changed: following %s", self.docker_url)

    async def _follow_docker(self, url: str) -> None:
        # Starts since this daemon started and not heard of are caught up on (re)connection;
        # containers that were running before it started are left alone, as always.
        async with contextlib.aclosing(self._events(url, self._started_at)) as events:
            async for event in events:
                try:
                    await self._on_docker(event)
                except WeavedError as exc:
                    log.error("docker event %s %s: %s", event.action.value, event.name, exc)

    async def _on_docker(self, event: ContainerEvent) -> None:
        if event.action is EventAction.RESYNC:
            try:
                await self.resync()
            except WeavedError as exc:  # the periodic resync tries again; catch up anyway
                log.error("attachment resync failed: %s", exc)
            await self._catch_up(event.time)
        elif event.action in (EventAction.DIE, EventAction.DESTROY):
            known = self.known.get(event.container_id)
            if known is not None:
                async with self._lock:
                    self._forget(known.target, died=True)
                    self._save()
        elif event.action is EventAction.START:
            self.ipam.allocator.container_started(event.container_id)
            if self.spec.docker.auto_attach:
                # WEAVE_CIDR / works.weave.cidr as Weave's proxy: addresses, or `none`.
                plugin = self.spec.docker.plugin
                driver = plugin_name(plugin.socket) if plugin.enabled else None
                wanted = await asyncio.to_thread(
                    container_addresses, self.docker_url, event.container_id, driver
                )
                if wanted is not None:
                    await self.attach(AttachRequest(event.container_id, wanted))

    async def _catch_up(self, since: float) -> None:
        """Do what the `start` events missed while Docker was not followed would have done.
        (Deaths meanwhile need no events: `resync` finds their veths gone or orphaned.)"""
        url = self.docker_url
        for info in missed_starts(await asyncio.to_thread(_running, url), since):
            known = self.known.get(info.id)
            if known is not None and known.target.pid == info.pid:
                continue  # attached already (by hand, or from an event after all)
            log.info("start missed while Docker was not followed container=%s", info.name)
            start = ContainerEvent(EventAction.START, info.id, info.name, info.started_at)
            try:
                await self._on_docker(start)
            except WeavedError as exc:
                log.error("missed start of %s: %s", info.name, exc)

    # --- attach / detach ----------------------------------------------------------------
    async def _addresses(
        self, target: Target, args: tuple[AddressArg, ...], wait: Wait | None = None
    ) -> list[ipaddress.IPv4Interface]:
        """The addresses of this call, from IPAM where needed (waiting, if it must, with
        `wait` telling where). On failure, what this call newly took is given back."""
        out: list[ipaddress.IPv4Interface] = []
        default = subnet_for(self.spec, None)
        held = {c.addr for c in self.ipam.allocator.lookup(target.key)}
        try:
            for arg in args or (AddressArg(AddressKind.DEFAULT, "net:default"),):
                if arg.kind is AddressKind.CIDR:
                    assert arg.interface is not None
                    cidr = CIDR.parse(arg.interface.with_prefixlen)
                    cidr = await self.ipam.claim(target.key, cidr, wait=wait)
                elif arg.kind is AddressKind.IP:
                    assert arg.address is not None
                    prefix = ipaddress.IPv4Network(str(default)).prefixlen
                    cidr = CIDR.parse(f"{arg.address}/{prefix}")
                    cidr = await self.ipam.claim(target.key, cidr, wait=wait)
                else:
                    subnet = default if arg.kind is AddressKind.DEFAULT else _subnet(arg)
                    cidr = await self.ipam.allocate(target.key, subnet, wait=wait)
                out.append(ipaddress.IPv4Interface(str(cidr)))
        except BaseException:
            for iface in out:
                if int(iface.ip) not in held:
                    with contextlib.suppress(IpamError):
                        self.ipam.allocator.release_address(target.key, int(iface.ip), time.time())
            raise
        return out

    async def _register_dns(
        self,
        target: Target,
        addresses: tuple[ipaddress.IPv4Interface, ...] | list[ipaddress.IPv4Interface],
    ) -> None:
        if self.dns is None:
            return
        hostname = name = None
        if target.kind is TargetKind.DOCKER:
            url = self.docker_url

            def inspect() -> ContainerInfo:
                client = connect(url, 5)
                try:
                    return inspect_container(client, target.key)
                finally:
                    client.close()

            with contextlib.suppress(WeavedError):
                info = await asyncio.to_thread(inspect)
                hostname = (
                    f"{info.hostname}.{info.domainname}" if info.domainname else info.hostname
                )
                # Weave proxy's hostname rules (docker.hostname_*) name it in weaveDNS.
                name = dns_name(rules_of(self.spec.docker), info.name, info.labels)
        if name is None and target.kind is not TargetKind.PID:
            name = target.name
        self.dns.service.register_container(
            target.key, [str(a.ip) for a in addresses], hostname, name
        )
        server = self.dns.nameserver()
        if target.kind is TargetKind.NETNS and server:
            write_resolv_conf(target.name, render_resolv_conf(server, self.spec.dns.domain))

    async def attach(
        self, request: AttachRequest, wait: Wait | None = None
    ) -> tuple[Attachment, list[ipaddress.IPv4Interface]]:
        """Plug the target in with the request's addresses; returns the attachment and the
        addresses of this call (what `weaved attach` prints)."""
        assert self._daemon is not None
        url = self.docker_url
        target = await self._daemon.on_dataplane(lambda _dp: resolve_target(request.target, url))
        self._touch(target.key)
        # After a restart, addresses of containers gone meanwhile are freed first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_look.wait(), FIRST_LOOK_SECONDS)
        addresses = await self._addresses(target, request.addresses, wait)
        multicast = (
            self.spec.multicast_route
            if request.multicast_route is None
            else request.multicast_route
        )
        mtu = self.spec.mtu
        # Checksum offload stays on: sleeve's TAP carries partial checksums in its virtio-net
        # header (or completes them for Weave peers) and fastdp is ~3.5x faster with it.
        async with self._lock:
            self._touch(target.key)
            dns_route = dns_routes(self.spec)
            attached = await self._daemon.on_dataplane(
                lambda _dp: attach(
                    target,
                    addresses,
                    mtu,
                    multicast,
                    tx_checksum_off=False,
                    onlink_routes=dns_route,
                )
            )
            self.known[target.key] = attached
            self._adopted.add(target.key)
            self._save()
        if request.dns:
            self._without_dns.discard(target.key)
            await self._register_dns(target, attached.addresses)
        else:  # Weave's `attach --without-dns`
            self._without_dns.add(target.key)
        self._daemon.mark_dirty("attach")
        log.info(
            "attached target=%s addresses=%s", target.label, ",".join(str(a) for a in addresses)
        )
        return attached, addresses

    async def detach(self, request: DetachRequest) -> list[ipaddress.IPv4Interface]:
        """Weave's detach: the addresses named (`net:` ones: the container's IPAM address in
        that subnet), with none named the one IPAM gave it in the default subnet."""
        assert self._daemon is not None
        url = self.docker_url
        target = await self._daemon.on_dataplane(lambda _dp: resolve_target(request.target, url))
        self._touch(target.key)
        async with self._lock:
            held = _held(target, self.known)
            wanted = [
                self._detach_address(arg, target, held, request.target)
                for arg in request.addresses or (AddressArg(AddressKind.DEFAULT, "net:default"),)
            ]
            self._touch(target.key)
            detached = await self._daemon.on_dataplane(lambda _dp: detach(target, wanted))
            removed = list(wanted)
            for iface in removed:
                with contextlib.suppress(IpamError):
                    self.ipam.allocator.release_address(target.key, int(iface.ip), time.time())
            if self.dns is not None:
                for iface in removed:
                    self.dns.service.dns_remove(target.key, [str(iface.ip)])
            if detached.veth_removed or not detached.remaining:
                self._adopted.discard(target.key)
                self.known.pop(target.key, None)
                if target.kind is TargetKind.NETNS:
                    remove_resolv_conf(target.name)
                log.info("detached target=%s (no address left)", target.label)
            else:
                known = self.known.get(target.key)
                if known is not None:
                    self.known[target.key] = _with_addresses(known, detached.remaining)
            self._save()
        self._daemon.mark_dirty("detach")
        return removed

    def _detach_address(
        self,
        arg: AddressArg,
        target: Target,
        held: dict[ipaddress.IPv4Address, ipaddress.IPv4Interface],
        text: str,
    ) -> ipaddress.IPv4Interface:
        if arg.kind in (AddressKind.DEFAULT, AddressKind.SUBNET):
            subnet = (
                subnet_for(self.spec, None) if arg.kind is AddressKind.DEFAULT else _subnet(arg)
            )
            for cidr in self.ipam.allocator.lookup(target.key, subnet):
                ip = ipaddress.IPv4Address(str(cidr).split("/")[0])
                if ip in held:
                    return held[ip]
            where = "the default subnet " if arg.kind is AddressKind.DEFAULT else ""
            raise UsageError(
                f"{text} has no address from IPAM in {where}{subnet}\n"
                f"  hint: name the addresses to remove: weaved detach ADDR/LEN ... {text}"
            )
        wanted = arg.interface.ip if arg.interface else arg.address
        if wanted is None or wanted not in held:
            raise UsageError(f"{arg.text} is not attached to {text}")
        return held[wanted]

    def key_for(self, text: str) -> str:
        """An attached container as the user names it (name, netns, PID, short or full ID) →
        the identity its addresses and names are kept under; unknown text is kept as is."""
        for key, a in self.known.items():
            t = a.target
            if text in (key, t.name, t.label) or (len(text) >= 12 and key.startswith(text)):
                return key
        return text

    # --- facts, views, API --------------------------------------------------------------
    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        subnets = {str(n) for a in self.known.values() for n in a.subnets}
        ports = tuple(
            WantedPort(a.veth, CONTAINER_FLAGS, f"container {a.target.label}")
            for a in self.known.values()
        )
        addresses = {a.veth: tuple(str(i.ip) for i in a.addresses) for a in self.known.values()}
        return replace(
            facts,
            container_subnets=tuple(sorted({*facts.container_subnets, *subnets})),
            ports=facts.ports + ports,
            container_ports=tuple(sorted({**dict(facts.container_ports), **addresses}.items())),
        )

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def do_attach(req: Request) -> Response:
            request = AttachRequest.from_json(req.body)
            rid = str(req.body.get("request_id") or "")
            wait = self._waits[rid] = Wait()
            given = req.body.get("timeout")
            timeout = None if given is None else float(given)
            task = asyncio.ensure_future(self.attach(request, wait))
            try:
                _, addresses = await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                why = self.ipam.wait_text(wait) or "still attaching"
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise IpamError(
                    f"attach {request.target}: gave up after {timeout:g} s, {why}"
                ) from None
            finally:
                self._waits.pop(rid, None)
            return Response(200, {"text": show_addrs(addresses)})

        async def attach_wait(req: Request) -> Response:
            wait = self._waits.get(str(req.body.get("id", "")))
            return Response(200, {"text": self.ipam.wait_text(wait) if wait else None})

        async def do_detach(req: Request) -> Response:
            removed = await self.detach(DetachRequest.from_json(req.body))
            return Response(200, {"text": show_addrs(removed)})

        async def do_ps(req: Request) -> Response:
            assert self._daemon is not None
            url = self.docker_url
            known = list(self.known.values())
            request = PsRequest(tuple(str(t) for t in req.body.get("targets", [])))

            def listing() -> str:
                return ps_text(request, observe_attachments(url, known), observe_bridge(), url)

            text = await self._daemon.on_dataplane(lambda _dp: listing())
            if not request.targets:
                text += self.also_ps()  # the Docker plugin's containers (--net=weave)
            return Response(200, {"text": text})

        return {
            ("POST", "/attach"): do_attach,
            ("POST", "/attach/wait"): attach_wait,
            ("POST", "/detach"): do_detach,
            ("POST", "/ps"): do_ps,
        }


def dns_routes(spec: Spec) -> tuple[ipaddress.IPv4Network, ...]:
    """weaveDNS's link address is reached through ethwe (an on-link route in the container)."""
    if not uses_link_address(spec):
        return ()
    return (ipaddress.IPv4Network(f"{DNS_LINK_ADDRESS}/32"),)


def _docker_url_of(spec: Spec) -> str:
    explicit = "socket" in spec.docker.model_fields_set
    return docker_url(spec.docker.socket if explicit else None)


def _running(url: str) -> list[ContainerInfo]:
    """Docker's running containers, or none if it went away again (its next RESYNC retries)."""
    try:
        client = connect(url, 5)
    except DependencyError as exc:
        log.debug("no docker for catching up: %s", exc)
        return []
    try:
        return running_containers(client)
    except DependencyError as exc:
        log.debug("docker did not list its containers: %s", exc)
        return []
    finally:
        client.close()


def _detach_job(target: Target) -> Callable[[Dataplane], Detached]:
    return lambda _dp: detach(target, None)


def _subnet(arg: AddressArg) -> CIDR:
    """`net:CIDR` as IPAM takes it: a network address, big enough to allocate from."""
    try:
        return CIDR.parse_subnet(arg.text.removeprefix("net:"))
    except ValueError as exc:
        raise UsageError(f"{arg.text}: {exc}") from None


def _held(
    target: Target, known: dict[str, Attachment]
) -> dict[ipaddress.IPv4Address, ipaddress.IPv4Interface]:
    """The target's addresses as we last saw them (attach, detach and resync keep them)."""
    previous = known.get(target.key)
    return {i.ip: i for i in previous.addresses} if previous else {}


def _with_addresses(a: Attachment, addresses: tuple[ipaddress.IPv4Interface, ...]) -> Attachment:
    return replace(a, addresses=addresses)
