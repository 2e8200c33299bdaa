"""The firewall rules compiled from a spec and the attachment facts (pure)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from weaved.compile.desired import compile_spec
from weaved.compile.facts import ContainerPort, Facts, HostRoute
from weaved.compile.firewall import quote_ifname
from weaved.errors import SpecError
from weaved.model.resources import Kind, State
from weaved.spec.loader import parse_spec_text
from weaved.spec.models import Spec

BASE = "version: 1\npeer: {name: '3e:80:e7:5a:63:a7'}\n"
# Tokens of an nft rule: a quoted string, a set in braces, or a bare word.
TOKEN = re.compile(r'"[^"]*"|\{[^{}]*\}|[^\s"{}]+')


def rules(spec: Spec, facts: Facts | None = None) -> dict[str, str]:
    state = compile_spec(spec, facts or Facts()).state
    return {r.key: r.body for r in state.by_kind(Kind.NFT_RULE)}


def export_with(interface: str) -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "services": {
                "export": [
                    {"name": "web", "port": 8080, "to": "10.2.1.21:80", "in_interface": interface}
                ]
            },
        }
    )


def test_the_quote_from_the_issue_is_refused_with_its_location() -> None:
    text = BASE + "services:\n  export:\n    - {name: web, port: 8080, to: '10.2.1.21:80',"
    text += " in_interface: 'e\" accept #'}\n"
    with pytest.raises(SpecError) as err:
        parse_spec_text(text, "weave.yaml")
    message = str(err.value)
    assert "services.export[0].in_interface" in message and "weave.yaml:5" in message
    assert "not an interface name" in message


@pytest.mark.parametrize("name", ["eth0", "ens3", "br-1a2b", "bond0.100", "eth*", "a" * 15])
def test_interface_names_the_kernel_knows_are_accepted(name: str) -> None:
    body = rules(export_with(name))["nft/ip/weaved/prerouting/export-web"]
    assert body.startswith(f'iifname "{name}" fib daddr type local')


@pytest.mark.parametrize(
    "name", ["", "a" * 16, "e th", "eth0/1", "eth:0", ".", "..", '"', "*", "eth0\n"]
)
def test_names_the_kernel_refuses_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="not an interface name"):
        export_with(name)


@settings(max_examples=3000, deadline=None)
@given(st.text(min_size=0, max_size=24))
def test_no_interface_name_changes_a_rules_structure(name: str) -> None:
    """Whatever the text: refused by the spec, or it is exactly one quoted token in the rule,
    and the rule has the same tokens as with a plain name."""
    try:
        spec = export_with(name)
    except ValidationError:
        with pytest.raises(ValueError):
            quote_ifname(name)  # the second lock refuses it as well
        return
    compiled = rules(spec)
    plain = rules(export_with("eth0"))
    assert compiled.keys() == plain.keys()
    key = "nft/ip/weaved/prerouting/export-web"
    assert {k: v for k, v in compiled.items() if k != key} == {
        k: v for k, v in plain.items() if k != key
    }
    body = compiled[key]
    tokens = TOKEN.findall(body)
    assert tokens[1] == f'"{name}"', body
    assert [*tokens[:1], '"eth0"', *tokens[2:]] == TOKEN.findall(plain[key]), body
    # ... and the tokens are the whole rule: nothing was left outside them.
    assert "".join(tokens).replace(" ", "") == body.replace(" ", "")


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=20))
def test_quote_ifname_only_passes_plain_names(text: str) -> None:
    try:
        quoted = quote_ifname(text)
    except ValueError:
        return
    assert re.fullmatch(r'"[A-Za-z0-9_.*-]{1,15}"', quoted)


def port(veth: str, *addresses: str) -> ContainerPort:
    return ContainerPort(veth, tuple(ipaddress.IPv4Address(a) for a in addresses))


def test_each_container_port_sends_only_from_its_addresses() -> None:
    """Every container port is judged by its name prefix against the set `ports` of
    (port . address) elements: the rule text does not depend on who is attached, and a port
    with no element (every address detached, or not yet known) sends no IPv4 and no ARP."""
    facts = Facts(container_ports=(port("vethwepl12", "10.32.0.5", "10.40.0.9"), port("vethwepl7")))
    state = compile_spec(Spec(version=1), facts).state
    got = {r.key: r.body for r in state.by_kind(Kind.NFT_RULE)}
    for prefix, suffix in (("vethwepl*", ""), ("vethwl*", "-plugin")):
        assert got[f"nft/bridge/weaved/prerouting/spoof-ip{suffix}"] == (
            f'iifname "{prefix}" iifname . ip saddr != @ports drop'
        )
        assert got[f"nft/bridge/weaved/prerouting/spoof-arp{suffix}"] == (
            f'iifname "{prefix}" arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @ports drop'
        )
    assert [r.key for r in state.by_kind(Kind.NFT_ELEMENT)] == [
        "nftset/bridge/weaved/ports/vethwepl12/10.32.0.5",
        "nftset/bridge/weaved/ports/vethwepl12/10.40.0.9",
    ]
    assert [r.key for r in state.by_kind(Kind.NFT_SET)] == ["nftset/bridge/weaved/ports"]
    # Nobody attached: the same rules (an unknown port is dropped), an empty set.
    alone = compile_spec(Spec(version=1), Facts()).state
    assert {r.key: r.body for r in alone.by_kind(Kind.NFT_RULE) if "/spoof" in r.key} == {
        k: v for k, v in got.items() if "/spoof" in k
    }
    assert not alone.by_kind(Kind.NFT_ELEMENT)


def test_mesh_ports_follow_the_spec_and_dns_is_let_in() -> None:
    got = rules(parse_spec_text(BASE + "port: 7000\n", "w.yaml"))
    assert got["nft/ip/weaved/input/mesh-tcp"] == 'iifname "weave" tcp dport 7000 drop'
    assert got["nft/ip/weaved/input/mesh-udp"] == 'iifname "weave" udp dport { 7000, 7001 } drop'
    assert got["nft/ip/weaved/input/dns"] == (
        'iifname "weave" ip daddr 169.254.53.53 meta l4proto { tcp, udp } th dport 53 accept'
    )
    inputs = [k for k in got if k.startswith("nft/ip/weaved/input/")]
    assert inputs[:2] == ["nft/ip/weaved/input/mesh-tcp", "nft/ip/weaved/input/mesh-udp"]
    assert inputs[-1] == "nft/ip/weaved/input/other"  # whatever is not let in is dropped


def test_other_bridges_are_kept_out_but_the_underlay_is_not() -> None:
    default = HostRoute(ipaddress.IPv4Network("0.0.0.0/0"), "br0", "default dev br0")
    got = rules(parse_spec_text(BASE + "expose: [{cidr: 10.2.1.1/24}]\n", "w.yaml"))
    assert got["nft/ip/weaved/forward/in-bridges"] == 'oifname "weave" meta iifkind "bridge" drop'
    got = rules(Spec(version=1), Facts(host_routes=(default,)))
    assert got["nft/ip/weaved/forward/in-bridges"] == (
        'oifname "weave" meta iifkind "bridge" iifname != { "br0" } drop'
    )
    assert got["nft/ip/weaved/forward/in-other"] == 'oifname "weave" drop'


def test_dns_link_address_and_routes_back_to_containers() -> None:
    spec = parse_spec_text(BASE + "expose: [{cidr: 10.2.1.1/24}]\n", "w.yaml")
    facts = Facts(container_ports=(port("vethwepl1", "10.32.0.5", "10.2.1.7"),))
    state: State = compile_spec(spec, facts).state
    assert "addr/weave/169.254.53.53/32" in state
    route = state.resources["route/10.32.0.5/32"]
    assert dict(route.attrs) == {
        "dev": "weave",
        "proto": "87",
        "scope": "link",
        "src": "169.254.53.53",
    }
    assert "route/10.2.1.7/32" not in state  # its subnet's route is there already
    off = compile_spec(parse_spec_text(BASE + "dns: {enabled: false}\n", "w.yaml"), facts).state
    assert "addr/weave/169.254.53.53/32" not in off and "route/10.32.0.5/32" not in off
    assert not [k for k in off.resources if "/dns" in k]


def test_isolated_subnets_carry_no_ipv6() -> None:
    spec = parse_spec_text(BASE + "ipalloc: {default_subnet: 10.32.0.0/16}\n", "w.yaml")
    one = rules(spec)
    assert "nft/bridge/weaved/forward/isolate-ipv6" not in one  # a single subnet: IPv6 passes
    two = rules(spec, Facts(container_subnets=(ipaddress.IPv4Network("10.33.0.0/16"),)))
    assert two["nft/bridge/weaved/forward/isolate-ipv6"] == "ether type ip6 drop"


@pytest.mark.parametrize(
    ("dns", "told", "link"),
    [
        ("", "169.254.53.53", True),
        ("dns: {listen: '0.0.0.0:53'}\n", "169.254.53.53", True),
        ("dns: {listen: '10.2.1.1:53'}\n", "10.2.1.1", False),
    ],
)
def test_what_containers_are_told(dns: str, told: str, link: bool) -> None:
    from weaved.compile.dns import uses_link_address
    from weaved.dns.part import listen_address, nameserver

    spec = parse_spec_text(BASE + dns, "w.yaml")
    assert nameserver(spec) == told and uses_link_address(spec) is link
    assert listen_address(spec, {}) == (spec.dns.listen or "169.254.53.53:53")


def test_address_orders_are_ipaddress_orders() -> None:
    import ipaddress
    import random

    from weaved.compile.firewall import interface_order, network_order

    rng = random.Random(16)
    ifaces = [
        ipaddress.IPv4Interface(f"10.{rng.randrange(4)}.{rng.randrange(4)}.{rng.randrange(4)}/{p}")
        for p in (8, 16, 24, 30, 32)
        for _ in range(40)
    ]
    assert sorted(set(ifaces), key=interface_order) == sorted(set(ifaces))
    nets = {i.network for i in ifaces}
    assert sorted(nets, key=network_order) == sorted(nets)


def test_elements_of_an_unrecorded_port_that_exists_are_kept_as_found() -> None:
    """A port no record names but whose link exists keeps its elements (an attach made with no
    daemon); a recorded port's extra elements and a vanished port's are not kept."""
    from weaved.compile.antispoof import element_key, element_resource, unrecorded_ports
    from weaved.model.resources import State

    ip = ipaddress.IPv4Address
    observed = State.of(
        [
            element_resource("vethweplhand", ip("10.32.0.9")),
            element_resource("vethweplhand", ip("10.32.0.8")),
            element_resource("vethwepl7", ip("10.32.0.66")),
            element_resource("vethweplgone", ip("10.32.0.5")),
        ]
    )
    kept = unrecorded_ports(observed, ["vethweplhand", "vethwepl7"], ["vethwepl7"])
    assert kept == (ContainerPort("vethweplhand", (ip("10.32.0.8"), ip("10.32.0.9"))),)
    facts = Facts(container_ports=(port("vethwepl7", "10.32.0.7"),), unrecorded_ports=kept)
    keys = set(compile_spec(Spec(version=1), facts).state.resources)
    assert element_key("vethweplhand", ip("10.32.0.9")) in keys
    assert element_key("vethwepl7", ip("10.32.0.7")) in keys
    assert element_key("vethwepl7", ip("10.32.0.66")) not in keys
    assert element_key("vethweplgone", ip("10.32.0.5")) not in keys


def service_hashes(services: str) -> dict[str, str]:
    spec = parse_spec_text(f"version: 1\nexpose: [{{cidr: 10.2.1.1/24}}]\nservices:\n{services}")
    state = compile_spec(spec, Facts(peer_name="3e:80:e7:5a:63:a7")).state
    return {
        r.key.split("/", 3)[3]: r.get("hash")
        for r in state.by_kind(Kind.NFT_RULE)
        if "/export-" in r.key or "/import-" in r.key
    }


def test_service_rules_no_other_rule_overlaps_go_in_any_order() -> None:
    got = service_hashes(
        "  export:\n"
        '    - {name: web, port: 8080, to: "10.2.1.21:80"}\n'
        '    - {name: ssh, port: 2222, to: "10.2.1.22:22"}\n'
    )
    assert len(got) == 6 and all(h.endswith("*") for h in got.values())


def test_service_rules_whose_matches_overlap_keep_their_place() -> None:
    got = service_hashes(
        "  export:\n"
        '    - {name: web, port: 8080, to: "10.2.1.21:80"}\n'
        '    - {name: web-eth, port: 8080, to: "10.2.1.22:80", in_interface: eth0}\n'
        '    - {name: other, port: 9090, to: "10.2.1.23:80"}\n'
        "  import:\n"
        '    - {name: db, address: "10.2.1.1:9090", to: "10.2.1.24:5432"}\n'
    )
    tied = {key for key, h in got.items() if not h.endswith("*")}
    # The same port, one of them on any interface; an import on the bridge meets an export on
    # any interface; in output (no interface there) the two exports of 8080 meet.
    assert tied == {
        "prerouting/export-web",
        "prerouting/export-web-eth",
        "prerouting/export-other",
        "prerouting/import-db",
        "output/export-web",
        "output/export-web-eth",
    }
    assert got["postrouting/import-db"].endswith("*")


def test_service_rules_on_interfaces_a_wildcard_names_keep_their_place() -> None:
    got = service_hashes(
        "  export:\n"
        '    - {name: all-eth, port: 8080, to: "10.2.1.21:80", in_interface: "eth*"}\n'
        '    - {name: eth0, port: 8080, to: "10.2.1.22:80", in_interface: eth0}\n'
        '    - {name: e, port: 9090, to: "10.2.1.23:80", in_interface: "e*"}\n'
        '    - {name: ens, port: 9090, to: "10.2.1.24:80", in_interface: "ens*"}\n'
        '    - {name: wlan, port: 7070, to: "10.2.1.25:80", in_interface: "wlan*"}\n'
        '    - {name: eth1, port: 7070, to: "10.2.1.26:80", in_interface: eth1}\n'
    )
    tied = {key for key, h in got.items() if key.startswith("prerouting/") and not h.endswith("*")}
    # eth* meets eth0, e* meets ens*; wlan* and eth1 never name the same interface.
    assert tied == {
        "prerouting/export-all-eth",
        "prerouting/export-eth0",
        "prerouting/export-e",
        "prerouting/export-ens",
    }
