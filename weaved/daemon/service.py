"""`weaved daemon`: converge at start, on every spec edit, on any trigger and periodically.

Triggers only mark the reconciler dirty; one loop coalesces them and converges (reconcile on
state, not on events). Kernel work runs on one dedicated thread, because pyroute2 runs its own
event loop and must not be driven from ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from weaved import __version__
from weaved.control import ControlServer, Handler, Request, Response
from weaved.daemon.lastgood import last_good_path, save_last_good
from weaved.daemon.notify import (
    reloading_message,
    sd_notify,
    status_line,
    watchdog,
    watchdog_interval,
)
from weaved.daemon.rollout import Guard, Probe, Rollout
from weaved.daemon.watch import FileKey, file_key, poll_file, watch_file
from weaved.dataplane.base import Dataplane
from weaved.dataplane.portcalls import PORT_CALLS
from weaved.engine.reconcile import Applied, CompileCache, RuntimeFacts, apply_spec, plan_spec
from weaved.errors import WeavedError
from weaved.mesh.status_text import report_head
from weaved.model.resources import Resource, State
from weaved.part import Component
from weaved.plan.changes import Plan, make_plan, merge_plans
from weaved.plan.render import plan_json, render_plan
from weaved.spec.loader import parse_spec_bytes, read_spec_file
from weaved.spec.models import Spec

log = logging.getLogger(__name__)
T = TypeVar("T")
# `weaved daemon`'s exit status after `weaved reset` made it leave the network: the unit lists
# it in RestartPreventExitStatus= (Restart=always brings back every other exit, SIGTERM's 0 too).
EXIT_LEFT = 3


@dataclass(frozen=True)
class DaemonConfig:
    spec_path: Path
    state_dir: Path
    socket_path: Path
    resync_seconds: float = 30.0


@dataclass
class ConvergeRecord:
    at: float  # wall clock, for display
    reason: str
    changes: int = 0
    writes: int = 0
    seconds: float = 0.0
    error: str | None = None
    plan_text: str = ""


@dataclass
class DaemonState:
    spec: Spec | None = None
    spec_digest: str = ""
    spec_raw: bytes = b""  # the file content of `spec`, what a rollback goes back to
    spec_error: str | None = None
    # The spec in force came from the saved copy: the file was refused at start.
    from_last_good: bool = False
    last: ConvergeRecord | None = None
    converges: int = 0
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Loaded:
    digest: str
    raw: bytes
    spec: Spec | None = None
    error: str | None = None
    password_file: str | None = None  # named by the spec read, even when it was refused
    password_key: FileKey = None  # that file as it was when the spec was read


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        dataplane_factory: Callable[[], Dataplane],
        components: list[Component] | None = None,
        start_spec: Spec | None = None,
    ) -> None:
        self.config = config
        self.state = DaemonState()
        # What the parts were built from; used when the file on disk is refused at start.
        self._start_spec = start_spec
        self.components = components or []
        self.dirty = asyncio.Event()
        self.stopping = asyncio.Event()
        self.converged = asyncio.Condition()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataplane")
        self._dataplane_factory = dataplane_factory
        self._dataplane: Dataplane | None = None
        self.compiles = CompileCache()  # the last compile, reused while spec and facts stay
        self.leaving = False  # set by `weaved reset`: hand our IPAM space to a live peer
        self._password_watch: tuple[str | None, asyncio.Task[None] | None] = (None, None)
        self.rollout = Rollout(self)
        self._applied: tuple[Spec, bytes] | None = None  # last spec applied and confirmed
        self._confirm: float | None = None  # `weaved apply --confirm T` in progress
        self._reloading = False  # SIGHUP: READY=1 again once its converge is done
        self._status = ""  # the last STATUS= sent to systemd

    @property
    def rollbacks(self) -> int:
        return self.rollout.rollbacks

    def part(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    # --- kernel work on the dataplane thread --------------------------------------------
    async def on_dataplane(self, fn: Callable[[Dataplane], T]) -> T:
        def run() -> T:
            if self._dataplane is None:
                self._dataplane = self._dataplane_factory()
            return fn(self._dataplane)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # --- spec ---------------------------------------------------------------------------
    async def _read_spec(self) -> bool:
        """Load the spec if its content changed; keep the last good one if it is invalid.
        A refused spec is looked at again on every converge (a fixed password file, say,
        makes it valid without any edit of the spec itself). Parsing runs off the event loop:
        even a bounded hostile spec must not make status or DNS wait."""
        started = time.perf_counter()
        loaded = await asyncio.to_thread(self._load_spec, self.state.spec_digest)
        if loaded is None:
            return False
        read = time.perf_counter() - started
        first_look = loaded.digest != self.state.spec_digest
        self.state.spec_digest = loaded.digest
        self._follow_password_file(loaded.password_file, loaded.password_key)
        if loaded.spec is None:
            if first_look or loaded.error != self.state.spec_error:
                self._refuse(loaded.error or "no valid spec")
            return False
        if self.rollout.refuses(loaded.digest, loaded.spec):
            self.state.spec_error = None
            return False  # rolled back: not in force until the file changes
        self.state.spec = loaded.spec
        self.state.spec_raw = loaded.raw
        self.rollout.lift()  # a new content: whatever was rolled back is history
        self.state.spec_error = None
        self.state.from_last_good = False
        await asyncio.to_thread(save_last_good, self.config.state_dir, loaded.raw)
        for component in self.components:
            component.spec_changed(loaded.spec)
        log.info("spec loaded seconds=%.3f read=%.3f", time.perf_counter() - started, read)
        return True

    def _load_spec(self, known_digest: str) -> _Loaded | None:
        """(Worker thread.) None when the file is the spec already in force."""
        path = self.config.spec_path
        try:
            raw = read_spec_file(path)
        except WeavedError as exc:
            return _Loaded("", b"", error=str(exc))
        digest = hashlib.sha256(raw).hexdigest()
        if digest == known_digest and self.state.spec_error is None:
            return None
        try:
            spec = parse_spec_bytes(raw, str(path))
            return _Loaded(digest, raw, spec=spec, password_file=spec.password_file,
                           password_key=_key_of(spec.password_file))  # fmt: skip
        except WeavedError as exc:
            name = _password_file_of(raw)
            return _Loaded(digest, raw, error=str(exc), password_file=name,
                           password_key=_key_of(name))  # fmt: skip
        except Exception as exc:  # a loader bug: never "(valid)" with a spec not in force
            log.exception("loading the spec crashed path=%s", path)
            return _Loaded(digest, raw, error=f"{path}: internal error while loading: {exc!r}")

    def _follow_password_file(self, name: str | None, seen: FileKey) -> None:
        """Follow the password file the spec names, so that fixing it (its mode, say) takes
        effect at once rather than at the next resync; compared with the file as it was when
        the spec was read, so a fix made in between is not missed."""
        if name == self._password_watch[0]:
            return
        if self._password_watch[1] is not None:
            self._password_watch[1].cancel()
        task = None
        if name is not None:
            watcher = poll_file(Path(name), lambda: self.mark_dirty("password file edit"), seen)
            task = asyncio.create_task(
                _quietly(watcher, "watching the password file"), name="watch-password"
            )
        self._password_watch = (name, task)

    def _refuse(self, error: str) -> None:
        self.state.spec_error = error
        log.error("spec refused, the last good spec stays in force:\n%s", error)

    def mark_dirty(self, reason: str = "trigger") -> None:
        log.debug("reconcile requested reason=%s", reason)
        self.dirty.set()

    # --- converge -----------------------------------------------------------------------
    def runtime_facts(self) -> RuntimeFacts:
        # Taken before the records: a call that ends after it is not in them (portcalls.py).
        facts = RuntimeFacts(calls_since=PORT_CALLS.now())
        for component in self.components:
            facts = component.facts(facts)
        return facts

    def components_plan(self, spec: Spec) -> Plan:
        """Objects the parts own outside the kernel (mesh targets, …), planned like the rest."""
        desired: dict[str, Resource] = {}
        observed: dict[str, Resource] = {}
        for component in self.components:
            desired.update(component.desired(spec).resources)
            observed.update(component.observed().resources)
        return make_plan(State(desired), State(observed))

    async def converge(self, reason: str) -> ConvergeRecord:
        await self._read_spec()
        spec = self.state.spec
        record = ConvergeRecord(time.time(), reason)
        if spec is None:
            record.error = self.state.spec_error or "no valid spec"
        else:
            good, good_raw = self._applied or (None, b"")
            guard = await self.rollout.prepare(good, good_raw, spec, self._confirm)
            if guard is None:  # applied without a net: what `apply --confirm` can still check
                guard = self.rollout.unguarded(good, good_raw, spec, self._confirm)
            await self._converge_spec(spec, record)
            if guard is not None and record.error is None:
                failed = await self.rollout.failing(guard.probes, guard.timeout)
                if failed:
                    record = await self._roll_back(guard, spec, failed)
            if record.error is None:
                self._applied = (self.state.spec or spec, self.state.spec_raw)
        self.state.last = record
        self._notify(record)
        self.state.converges += 1
        async with self.converged:
            self.converged.notify_all()
        return record

    async def _converge_spec(self, spec: Spec, record: ConvergeRecord) -> None:
        facts = self.runtime_facts()
        try:
            applied: Applied = await self.on_dataplane(
                lambda dp: apply_spec(spec, dp, facts, self.compiles)
            )
            parts = self.components_plan(spec)
            for component in self.components:
                record.writes += component.converge(spec)
            plan = merge_plans(applied.planned.plan, parts)
            record.changes = len(plan.changes)
            record.writes += applied.report.writes
            record.seconds = applied.seconds
            record.plan_text = render_plan(plan) if record.changes else ""
        except WeavedError as exc:
            record.error = str(exc)
            # Once per distinct error: a failing resync every 30 s is one problem, not many.
            previous = self.state.last.error if self.state.last else None
            level = logging.DEBUG if previous == record.error else logging.ERROR
            log.log(level, "converge failed reason=%s error=%s", record.reason, exc)

    async def _roll_back(self, guard: Guard, bad: Spec, failed: list[Probe]) -> ConvergeRecord:
        """Back to the last good spec: a converge like any other, its plan logged."""
        self.rollout.rolled_back(guard, bad, self.state.spec_digest, failed)
        self.state.spec, self.state.spec_raw = guard.good, guard.good_raw
        for component in self.components:
            component.spec_changed(guard.good)
        if guard.good_raw:  # empty when the good spec is the saved copy itself
            await asyncio.to_thread(save_last_good, self.config.state_dir, guard.good_raw)
        record = ConvergeRecord(time.time(), "rollback")
        await self._converge_spec(guard.good, record)
        log.warning("rollback plan (%d changes):\n%s", record.changes, record.plan_text)
        return record

    def _notify(self, record: ConvergeRecord) -> None:
        status = status_line(record.error, record.changes, record.writes, record.reason)
        if status != self._status:
            self._status = status
            sd_notify(status)
        if self._reloading:
            self._reloading = False
            sd_notify("READY=1")

    def reload(self) -> None:
        """SIGHUP (systemctl reload): re-read the spec and converge now."""
        self._reloading = True
        sd_notify(reloading_message())
        log.info("reload requested: converging")
        self.mark_dirty("SIGHUP")

    async def _reconcile_loop(self) -> None:
        reason = "start"
        while not self.stopping.is_set():
            try:
                await self.converge(reason)
            except Exception as exc:  # a part's bug must not stop reconciliation for good
                log.exception("converge crashed reason=%s", reason)
                self.state.last = ConvergeRecord(
                    time.time(), reason, error=f"internal error: {exc}"
                )
                self.state.converges += 1  # an attempt: start-up must not wait for success
                async with self.converged:
                    self.converged.notify_all()
            try:
                await asyncio.wait_for(self.dirty.wait(), timeout=self.config.resync_seconds)
                reason = "trigger"
            except TimeoutError:
                reason = "resync"
            self.dirty.clear()

    # --- API ----------------------------------------------------------------------------
    def _routes(self) -> dict[tuple[str, str], Handler]:
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/ping"): self._ping,
            ("GET", "/status"): self._status_json,
            ("GET", "/status/text"): self._status_text,
            ("POST", "/plan"): self._plan,
            ("POST", "/apply"): self._apply,
            ("POST", "/shutdown"): self._shutdown,
            ("GET", "/report"): self._report,
        }
        for component in self.components:
            routes.update(component.routes())
        return routes

    def control_routes(self) -> dict[tuple[str, str], Handler]:
        """The control API's handlers (Weave's HTTP API serves some of them again)."""
        return self._routes()

    async def _ping(self, _req: Request) -> Response:
        return Response(200, {"ok": True, "spec": str(self.config.spec_path)})

    def status_json(self) -> dict[str, Any]:
        last = self.state.last
        return {
            "version": __version__,
            "spec": str(self.config.spec_path),
            "spec_error": self.state.spec_error,
            "spec_from_last_good": self.state.from_last_good,
            "rollback": self.rollout.status_line(),
            "converges": self.state.converges,
            "problems": [p for c in self.components for p in c.problems()],
            "last": None
            if last is None
            else {
                "at": last.at,
                "reason": last.reason,
                "changes": last.changes,
                "writes": last.writes,
                "seconds": round(last.seconds, 4),
                "error": last.error,
            },
        }

    async def _status_json(self, _req: Request) -> Response:
        return Response(200, self.status_json())

    def reconciler_section(self) -> str:
        last = self.state.last
        spec_state = (
            "valid" if self.state.spec_error is None else "INVALID (last good spec in force)"
        )
        if self.state.spec_error is not None and self.state.from_last_good:
            copy = last_good_path(self.config.state_dir)
            spec_state = f"INVALID since start; running the last good spec saved in {copy}"
        lines = [
            "        Service: reconciler",
            f"           Spec: {self.config.spec_path} ({spec_state})",
        ]
        if last is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.at))
            if last.error:
                lines.append(f"          State: error at {stamp}: {last.error.splitlines()[0]}")
            else:
                lines.append(
                    f"          State: converged at {stamp} ({last.reason}, {last.changes} changes,"
                    f" {last.writes} writes)"
                )
        if self.state.spec_error:
            lines.append(f"      SpecError: {self.state.spec_error.splitlines()[0]}")
        if (rollback := self.rollout.status_line()) is not None:
            lines.append(f"       Rollback: {rollback}")
        lines += [f"        Problem: {p}" for c in self.components for p in c.problems()]
        return "\n".join(lines)

    async def _status_text(self, req: Request) -> Response:
        section = req.query.get("section", "")
        if section:
            for component in self.components:
                handler = component.routes().get(("GET", f"/status/{section}"))
                if handler is not None:
                    return await handler(req)
            return Response(
                404, {"error": f"no status section {section!r} (is that part running?)"}
            )
        return Response(200, self.status_text())

    def status_text(self) -> str:
        """`weaved status`: Weave's blocks (router, ipam, dns) and then the reconciler's."""
        # Weave's line (scripts grep for it); weaved has no version check at all.
        blocks = [f"        Version: weaved {__version__} (version check update disabled)"]
        blocks += [s for c in self.components if (s := c.status_section())]
        blocks.append(self.reconciler_section())
        return "\n\n".join(blocks) + "\n"

    async def _plan(self, req: Request) -> Response:
        spec = await self._spec_for(req)
        facts = self.runtime_facts()
        planned = await self.on_dataplane(lambda dp: plan_spec(spec, dp, facts, self.compiles))
        plan = merge_plans(planned.plan, self.components_plan(spec))
        text = render_plan(plan)
        if self.rollout.last is not None:  # what the file on disk would change again
            text = f"# the spec file was {self.rollout.status_line()}; it would change:\n{text}"
        return Response(200, {"text": text, "json": plan_json(plan)})

    async def _apply(self, req: Request) -> Response:
        confirm = req.body.get("confirm")
        self._confirm = float(confirm) if isinstance(confirm, int | float) and confirm > 0 else None
        try:
            record = await self.converge("apply")
        finally:
            self._confirm = None
        if record.reason == "rollback":
            return Response(409, {"error": f"{self.rollout.status_line()}"})
        if record.error:
            return Response(409, {"error": record.error})
        return Response(
            200,
            {
                "changes": record.changes,
                "writes": record.writes,
                "seconds": record.seconds,
                "text": record.plan_text,
            },
        )

    async def _report(self, _req: Request) -> Response:
        # Weave's head (Ready, Version, VersionCheck), then weaved's reconciler, then the parts.
        body = report_head(f"weaved {__version__}", ready=self.state.converges > 0)
        body["Reconciler"] = self.status_json()
        for component in self.components:
            if (item := component.report()) is not None:
                body[item[0]] = item[1]
        return Response(200, body)

    async def _shutdown(self, req: Request) -> Response:
        # `weaved reset` leaves the network for good: parts give away what they hold.
        self.leaving = bool(req.body.get("leave", False))
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return Response(200, {"ok": True})

    async def _spec_for(self, _req: Request) -> Spec:
        await self._read_spec()
        if self.state.spec_error is not None:
            raise WeavedError(self.state.spec_error)
        if self.state.spec is None:
            raise WeavedError("no valid spec loaded")
        if self.rollout.last is not None:
            return self.rollout.last.bad_spec
        return self.state.spec

    # --- lifecycle ----------------------------------------------------------------------
    async def run(self) -> int:
        await self._read_spec()
        if self.state.spec is None and self.rollout.last is not None:
            # The file is one rolled back before the restart: start from the good copy.
            self.state.spec, self.state.spec_raw = await asyncio.to_thread(self._saved_copy)
        if self.state.spec is None and self._start_spec is not None:
            self.state.spec = self._start_spec  # the saved last good spec (see lastgood)
            self.state.from_last_good = True
        if self.state.spec is None:
            log.error("no valid spec to start with:\n%s", self.state.spec_error)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        control = ControlServer(self.config.socket_path, self._routes())
        tasks: list[asyncio.Task[Any]] = []
        try:
            # SIGTERM must stop us whatever start-up is waiting for (a part starting, a first
            # converge that keeps failing): serving races the stop signal.
            serving = asyncio.create_task(self._serve(control, tasks), name="serve")
            stop = asyncio.create_task(self.stopping.wait(), name="stop")
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not serving.done():
                serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            if not serving.cancelled() and (error := serving.exception()) is not None:
                raise error
        finally:
            sd_notify("STOPPING=1")
            if self._password_watch[1] is not None:
                tasks.append(self._password_watch[1])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A cancelled converge may still be applying on the dataplane thread: let it
            # finish before the parts take their devices away under it (its rollback would
            # remove the bridge).
            await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)
            for component in reversed(self.components):
                await _quietly(component.stop())
            await control.stop()  # last: its socket disappearing tells `reset` we are gone
            self._executor.shutdown(wait=True)
        if self.leaving:
            log.info("weaved daemon stopped: left the network (weaved reset)")
            return EXIT_LEFT
        log.info("weaved daemon stopped")
        return 0

    def _saved_copy(self) -> tuple[Spec | None, bytes]:
        path = last_good_path(self.config.state_dir)
        try:
            raw = read_spec_file(path)
            return parse_spec_bytes(raw, str(path)), raw
        except WeavedError as exc:
            log.error("the saved last good spec is unusable path=%s:\n%s", path, exc)
            return None, b""

    async def _serve(self, control: ControlServer, tasks: list[asyncio.Task[Any]]) -> None:
        for component in self.components:
            await component.start(self)
        await control.start()
        tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        tasks.append(
            asyncio.create_task(
                watch_file(
                    self.config.spec_path, lambda: self.mark_dirty("spec edit"), self.stopping
                ),
                name="watch",
            )
        )
        await self._first_converge()
        sd_notify("READY=1")
        if (interval := watchdog_interval(os.environ, os.getpid())) is not None:
            tasks.append(asyncio.create_task(watchdog(interval, self.stopping), name="watchdog"))
        log.info(
            "weaved daemon ready spec=%s socket=%s",
            self.config.spec_path,
            self.config.socket_path,
        )
        await self.stopping.wait()

    async def _first_converge(self) -> None:
        async with self.converged:
            await self.converged.wait_for(lambda: self.state.converges > 0)


async def _quietly(awaitable: Awaitable[None], what: str = "component stop") -> None:
    try:
        await awaitable
    except Exception:
        log.exception("%s failed", what)


def _key_of(name: str | None) -> FileKey:
    return file_key(Path(name)) if name else None


def _password_file_of(raw: bytes) -> str | None:
    """The password file a refused spec names, when only its files made it refused."""
    try:
        return parse_spec_bytes(raw, check_files=False).password_file
    except WeavedError:
        return None
