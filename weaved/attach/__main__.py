"""`python -m weaved.attach attach|detach|ps …`: the attach commands on their own, run locally
(no daemon, literal addresses). `weaved attach …` is the same once wired into weaved's CLI."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from weaved.attach.cli import add_attach_parsers, run_local
from weaved.context import Context
from weaved.errors import UsageError, WeavedError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weaved")
    parser.add_argument("-f", "--file", dest="spec")
    parser.add_argument("--state-dir")
    parser.add_argument("--socket")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_attach_parsers(sub, run_local)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return UsageError.exit_code
    ctx = Context.resolve(args.spec, args.state_dir, args.socket)
    try:
        code: int = args.func(args, ctx)
        return code
    except WeavedError as exc:
        sys.stderr.write(f"weaved: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
