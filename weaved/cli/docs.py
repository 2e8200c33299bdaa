"""The man page and the bash completion, both generated from the argparse parser, so they can
never disagree with `--help`. The package build runs `python -m weaved.cli.docs man|bash`.
Pure: a parser (and a date for the man page) in, text out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from weaved import __version__

DESCRIPTION = """\
weaved is a cross-host container network, the successor to Weave Net and wire-compatible
with Weave Net 2.8.1. Each host has one YAML spec; a reconciler compares it with the kernel
and converges it: \\fBweaved plan\\fR shows the difference, \\fBweaved apply\\fR makes it so,
\\fBweaved daemon\\fR keeps it so and joins the mesh."""

FILES = [
    ("/etc/weave/weave.yaml", "the spec (-f, WEAVED_SPEC)"),
    ("/var/lib/weave", "state: IPAM ring, attachments (--state-dir, WEAVED_STATE_DIR)"),
    ("/run/weave/weaved.sock", "the daemon's control socket (--socket, WEAVED_SOCKET)"),
    ("/usr/share/weaved/examples", "example specs"),
    ("/usr/share/weaved/schemas/weave.schema.json", "the spec's JSON Schema"),
]

EXIT_STATUS = [
    ("0", "success"),
    ("1", "failure (the message says who must act)"),
    ("2", "plan --detailed-exitcode: changes are pending"),
    ("64", "usage error"),
    ("3", "daemon: stopped by weaved reset (it left the network; systemd does not restart it)"),
]


@dataclass(frozen=True)
class Command:
    """One command of the tree: `path` is () for weaved itself, ("lab", "up") for `lab up`."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Command]:
    yield Command(path, parser, parser.description or "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                for command in walk(sub, (*path, name)):
                    if command.path == (*path, name):
                        command = Command(command.path, command.parser, helps.get(name, ""))
                    yield command


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(
        action, argparse._HelpAction | argparse._VersionAction
    )


# --- man page ------------------------------------------------------------------------------
def _roff(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("-", "\\-")
    lines = escaped.splitlines()
    return "\n".join(("\\&" + line if line.startswith((".", "'")) else line) for line in lines)


def _option_lines(
    parser: argparse.ArgumentParser, shared: frozenset[str] = frozenset()
) -> list[str]:
    """The options of `parser`, but those in `shared` (weaved's own, accepted after any
    command too, and --help), which the OPTIONS section describes once."""
    lines: list[str] = []
    for action in options(parser):
        if shared & set(action.option_strings):
            continue
        names = ", ".join(f"\\fB{_roff(name)}\\fR" for name in action.option_strings)
        if takes_value(action):
            names += f" \\fI{_roff(str(action.metavar or action.dest.upper()))}\\fR"
        lines += [".TP", names, _roff(action.help or "")]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = " ".join(parser.format_usage().split())
    return usage.removeprefix("usage: ")


def render_man(parser: argparse.ArgumentParser, date: str) -> str:
    lines = [
        f'.TH WEAVED 1 "{date}" "weaved {__version__}" "User Commands"',
        ".SH NAME",
        "weaved \\- declarative container network, wire\\-compatible with Weave Net 2.8.1",
        ".SH SYNOPSIS",
        f".B weaved\n{_roff(_usage(parser).removeprefix('weaved '))}",
        ".SH DESCRIPTION",
        DESCRIPTION,
        ".SH OPTIONS",
        *_option_lines(parser),
        ".SH COMMANDS",
    ]
    shared = frozenset(name for a in options(parser) for name in a.option_strings)
    for command in walk(parser):
        if not command.path or (subcommands(command.parser) and not options(command.parser)):
            continue
        lines += [f'.SS "{_roff(" ".join(command.path))}"', _roff(command.help), ".PP"]
        lines += [f".B {_roff(_usage(command.parser))}"]
        lines += _option_lines(command.parser, shared)
    lines.append(".SH FILES")
    for path, what in FILES:
        lines += [".TP", f"\\fI{_roff(path)}\\fR", _roff(what)]
    lines.append(".SH EXIT STATUS")
    for code, what in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", _roff(what)]
    lines += [
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBip\\fR(8), \\fBnft\\fR(8)",
    ]
    # An option without help leaves an empty line; roff reads those as blank output lines.
    return "\n".join(line for line in lines if line) + "\n"


# --- bash completion -----------------------------------------------------------------------
def render_bash(parser: argparse.ArgumentParser) -> str:
    """A static completion: the words of each command path, file names after options that take
    a value (and wherever nothing else fits)."""
    commands = list(walk(parser))
    paths = [" ".join(c.path) for c in commands if c.path]
    valued = sorted(
        {n for c in commands for a in options(c.parser) if takes_value(a) for n in a.option_strings}
    )
    cases = []
    for command in commands:
        words = [n for a in options(command.parser) for n in a.option_strings]
        words += subcommands(command.parser)
        for action in command.parser._actions:
            if (
                not action.option_strings
                and action.choices
                and not isinstance(action, argparse._SubParsersAction)
            ):
                words += [str(choice) for choice in action.choices]
        cases.append(f'    "{" ".join(command.path)}") words="{" ".join(words)}" ;;')
    return "\n".join(
        [
            "# bash completion for weaved, made from its parser (python -m weaved.cli.docs bash)",
            "_weaved() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '    local path="" word i words=""',
            '    case "$prev" in',
            f"    {'|'.join(valued)}) return 0 ;;",
            "    esac",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        word="${COMP_WORDS[i]}"',
            '        case "$word" in',
            f"        {'|'.join(valued)}) ((i++)); continue ;;",
            "        -*) continue ;;",
            "        esac",
            '        case "${path:+$path }$word" in',
            f"        {'|'.join(repr(p).replace(chr(39), chr(34)) for p in paths)})"
            ' path="${path:+$path }$word" ;;',
            "        esac",
            "    done",
            '    case "$path" in',
            *cases,
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -o default -F _weaved weaved",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    from weaved.cli.parser import build_parser

    if argv[:1] == ["man"] and len(argv) in (1, 2):
        sys.stdout.write(render_man(build_parser(), argv[1] if len(argv) == 2 else "1970-01-01"))
        return 0
    if argv == ["bash"]:
        sys.stdout.write(render_bash(build_parser()))
        return 0
    sys.stderr.write("usage: python -m weaved.cli.docs man [YYYY-MM-DD] | bash\n")
    return 64


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
