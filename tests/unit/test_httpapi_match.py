"""Routing of Weave's HTTP API paths (pure)."""

from __future__ import annotations

from weaved.httpapi.http import match
from weaved.spec.models import HttpApiSpec


def test_match_binds_variables_and_wants_every_segment() -> None:
    assert match("/ip/{id}/{ip}/{len}", "/ip/c1/10.32.0.0/24") == {
        "id": "c1",
        "ip": "10.32.0.0",
        "len": "24",
    }
    assert match("/ip/{id}", "/ip/c1/10.32.0.0") is None
    assert match("/ip/{id}", "/ip/") is None
    assert match("/status", "/status") == {}


def test_the_api_is_off_by_default_on_weaves_port() -> None:
    spec = HttpApiSpec()
    assert not spec.enabled and spec.listen == "127.0.0.1:6784"
