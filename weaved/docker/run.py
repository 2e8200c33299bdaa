"""`weaved run [ADDR ...] [--without-dns] [--no-multicast-route] DOCKER-RUN-ARGS ...`, Weave's
`weave run`: `docker run -d` with weaveDNS's flags added, then `attach`, then the container ID.
This module splits the command line (pure); `cli/container_commands.py` runs the two steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from weaved.attach.requests import parse_address
from weaved.errors import UsageError

WITHOUT_DNS = "--without-dns"
NO_MULTICAST = "--no-multicast-route"


@dataclass(frozen=True)
class RunArgs:
    addresses: tuple[str, ...]  # as `attach` takes them
    with_dns: bool
    no_multicast_route: bool
    docker_args: tuple[str, ...]  # what follows `docker run -d`


def split_run_words(words: Sequence[str]) -> RunArgs:
    """Leading addresses and weave flags, then everything else is Docker's (as Weave's)."""
    addresses: list[str] = []
    with_dns, no_mc = True, False
    index = 0
    for index, word in enumerate(words):  # noqa: B007 (index is used after the loop)
        if word == WITHOUT_DNS:
            with_dns = False
        elif word == NO_MULTICAST:
            no_mc = True
        elif parse_address(word) is not None:
            addresses.append(word)
        else:
            break
    else:
        index = len(words)
    rest = tuple(words[index:])
    if not rest:
        raise UsageError(
            "weaved run: docker run arguments missing\n"
            "  usage: weaved run [ADDR ...] [--without-dns] [--no-multicast-route]"
            " DOCKER-RUN-ARGS ... IMAGE [COMMAND ...]"
        )
    return RunArgs(tuple(addresses), with_dns, no_mc, rest)
