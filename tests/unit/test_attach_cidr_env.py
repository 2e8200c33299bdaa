"""WEAVE_CIDR and `works.weave.cidr` read as Weave's proxy read them."""

from __future__ import annotations

import pytest

from weaved.attach.cidr_env import wanted_addresses
from weaved.errors import UsageError


def texts(env: list[str], labels: dict[str, str] | None = None) -> list[str] | None:
    got = wanted_addresses(env, labels)
    return None if got is None else [a.text for a in got]


def test_forms_several_none_and_absent() -> None:
    assert texts(["PATH=/bin", "WEAVE_CIDR=10.2.1.1/24 ip:10.2.1.2/24 net:10.2.0.0/16"]) == [
        "10.2.1.1/24",
        "10.2.1.2/24",
        "net:10.2.0.0/16",
    ]
    assert texts(["WEAVE_CIDR=net:default"]) == ["net:default"]
    assert texts(["WEAVE_CIDR=none"]) is None
    assert texts(["PATH=/bin"]) == []
    assert texts([], {"works.weave.cidr": "none"}) is None
    assert texts(["WEAVE_CIDR=10.2.1.1/24"], {"works.weave.cidr": "none"}) == ["10.2.1.1/24"]


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="not an address in Weave's forms"):
        wanted_addresses(["WEAVE_CIDR=web"], None)
