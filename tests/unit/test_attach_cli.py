"""`weaved attach/detach/ps` argument forms (Weave's) → typed requests; no root, no kernel."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from weaved.attach.cli import (
    DEFAULT_TIMEOUT,
    AttachFlags,
    add_attach_parsers,
    attach_flags,
    literal_addresses,
    request_from_args,
    timeout_of,
)
from weaved.attach.expose import expose_forms
from weaved.attach.requests import (
    AddressKind,
    AttachRequest,
    DetachRequest,
    PsRequest,
    parse_address,
)
from weaved.errors import UsageError


def handler(_args: argparse.Namespace, _ctx: object) -> int:
    return 0


def parse(*argv: str) -> AttachRequest | DetachRequest | PsRequest:
    parser = argparse.ArgumentParser(prog="weaved")
    sub = parser.add_subparsers(dest="command")
    add_attach_parsers(sub, handler)
    args = parser.parse_args(list(argv))
    assert args.func is handler
    return request_from_args(args)


@pytest.mark.parametrize(
    ("word", "kind", "text"),
    [
        ("10.2.1.5/24", AddressKind.CIDR, "10.2.1.5/24"),
        ("ip:10.2.1.5/24", AddressKind.CIDR, "10.2.1.5/24"),
        ("ip:10.2.1.5", AddressKind.IP, "ip:10.2.1.5"),
        ("net:10.2.0.0/16", AddressKind.SUBNET, "net:10.2.0.0/16"),
        ("net:default", AddressKind.DEFAULT, "net:default"),
    ],
)
def test_address_forms(word: str, kind: AddressKind, text: str) -> None:
    parsed = parse_address(word)
    assert parsed is not None and parsed.kind is kind and parsed.text == text
    assert parsed.needs_ipam == (kind is not AddressKind.CIDR)


@pytest.mark.parametrize("word", ["c1", "mycontainer", "3f2a9b1c0d4e", "1234", "netns:foo", "a/b"])
def test_targets_are_not_addresses(word: str) -> None:
    assert parse_address(word) is None


@pytest.mark.parametrize(
    "word",
    ["10.2.1.5/33", "ip:10.2.1", "ip:nonsense/24", "net:10.2.0.1/16", "net:x", "300.1.1.1/8"],
)
def test_malformed_addresses_are_usage_errors(word: str) -> None:
    with pytest.raises(UsageError):
        parse_address(word)


def test_attach_several_addresses_then_target() -> None:
    req = parse("attach", "10.2.1.5/24", "net:10.3.0.0/16", "ip:10.4.0.1/8", "web")
    assert isinstance(req, AttachRequest)
    assert req.target == "web" and req.multicast_route is None
    assert [a.text for a in req.addresses] == ["10.2.1.5/24", "net:10.3.0.0/16", "10.4.0.1/8"]


def test_attach_without_address_means_ipam_default() -> None:
    req = parse("attach", "web")
    assert isinstance(req, AttachRequest) and req.addresses == () and req.target == "web"


@pytest.mark.parametrize(
    "argv",
    [
        ("attach", "--no-multicast-route", "10.2.1.5/24", "web"),
        ("attach", "10.2.1.5/24", "--no-multicast-route", "web"),
    ],
)
def test_no_multicast_route_flag_anywhere_before_target(argv: tuple[str, ...]) -> None:
    req = parse(*argv)
    assert isinstance(req, AttachRequest) and req.multicast_route is False and req.target == "web"


@pytest.mark.parametrize(
    "argv",
    [
        ("attach",),
        ("attach", "10.2.1.5/24"),
        ("attach", "web", "10.2.1.5/24"),
        ("attach", "web", "db"),
        ("attach", "10.2.1.5/24", "--bogus", "web"),
        ("detach",),
    ],
)
def test_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError) as info:
        parse(*argv)
    assert info.value.exit_code == 64


def test_detach_forms() -> None:
    req = parse("detach", "web")
    assert isinstance(req, DetachRequest) and req.addresses == ()
    req = parse("detach", "10.2.1.5/24", "net:default", "web")
    assert isinstance(req, DetachRequest)
    assert [a.text for a in req.addresses] == ["10.2.1.5/24", "net:default"]


def test_ps_forms() -> None:
    assert parse("ps") == PsRequest(())
    assert parse("ps", "weave:expose", "web") == PsRequest(("weave:expose", "web"))


def test_requests_round_trip_through_json() -> None:
    req = parse("attach", "--no-multicast-route", "10.2.1.5/24", "net:default", "web")
    assert isinstance(req, AttachRequest)
    assert AttachRequest.from_json(req.to_json()) == req
    det = parse("detach", "ip:10.2.1.5", "web")
    assert isinstance(det, DetachRequest)
    assert DetachRequest.from_json(det.to_json()) == det


def test_literal_addresses_refuse_ipam_forms() -> None:
    req = parse("attach", "10.2.1.5/24", "ip:10.2.1.6/24", "web")
    assert isinstance(req, AttachRequest)
    assert literal_addresses(req.addresses, "attach") == [
        ipaddress.IPv4Interface("10.2.1.5/24"),
        ipaddress.IPv4Interface("10.2.1.6/24"),
    ]
    req = parse("attach", "10.2.1.5/24", "net:default", "web")
    assert isinstance(req, AttachRequest)
    with pytest.raises(UsageError, match="net:default"):
        literal_addresses(req.addresses, "attach")


@pytest.mark.parametrize("word", ["net:10.2.3.2/31", "net:10.2.3.2/32", "net:10.2.3.2/30"])
def test_subnets_ipam_cannot_allocate_from_are_refused_at_once(word: str) -> None:
    """Weave test 500's error conditions: host bits set, or too small (no host address)."""
    with pytest.raises(UsageError, match=r"too small|not a subnet"):
        parse("attach", word, "web")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="weaved")
    add_attach_parsers(parser.add_subparsers(dest="command"), handler)
    return parser.parse_args(list(argv))


def test_timeout_before_or_among_the_words() -> None:
    assert timeout_of(_args("attach", "web")) == DEFAULT_TIMEOUT
    assert timeout_of(_args("attach", "--timeout", "5", "web")) == 5.0
    args = _args("attach", "10.2.1.5/24", "--timeout", "2.5", "web")
    assert timeout_of(args) == 2.5
    req = request_from_args(args)
    assert isinstance(req, AttachRequest) and req.target == "web"
    assert timeout_of(_args("attach", "--timeout=7", "web")) == 7.0
    for bad in ("0", "x"):
        with pytest.raises(UsageError, match="--timeout"):
            timeout_of(_args("attach", "--timeout", bad, "web"))


def test_expose_forms_are_the_attach_forms() -> None:
    """Weave test 500: `expose 10.2.1.2/24 ip:10.2.2.2/24 net:10.2.3.0/24`."""
    words = ["10.2.1.2/24", "ip:10.2.2.2/24", "net:10.2.3.0/24", "ip:10.2.4.4"]
    assert expose_forms(words, "10.2.0.0/16") == [
        "10.2.1.2/24",
        "10.2.2.2/24",
        "net:10.2.3.0/24",
        "10.2.4.4/16",
    ]
    assert expose_forms([], "10.2.0.0/16") == ["net:default"]
    with pytest.raises(UsageError):
        expose_forms(["web"], "10.2.0.0/16")


def flags_of(*argv: str) -> AttachFlags:
    parser = argparse.ArgumentParser()
    add_attach_parsers(parser.add_subparsers(dest="command"), handler)
    return attach_flags(parser.parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("attach", "--without-dns", "--rewrite-hosts", "--add-host", "db:10.2.1.9", "web"),
        (
            "attach",
            "10.2.1.5/24",
            "--without-dns",
            "--rewrite-hosts",
            "--add-host=db:10.2.1.9",
            "web",
        ),
    ],
)
def test_weaves_dns_and_hosts_flags_before_or_among_the_words(argv: tuple[str, ...]) -> None:
    req = parse(*argv)
    assert isinstance(req, AttachRequest) and req.target == "web" and req.dns is False
    assert AttachRequest.from_json(req.to_json()) == req
    flags = flags_of(*argv)
    assert flags.rewrite_hosts and flags.without_dns and flags.add_hosts == ("db:10.2.1.9",)


def test_attach_registers_dns_unless_told() -> None:
    req = parse("attach", "web")
    assert isinstance(req, AttachRequest) and req.dns is True
    assert AttachRequest.from_json({"target": "web"}).dns is True


@pytest.mark.parametrize("value", ["db", "db:", "db:nope"])
def test_a_bad_add_host_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="--add-host"):
        parse("attach", "10.2.1.5/24", "--add-host", value, "web")
    with pytest.raises(UsageError, match="--add-host"):
        flags_of("attach", "--add-host", value, "web")
