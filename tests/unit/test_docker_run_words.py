"""`weaved run`'s command line, split as Weave's `weave run` splits it."""

from __future__ import annotations

import pytest

from weaved.docker.run import split_run_words
from weaved.errors import UsageError


def test_addresses_and_flags_first_then_dockers_words() -> None:
    run = split_run_words(
        ["10.2.1.1/24", "net:default", "--without-dns", "--name", "c1", "img", "10.1.1.1/24"]
    )
    assert run.addresses == ("10.2.1.1/24", "net:default")
    assert not run.with_dns and not run.no_multicast_route
    assert run.docker_args == ("--name", "c1", "img", "10.1.1.1/24")


def test_nothing_for_docker_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="docker run arguments missing"):
        split_run_words(["ip:10.2.1.1/24", "--no-multicast-route"])
