"""Which mesh settings apply live and which need a restart (issue 11.8); how they are planned."""

from __future__ import annotations

from dataclasses import replace

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.part import settings_attrs
from weaved.mesh.router import MeshConfig
from weaved.mesh.settings import LIVE_FIELDS, RESTART_FIELDS, split_settings

BASE = MeshConfig(name=PeerName(1), nickname="a", password=b"pw")


def test_live_fields_are_taken_and_restart_fields_reported_but_kept() -> None:
    wanted = replace(
        BASE,
        name=PeerName(2),
        port=6790,
        nickname="b",
        password=b"other",
        trusted_subnets=("192.0.2.0/24",),
        conn_limit=3,
        discovery=False,
    )
    running, restart = split_settings(BASE, wanted)
    assert restart == ("name", "port")
    assert running == replace(wanted, name=PeerName(1), port=BASE.port)


def test_every_spec_backed_field_is_either_live_or_restart() -> None:
    spec_backed = {"name", "nickname", "host", "port", "password", "trusted_subnets"}
    spec_backed |= {"conn_limit", "discovery", "overlays"}
    assert set(LIVE_FIELDS) | set(RESTART_FIELDS) == spec_backed
    assert not set(LIVE_FIELDS) & set(RESTART_FIELDS)


def test_the_plan_never_shows_the_password_nor_a_plain_hash_of_it() -> None:
    shown = dict(settings_attrs(BASE, b"k" * 16, {}))
    assert shown["password"].startswith("set#") and "pw" not in shown["password"]
    assert dict(settings_attrs(BASE, b"j" * 16, {}))["password"] != shown["password"]
    other = dict(settings_attrs(replace(BASE, password=b"x"), b"k" * 16, {}))
    assert other["password"] != shown["password"]  # a change of password is a change
    assert dict(settings_attrs(replace(BASE, password=None), b"k", {}))["password"] == "none"


def test_a_collision_is_an_attribute_with_who_and_where() -> None:
    shown = dict(settings_attrs(BASE, b"k" * 16, {"192.0.2.12": "host2"}))
    assert shown["peer_name_unique"] == "no: also used by 'host2' at 192.0.2.12"
