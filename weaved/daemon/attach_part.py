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
from typing import TYPE_CHECKING

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
from weaved.attach.cli import (
    AddressArg,
    AddressKind,
    AttachRequest,
    DetachRequest,
    PsRequest,
    ps_text,
)
from weaved.attach.plumbing import observe_bridge
from weaved.attach.ps import show_addrs
from weaved.compile.dns import uses_link_address
from weaved.daemon.component import Component
from weaved.daemon.control import Handler, Request, Response
from weaved.daemon.dns_part import DnsPart
from weaved.daemon.ipam_part import IpamPart, subnet_for
from weaved.dataplane.base import Dataplane
from weaved.dns.resolvconf import render_resolv_conf
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import DependencyError, UsageError, WeavedError
from weaved.integrations.docker_client import (
    ContainerInfo,
    connect,
    docker_url,
    inspect_container,
    running_containers,
)
from weaved.integrations.docker_events import (
    ContainerEvent,
    EventAction,
    missed_starts,
    watch_docker_events,
)
from weaved.ipam.address import CIDR
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

if TYPE_CHECKING:
    from weaved.daemon.service import Daemon

log = logging.getLogger(__name__)

STORE = "attachments.json"
NETNS_ETC = Path("/etc/netns")
RESOLV_MARK = "# written by weaved: weaveDNS for this namespace\n"
WATCH_SECONDS = 5.0

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
    tmp = path.with_suffix(".weaved-tmp")
    tmp.write_text(RESOLV_MARK + text)
    os.replace(tmp, path)


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
        self._daemon: Daemon | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._events = events
        self._docker_moved = asyncio.Event()  # `docker.socket` changed: follow the new one
        self._started_at = time.time()  # starts from then on are ours to follow
        if dns is not None:
            dns.container_key = self.key_for

    @property
    def docker_url(self) -> str:
        return _docker_url_of(self.spec)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, daemon: Daemon) -> None:
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
        tmp = self.store.with_suffix(".tmp")
        data = {"attachments": [a.to_json() for a in self.known.values()]}
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.store)

    # --- re-observation: restarts, dead containers, vanished namespaces -----------------
    async def resync(self) -> None:
        """Compare what is attached with what we knew; nothing is recreated."""
        assert self._daemon is not None
        url = self.docker_url
        known = list(self.known.values())
        seen = await self._daemon.on_dataplane(lambda _dp: observe_attachments(url, known))
        async with self._lock:
            for a in seen:
                key = a.target.key
                if a.state is AttachmentState.ATTACHED:
                    if key not in self.known:
                        log.info("attachment re-observed target=%s", a.target.label)
                    await self._claim(a)
                    self.known[key] = a
                elif a.state is AttachmentState.ORPHANED:
                    await self._daemon.on_dataplane(_detach_job(a.target))
                    self._forget(a.target, died=True)
                elif (again := await self._replug(a)) is not None:
                    self.known[key] = again
                else:
                    self._forget(a.target, died=True)
            self._save()
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

    async def _claim(self, a: Attachment) -> None:
        for iface in a.addresses:
            try:
                await self.ipam.claim(a.target.key, CIDR.parse(iface.with_prefixlen))
            except WeavedError as exc:
                log.error("cannot re-claim %s for %s: %s", iface, a.target.label, exc)
        await self._register_dns(a.target, a.addresses)

    def _forget(self, target: Target, *, died: bool) -> None:
        """A container is gone: names now, addresses after Weave's grace period."""
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
        while True:
            try:
                await self.resync()
            except WeavedError as exc:
                log.error("attachment resync failed: %s", exc)
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
                await self.attach(AttachRequest(event.container_id))

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
        self, target: Target, args: tuple[AddressArg, ...]
    ) -> list[ipaddress.IPv4Interface]:
        out: list[ipaddress.IPv4Interface] = []
        default = subnet_for(self.spec, None)
        for arg in args or (AddressArg(AddressKind.DEFAULT, "net:default"),):
            if arg.kind is AddressKind.CIDR:
                assert arg.interface is not None
                cidr = await self.ipam.claim(target.key, CIDR.parse(arg.interface.with_prefixlen))
            elif arg.kind is AddressKind.IP:
                assert arg.address is not None
                prefix = ipaddress.IPv4Network(str(default)).prefixlen
                cidr = await self.ipam.claim(target.key, CIDR.parse(f"{arg.address}/{prefix}"))
            else:
                subnet = default if arg.kind is AddressKind.DEFAULT else CIDR.parse(arg.text[4:])
                cidr = await self.ipam.allocate(target.key, subnet)
            out.append(ipaddress.IPv4Interface(str(cidr)))
        return out

    async def _register_dns(
        self,
        target: Target,
        addresses: tuple[ipaddress.IPv4Interface, ...] | list[ipaddress.IPv4Interface],
    ) -> None:
        if self.dns is None:
            return
        hostname = None
        if target.kind is TargetKind.DOCKER:
            url = self.docker_url

            def host_of() -> str:
                client = connect(url, 5)
                try:
                    info = inspect_container(client, target.key)
                finally:
                    client.close()
                return f"{info.hostname}.{info.domainname}" if info.domainname else info.hostname

            with contextlib.suppress(WeavedError):
                hostname = await asyncio.to_thread(host_of)
        name = None if target.kind is TargetKind.PID else target.name
        self.dns.service.register_container(
            target.key, [str(a.ip) for a in addresses], hostname, name
        )
        server = self.dns.nameserver()
        if target.kind is TargetKind.NETNS and server:
            write_resolv_conf(target.name, render_resolv_conf(server, self.spec.dns.domain))

    async def attach(self, request: AttachRequest) -> Attachment:
        assert self._daemon is not None
        url = self.docker_url
        target = await self._daemon.on_dataplane(lambda _dp: resolve_target(request.target, url))
        addresses = await self._addresses(target, request.addresses)
        multicast = (
            self.spec.multicast_route
            if request.multicast_route is None
            else request.multicast_route
        )
        mtu = self.spec.mtu
        # Checksum offload stays on: sleeve's TAP carries partial checksums in its virtio-net
        # header (or completes them for Weave peers) and fastdp is ~3.5x faster with it.
        async with self._lock:
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
            self._save()
        await self._register_dns(target, attached.addresses)
        self._daemon.mark_dirty("attach")
        log.info(
            "attached target=%s addresses=%s", target.label, ",".join(str(a) for a in addresses)
        )
        return attached

    async def detach(self, request: DetachRequest) -> list[ipaddress.IPv4Interface]:
        assert self._daemon is not None
        url = self.docker_url
        target = await self._daemon.on_dataplane(lambda _dp: resolve_target(request.target, url))
        wanted: list[ipaddress.IPv4Interface] | None = None
        if request.addresses:
            held = {a.ip: a for a in self.known.get(target.key, _empty(target)).addresses}
            wanted = []
            for arg in request.addresses:
                ip = arg.interface.ip if arg.interface else arg.address
                if ip is None or ip not in held:
                    raise UsageError(f"{arg.text} is not attached to {request.target}")
                wanted.append(held[ip])
        async with self._lock:
            detached = await self._daemon.on_dataplane(lambda _dp: detach(target, wanted))
            removed = list(wanted if wanted is not None else detached.removed)
            if detached.veth_removed or not detached.remaining:
                self._forget(target, died=False)
            else:
                for iface in removed:
                    with contextlib.suppress(WeavedError):
                        self.ipam.allocator.release_address(target.key, int(iface.ip), time.time())
                known = self.known.get(target.key)
                if known is not None:
                    self.known[target.key] = _with_addresses(known, detached.remaining)
                if self.dns is not None:
                    self.dns.service.unregister_container(target.key)
                    await self._register_dns(target, detached.remaining)
            self._save()
        self._daemon.mark_dirty("detach")
        return removed

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
            attached = await self.attach(AttachRequest.from_json(req.body))
            return Response(200, {"text": show_addrs(attached.addresses)})

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

            return Response(200, {"text": await self._daemon.on_dataplane(lambda _dp: listing())})

        return {
            ("POST", "/attach"): do_attach,
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


def _empty(target: Target) -> Attachment:
    return Attachment(target, target.veth)


def _with_addresses(a: Attachment, addresses: tuple[ipaddress.IPv4Interface, ...]) -> Attachment:
    return replace(a, addresses=addresses)
