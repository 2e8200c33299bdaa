"""`weaved attach`, `weaved detach` and `weaved ps`: Weave's argument forms (into the typed
requests of `requests.py`), and a local runner that works without a daemon when every address is
given literally.

    weaved attach [--without-dns] [--rewrite-hosts] [--add-host NAME:ADDR ...]
                  [--no-multicast-route] [--timeout SECONDS] [ADDR ...] TARGET
    weaved detach [ADDR ...] TARGET
    weaved ps [TARGET | weave:expose ...]

    ADDR = ADDR/LEN | ip:ADDR[/LEN] | net:CIDR | net:default

As in Weave, the addresses come first and TARGET last. `net:` forms and `attach` with no
address ask IPAM for an address, so they need the daemon. `detach` with no address removes the
address IPAM gave the container in the default subnet (Weave's `net:default`); run without a
daemon, where there is no IPAM, it removes every address.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weaved.attach.model import Attachment, BridgeInfo
from weaved.attach.ps import EXPOSE_LABEL, ps_line, render_ps, show_addrs
from weaved.attach.requests import (
    AddressArg,
    AttachRequest,
    DetachRequest,
    PsRequest,
    Request,
    parse_address,
)
from weaved.context import Context, require_root
from weaved.errors import DaemonError, UsageError

if TYPE_CHECKING:
    from weaved.control import Client

Handler = Callable[[argparse.Namespace, Context], int]
NO_MULTICAST_FLAG = "--no-multicast-route"
WITHOUT_DNS_FLAG = "--without-dns"  # no weaveDNS name for it (Weave's)
REWRITE_HOSTS_FLAG = "--rewrite-hosts"  # its /etc/hosts names its weave addresses (Weave's)
ADD_HOST_FLAG = "--add-host"  # NAME:ADDR, one more line of that /etc/hosts (Weave's)
TIMEOUT_FLAG = "--timeout"
DEFAULT_TIMEOUT = 600.0  # seconds `attach` waits for IPAM unless told otherwise


@dataclass(frozen=True)
class AttachFlags:
    """Weave's `attach` flags among the words."""

    no_multicast_route: bool = False
    without_dns: bool = False
    rewrite_hosts: bool = False
    add_hosts: tuple[str, ...] = ()  # NAME:ADDR, checked


def split_words(
    command: str, words: Sequence[str]
) -> tuple[tuple[AddressArg, ...], str, AttachFlags]:
    """Weave's `[ADDR ...] [flags] TARGET`: returns (addresses, target, attach's flags)."""
    addresses: list[AddressArg] = []
    flags = AttachFlags()
    rest: list[str] = []
    skip = False
    for index, word in enumerate(words):
        if skip:
            skip = False
            continue
        if command == "attach" and word == NO_MULTICAST_FLAG:
            flags = replace(flags, no_multicast_route=True)
            continue
        if command == "attach" and word == WITHOUT_DNS_FLAG:
            flags = replace(flags, without_dns=True)
            continue
        if command == "attach" and word == REWRITE_HOSTS_FLAG:
            flags = replace(flags, rewrite_hosts=True)
            continue
        if command == "attach" and (word == ADD_HOST_FLAG or word.startswith(ADD_HOST_FLAG + "=")):
            if word == ADD_HOST_FLAG and index + 1 == len(words):
                raise UsageError(f"weaved attach: {ADD_HOST_FLAG} needs NAME:ADDRESS")
            value = words[index + 1] if word == ADD_HOST_FLAG else word.split("=", 1)[1]
            skip = word == ADD_HOST_FLAG
            flags = replace(flags, add_hosts=(*flags.add_hosts, parse_add_host(value)))
            continue
        if command == "attach" and (word == TIMEOUT_FLAG or word.startswith(TIMEOUT_FLAG + "=")):
            skip = word == TIMEOUT_FLAG  # its value was taken by timeout_of
            continue
        if word.startswith("-") and word != "-":
            raise UsageError(f"weaved {command}: unknown option {word}")
        parsed = parse_address(word) if not rest else None
        if parsed is not None:
            addresses.append(parsed)
        else:
            rest.append(word)
    if not rest:
        raise UsageError(
            f"weaved {command}: TARGET missing\n"
            f"  usage: weaved {command} [ADDR/LEN | net:CIDR | net:default | ip:ADDR ...] TARGET"
        )
    if len(rest) > 1:
        raise UsageError(
            f"weaved {command}: one TARGET, after the addresses (got {' '.join(rest)})\n"
            "  hint: an address is ADDR/LEN, ip:ADDR, net:CIDR or net:default"
        )
    return tuple(addresses), rest[0], flags


def attach_flags(args: argparse.Namespace) -> AttachFlags:
    """The flags given before the words (argparse's) and among them (Weave's order)."""
    _, _, among = split_words("attach", list(getattr(args, "words", [])))
    before = [parse_add_host(h) for h in getattr(args, "add_host", None) or []]
    return AttachFlags(
        among.no_multicast_route or bool(getattr(args, "no_multicast_route", False)),
        among.without_dns or bool(getattr(args, "without_dns", False)),
        among.rewrite_hosts or bool(getattr(args, "rewrite_hosts", False)),
        (*before, *among.add_hosts),
    )


def parse_add_host(value: str) -> str:
    """`NAME:ADDR` as Docker's and Weave's `--add-host`; UsageError otherwise."""
    name, sep, address = value.partition(":")
    if not sep or not name or not address:
        raise UsageError(f"{ADD_HOST_FLAG} {value}: write NAME:ADDRESS (e.g. db:10.32.0.9)")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"{ADD_HOST_FLAG} {value}: {address!r} is not an IP address") from None
    return value


def timeout_of(args: argparse.Namespace) -> float:
    """`--timeout SECONDS` (before or among the words); the default otherwise."""
    value: str | float | None = getattr(args, "timeout", None)
    words: list[str] = list(getattr(args, "words", []))
    for index, word in enumerate(words):
        if word == TIMEOUT_FLAG and index + 1 < len(words):
            value = words[index + 1]
        elif word.startswith(TIMEOUT_FLAG + "="):
            value = word.split("=", 1)[1]
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"weaved attach: --timeout {value}: not a number of seconds") from None
    if seconds <= 0:
        raise UsageError(f"weaved attach: --timeout {value}: must be more than 0 seconds")
    return seconds


def call_daemon(client: Client, command: str, request: Request, timeout: float) -> str:
    """Send the request to the daemon; while it waits for IPAM, say on stderr what for (the
    words of `weaved status ipam`), each time that changes."""
    if not isinstance(request, AttachRequest):
        path = "/detach" if isinstance(request, DetachRequest) else "/ps"
        text: str = client.call("POST", path, request.to_json(), timeout=timeout)["text"]
        return text
    rid = secrets.token_hex(8)
    body = {**request.to_json(), "request_id": rid, "timeout": timeout}
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["text"] = client.call("POST", "/attach", body, timeout=timeout + 30)["text"]
        except DaemonError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call, name="attach-call", daemon=True)
    worker.start()
    said = None
    while True:
        worker.join(1.0)
        if not worker.is_alive():
            break
        try:
            why = client.call("POST", "/attach/wait", {"id": rid}, timeout=5).get("text")
        except DaemonError:
            why = None
        if why and why != said:
            sys.stderr.write(f"weaved {command}: {why}\n")
            sys.stderr.flush()
            said = why
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome.get("text", ""))


def request_from_args(args: argparse.Namespace) -> Request:
    """The typed request behind a parsed `attach`, `detach` or `ps` command line."""
    command = getattr(args, "attach_command", None)
    words: list[str] = list(getattr(args, "words", []))
    if command == "ps":
        return PsRequest(tuple(words))
    if command == "attach":
        addresses, target, _ = split_words("attach", words)
        flags = attach_flags(args)
        return AttachRequest(
            target, addresses, False if flags.no_multicast_route else None, not flags.without_dns
        )
    if command == "detach":
        addresses, target, _ = split_words("detach", words)
        return DetachRequest(target, addresses)
    raise UsageError(f"not an attach command: {command!r}")


def literal_addresses(
    addresses: Sequence[AddressArg], command: str
) -> list[ipaddress.IPv4Interface]:
    """The addresses when all are literal ADDR/LEN; UsageError naming what needs IPAM."""
    ipam = [a.text for a in addresses if a.needs_ipam]
    if ipam:
        raise UsageError(
            f"weaved {command}: {' '.join(ipam)} needs IP allocation, which the daemon does\n"
            "  hint: start `weaved daemon`, or give addresses as ADDR/LEN"
        )
    return [a.interface for a in addresses if a.interface is not None]


# --- argparse ------------------------------------------------------------------------------
ADDR_HELP = "ADDR/LEN, ip:ADDR[/LEN], net:CIDR or net:default (IPAM); several allowed"
TARGET_HELP = (
    "a Docker container (name or ID), a named netns (/run/netns/NAME) or a PID;"
    " docker:, netns: or pid: forces one"
)


def add_attach_parsers(sub: Any, handler: Handler) -> None:
    """Register `attach`, `detach` and `ps` on an argparse sub-parsers object; each calls
    `handler(args, ctx)`, and `request_from_args(args)` turns `args` into a typed request."""
    p = sub.add_parser(
        "attach",
        help="plug a container into the weave network",
        usage="weaved attach [--without-dns] [--rewrite-hosts] [--add-host NAME:ADDR ...]"
        " [--no-multicast-route] [--timeout SECONDS] [ADDR ...] TARGET",
        description=f"ADDR: {ADDR_HELP}. With no ADDR, IPAM allocates one.\nTARGET: {TARGET_HELP}.",
    )
    p.add_argument(
        TIMEOUT_FLAG,
        dest="timeout",
        metavar="SECONDS",
        help=f"give up waiting for IPAM after this long (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        NO_MULTICAST_FLAG,
        dest="no_multicast_route",
        action="store_true",
        help="do not route 224.0.0.0/4 via ethwe in the container",
    )
    p.add_argument(
        WITHOUT_DNS_FLAG,
        dest="without_dns",
        action="store_true",
        help="do not register the container's name in weaveDNS",
    )
    p.add_argument(
        REWRITE_HOSTS_FLAG,
        dest="rewrite_hosts",
        action="store_true",
        help="make the Docker container's /etc/hosts name its weave addresses (as Weave)",
    )
    p.add_argument(
        ADD_HOST_FLAG,
        dest="add_host",
        action="append",
        metavar="NAME:ADDR",
        help="with --rewrite-hosts: one more line of /etc/hosts (repeatable)",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ADDR ...] TARGET")
    p.set_defaults(func=handler, attach_command="attach")

    p = sub.add_parser(
        "detach",
        help="remove addresses from a container (the interface goes with the last one)",
        usage="weaved detach [ADDR ...] TARGET",
        description=f"ADDR: {ADDR_HELP}. With no ADDR, the one IPAM gave it in the default"
        f" subnet (net:default); without a daemon (no IPAM), all of them.\nTARGET: {TARGET_HELP}.",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ADDR ...] TARGET")
    p.set_defaults(func=handler, attach_command="detach")

    p = sub.add_parser(
        "ps",
        help="list attached containers with their MAC and addresses (Weave's layout)",
        usage="weaved ps [TARGET | weave:expose ...]",
    )
    p.add_argument("words", nargs="*", metavar="TARGET")
    p.add_argument("--json", action="store_true", help="as JSON: container, mac, addresses")
    p.set_defaults(func=handler, attach_command="ps")


# --- the local runner (no daemon) ----------------------------------------------------------
@dataclass(frozen=True)
class LocalSettings:
    mtu: int  # 0: the bridge's
    multicast_route: bool
    docker_url: str


def settings_for(spec_path: Path) -> LocalSettings:
    """What the spec says about attaching (defaults when there is no spec file)."""
    from weaved.integrations.docker_client import docker_url

    if not spec_path.exists():
        return LocalSettings(0, True, docker_url(None))
    from weaved.spec.loader import load_spec

    spec = load_spec(spec_path)
    explicit_socket = "docker" in spec.model_fields_set and "socket" in spec.docker.model_fields_set
    return LocalSettings(
        spec.mtu,
        spec.multicast_route,
        docker_url(spec.docker.socket if explicit_socket else None),
    )


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def run_local(args: argparse.Namespace, ctx: Context) -> int:
    """Carry out the request in this process (root; no IPAM, so addresses must be literal)."""
    from weaved.attach import observe, plumbing
    from weaved.attach.target import resolve_target

    request = request_from_args(args)
    require_root(f"weaved {args.attach_command}")
    settings = settings_for(ctx.spec_path)
    if isinstance(request, AttachRequest):
        if not request.addresses:
            raise UsageError(
                "weaved attach: no address given, and allocating one needs the daemon's IPAM\n"
                "  hint: start `weaved daemon`, or give an address as ADDR/LEN"
            )
        addresses = literal_addresses(request.addresses, "attach")
        target = resolve_target(request.target, settings.docker_url)
        multicast = (
            settings.multicast_route if request.multicast_route is None else request.multicast_route
        )
        plumbing.attach(target, addresses, settings.mtu, multicast)
        _write(show_addrs(addresses))
        return 0
    if isinstance(request, DetachRequest):
        wanted = literal_addresses(request.addresses, "detach") if request.addresses else None
        target = resolve_target(request.target, settings.docker_url)
        detached = plumbing.detach(target, wanted)
        _write(show_addrs(wanted if wanted is not None else detached.removed))
        return 0
    attachments = observe.observe_attachments(settings.docker_url)
    bridge = observe.observe_bridge()
    _write(ps_text(request, attachments, bridge, settings.docker_url))
    return 0


def ps_text(
    request: PsRequest,
    attachments: Sequence[Attachment],
    bridge: BridgeInfo | None,
    docker_url: str | None,
) -> str:
    """`weaved ps` for the request: everything, or just the named targets in their order."""
    mac = bridge.mac if bridge is not None else None
    addresses = bridge.addresses if bridge is not None else ()
    if not request.targets:
        return render_ps(mac, addresses, attachments)
    from weaved.attach.target import TargetError, resolve_target

    lines: list[str] = []
    for word in request.targets:
        if word == EXPOSE_LABEL:
            if mac:
                lines.append(ps_line(EXPOSE_LABEL, mac, addresses))
            continue
        try:
            target = resolve_target(word, docker_url)
        except TargetError:
            continue  # as Weave: a container that is not there has no lines
        for a in attachments:
            if a.target.netns_inode == target.netns_inode:
                lines.append(render_ps(None, (), [replace(a, target=target)]).rstrip("\n"))
    return "".join(line + "\n" for line in lines if line)
