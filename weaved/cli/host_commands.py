"""`weaved` commands about the host and its spec: validate, render, schema, plan, apply, reset,
setup-cni, daemon, status, report, lab."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from weaved.cli.common import EXIT_CHANGES, daemon_for, say
from weaved.context import Context, require_root
from weaved.control import Client
from weaved.errors import DaemonError, UsageError


# --- validate / schema -----------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.cli.validate import run_validate

    return run_validate(args, ctx.spec_path)


def cmd_render(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.cli.validate import render_host

    sys.stdout.write(render_host(Path(args.file) if args.file else ctx.spec_path, args.host))
    return 0


def cmd_schema(args: argparse.Namespace, _ctx: Context) -> int:
    from weaved.spec.schema import render_schema

    if args.cluster:
        from weaved.spec.cluster import cluster_schema

        say(json.dumps(cluster_schema(), indent=2, sort_keys=True))
        return 0
    say(render_schema())
    return 0


# --- plan / apply / reset ---------------------------------------------------------------
def cmd_plan(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.plan.render import plan_json, render_plan

    client = daemon_for(ctx)
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
    say(json.dumps(data, indent=2) if args.json else text)
    if args.detailed_exitcode and not data["in_sync"]:
        return EXIT_CHANGES
    return 0


def cmd_apply(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.plan.render import render_plan

    client = daemon_for(ctx)
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
        say("No kernel changes yet; still waiting:\n" + waiting)
    elif changes == 0:
        say("Already in sync: no changes, 0 kernel writes.")
    else:
        say(text)
        say(f"Applied {changes} changes with {writes} kernel writes; verified in sync.")
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
    client = daemon_for(ctx) or (Client(str(ctx.socket_path)) if ctx.socket_path.exists() else None)
    if client is not None and client.alive():
        client.call("POST", "/shutdown", {"leave": True})
        _wait_gone(ctx.socket_path)
        say("Stopped the weaved daemon; its IPAM space went to a live peer.")
    from weaved.cli.reset import run_reset
    from weaved.daemon.lastgood import last_good_path
    from weaved.daemon.rollout import RECORD as ROLLED_BACK
    from weaved.ipam.persist import FILE_NAME

    # As Weave's reset: a relaunched host starts IPAM afresh and cannot retake old addresses.
    (ctx.state_dir / FILE_NAME).unlink(missing_ok=True)

    done = run_reset(ctx.state_dir)
    last_good_path(ctx.state_dir).unlink(missing_ok=True)  # a reset host starts from its file
    (ctx.state_dir / ROLLED_BACK).unlink(missing_ok=True)  # and takes it into force
    say(
        f"Removed every object weaved owned ({done.writes + len(done.veths)} kernel writes,"
        f" {len(done.veths)} container interfaces, {len(done.resolv_confs)} resolv.conf files);"
        " restored the settings it had changed."
    )
    for what in done.left_alone:
        say(f"Left alone: {what}.")
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
        say(json.dumps(data, indent=2))
        return 0
    path = "/status/text" + (f"?section={args.section}" if args.section else "")
    sys.stdout.write(cli_status_text(client.call("GET", path), args.section))
    return 0


def cmd_report(_args: argparse.Namespace, ctx: Context) -> int:
    from weaved.mesh.status_text import go_json

    client = Client(str(ctx.socket_path))
    say(go_json(client.call("GET", "/report")))  # Weave's layout (Go's MarshalIndent)
    return 0


def cmd_lab(args: argparse.Namespace, _ctx: Context) -> int:
    from weaved.lab.cli import run_lab

    require_root("weaved lab")
    return run_lab(args)


# --- parser -----------------------------------------------------------------------------
def _confirm_seconds(text: str) -> int:
    from weaved.spec.models import seconds_of

    try:
        return seconds_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_host_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "validate", help="check spec files and that their hosts agree (offline, no root)"
    )
    p.add_argument(
        "file",
        nargs="*",
        help="per-host spec or cluster files (default: -f or /etc/weave/weave.yaml)",
    )
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument(
        "--skip-host-files",
        action="store_true",
        help="do not read files that live on the hosts only (password_file), e.g. in CI",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="print the spec a cluster file gives one host")
    p.add_argument("file", nargs="?", help="cluster file (default: -f)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("schema", help="print the spec's JSON Schema")
    p.add_argument("--cluster", action="store_true", help="the cluster file's schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plan", help="show what apply would change")
    p.add_argument("--json", action="store_true", help="machine-readable plan")
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when in sync, 2 when changes are pending, 1 on error",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="make the host match the spec, then verify")
    p.add_argument(
        "--confirm",
        type=_confirm_seconds,
        metavar="TIMEOUT",
        help="a changed spec must pass its probes within TIMEOUT (60, 60s, 2m), else the"
        " daemon goes back to the last good spec (see rollout in the spec)",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("reset", help="stop the daemon and remove every object weaved owns")
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("setup-cni", help="install the CNI conflist and plugin links")
    p.add_argument("--conf-dir", default="/etc/cni/net.d", help="default: %(default)s")
    p.add_argument("--bin-dir", default="/opt/cni/bin", help="default: %(default)s")
    p.set_defaults(func=cmd_setup_cni)

    p = sub.add_parser(
        "daemon", help="run in the foreground: converge, watch the spec, serve the API"
    )
    p.add_argument(
        "--resync",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="periodic re-convergence interval (default 30)",
    )
    p.add_argument(
        "--host-root",
        metavar="DIR",
        help="where etc/machine-id is read for the peer name (Weave's; env WEAVED_HOST_ROOT)",
    )
    p.add_argument(
        "--sys-root",
        metavar="DIR",
        help="where class/dmi/id/product_uuid is read for the peer name (default /sys;"
        " env WEAVED_SYS_ROOT)",
    )
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("status", help="status in Weave's layout")
    p.add_argument(
        "section",
        nargs="?",
        choices=["peers", "connections", "dns", "ipam", "targets", "fastdp", "cni"],
    )
    p.add_argument("--json", action="store_true", help="as JSON (the report's keys)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="everything the daemon knows, as JSON")
    p.set_defaults(func=cmd_report)

    from weaved.lab.cli import add_lab_parser

    add_lab_parser(sub, cmd_lab)
