"""`weaved` commands about the mesh, IPAM and weaveDNS (Weave's): connect, forget, expose, hide,
rmpeer, prime, dns-lookup, dns-add, dns-remove, dns-args."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
from typing import Any

from weaved.cli.common import daemon_for, say
from weaved.context import Context
from weaved.control import Client
from weaved.errors import DaemonError, UsageError


def cmd_connect(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.spec.edit import connect

    spec = connect(ctx.spec_path, args.peers, replace=args.replace)
    say(f"{ctx.spec_path}: peers = {', '.join(spec.peers) or '(none)'}")
    return 0


def cmd_forget(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.spec.edit import forget

    spec = forget(ctx.spec_path, args.peers)
    say(f"{ctx.spec_path}: peers = {', '.join(spec.peers) or '(none)'}")
    return 0


def cmd_expose(args: argparse.Namespace, ctx: Context) -> int:
    """Weave's `expose`: edits the spec, then prints the addresses (once IPAM gave them)."""
    from weaved.attach.expose import default_subnet_of, expose_forms, wait_for_addresses
    from weaved.spec.edit import expose

    cidrs = expose_forms(args.cidrs, default_subnet_of(ctx.spec_path))
    spec = expose(ctx.spec_path, cidrs, args.hostname)
    sys.stderr.write(f"{ctx.spec_path}: expose = {', '.join(e.cidr for e in spec.expose)}\n")
    say(" ".join(wait_for_addresses(daemon_for(ctx), cidrs)))
    return 0


def cmd_hide(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.attach.expose import addresses_to_hide, default_subnet_of, expose_forms
    from weaved.spec.edit import hide

    cidrs = expose_forms(args.cidrs, default_subnet_of(ctx.spec_path))
    hidden = addresses_to_hide(daemon_for(ctx), cidrs)
    spec = hide(ctx.spec_path, cidrs)
    sys.stderr.write(
        f"{ctx.spec_path}: expose = {', '.join(e.cidr for e in spec.expose) or '(none)'}\n"
    )
    say(" ".join(hidden))
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


def cmd_prime(args: argparse.Namespace, ctx: Context) -> int:
    """Weave's `prime`: returns once IPAM's ring exists (consensus reached), so the first
    container needs no wait. Says on stderr what it waits for meanwhile."""
    client = Client(str(ctx.socket_path))
    client.call("GET", "/ping", timeout=5.0)  # a clear error now when no daemon runs
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["answer"] = client.call("POST", "/ipam/prime", {}, timeout=args.timeout)
        except DaemonError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call, name="prime-call", daemon=True)
    worker.start()
    said = ""
    while True:
        worker.join(2.0)
        if not worker.is_alive():
            break
        status = _ipam_status_line(client)
        if status and status != said:
            sys.stderr.write(f"weaved prime: waiting for IPAM (Status: {status})\n")
            said = status
    if "error" in outcome:
        if "timed out" in str(outcome["error"]):
            raise DaemonError(
                f"IPAM is not ready after {args.timeout:g} s (Status: {_ipam_status_line(client)})"
                "\n  hint: `weaved status ipam`; the first allocation needs enough peers"
                " (ipalloc.init) to agree"
            )
        raise outcome["error"]
    return 0


def _ipam_status_line(client: Client) -> str:
    """The `Status:` of `weaved status` for IPAM (asked without waiting)."""
    try:
        answer = client.call("POST", "/ipam/prime", {"wait": False}, timeout=5.0)
    except DaemonError:
        return ""
    return str(answer.get("text", ""))


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


def cmd_dns_args(args: argparse.Namespace, ctx: Context) -> int:
    from weaved.dns.part import nameserver
    from weaved.dns.resolvconf import dns_args
    from weaved.spec.loader import load_spec

    spec = load_spec(ctx.spec_path, check_files=False)
    if not spec.dns.enabled:
        return 0  # Weave's `dns-args` prints nothing without weaveDNS: `docker run $(…)` works
    # The spec alone says it: weaveDNS's link address, or the address dns.listen names.
    say(dns_args(nameserver(spec), spec.dns.domain, name=args.name))
    return 0


def add_net_parsers(sub: Any) -> None:
    p = sub.add_parser("connect", help="add mesh peers to the spec (keeps its comments)")
    p.add_argument("--replace", action="store_true", help="replace the peer list")
    p.add_argument("peers", nargs="+", metavar="HOST[:PORT]")
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser("forget", help="remove mesh peers from the spec")
    p.add_argument("peers", nargs="+", metavar="HOST[:PORT]")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser(
        "expose", help="give this host an address on the overlay (edits the spec)", add_help=False
    )
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument(
        "cidrs",
        nargs="*",
        metavar="ADDR/LEN | net:CIDR | net:default",
        help="default: net:default (an address from IPAM)",
    )
    p.add_argument("-h", "--hostname", metavar="FQDN", help="register this DNS name for it")
    p.set_defaults(func=cmd_expose)

    p = sub.add_parser("hide", help="remove overlay addresses of this host (edits the spec)")
    p.add_argument("cidrs", nargs="*", metavar="ADDR/LEN | net:CIDR | net:default")
    p.set_defaults(func=cmd_hide)

    p = sub.add_parser("rmpeer", help="reclaim the address space of dead peers (one host only)")
    p.add_argument("peers", nargs="+", metavar="PEER", help="peer name or nickname")
    p.set_defaults(func=cmd_rmpeer)

    p = sub.add_parser("prime", help="wait until IPAM is ready (Weave's `weave prime`)")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="give up after this long (default %(default)g)",
    )
    p.set_defaults(func=cmd_prime)

    p = sub.add_parser("dns-lookup", help="resolve a name through weaveDNS")
    p.add_argument("name")
    p.set_defaults(func=cmd_dns_lookup)

    for command, func, text in (
        ("dns-add", cmd_dns_add, "add DNS records: ADDR... CONTAINER | ADDR... -h FQDN"),
        ("dns-remove", cmd_dns_remove, "remove DNS records"),
    ):
        # -h is the FQDN here, as in Weave's CLI, so help is --help only.
        p = sub.add_parser(command, help=text, add_help=False)
        p.add_argument("--help", action="help", help="show this help message and exit")
        p.add_argument("items", nargs="*", metavar="ADDR... [CONTAINER]")
        p.add_argument("-h", "--hostname", metavar="FQDN")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "dns-args", help="the docker run arguments that point containers at weaveDNS"
    )
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="the container's name: also print --hostname=NAME.DOMAIN, its name in weaveDNS",
    )
    p.set_defaults(func=cmd_dns_args)
