"""Docker's network plugin in the daemon (`docker run --net=weave`): the `weavemesh` network and
IPAM drivers on a unix socket where dockerd looks for plugins, addresses from weaved's IPAM
(the ring), veths on weaved's bridge, the network `weave` kept in Docker, and weaveDNS names
for the containers on it.

Addresses are held in IPAM under `_docker-<id>` identities that are not containers: Docker
owns their lifetime (ReleaseAddress), so they survive a dockerd restart (containers with
`--restart=always` get theirs back) and a daemon restart (IPAM persists them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types

from weaved.attach.hostname import dns_name, rules_of
from weaved.attach.inflight import Plumbing
from weaved.compile.dns import uses_link_address
from weaved.control import ControlServer, Handler, Request, Response
from weaved.dataplane.portcalls import PORT_CALLS
from weaved.dns.part import DnsPart
from weaved.docker import core, plumbing
from weaved.docker.core import PluginError
from weaved.docker.keep import RESTARTING_POLICIES as RESTARTING
from weaved.docker.keep import Keeper, Kept
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import WeavedError
from weaved.integrations.docker_client import connect, docker_url
from weaved.ipam.address import CIDR
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.part import Component, Host
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

STORE = "docker-plugin.json"
IDENT_PREFIX = "_docker-"
IPAM_TIMEOUT = 30.0  # Docker gives up on a plugin call after about a minute
DOWN_PROBE_SECONDS = 2  # Docker not answering this fast is taken as down (stopping, restoring)
WATCH_SECONDS = 3.0  # how often the network and the containers on it are looked at


@dataclass(frozen=True)
class Endpoint:
    veth: str  # host side
    address: str  # what our IPAM gave Docker for it ('' when another IPAM did)


class DockerPluginPart(Component):
    name = "docker-plugin"

    def __init__(self, spec: Spec, state_dir: Path, ipam: IpamPart, dns: DnsPart | None) -> None:
        self.spec = spec
        self.ipam = ipam
        self.dns = dns
        self.store = state_dir / STORE
        self.endpoints: dict[str, Endpoint] = {}
        self.multicast: dict[str, bool] = {}  # network ID → multicast route wanted
        self.named: dict[str, str] = {}  # container ID → address registered in weaveDNS
        self.listed: dict[str, str] = {}  # container ID → its `weaved ps` line
        self.keeper = Keeper()  # addresses kept for --restart=always across a dockerd restart
        self._policies: dict[str, str] = {}  # container ID → its restart policy
        self._daemon: Host | None = None
        self._server: ControlServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._plumbing = Plumbing()  # endpoints' kernel work, off the dataplane thread

    @property
    def enabled(self) -> bool:
        return self.spec.docker.plugin.enabled

    @property
    def driver(self) -> str:
        return core.plugin_name(self.spec.docker.plugin.socket)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        if not self.enabled:
            return
        loaded = self._load()
        # Endpoints whose veth went while we were down (a reboot) are Docker's to forget.
        alive = await daemon.on_dataplane(
            lambda _dp: {e for e, v in loaded.items() if plumbing.exists(v.veth)}
        )
        self.endpoints = {e: v for e, v in loaded.items() if e in alive}
        self.keeper.kept = self._load_kept()
        self._server = ControlServer(Path(self.spec.docker.plugin.socket), self._routes())
        await self._server.start()
        self._task = asyncio.create_task(self._watch(), name="docker-plugin-watch")
        log.info("docker plugin listening socket=%s driver=%s", self._server.path, self.driver)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._server is not None:
            await self._server.stop()
        self._plumbing.close()

    def spec_changed(self, spec: Spec) -> None:
        if spec.docker.plugin != self.spec.docker.plugin and self._daemon is not None:
            log.warning("docker.plugin changes take effect when the daemon restarts")
            docker_spec = spec.docker.model_copy(update={"plugin": self.spec.docker.plugin})
            spec = spec.model_copy(update={"docker": docker_spec})
        self.spec = spec

    def _load(self) -> dict[str, Endpoint]:
        try:
            raw = json.loads(self.store.read_text())
            return {
                str(k): Endpoint(str(v["veth"]), str(v.get("address") or ""))
                for k, v in raw.get("endpoints", {}).items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
            log.error("cannot read %s (%s); plugin endpoints are forgotten", self.store, exc)
            return {}

    def _load_kept(self) -> list[Kept]:
        try:
            return Keeper.kept_from_json(json.loads(self.store.read_text()).get("kept"))
        except (OSError, ValueError, AttributeError):
            return []

    def _save(self) -> None:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store.with_suffix(".tmp")
        endpoints = {k: {"veth": v.veth, "address": v.address} for k, v in self.endpoints.items()}
        tmp.write_text(json.dumps({"endpoints": endpoints, "kept": self.keeper.to_json()}))
        os.replace(tmp, self.store)

    def live_keys(self) -> set[str]:
        """IPAM identities the plugin holds (kept when `attach` prunes after a start)."""
        return {i for i in self.ipam.allocator.owned_addresses() if i.startswith(IDENT_PREFIX)}

    # --- the network driver ---------------------------------------------------------------
    async def _create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._daemon is not None
        endpoint = str(body.get("EndpointID", ""))
        interface = body.get("Interface")
        if not isinstance(interface, dict):
            raise PluginError("Not supported: creating an interface from within CreateEndpoint")
        host, peer = core.veth_pair(endpoint)
        given_mac = str(interface.get("MacAddress") or "") or None
        address = str(interface.get("Address") or "")
        sends_from = _addresses(address)
        with PORT_CALLS.call(host):  # a converge leaves its elements alone meanwhile
            self.endpoints[endpoint] = Endpoint(host, address.split("/")[0])
            self._save()
            mac = await self._plumbing.run(
                lambda: plumbing.create_pair(host, peer, given_mac, sends_from)
            )
        self._daemon.mark_dirty("docker endpoint")
        log.info("docker endpoint created endpoint=%s veth=%s", endpoint[:12], host)
        return {} if given_mac else {"Interface": {"MacAddress": mac}}

    async def _delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._daemon is not None
        endpoint = str(body.get("EndpointID", ""))
        host, _ = core.veth_pair(endpoint)
        known = self.endpoints.get(endpoint)
        ips = _addresses(known.address) if known is not None else []
        with PORT_CALLS.call(host):
            await self._plumbing.run(lambda: plumbing.delete_pair(host, ips))
            if self.endpoints.pop(endpoint, None) is not None:
                self._save()
        self._daemon.mark_dirty("docker endpoint")
        return {}

    async def _join(self, body: dict[str, Any]) -> dict[str, Any]:
        network = str(body.get("NetworkID", ""))
        if network not in self.multicast:
            self.multicast[network] = await asyncio.to_thread(self._network_multicast, network)
        dns_route = self.dns is not None and uses_link_address(self.spec)
        return core.join_answer(str(body.get("EndpointID", "")), self.multicast[network], dns_route)

    def _network_multicast(self, network: str) -> bool:
        """(Thread.) After a restart Docker does not say CreateNetwork again: ask it."""
        client = connect(docker_url(self.spec.docker.socket), 5)
        try:
            info: dict[str, Any] = client.api.inspect_network(network)
        except (docker.errors.APIError, OSError) as exc:
            raise PluginError(f"unable to find network info: {exc}") from None
        finally:
            client.close()
        return core.multicast_of({core.GENERIC_DATA: info.get("Options") or {}})

    async def _create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        self.multicast[str(body.get("NetworkID", ""))] = core.multicast_of(body.get("Options"))
        return {}

    async def _delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        self.multicast.pop(str(body.get("NetworkID", "")), None)
        return {}

    # --- the IPAM driver ------------------------------------------------------------------
    async def _request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        _, answer = core.request_pool(body, str(self.ipam.default_subnet()))
        return answer

    async def _request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool, address = core.requested_address(body)
        if address is None and self.keeper.kept and not await self._docker_answers():
            kept = self.keeper.take(pool.pool_id)
            if kept is not None:  # dockerd restoring a --restart=always container
                self._save()
                log.info("docker ipam gave back kept address=%s", kept.address)
                return {"Address": kept.address, "Data": {}}
        ident = IDENT_PREFIX + uuid.uuid4().hex[:16]
        try:
            if address is not None:
                cidr = CIDR.parse(f"{address}/{pool.subnet.prefixlen}")
                await asyncio.wait_for(
                    self.ipam.claim(ident, cidr, is_container=False), IPAM_TIMEOUT
                )
            else:
                subnet = CIDR.parse(str(pool.iprange))
                got = await asyncio.wait_for(
                    self.ipam.allocate(ident, subnet, is_container=False), IPAM_TIMEOUT
                )
                cidr = CIDR(got.addr, pool.subnet.prefixlen)  # the range is no subnet
        except TimeoutError:
            self.ipam.release(ident)
            raise PluginError(
                f"weaved IPAM gave no address in {pool.iprange} within {IPAM_TIMEOUT:g} s"
                " (see `weaved status ipam`)"
            ) from None
        except IpamError as exc:
            self.ipam.release(ident)
            raise PluginError(str(exc).splitlines()[0]) from None
        log.info("docker ipam address=%s ident=%s", cidr, ident)
        return {"Address": str(cidr), "Data": {}}

    async def _release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = core.parse_pool_id(str(body.get("PoolID", "")))
        address = str(body.get("Address", "")).split("/")[0]
        if address == str(pool.subnet.network_address):
            return {}  # the gateway we made up
        for ident, cidrs in self.ipam.allocator.owned_addresses().items():
            if ident.startswith(IDENT_PREFIX) and any(
                str(c).split("/")[0] == address for c in cidrs
            ):
                container = self.keeper.keeps(address)
                if container is not None and not await self._docker_answers():
                    cidr = f"{address}/{pool.subnet.prefixlen}"
                    self.keeper.keep(Kept(pool.pool_id, ident, cidr, container))
                    self._save()
                    log.info("docker ipam kept address=%s for container=%s", cidr, container[:12])
                    return {}
                self.ipam.release(ident)
                log.info("docker ipam released address=%s ident=%s", address, ident)
                return {}
        raise PluginError(f"address {address} is not held by the weavemesh IPAM driver")

    # --- watching Docker: the default network, weaveDNS names ------------------------------
    async def _watch(self) -> None:
        quiet = ""
        while True:
            try:
                seen = await asyncio.to_thread(self._look_at_docker)
                self._sync_names(seen)
                self.keeper.seen(
                    {a: c for c, (a, _, _) in seen.items() if self._policies.get(c) in RESTARTING}
                )
                self._give_back_kept()
                quiet = ""
            except (WeavedError, docker.errors.APIError, OSError) as exc:
                if str(exc) != quiet:
                    log.info("docker plugin: docker not usable yet: %s", str(exc).splitlines()[0])
                quiet = str(exc)
            await asyncio.sleep(WATCH_SECONDS)

    def _give_back_kept(self) -> None:
        """Docker answers again: addresses kept that no restarted container took go back."""
        left = self.keeper.give_back()
        for kept in left:
            self.ipam.release(kept.ident)
            log.info("docker ipam released kept address=%s", kept.address)
        if left:
            self._save()

    async def _docker_answers(self) -> bool:
        def ping() -> bool:
            try:
                client = connect(docker_url(self.spec.docker.socket), DOWN_PROBE_SECONDS)
            except WeavedError:
                return False
            try:
                return bool(client.api.ping())
            except (docker.errors.APIError, OSError, docker.errors.DockerException):
                return False
            finally:
                client.close()

        return await asyncio.to_thread(ping)

    def _look_at_docker(self) -> dict[str, tuple[str, str | None, str]]:
        """(Thread.) Create the default network when missing; return the running containers
        with an endpoint of ours: ID → (address, hostname, name)."""
        client = connect(docker_url(self.spec.docker.socket), 5)
        try:
            self._ensure_network(client)
            out: dict[str, tuple[str, str | None, str]] = {}
            rules = rules_of(self.spec.docker)
            listed: dict[str, str] = {}
            for summary in client.api.containers():
                nets = (summary.get("NetworkSettings") or {}).get("Networks") or {}
                for net in nets.values():
                    if net.get("EndpointID") in self.endpoints and net.get("IPAddress"):
                        cid = str(summary["Id"])
                        if cid not in self._policies:
                            host_config = client.api.inspect_container(cid).get("HostConfig")
                            policy = (host_config or {}).get("RestartPolicy") or {}
                            self._policies[cid] = str(policy.get("Name") or "")
                        host = None
                        if cid not in self.named:
                            cfg = client.api.inspect_container(cid).get("Config") or {}
                            host = str(cfg.get("Hostname") or "")
                            if cfg.get("Domainname"):
                                host = f"{host}.{cfg['Domainname']}"
                        name = str((summary.get("Names") or ["/"])[0]).lstrip("/")
                        # Weave proxy's hostname rules (docker.hostname_*).
                        name = dns_name(rules, name, summary.get("Labels"))
                        out[cid] = (str(net["IPAddress"]), host, name)
                        cidr = f"{net['IPAddress']}/{net.get('IPPrefixLen') or 32}"
                        listed[cid] = f"{cid[:12]} {net.get('MacAddress') or ''} {cidr}"
            self.listed = listed
            self._policies = {c: p for c, p in self._policies.items() if c in listed}
            return out
        finally:
            client.close()

    def _ensure_network(self, client: docker.DockerClient) -> None:
        name = self.spec.docker.plugin.network
        if not name:
            return
        if any(n.get("Name") == name for n in client.api.networks(names=[name])):
            return
        ipam = docker.types.IPAMConfig(
            driver=self.driver,
            pool_configs=[docker.types.IPAMPool(subnet=str(self.ipam.default_subnet()))],
        )
        client.api.create_network(
            name, driver=self.driver, ipam=ipam, options={core.MULTICAST_OPTION: "true"}
        )
        log.info("docker network created name=%s driver=%s", name, self.driver)

    def _sync_names(self, seen: dict[str, tuple[str, str | None, str]]) -> None:
        if self.dns is None:
            return
        for cid, (address, hostname, name) in seen.items():
            if self.named.get(cid) != address:
                self.dns.service.register_container(cid, [address], hostname or None, name)
                self.named[cid] = address
        for cid in [c for c in self.named if c not in seen]:
            self.dns.service.unregister_container(cid)
            del self.named[cid]

    def ps_lines(self) -> str:
        """`weaved ps` lines (Weave's layout) of running containers on our networks."""
        return "".join(line + "\n" for line in self.listed.values())

    # --- facts and serving ----------------------------------------------------------------
    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        ports = tuple(
            WantedPort(e.veth, CONTAINER_FLAGS, f"docker {ep[:12]}")
            for ep, e in self.endpoints.items()
        )
        # Addresses per port: anti-spoofing, and weaveDNS's route back to each container.
        addresses = {e.veth: (e.address,) for e in self.endpoints.values() if e.address}
        return replace(
            facts,
            ports=facts.ports + ports,
            container_ports=tuple(sorted({**dict(facts.container_ports), **addresses}.items())),
        )

    def _routes(self) -> dict[tuple[str, str], Handler]:
        def wrap(fn: Any) -> Handler:
            async def handle(req: Request) -> Response:
                try:
                    return Response(200, await fn(req.body))
                except (PluginError, WeavedError) as exc:
                    log.warning("docker plugin %s failed: %s", req.path, exc)
                    return Response(500, {"Err": str(exc).splitlines()[0]})

            return handle

        async def const(value: dict[str, Any]) -> dict[str, Any]:
            return value

        def answer(value: dict[str, Any]) -> Any:
            return lambda _body: const(value)

        table: dict[str, Any] = {
            "Plugin.Activate": answer(core.activate_answer()),
            "NetworkDriver.GetCapabilities": answer(
                {"Scope": "local", "ConnectivityScope": "local"}
            ),
            "NetworkDriver.CreateNetwork": self._create_network,
            "NetworkDriver.DeleteNetwork": self._delete_network,
            "NetworkDriver.CreateEndpoint": self._create_endpoint,
            "NetworkDriver.DeleteEndpoint": self._delete_endpoint,
            "NetworkDriver.EndpointOperInfo": answer({"Value": {}}),
            "NetworkDriver.Join": self._join,
            "NetworkDriver.Leave": answer({}),
            "NetworkDriver.DiscoverNew": answer({}),
            "NetworkDriver.DiscoverDelete": answer({}),
            "NetworkDriver.ProgramExternalConnectivity": answer({}),
            "NetworkDriver.RevokeExternalConnectivity": answer({}),
            "IpamDriver.GetCapabilities": answer(
                {"RequiresMACAddress": False, "RequiresRequestReplay": False}
            ),
            "IpamDriver.GetDefaultAddressSpaces": answer(
                {
                    "LocalDefaultAddressSpace": core.LOCAL_SPACE,
                    "GlobalDefaultAddressSpace": core.GLOBAL_SPACE,
                }
            ),
            "IpamDriver.RequestPool": self._request_pool,
            "IpamDriver.ReleasePool": answer({}),
            "IpamDriver.RequestAddress": self._request_address,
            "IpamDriver.ReleaseAddress": self._release_address,
        }
        return {("POST", f"/{name}"): wrap(fn) for name, fn in table.items()}

    def status_section(self) -> str | None:
        if not self.enabled:
            return None
        return (
            "        Service: docker-plugin\n"
            f"         Driver: {self.driver} ({self.spec.docker.plugin.socket})\n"
            f"      Endpoints: {len(self.endpoints)}"
        )


def _addresses(text: str) -> list[ipaddress.IPv4Address]:
    """An endpoint's address as Docker gave it ("10.32.0.5/12" or ""), for anti-spoofing."""
    try:
        return [ipaddress.IPv4Address(text.split("/")[0])] if text else []
    except ValueError:
        return []
