"""CNI attachments in the daemon: the `weaved-cni` plugin asks over the control socket, this
part allocates (weaved's IPAM, keyed by the container ID as Weave's plugin does), plugs the
veth, registers the DNS name and remembers the attachment in `<state>/cni.json`, so a restarted
daemon re-observes (and, with an empty IPAM, re-claims) what the runtime attached.

Answers are always 200 with either a result or `{"error": {code, msg}}` in CNI's terms, so the
plugin can hand the runtime a proper CNI error object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from weaved.attach.part import with_containers
from weaved.attach.plugged_part import PluggedPart
from weaved.attach.weavedns import dns_routes
from weaved.cni import plumbing, views
from weaved.cni.core import CniError, Code
from weaved.cni.expose import expose_for, gateway_in
from weaved.cni.records import LOST, STORE, CniRecord
from weaved.control import Handler, Request, Response
from weaved.dataplane.portcalls import PORT_CALLS
from weaved.dns.part import DnsPart
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import DependencyError, WeavedError
from weaved.ipam.address import CIDR
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart, subnet_for
from weaved.model.host import PortFlags, WantedPort
from weaved.part import Host
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

WATCH_SECONDS = 5.0
IPAM_TIMEOUT = 60.0  # longer than this without an address: the runtime is told to retry


class CniFailure(Exception):
    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code


def _err(code: Code, msg: str) -> Response:
    return Response(200, {"error": {"code": int(code), "msg": msg}})


def _routes(items: Any) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]]:
    out = []
    for r in items or []:
        gw = r.get("gw")
        out.append(
            (ipaddress.IPv4Network(str(r["dst"])), ipaddress.IPv4Address(gw) if gw else None)
        )
    return out


class CniPart(PluggedPart[CniRecord]):
    name = "cni"

    def __init__(self, spec: Spec, state_dir: Path, ipam: IpamPart, dns: DnsPart | None) -> None:
        super().__init__(
            spec, state_dir, ipam, dns, store=STORE, from_json=CniRecord.from_json, lost=LOST
        )
        self.spec_path: Path | None = None  # what a default route's `expose` edits (wiring)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        """Re-observes before the control socket opens and before `attach` prunes IPAM: the
        attachments' addresses are claimed again before anyone can be given them."""
        self._daemon = daemon
        self.records = self._load()
        await self._reobserve()
        self._tasks.append(asyncio.create_task(self._watch(), name="cni-watch"))

    def live_keys(self) -> set[str]:
        """IPAM identities held by CNI attachments (kept when `attach` prunes after a start)."""
        return {r.container_id for r in self.records.values() if r.weaved_ipam}

    async def _watch(self) -> None:
        """Release attachments whose namespace the runtime removed without a DEL that reached
        us (daemon down then, runtime crashed)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            gone = [r for r in self.records.values() if _gone(r)]
            if not gone:
                continue
            async with self._lock:
                for rec in gone:
                    if self.records.get(rec.key) != rec:
                        continue  # DEL or ADD meanwhile
                    log.info("cni namespace gone without DEL container=%s", rec.container_id)
                    await self._daemon_unplug(rec)
                    await self._release(rec)
                    self.records.pop(rec.key, None)
                self._save()
            assert self._daemon is not None
            self._daemon.mark_dirty("cni")

    async def _daemon_unplug(self, rec: CniRecord) -> None:
        assert self._daemon is not None
        if rec.veth:
            ips = [a.ip for a in rec.addresses]
            await self._plumbing.run(
                lambda: plumbing.unplug([rec.veth], "", rec.ifname, rec.key, ips)
            )

    async def _reobserve(self) -> None:
        """After a restart: the records are completed from the kernel (each CNI veth carries
        its own, so a lost state directory loses nothing); attachments whose namespace or
        interface is gone are released, the others' addresses are claimed again (a no-op
        unless IPAM's state was lost) and their DNS names registered."""
        assert self._daemon is not None
        veths = await asyncio.to_thread(plumbing.observe_veths)
        recorded = {r.veth for r in self.records.values()}
        for veth, alias in veths.items():
            rec = CniRecord.from_alias(alias, veth)
            if rec is not None and veth not in recorded and rec.key not in self.records:
                log.info("cni attachment found in the kernel container=%s veth=%s", rec.key, veth)
                self.records[rec.key] = rec
        if not self.records:
            return
        for key, rec in list(self.records.items()):
            seen = await asyncio.to_thread(plumbing.observe_inside, rec.netns, rec.ifname)
            if seen is None and not (rec.veth in veths and not rec.netns):
                log.info("cni attachment gone while down container=%s", rec.container_id)
                if rec.veth in veths:
                    await self._daemon_unplug(rec)
                await self._release(rec)
                self.records.pop(key, None)
                continue
            if seen is not None and not rec.mac:
                self.records[key] = rec = replace(rec, mac=seen[0])
            if rec.veth and veths.get(rec.veth) != (alias := rec.to_alias()):
                await asyncio.to_thread(plumbing.set_alias, rec.veth, alias)
            if rec.weaved_ipam:
                for iface in rec.addresses:
                    try:  # never waits: before the ring exists it is recorded, finished later
                        await self.ipam.claim(
                            rec.container_id, CIDR.parse(str(iface)), no_error_on_unknown=True
                        )
                    except (IpamError, WeavedError) as exc:
                        log.error("cannot re-claim %s for cni %s: %s", iface, key, exc)
            self._register_dns(rec)
        self._save()
        self._daemon.mark_dirty("cni")

    # --- the work -------------------------------------------------------------------------
    def _register_dns(self, rec: CniRecord) -> None:
        if self.dns is not None and rec.dns_name:
            self.dns.service.register_container(
                rec.container_id, [str(a.ip) for a in rec.addresses], None, rec.dns_name
            )

    async def _release(self, rec: CniRecord) -> None:
        others = [
            r for r in self.records.values() if r.container_id == rec.container_id and r != rec
        ]
        if rec.weaved_ipam and not any(r.weaved_ipam for r in others):
            self.ipam.release(rec.container_id)
        if self.dns is not None and not others:
            self.dns.service.unregister_container(rec.container_id)

    async def add(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._daemon is not None
        cid, ifname, netns = str(body["container_id"]), str(body["ifname"]), str(body["netns"])
        if not os.path.exists(netns):
            raise CniFailure(Code.UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
        veths = plumbing.veth_names(cid, ifname)
        key = f"{cid}/{ifname}"
        _, _, bridge_addrs = await self._daemon.on_dataplane(_bridge)
        given = body.get("ips")
        allocated: list[ipaddress.IPv4Interface] = []
        if given:
            addresses = [ipaddress.IPv4Interface(str(a)) for a in given]
        elif key in self.records:
            addresses = list(self.records[key].addresses)  # ADD again: the same address
        else:
            subnet = (
                CIDR.parse_subnet(str(body["subnet"]))
                if body.get("subnet")
                else subnet_for(self.spec, None)
            )
            network = ipaddress.IPv4Network(str(subnet))
            wants_default = not body.get("routes") and not body.get("ipam_only")
            if wants_default and gateway_in(bridge_addrs, network) is None:
                bridge_addrs += await self._expose(network)
            try:
                cidr = await asyncio.wait_for(self.ipam.allocate(cid, subnet), IPAM_TIMEOUT)
            except TimeoutError:
                raise CniFailure(
                    Code.TRY_AGAIN_LATER,
                    f"weaved IPAM gave no address in {subnet} within {IPAM_TIMEOUT:g} s"
                    " (see `weaved status ipam`)",
                ) from None
            addresses = allocated = [ipaddress.IPv4Interface(str(cidr))]
        routes = _routes(body.get("routes"))
        gateway = None
        for b in bridge_addrs:
            if addresses[0].ip in b.network:
                gateway = b.ip
        gw_given = body.get("gateway")
        if gw_given:
            gateway = ipaddress.IPv4Address(str(gw_given))
        routes = [(dst, gw or gateway) for dst, gw in routes]
        if not routes and gateway is not None:
            routes = [(ipaddress.IPv4Network("0.0.0.0/0"), gateway)]  # Weave: via weave:expose
        hairpin, mtu = bool(body.get("hairpin")), int(body.get("mtu") or self.spec.mtu or 0)
        server = self.dns.nameserver() if self.dns is not None else None
        dns: dict[str, Any] = {}
        if server:  # weaveDNS's link address, on-link through the container's interface
            routes += [(net, None) for net in dns_routes(self.spec)]
            dns = {"nameservers": [server], "search": [self.spec.dns.domain.rstrip(".")]}
        if body.get("ipam_only"):  # `weave-ipam` for another plugin's interface: no veth
            rec = CniRecord(cid, ifname, netns, "", tuple(addresses), dns_name=body.get("dns_name"))
            async with self._lock:
                self.records[key] = rec
                self._save()
            self._register_dns(rec)
            return {
                "ips": [
                    {"address": str(a), **({"gateway": str(gateway)} if gateway else {})}
                    for a in addresses
                ],
                "routes": [{"dst": str(d), **({"gw": str(g)} if g else {})} for d, g in routes],
                "dns": dns,
            }
        rec = CniRecord(
            cid,
            ifname,
            netns,
            veths[0],  # or the second: as plugged, below
            tuple(addresses),
            hairpin,
            not given,
            body.get("dns_name") or None,
        )
        alias = rec.to_alias()
        try:
            async with self._lock:
                with PORT_CALLS.call(*veths):  # see dataplane/portcalls.py
                    others = {r.veth for r in self.records.values() if r.key != key}
                    plugged = await self._plumbing.run(
                        lambda: plumbing.plug(
                            netns, ifname, veths, addresses, routes, hairpin, mtu, alias, others
                        )
                    )
                    rec = replace(rec, veth=plugged.veth, mac=plugged.mac)
                    self.records[key] = rec
                    self._save()
        except BaseException:
            for iface in allocated:
                with contextlib.suppress(IpamError):
                    self.ipam.allocator.release_address(cid, int(iface.ip), time.time())
            raise
        self._register_dns(rec)
        self._daemon.mark_dirty("cni")
        log.info("cni add container=%s ifname=%s addresses=%s", cid, ifname, addresses)
        return {
            "interfaces": [
                {"name": plugged.veth, "mac": plugged.host_mac},
                {"name": ifname, "mac": plugged.mac, "sandbox": netns},
            ],
            "ips": [
                {
                    "address": str(a),
                    "interface": 1,
                    **({"gateway": str(gateway)} if gateway else {}),
                }
                for a in addresses
            ],
            "routes": [{"dst": str(d), **({"gw": str(g)} if g else {})} for d, g in routes],
            "dns": dns,
        }

    async def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._daemon is not None
        cid, ifname = str(body["container_id"]), str(body["ifname"])
        key = f"{cid}/{ifname}"
        rec = self.records.get(key)
        netns = str(body.get("netns") or (rec.netns if rec else ""))
        # The recorded veth, else whichever of its names is its own (plumbing._whose).
        veths: tuple[str, ...] = (rec.veth,) if rec else plumbing.veth_names(cid, ifname)
        if body.get("ipam_only") or (rec is not None and not rec.veth):
            veths = ()  # the interface is another plugin's
        async with self._lock:
            with PORT_CALLS.call(*veths):  # a converge leaves their elements alone meanwhile
                if veths:
                    ips = [a.ip for a in rec.addresses] if rec else []
                    await self._plumbing.run(
                        lambda: plumbing.unplug(veths, netns, ifname, key, ips)
                    )
                if rec is not None:
                    await self._release(rec)
                    self.records.pop(key, None)
                    self._save()
                elif not body.get("chained_ipam"):
                    self.ipam.release(cid)  # DEL after a lost record: still free the address
        self._daemon.mark_dirty("cni")
        log.info("cni del container=%s ifname=%s", cid, ifname)
        return {}

    async def check(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._daemon is not None
        key = f"{body['container_id']}/{body['ifname']}"
        rec = self.records.get(key)
        if rec is None:
            raise CniFailure(Code.UNKNOWN_CONTAINER, f"weaved has no CNI attachment {key}")
        problems = (
            await self._daemon.on_dataplane(
                lambda _dp: plumbing.host_problems(rec.veth, rec.netns, rec.ifname)
            )
            if rec.veth
            else []
        )
        seen = await self._daemon.on_dataplane(
            lambda _dp: plumbing.addresses_inside(rec.netns, rec.ifname)
        )
        if seen is None:
            problems.append(f"{rec.ifname} or its namespace {rec.netns} is gone")
        else:
            problems += [
                f"address {a} is missing on {rec.ifname}" for a in rec.addresses if a not in seen
            ]
        if problems:
            raise CniFailure(Code.IO_FAILURE, "; ".join(problems))
        return {}

    async def gc(self, body: dict[str, Any]) -> dict[str, Any]:
        """Forget what the runtime no longer has, among the attachments of the role that asks:
        `weave-net`'s own (with a veth), or `weave-ipam`'s (addresses for another plugin's
        interface, another network's list of valid attachments)."""
        valid = {f"{v.get('containerID')}/{v.get('ifname')}" for v in body.get("valid", []) or []}
        ipam_only = bool(body.get("ipam_only"))
        for key, rec in list(self.records.items()):
            if key not in valid and (not rec.veth) == ipam_only:
                await self.delete(
                    {"container_id": rec.container_id, "ifname": rec.ifname, "ipam_only": ipam_only}
                )
        return {}

    async def _expose(self, network: ipaddress.IPv4Network) -> list[ipaddress.IPv4Interface]:
        """Weave's `weave:expose` for a default route: the bridge's new address in `network`."""
        assert self._daemon is not None
        daemon = self._daemon

        async def bridge_addresses() -> list[ipaddress.IPv4Interface]:
            return (await daemon.on_dataplane(_bridge))[2]

        try:
            gw = await expose_for(self.spec_path, network, bridge_addresses, daemon.mark_dirty)
        except CniError as exc:
            raise CniFailure(exc.code, exc.msg) from None
        return [] if gw is None else [ipaddress.IPv4Interface(f"{gw}/{network.prefixlen}")]

    # --- how it is shown ------------------------------------------------------------------
    def ps_lines(self) -> str:
        return views.ps_lines(self.records.values())

    def status_section(self) -> str | None:
        return views.status_section(self.records.values())

    def report(self) -> tuple[str, Any]:
        return "CNI", views.report(self.records.values())

    # --- facts and API --------------------------------------------------------------------
    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        recs = [r for r in self.records.values() if r.veth]  # IPAM-only: no port of ours
        ports = tuple(
            WantedPort(
                r.veth,
                PortFlags(isolated=False, hairpin=r.hairpin, ipv6=False),
                f"cni {r.container_id[:12]} {r.ifname}",
            )
            for r in recs
        )
        return with_containers(facts, ports, {r.veth: r.addresses for r in recs})

    def routes(self) -> dict[tuple[str, str], Handler]:
        def wrap(fn: Any) -> Handler:
            async def handle(req: Request) -> Response:
                try:
                    return Response(200, {"result": await fn(req.body)})
                except CniFailure as exc:
                    return _err(exc.code, str(exc))
                except DependencyError as exc:
                    return _err(Code.TRY_AGAIN_LATER, str(exc).splitlines()[0])
                except (WeavedError, IpamError) as exc:
                    return _err(Code.IO_FAILURE, str(exc).splitlines()[0])
                except (KeyError, ValueError, TypeError) as exc:
                    return _err(Code.INVALID_CONFIG, f"bad request: {exc}")
                except OSError as exc:  # e.g. CNI_NETNS names a file that is no namespace
                    netns = req.body.get("netns")
                    return _err(Code.IO_FAILURE, f"{exc.strerror or exc} (CNI_NETNS={netns})")

            return handle

        async def status(_body: dict[str, Any]) -> dict[str, Any]:
            assert self._daemon is not None
            await self._daemon.on_dataplane(_bridge)
            return {}

        async def status_cni(_r: Request) -> Response:
            return Response(200, views.status_lines(self.records.values()))

        return {
            ("GET", "/status/cni"): status_cni,
            ("POST", "/cni/add"): wrap(self.add),
            ("POST", "/cni/del"): wrap(self.delete),
            ("POST", "/cni/check"): wrap(self.check),
            ("POST", "/cni/gc"): wrap(self.gc),
            ("POST", "/cni/status"): wrap(status),
        }


def _gone(rec: CniRecord) -> bool:
    """The namespace is gone; without a known namespace (a reclaimed attachment whose alias
    had no room for it), the veth is, which the kernel removes with the namespace."""
    if rec.netns:
        return not os.path.exists(rec.netns)
    return not rec.veth or not os.path.exists(f"/sys/class/net/{rec.veth}")


def _bridge(_dp: Any) -> tuple[int, int, list[ipaddress.IPv4Interface]]:
    return plumbing.bridge_info()
