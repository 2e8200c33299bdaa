"""Upstream resolvers and settings: resolv.conf parsing, exclusion of ourselves, spec mapping."""

from __future__ import annotations

import os
from pathlib import Path

from weaved.dns.server import Server, Upstreams, parse_resolv_conf, parse_server
from weaved.dns.service import DnsConfig, split_listen
from weaved.spec.models import DnsSpec

RESOLV = """\
# generated
nameserver 10.255.255.53
nameserver fe80::1%eth0
nameserver not-an-address
search example.com
options ndots:2
nameserver 192.0.2.1
"""


def test_parse_resolv_conf() -> None:
    assert parse_resolv_conf(RESOLV) == ["10.255.255.53", "fe80::1", "192.0.2.1"]
    assert parse_resolv_conf("") == []


def test_parse_server() -> None:
    assert parse_server("8.8.8.8") == Server("8.8.8.8", 53)
    assert parse_server("8.8.8.8:5353") == Server("8.8.8.8", 5353)
    assert parse_server("[2001:db8::1]:53") == Server("2001:db8::1", 53)
    assert parse_server("2001:db8::1") == Server("2001:db8::1", 53)
    assert str(Server("8.8.8.8")) == "8.8.8.8"
    assert str(Server("8.8.8.8", 5353)) == "8.8.8.8:5353"


def test_fixed_upstreams_win_over_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(RESOLV)
    up = Upstreams(["8.8.8.8:53", "1.1.1.1:5353"], str(conf))
    assert up.servers() == [Server("8.8.8.8"), Server("1.1.1.1", 5353)]
    assert up.display() == ["8.8.8.8", "1.1.1.1:5353"]


def test_resolv_conf_is_reread_when_it_changes_and_excludes_us(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.32.0.1\nnameserver 192.0.2.1\n")
    now = [0.0]
    up = Upstreams((), str(conf), clock=lambda: now[0])
    up.exclude(Server("10.32.0.1", 53))  # we listen there: never forward to ourselves
    assert up.servers() == [Server("192.0.2.1")]
    conf.write_text("nameserver 192.0.2.2\n")
    os.utime(conf, (1, 1))
    assert up.servers() == [Server("192.0.2.1")]  # checked at most every 5 s
    now[0] = 6.0
    assert up.servers() == [Server("192.0.2.2")]


def test_missing_resolv_conf_means_no_upstreams(tmp_path: Path) -> None:
    assert Upstreams((), str(tmp_path / "nope")).servers() == []


def test_config_from_spec() -> None:
    assert DnsConfig.from_spec(DnsSpec(), "10.32.0.1") == DnsConfig(listen="10.32.0.1:53")
    spec = DnsSpec(listen="127.0.0.1:5353", upstream=["8.8.8.8"], domain="corp.internal", ttl=30)
    cfg = DnsConfig.from_spec(spec, "10.32.0.1")
    assert (cfg.listen, cfg.upstream, cfg.domain, cfg.ttl) == (
        "127.0.0.1:5353",
        ("8.8.8.8:53",),
        "corp.internal.",
        30,
    )
    assert split_listen("10.0.0.1") == ("10.0.0.1", 53)
    assert split_listen("[::1]:5353") == ("::1", 5353)
