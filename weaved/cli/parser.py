"""The `weaved` argument parser; `cli/docs.py` makes the man page and bash completion from it."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from weaved import __version__
from weaved.cli.commands import (
    REMOVED,
    cmd_apply,
    cmd_attach,
    cmd_connect,
    cmd_daemon,
    cmd_dns_add,
    cmd_dns_args,
    cmd_dns_lookup,
    cmd_dns_remove,
    cmd_expose,
    cmd_forget,
    cmd_hide,
    cmd_lab,
    cmd_plan,
    cmd_removed,
    cmd_render,
    cmd_report,
    cmd_reset,
    cmd_rmpeer,
    cmd_run,
    cmd_schema,
    cmd_setup_cni,
    cmd_status,
    cmd_validate,
    cmd_version,
)
from weaved.errors import UsageError


def _confirm_seconds(text: str) -> int:
    from weaved.spec.models import seconds_of

    try:
        return seconds_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Parser(argparse.ArgumentParser):
    """Usage errors exit 64 (EX_USAGE): argparse's 2 is what `plan --detailed-exitcode` uses
    for "changes pending", and a typo must never read as that."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command shares, accepted before or after the command
    (`weaved -f F apply`, `weaved apply -f F`): after it, an option that is not given must
    not overwrite one given before."""
    default: dict[str, object] = {"default": argparse.SUPPRESS} if after_command else {}
    options: list[tuple[tuple[str, ...], dict[str, object]]] = [
        (
            ("-f", "--file"),
            {
                "dest": "spec",
                "metavar": "FILE",
                "help": "spec file (default /etc/weave/weave.yaml, env WEAVED_SPEC)",
            },
        ),
        (
            ("--state-dir",),
            {
                "metavar": "DIR",
                "help": "state directory (default /var/lib/weave, env WEAVED_STATE_DIR)",
            },
        ),
        (
            ("--socket",),
            {
                "metavar": "PATH",
                "help": "control socket (default /run/weave/weaved.sock, env WEAVED_SOCKET)",
            },
        ),
        (("-v", "--verbose"), {"action": "store_true", "help": "debug logging"}),
        (
            ("--host",),
            {
                "metavar": "NAME",
                "help": "with a cluster file: this host's section (key, hostname or peer name;"
                " default: the hostname; env WEAVED_HOST)",
            },
        ),
    ]
    for flags, kwargs in options:
        free = [f for f in flags if f not in parser._option_string_actions]
        if free:
            parser.add_argument(*free, **{**kwargs, **default})  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="weaved",
        description="Declarative container network, wire-compatible with Weave Net 2.8.1.",
    )
    parser.add_argument("--version", action="version", version=f"weaved {__version__}")
    _global_options(parser, after_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser("version", help="print the version (as `weave version`)")
    p.set_defaults(func=cmd_version)
    for name in REMOVED:
        p = sub.add_parser(name, help=f"(Weave's `{name}`: says what to do with weaved)")
        p.set_defaults(func=cmd_removed, removed=name)

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
        "run",
        help="docker run -d with weaveDNS's flags, then attach (Weave's `weave run`)",
        usage="weaved run [ADDR ...] [--without-dns] [--no-multicast-route] DOCKER-RUN-ARGS ...",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ADDR ...] DOCKER-RUN-ARGS")
    p.set_defaults(func=cmd_run)

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

    from weaved.attach.cli import add_attach_parsers
    from weaved.lab.cli import add_lab_parser

    add_attach_parsers(sub, cmd_attach)

    add_lab_parser(sub, cmd_lab)
    for subparser in sub.choices.values():
        _global_options(subparser, after_command=True)
    return parser
