"""The `weaved` command line: parse (`parser.py`), set up logging and the context, run the
subcommand (`host_commands.py`, `net_commands.py`, `container_commands.py`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from weaved.cli.parser import build_parser
from weaved.context import Context
from weaved.errors import UsageError, WeavedError
from weaved.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Weave's removed commands take any of Weave's flags (`env --restore`): the explanation,
    # not argparse's complaint.
    known, _ = parser.parse_known_args(argv)
    args = known if getattr(known, "removed", None) else parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return UsageError.exit_code
    if args.host:  # read by the spec loader wherever a cluster file is loaded (daemon too)
        os.environ["WEAVED_HOST"] = args.host
    ctx = Context.resolve(args.spec, args.state_dir, args.socket)
    try:
        code: int = args.func(args, ctx)
        return code
    except WeavedError as exc:
        sys.stderr.write(f"weaved: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
