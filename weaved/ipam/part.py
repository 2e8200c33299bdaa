"""IPAM inside the daemon: the allocator on the mesh's `IPallocation` channel, its timers,
awaitable allocations for attach/expose, and Weave's ipam views."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from weaved.control import Handler, Request, Response
from weaved.engine.reconcile import RuntimeFacts
from weaved.errors import UsageError
from weaved.ipam.address import CIDR
from weaved.ipam.allocator import (
    Allocated,
    Allocator,
    AllocatorConfig,
    Claimed,
    Completion,
    ConsensusStart,
    ObserverStart,
    Pending,
    SeedStart,
    StartMode,
)
from weaved.ipam.durable import DurableOutbox, WriteBehindStore
from weaved.ipam.errors import IpamError
from weaved.ipam.gossiper import IpamGossiper
from weaved.ipam.persist import FileStore
from weaved.ipam.status import (
    ipam_status,
    report_ipam,
    status_ipam_text,
    status_line,
    status_section,
    unreachable_share,
)
from weaved.mesh.gossip_api import PeerName, format_peer_name
from weaved.mesh.part import MeshPart
from weaved.model.addresses import ipv4_interface
from weaved.part import Component, Host
from weaved.spec.models import InitMode, Spec, parse_peer_name_text

log = logging.getLogger(__name__)

CHANNEL = "IPallocation"
EXPOSE_IDENT = "weave:expose"  # Weave's identifier for the host's own addresses
TICK_SECONDS = 5.0
HANDOFF_FLUSH_SECONDS = 0.5


@dataclass
class Wait:
    """A request's place in IPAM's queue while it waits, so a caller can say what for."""

    op_id: int | None = None


def start_mode(spec: Spec) -> StartMode:
    init = spec.ipalloc.init
    if init.mode is InitMode.SEED:
        return SeedStart(tuple(PeerName(parse_peer_name_text(s)) for s in init.seeds))
    if init.mode is InitMode.OBSERVER:
        return ObserverStart()
    # Weave guesses the number of starting peers as the initial targets plus ourselves.
    return ConsensusStart(init.peer_count or len(spec.peers) + 1)


def subnet_for(spec: Spec, text: str | None) -> CIDR:
    """`net:default`/None → the default subnet; `net:CIDR` → that subnet."""
    if text in (None, "net:default"):
        return CIDR.parse(spec.ipalloc.default_subnet or spec.ipalloc.range)
    assert text is not None
    return CIDR.parse(text.removeprefix("net:"))


class IpamPart(Component):
    name = "ipam"

    def __init__(self, spec: Spec, mesh: MeshPart, state_dir: Path) -> None:
        router = mesh.router
        self.spec = spec
        config = AllocatorConfig(
            our_name=router.us,
            our_uid=router.uid,
            nickname=spec.peer.nickname or socket.gethostname(),
            universe=CIDR.parse(spec.ipalloc.range),
            start=start_mode(spec),
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        # Written off the event loop; answers and messages wait for the write (durable.py).
        self.store = WriteBehindStore(FileStore(state_dir))
        self._router = router
        self.allocator = Allocator(
            config, peers=router.peer_view(), store=self.store, on_complete=self._complete
        )
        self.gossiper = IpamGossiper(self.allocator, clock=time.time)
        self.outbox = DurableOutbox(self.gossiper, self.store)
        self.allocator.attach(self.outbox)
        self.gossiper.set_sender(router.add_channel(CHANNEL, self.gossiper))
        self._waiting: dict[int, asyncio.Future[CIDR]] = {}
        self._expose: dict[int, str] = {}  # expose index → allocated ADDR/LEN
        self._expose_tasks: dict[int, asyncio.Task[None]] = {}
        self._expose_waits: dict[int, Wait] = {}
        self._claimed: set[str] = set()  # literal expose addresses inside the range
        self._claims: set[asyncio.Task[None]] = set()
        self._daemon: Host | None = None
        self._ticker: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        self.allocator.start(time.time())
        self._ticker = asyncio.create_task(self._tick(), name="ipam-tick")
        self.spec_changed(self.spec)

    async def stop(self) -> None:
        if self._daemon is not None and self._daemon.leaving:
            heir = self.allocator.shutdown(time.time())
            log.info("ipam space handed over heir=%s", format_peer_name(heir) if heir else "none")
            await self.store.close()  # the hand-over is written, and its broadcast released
            if heir is not None:
                await asyncio.sleep(HANDOFF_FLUSH_SECONDS)  # let the broadcast leave
            # As Weave's reset: a relaunched host must not take back addresses it gave away.
            self.store.path.unlink(missing_ok=True)
            log.info("ipam persisted data deleted path=%s", self.store.path)
        for task in [self._ticker, *self._expose_tasks.values(), *self._claims]:
            if task is not None:
                task.cancel()
        for future in self._waiting.values():
            future.cancel()
        await self.store.close()
        self.outbox.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.time()
            self.allocator.peers_changed(now)
            self.allocator.tick(now)

    # --- allocations --------------------------------------------------------------------
    def _complete(self, completion: Completion) -> None:
        future = self._waiting.pop(completion.op_id, None)
        if future is None or future.done():
            return
        outcome = completion.outcome
        if isinstance(outcome, IpamError):
            future.set_exception(outcome)
        elif isinstance(outcome, Allocated | Claimed):
            future.set_result(outcome.cidr)
        else:
            future.set_result(CIDR(0, 0))

    async def prime(self) -> None:
        """Wait until a ring exists, starting consensus if needed (Weave's `GET /ring`)."""
        result = self.allocator.prime(time.time())
        if isinstance(result, Pending):
            await self._settle(result, None, durable=True)

    async def _settle(
        self, result: Allocated | Claimed | Pending, wait: Wait | None, *, durable: bool
    ) -> CIDR:
        """The address once it is on disk (`durable`): an answer given must survive a crash.
        Not `durable`: once it is decided; the caller awaits `synced()` before it answers."""
        cidr = await self._outcome(result, wait)
        if durable:
            await self.store.synced()
        return cidr

    async def synced(self) -> None:
        """Returns once every allocation and claim made so far is on disk; PersistError if
        the write that should hold them failed."""
        await self.store.synced()

    async def _outcome(self, result: Allocated | Claimed | Pending, wait: Wait | None) -> CIDR:
        if not isinstance(result, Pending):
            return result.cidr
        future: asyncio.Future[CIDR] = asyncio.get_running_loop().create_future()
        self._waiting[result.op_id] = future
        if wait is not None:
            wait.op_id = result.op_id
        log.info("ipam request pending op=%d reason=%s", result.op_id, result.reason.value)
        try:
            return await future
        except asyncio.CancelledError:
            self.allocator.cancel(result.op_id)
            raise
        finally:
            if wait is not None:
                wait.op_id = None

    async def allocate(
        self,
        ident: str,
        subnet: CIDR,
        *,
        is_container: bool = True,
        wait: Wait | None = None,
        durable: bool = True,
    ) -> CIDR:
        """Waits while there is no consensus or no space; raises IpamError."""
        return await self._settle(
            self.allocator.allocate(ident, subnet, time.time(), is_container=is_container),
            wait,
            durable=durable,
        )

    async def claim(
        self,
        ident: str,
        cidr: CIDR,
        *,
        is_container: bool = True,
        no_error_on_unknown: bool = False,
        wait: Wait | None = None,
        durable: bool = True,
    ) -> CIDR:
        """Waits while the ring does not exist yet or another peer owns the address (unless
        `no_error_on_unknown`: then it is recorded now and finished in the background)."""
        result = self.allocator.claim(
            ident,
            cidr,
            time.time(),
            is_container=is_container,
            no_error_on_unknown=no_error_on_unknown,
        )
        return await self._settle(result, wait, durable=durable)

    def wait_text(self, wait: Wait) -> str | None:
        """What a waiting request waits for, with the words of `weaved status ipam`."""
        if wait.op_id is None:
            return None
        detail = self.allocator.pending_detail(wait.op_id)
        if detail is None:
            return None
        return f"waiting for IPAM: {detail} (Status: {status_line(self._status())})"

    def release(self, ident: str) -> tuple[CIDR, ...]:
        """Never blocks on consensus."""
        return self.allocator.release(ident, time.time())

    # --- expose (`net:` entries get their address from IPAM) ----------------------------
    def spec_changed(self, spec: Spec) -> None:
        self.spec = spec
        if self._daemon is None:
            return  # not started yet; start() calls again
        self._sync_claims(spec)
        wanted = {i: e.cidr for i, e in enumerate(spec.expose) if e.cidr.startswith("net:")}
        for index in list(self._expose_tasks):
            if index not in wanted:
                self._expose_tasks.pop(index).cancel()
        for index in list(self._expose):
            if index not in wanted or not self._in(self._expose[index], wanted[index]):
                self._drop_expose(index)
        for index, target in wanted.items():
            if index not in self._expose and index not in self._expose_tasks:
                self._expose_tasks[index] = asyncio.create_task(
                    self._allocate_expose(index, target), name=f"ipam-expose-{index}"
                )

    def _in(self, allocated: str, target: str) -> bool:
        net = subnet_for(self.spec, target)
        return ipaddress.IPv4Interface(allocated).ip in ipaddress.IPv4Network(str(net))

    def _drop_expose(self, index: int) -> None:
        allocated = self._expose.pop(index)
        still = any(a == allocated for a in self._expose.values())
        if not still and str(ipaddress.IPv4Interface(allocated).ip) not in self._claimed:
            addr = int(ipaddress.IPv4Interface(allocated).ip)
            with contextlib.suppress(IpamError):
                self.allocator.release_address(EXPOSE_IDENT, addr, time.time())

    def _sync_claims(self, spec: Spec) -> None:
        """Literal `expose` addresses inside the range are claimed, as Weave's expose does, so
        IPAM never gives them to a container too; one that left the spec is released."""
        universe = ipaddress.IPv4Network(spec.ipalloc.range)
        # ipv4_interface: remembered (a spec edit on a host with 1 000 exposed addresses).
        wanted = {
            str(ipv4_interface(e.cidr).ip): e.cidr
            for e in spec.expose
            if not e.cidr.startswith("net:") and ipv4_interface(e.cidr).ip in universe
        }
        allocated = {str(ipv4_interface(a).ip) for a in self._expose.values()}
        for ip in sorted(self._claimed - set(wanted)):
            self._claimed.discard(ip)
            if ip not in allocated:
                with contextlib.suppress(IpamError):
                    self.allocator.release_address(
                        EXPOSE_IDENT, int(ipaddress.IPv4Address(ip)), time.time()
                    )
        for ip, cidr in wanted.items():
            if ip not in self._claimed:
                self._claimed.add(ip)
                task = asyncio.create_task(self._claim_expose(cidr), name=f"ipam-claim-{ip}")
                self._claims.add(task)
                task.add_done_callback(self._claims.discard)

    async def _claim_expose(self, cidr: str) -> None:
        try:
            # Never waits: before the ring exists it is recorded and finished later.
            await self.claim(
                EXPOSE_IDENT, CIDR.parse(cidr), is_container=False, no_error_on_unknown=True
            )
        except IpamError as exc:
            log.error("expose %s: IPAM cannot claim the address: %s", cidr, exc)

    async def _allocate_expose(self, index: int, target: str) -> None:
        wait = self._expose_waits[index] = Wait()
        try:
            cidr = await self.allocate(
                EXPOSE_IDENT, subnet_for(self.spec, target), is_container=False, wait=wait
            )
        except IpamError as exc:
            log.error("expose[%d] %s: no address: %s", index, target, exc)
            return
        finally:
            self._expose_tasks.pop(index, None)
            self._expose_waits.pop(index, None)
        self._expose[index] = str(cidr)
        log.info("expose[%d] %s allocated %s", index, target, cidr)
        if self._daemon is not None:
            self._daemon.mark_dirty("ipam allocation")

    def facts_allocations(self) -> dict[int, str]:
        return dict(self._expose)

    def expose_pending(self) -> dict[int, str]:
        """`net:` expose entries still waiting for an address → what they wait for."""
        out = {}
        for index in self._expose_tasks:
            wait = self._expose_waits.get(index)
            out[index] = (self.wait_text(wait) if wait else None) or "waiting for IPAM"
        return out

    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        return replace(
            facts,
            expose_allocations={**facts.expose_allocations, **self._expose},
            peer_name=format_peer_name(self.allocator.our_name),
        )

    # --- views and API ------------------------------------------------------------------
    def default_subnet(self) -> CIDR:
        return subnet_for(self.spec, None)

    def _status(self) -> Any:
        return ipam_status(self.allocator, self.default_subnet())

    def status_section(self) -> str:
        return status_section(self._status()).rstrip("\n")

    def report(self) -> tuple[str, Any]:
        return "IPAM", report_ipam(self._status())

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def status_ipam(_r: Request) -> Response:
            status = self._status()
            text = status_ipam_text(status)
            dead = unreachable_share(status)
            if dead.ips:  # Weave's layout stays as it is; this line only appears when it matters
                names = ", ".join(s.nickname or format_peer_name(s.peer) for s in dead.peers)
                text += (
                    f"\n{dead.fraction:.1%} of the range ({dead.ips} IPs) is held by unreachable"
                    f" peers: {names}; if they are gone for good, reclaim it with"
                    " `weaved rmpeer PEER` on one host\n"
                )
            return Response(200, text)

        async def rmpeer(req: Request) -> Response:
            peer = str(req.body.get("peer", ""))
            if not peer:
                raise UsageError("rmpeer needs a peer name or nickname")
            name = self.allocator.lookup_peer(peer)
            conn = self._router.connections.get(name)
            if conn is not None and conn.established:
                raise UsageError(
                    f"peer {self.allocator.describe(name)} has an established connection to us;"
                    " it is not dead\n  hint: stop it with `weaved reset` on that host instead"
                )
            warning = ""
            if name in self.allocator.peers.reachable_peers():
                warning = (
                    f"warning: {self.allocator.describe(name)} still appears reachable through"
                    " other peers; its space is taken over as asked\n"
                )
            taken = self.allocator.rmpeer(peer, time.time())
            text = f"{taken} IPs taken over from {peer}\n"
            return Response(200, {"taken": taken, "text": text, "warning": warning})

        async def prime(req: Request) -> Response:
            """Weave's `GET /ring`; with `wait: false`, only the status line (no waiting)."""
            if req.body.get("wait", True):
                await self.prime()
            return Response(200, {"text": status_line(self._status())})

        async def expose_state(_r: Request) -> Response:
            allocations = {str(i): c for i, c in self._expose.items()}
            pending = {str(i): t for i, t in self.expose_pending().items()}
            entries = [e.cidr for e in self.spec.expose]
            return Response(
                200, {"entries": entries, "allocations": allocations, "pending": pending}
            )

        return {
            ("GET", "/status/ipam"): status_ipam,
            ("POST", "/ipam/rmpeer"): rmpeer,
            ("POST", "/ipam/prime"): prime,
            ("GET", "/ipam/expose"): expose_state,
        }
