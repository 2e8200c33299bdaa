"""The `weaved` argument parser, one part per command group (`host_commands`, `net_commands`,
`container_commands`); `cli/docs.py` makes the man page and bash completion from it."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from weaved import __version__
from weaved.cli.container_commands import add_container_parsers
from weaved.cli.host_commands import add_host_parsers
from weaved.cli.net_commands import add_net_parsers
from weaved.errors import UsageError


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
    add_host_parsers(sub)
    add_net_parsers(sub)
    add_container_parsers(sub)
    for subparser in sub.choices.values():
        _global_options(subparser, after_command=True)
    return parser
