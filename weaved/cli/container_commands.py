"""`weaved` commands as Weave's for containers: run, attach, detach, ps, version, and the
Weave commands weaved has no use for (each says what to do instead)."""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import subprocess
import sys
from typing import Any

from weaved import __version__
from weaved.cli.common import daemon_for, say
from weaved.context import Context
from weaved.errors import UsageError

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
    say(f"weaved {__version__}")
    return 0


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
    flags = [
        *(["--no-multicast-route"] if run.no_multicast_route else []),
        *([] if run.with_dns else ["--without-dns"]),  # as Weave's: no name either
    ]
    attach = argparse.Namespace(attach_command="attach", words=[*run.addresses, *flags, cid])
    with contextlib.redirect_stdout(io.StringIO()):
        code = cmd_attach(attach, ctx)
    if code == 0:
        say(cid)
    return code


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    """attach/detach/ps: through the daemon (IPAM, DNS) when it runs, else locally."""
    from weaved.attach.cli import call_daemon, request_from_args, run_local, timeout_of

    client = daemon_for(ctx)
    as_json = args.attach_command == "ps" and args.json
    if client is None:
        if not as_json and args.attach_command != "attach":
            return run_local(args, ctx)
        with contextlib.redirect_stdout(io.StringIO()) as out:  # attach: for --rewrite-hosts
            code = run_local(args, ctx)
        text = out.getvalue().strip()
    else:
        request = request_from_args(args)
        timeout = timeout_of(args) if args.attach_command == "attach" else 600.0
        text = call_daemon(client, args.attach_command, request, timeout)
        code = 0
    if args.attach_command == "attach" and code == 0:
        _rewrite_hosts(args, ctx, text)
    if as_json:
        say(json.dumps(ps_json(text), indent=2))
    elif text:
        say(text)
    return code


def _rewrite_hosts(args: argparse.Namespace, ctx: Context, printed: str) -> None:
    """`attach --rewrite-hosts [--add-host NAME:ADDR ...]`: the Docker container's /etc/hosts
    names the addresses `attach` printed (Weave's, see weaved.docker.hosts)."""
    from weaved.attach.cli import attach_flags, request_from_args, settings_for
    from weaved.attach.model import TargetKind
    from weaved.attach.requests import AttachRequest
    from weaved.attach.target import resolve_target
    from weaved.docker.hosts import rewrite_container_hosts

    flags = attach_flags(args)
    if not flags.rewrite_hosts:
        return
    request = request_from_args(args)
    assert isinstance(request, AttachRequest)
    url = settings_for(ctx.spec_path).docker_url
    target = resolve_target(request.target, url)
    if target.kind is not TargetKind.DOCKER:
        raise UsageError(f"--rewrite-hosts: {target.label} is not a Docker container")
    addresses = [ipaddress.IPv4Address(word) for word in printed.split()]
    rewrite_container_hosts(url, target.key, addresses, flags.add_hosts)


def ps_json(text: str) -> list[dict[str, object]]:
    """`ps --json` from Weave's ps lines: `<container> <mac> [<cidr> ...]`."""
    rows: list[dict[str, object]] = []
    for line in text.splitlines():
        if fields := line.split():
            rows.append({"container": fields[0], "mac": fields[1], "addresses": fields[2:]})
    return rows


def add_container_parsers(sub: Any) -> None:
    p = sub.add_parser("version", help="print the version (as `weave version`)")
    p.set_defaults(func=cmd_version)
    for name in REMOVED:
        p = sub.add_parser(name, help=f"(Weave's `{name}`: says what to do with weaved)")
        p.set_defaults(func=cmd_removed, removed=name)

    p = sub.add_parser(
        "run",
        help="docker run -d with weaveDNS's flags, then attach (Weave's `weave run`)",
        usage="weaved run [ADDR ...] [--without-dns] [--no-multicast-route] DOCKER-RUN-ARGS ...",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ADDR ...] DOCKER-RUN-ARGS")
    p.set_defaults(func=cmd_run)

    from weaved.attach.cli import add_attach_parsers

    add_attach_parsers(sub, cmd_attach)
