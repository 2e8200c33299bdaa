"""The `weaved` subcommands: each takes the parsed arguments and the host's context and
returns the exit status (`parser.py` maps the command line to them)."""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from weaved import __version__
from weaved.context import Context, require_root
from weaved.control import Client
from weaved.errors import DaemonError, UsageError

Command = Callable[[argparse.Namespace, Context], int]
EXIT_CHANGES = 2


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _daemon_for(ctx: Context) -> Client | None:
    """The running daemon serving this spec file, if any."""
    client = Client(str(ctx.socket_path))
    try:
        info = client.call("GET", "/ping", timeout=2.0)
    except DaemonError:
        return None
    if Path(info.get("spec", "")).resolve() != ctx.spec_path.resolve():
        return None
    return client


# --- validate / schema -----------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.cli.validate import run_validate

    return run_validate(args, ctx.spec_path)


def cmd_render(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.cli.validate import render_host

    sys.stdout.write(render_host(Path(args.file) if args.file else ctx.spec_path, args.host))
    return 0


# Weave commands weaved has no use for, each with what to do instead (exit 1, not a usage error).
REMOVED = {
    "env": "weaved has no Docker API proxy: set `docker.auto_attach: true` in the spec (containers"
    " are attached as Docker starts them, WEAVE_CIDR honoured) or run them with --net=weave"
    " (`docker.plugin`)",
    "config": "weaved has no Docker API proxy: set `docker.auto_attach: true` in the spec"
    " (WEAVE_CIDR honoured) or use --net=weave (`docker.plugin`)",
    "launch": "weaved is configured by its spec: write /etc/weave/weave.yaml and start"
    " weaved.service (or `weaved daemon`)",
    "stop": "stop the service (`systemctl stop weaved`); `weaved reset` leaves the network and"
    " removes what weaved owns",
}


def cmd_removed(args: argparse.Namespace, _ctx: Context) -> int:
    print(f"weaved {args.removed}: {REMOVED[args.removed]}", file=sys.stderr)
    return 1


def cmd_version(_args: argparse.Namespace, _ctx: Context) -> int:
    _print(f"weaved {__version__}")
    return 0


def cmd_schema(args: argparse.Namespace, _ctx: Context) -> int:
    from weaved.spec.schema import render_schema

    if args.cluster:
        from weaved.spec.cluster import cluster_schema

        _print(json.dumps(cluster_schema(), indent=2, sort_keys=True))
        return 0
    _print(render_schema())
    return 0


# --- plan / apply / reset ---------------------------------------------------------------
def cmd_plan(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.plan.render import plan_json, render_plan

    client = _daemon_for(ctx)
    if client is not None:
        answer = client.call("POST", "/plan", {})
        text, data = answer["text"], answer["json"]
    else:
        from weaved.dataplane.kernel import KernelDataplane
        from weaved.engine.reconcile import plan_spec
        from weaved.spec.loader import load_spec

        spec = load_spec(ctx.spec_path)
        require_root("weaved plan", "it reads nftables and netlink state")
        planned = plan_spec(spec, KernelDataplane(ctx.state_dir))
        text, data = render_plan(planned.plan), plan_json(planned.plan)
    _print(json.dumps(data, indent=2) if args.json else text)
    if args.detailed_exitcode and not data["in_sync"]:
        return EXIT_CHANGES
    return 0


def cmd_apply(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.plan.render import render_plan

    client = _daemon_for(ctx)
    if args.confirm is not None and client is None:
        raise UsageError(
            "apply --confirm needs the running daemon: its probes watch the mesh it runs\n"
            "  hint: start `weaved daemon`, or set rollout.confirm in the spec"
        )
    if client is not None:
        body = {} if args.confirm is None else {"confirm": args.confirm}
        answer = client.call("POST", "/apply", body, timeout=(args.confirm or 0) + 120.0)
        changes, writes, text = answer["changes"], answer["writes"], answer["text"]
    else:
        from weaved.dataplane.kernel import KernelDataplane
        from weaved.engine.reconcile import apply_spec
        from weaved.spec.loader import load_spec

        spec = load_spec(ctx.spec_path)
        require_root("weaved apply")
        applied = apply_spec(spec, KernelDataplane(ctx.state_dir))
        changes, writes = len(applied.planned.plan.changes), applied.report.writes
        text = render_plan(applied.planned.plan) if changes else ""
    waiting = _expose_waiting(client)
    if changes == 0 and waiting:
        _print("No kernel changes yet; still waiting:\n" + waiting)
    elif changes == 0:
        _print("Already in sync: no changes, 0 kernel writes.")
    else:
        _print(text)
        _print(f"Applied {changes} changes with {writes} kernel writes; verified in sync.")
    return 0


def _expose_waiting(client: Client | None) -> str:
    """`net:` expose entries still waiting for IPAM, one a line (empty when none)."""
    if client is None:
        return ""
    from weaved.attach.expose import daemon_exposes

    try:
        entries, _, pending = daemon_exposes(client)
    except DaemonError:  # a daemon without IPAM (e.g. fastdp's standalone runner)
        return ""
    return "".join(f"  expose[{i}] {entries[i]}: {why}\n" for i, why in sorted(pending.items()))


def _wait_gone(socket_path: Path, timeout: float = 15.0) -> None:
    """Until the daemon has stopped (its socket is removed last)."""
    import time

    deadline = time.monotonic() + timeout
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def cmd_setup_cni(args: argparse.Namespace, _ctx: Context) -> int:
    from weaved.cni.setup import plugin_executable, setup_cni

    for line in setup_cni(Path(args.conf_dir), Path(args.bin_dir), plugin_executable()):
        print(line)
    return 0


def cmd_reset(_args: argparse.Namespace, ctx: Context) -> int:
    require_root("weaved reset")
    client = _daemon_for(ctx) or (
        Client(str(ctx.socket_path)) if ctx.socket_path.exists() else None
    )
    if client is not None and client.alive():
        client.call("POST", "/shutdown", {"leave": True})
        _wait_gone(ctx.socket_path)
        _print("Stopped the weaved daemon; its IPAM space went to a live peer.")
    from weaved.cli.reset import run_reset
    from weaved.daemon.lastgood import last_good_path
    from weaved.daemon.rollout import RECORD as ROLLED_BACK
    from weaved.ipam.persist import FILE_NAME

    # As Weave's reset: a relaunched host starts IPAM afresh and cannot retake old addresses.
    (ctx.state_dir / FILE_NAME).unlink(missing_ok=True)

    done = run_reset(ctx.state_dir)
    last_good_path(ctx.state_dir).unlink(missing_ok=True)  # a reset host starts from its file
    (ctx.state_dir / ROLLED_BACK).unlink(missing_ok=True)  # and takes it into force
    _print(
        f"Removed every object weaved owned ({done.writes + len(done.veths)} kernel writes,"
        f" {len(done.veths)} container interfaces, {len(done.resolv_confs)} resolv.conf files);"
        " restored the settings it had changed."
    )
    for what in done.left_alone:
        _print(f"Left alone: {what}.")
    return 0


# --- daemon / status --------------------------------------------------------------------
def cmd_daemon(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.daemon.main import run_daemon

    require_root("weaved daemon")
    return run_daemon(
        ctx, resync_seconds=args.resync, host_root=args.host_root, sys_root=args.sys_root
    )


# `status --json [SECTION]`: that part of the daemon's report (Weave's /report keys).
STATUS_JSON = {
    "peers": ("Router", "Peers"),
    "connections": ("Router", "Connections"),
    "targets": ("Router", "Targets"),
    "dns": ("DNS",),
    "ipam": ("IPAM",),
    "fastdp": ("FastDP",),
    "cni": ("CNI",),
}


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.mesh.status_text import cli_status_text

    client = Client(str(ctx.socket_path))
    if args.json:
        data = client.call("GET", "/report")
        for key in STATUS_JSON.get(args.section or "", ()):
            if not isinstance(data, dict) or key not in data:
                raise DaemonError(f"no status section {args.section!r} (is that part running?)")
            data = data[key]
        _print(json.dumps(data, indent=2))
        return 0
    path = "/status/text" + (f"?section={args.section}" if args.section else "")
    sys.stdout.write(cli_status_text(client.call("GET", path), args.section))
    return 0


def cmd_report(_args: argparse.Namespace, ctx: Context) -> int:
    from weaved.mesh.status_text import go_json

    client = Client(str(ctx.socket_path))
    _print(go_json(client.call("GET", "/report")))  # Weave's layout (Go's MarshalIndent)
    return 0


def cmd_connect(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.spec.edit import connect

    spec = connect(ctx.spec_path, args.peers, replace=args.replace)
    _print(f"{ctx.spec_path}: peers = {', '.join(spec.peers) or '(none)'}")
    return 0


def cmd_forget(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.spec.edit import forget

    spec = forget(ctx.spec_path, args.peers)
    _print(f"{ctx.spec_path}: peers = {', '.join(spec.peers) or '(none)'}")
    return 0


def cmd_expose(args: argparse.Namespace, ctx: Context) -> int:
    """Weave's `expose`: edits the spec, then prints the addresses (once IPAM gave them)."""
    from weaved.attach.expose import default_subnet_of, expose_forms, wait_for_addresses
    from weaved.spec.edit import expose

    cidrs = expose_forms(args.cidrs, default_subnet_of(ctx.spec_path))
    spec = expose(ctx.spec_path, cidrs, args.hostname)
    sys.stderr.write(f"{ctx.spec_path}: expose = {', '.join(e.cidr for e in spec.expose)}\n")
    _print(" ".join(wait_for_addresses(_daemon_for(ctx), cidrs)))
    return 0


def cmd_hide(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.attach.expose import addresses_to_hide, default_subnet_of, expose_forms
    from weaved.spec.edit import hide

    cidrs = expose_forms(args.cidrs, default_subnet_of(ctx.spec_path))
    hidden = addresses_to_hide(_daemon_for(ctx), cidrs)
    spec = hide(ctx.spec_path, cidrs)
    sys.stderr.write(
        f"{ctx.spec_path}: expose = {', '.join(e.cidr for e in spec.expose) or '(none)'}\n"
    )
    _print(" ".join(hidden))
    return 0


def cmd_rmpeer(args: argparse.Namespace, ctx: Context) -> int:
    client = Client(str(ctx.socket_path))
    sys.stderr.write(
        "weaved: reclaiming a peer's address space is safe only if that peer is gone for good;\n"
        "  run rmpeer for it on ONE host only, or addresses may be handed out twice.\n"
    )
    for peer in args.peers:
        answer = client.call("POST", "/ipam/rmpeer", {"peer": peer})
        sys.stderr.write(answer.get("warning", ""))
        sys.stdout.write(answer["text"])
    return 0


def cmd_dns_lookup(args: argparse.Namespace, ctx: Context) -> int:
    text = Client(str(ctx.socket_path)).call("POST", "/dns/lookup", {"name": args.name})["text"]
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0 if text else 1


def _split_dns_items(items: list[str]) -> tuple[list[str], str | None]:
    """`ADDR... [CONTAINER]`: the container, if any, comes last."""
    addresses: list[str] = []
    container = None
    for index, item in enumerate(items):
        try:
            addresses.append(str(ipaddress.IPv4Address(item)))
        except ValueError:
            if index != len(items) - 1:
                raise UsageError(f"{item!r} is not an IPv4 address") from None
            container = item
    return addresses, container


def _dns_edit(args: argparse.Namespace, ctx: Context, path: str) -> int:
    args.addresses, args.container = _split_dns_items(args.items)
    if not args.hostname and not args.container:
        raise UsageError("give a container, -h FQDN, or both")
    body = {
        "container": args.container or "weave:extern",
        "addresses": args.addresses,
        "fqdn": args.hostname or "",
    }
    Client(str(ctx.socket_path)).call("POST", path, body)
    return 0


def cmd_dns_add(args: argparse.Namespace, ctx: Context) -> int:
    if not _split_dns_items(args.items)[0]:
        raise UsageError("dns-add needs at least one address")
    return _dns_edit(args, ctx, "/dns/add")


def cmd_dns_remove(args: argparse.Namespace, ctx: Context) -> int:
    return _dns_edit(args, ctx, "/dns/remove")


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    """Weave's `weave run`: docker run -d (with weaveDNS's flags), attach, print the ID."""
    from weaved.dns.part import nameserver
    from weaved.dns.resolvconf import dns_args
    from weaved.docker.run import split_run_words
    from weaved.integrations.docker_client import docker_url
    from weaved.spec.loader import load_spec

    run = split_run_words(args.words)
    spec = load_spec(ctx.spec_path, check_files=False)
    extra = dns_args(nameserver(spec), spec.dns.domain).split() if run.with_dns else []
    if not spec.dns.enabled:
        extra = []
    argv = ["docker", "-H", docker_url(spec.docker.socket), "run", "-d", *extra, *run.docker_args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode or 1
    cid = proc.stdout.strip().splitlines()[-1]
    words = [*run.addresses, *(["--no-multicast-route"] if run.no_multicast_route else []), cid]
    attach = argparse.Namespace(attach_command="attach", words=words, no_multicast_route=False)
    with contextlib.redirect_stdout(io.StringIO()):
        code = cmd_attach(attach, ctx)
    if code == 0:
        _print(cid)
    return code


def cmd_dns_args(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.dns.part import nameserver
    from weaved.dns.resolvconf import dns_args
    from weaved.spec.loader import load_spec

    spec = load_spec(ctx.spec_path, check_files=False)
    if not spec.dns.enabled:
        return 0  # Weave's `dns-args` prints nothing without weaveDNS: `docker run $(…)` works
    # The spec alone says it: weaveDNS's link address, or the address dns.listen names.
    _print(dns_args(nameserver(spec), spec.dns.domain, name=args.name))
    return 0


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    """attach/detach/ps: through the daemon (IPAM, DNS) when it runs, else locally."""
    from weaved.attach.cli import call_daemon, request_from_args, run_local, timeout_of

    client = _daemon_for(ctx)
    as_json = args.attach_command == "ps" and args.json
    if client is None:
        if not as_json:
            return run_local(args, ctx)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = run_local(args, ctx)
        text = out.getvalue()
    else:
        request = request_from_args(args)
        timeout = timeout_of(args) if args.attach_command == "attach" else 600.0
        text = call_daemon(client, args.attach_command, request, timeout)
        code = 0
    if as_json:
        _print(json.dumps(ps_json(text), indent=2))
    elif text:
        _print(text)
    return code


def ps_json(text: str) -> list[dict[str, object]]:
    """`ps --json` from Weave's ps lines: `<container> <mac> [<cidr> ...]`."""
    rows: list[dict[str, object]] = []
    for line in text.splitlines():
        if fields := line.split():
            rows.append({"container": fields[0], "mac": fields[1], "addresses": fields[2:]})
    return rows


def cmd_lab(args: argparse.Namespace, _ctx: Context) -> int:
    from weaved.lab.cli import run_lab

    require_root("weaved lab")
    return run_lab(args)
