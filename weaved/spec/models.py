"""The user contract: the YAML spec, as strict pydantic models.

Values that the kernel cares about are kept as normalised strings (a CIDR is always printed in
its canonical form) so the spec round-trips into JSON Schema and error messages unchanged;
`weaved.compile` turns them into ipaddress objects.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

DEFAULT_SPEC_PATH = "/etc/weave/weave.yaml"
DEFAULT_PORT = 6783
DEFAULT_RANGE = "10.32.0.0/12"
DEFAULT_MTU = 1376
DEFAULT_DOMAIN = "weave.local."
# weaveDNS for containers: one link-local address on every host's bridge, answered only on that
# host (see compile/dns.py); containers get an on-link route to it through ethwe.
DNS_LINK_ADDRESS = "169.254.53.53"

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_PEER_NAME_GROUP = re.compile(r"^[0-9a-fA-F]{1,2}$")


# The validators that parse addresses are pure (text in, text out or ValueError): a spec with
# thousands of service rules and exposed addresses is parsed again at every edit, and most of
# its entries are the same text as before (ipaddress's parsing was a third of the load).
_memo = functools.lru_cache(maxsize=8192)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@_memo
def _cidr(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR form: {exc}") from None


@_memo
def _addr_cidr(value: str) -> str:
    """An address with its prefix length, e.g. 10.2.1.1/24 (Weave's `expose ADDR/CIDR`)."""
    if "/" not in value:
        raise ValueError("an address needs its prefix length, e.g. 10.2.1.1/24")
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address/prefix: {exc}") from None
    _host_address(iface)
    return str(iface)


@_memo
def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address: {exc}") from None


def parse_peer_name_text(value: str) -> int:
    """Weave's accepted text forms: six groups of 1-2 hex digits, one `::` for a run of zeros."""
    if value.count("::") > 1:
        raise ValueError("at most one '::' is allowed")
    if "::" in value:
        head, tail = value.split("::")
        left = head.split(":") if head else []
        right = tail.split(":") if tail else []
        if len(left) + len(right) > 5:
            raise ValueError("too many groups around '::'")
        groups = left + ["0"] * (6 - len(left) - len(right)) + right
    else:
        groups = value.split(":")
    if len(groups) != 6 or not all(_PEER_NAME_GROUP.match(g) for g in groups):
        raise ValueError("a peer name is six groups of hex digits like 3e:80:e7:5a:63:a7")
    return int("".join(f"{int(g, 16):02x}" for g in groups), 16)


def _peer_name(value: str) -> str:
    number = parse_peer_name_text(value)
    if number == 0:
        raise ValueError("00:00:00:00:00:00 is reserved for 'unknown peer'")
    if number >> 40 & 1:
        # The name is the bridge's MAC, which the kernel refuses to be a multicast address.
        raise ValueError("the first byte has the multicast bit set (it must be even)")
    return ":".join(f"{b:02x}" for b in number.to_bytes(6, "big"))


def split_host_port(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        return value, default_port
    if not _is_port(port_text):
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def _is_port(text: str) -> bool:
    # ASCII only: int() also reads other scripts' digits, which no one means as a port.
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def _unicast(addr: ipaddress.IPv4Address, what: str, *, any_ok: bool = False) -> None:
    """Refuse addresses that cannot name one host: multicast, reserved/broadcast, and (unless
    `any_ok`, for listeners) 0.0.0.0."""
    if addr.is_multicast or addr in _RESERVED or (addr.is_unspecified and not any_ok):
        raise ValueError(f"{addr} cannot be {what} (not the address of one host)")


def _target(value: str) -> str:
    """host[:port] in one spelling per peer: names lower-case without the root dot. A name that
    ends in a number must be an exact dotted quad: libc would read 192.0.2.012 as octal (.10)
    and 10.1 as 10.0.0.1, which is not what anyone means."""
    host, port = split_host_port(value)
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError as exc:
        if host.rstrip(".").rpartition(".")[2].isdigit():
            raise ValueError(f"not an IPv4 address: {exc}") from None
        if not _HOST_RE.match(host):
            raise ValueError(
                "a peer is an IPv4 address or host name, optionally with :port"
            ) from None
        return f"{host.lower().rstrip('.')}:{port}"
    _unicast(addr, "a peer")
    return f"{addr}:{port}"


# What an IPAM range may not touch: these addresses mean something else to every host.
_SPECIAL_NETWORKS = {
    ipaddress.IPv4Network("0.0.0.0/8"): "'this network' (0.0.0.0/8)",
    ipaddress.IPv4Network("127.0.0.0/8"): "loopback (127.0.0.0/8)",
    ipaddress.IPv4Network("169.254.0.0/16"): "link-local (169.254.0.0/16)",
    ipaddress.IPv4Network("224.0.0.0/4"): "multicast (224.0.0.0/4)",
    ipaddress.IPv4Network("240.0.0.0/4"): "reserved (240.0.0.0/4, with the broadcast address)",
}


_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")


def _pool(value: str) -> str:
    """A CIDR that IPAM hands container addresses from."""
    net = ipaddress.IPv4Network(_cidr(value))
    for special, name in _SPECIAL_NETWORKS.items():
        if net.overlaps(special):
            raise ValueError(f"{net} overlaps the {name} addresses; containers cannot use them")
    if net.prefixlen >= 30:
        raise ValueError(f"{net} is too small to hold containers (at most /29)")
    return str(net)


def _host_address(iface: ipaddress.IPv4Interface) -> None:
    """An address a host interface can really have in its subnet."""
    ip, net = iface.ip, iface.network
    special = next((name for sn, name in _SPECIAL_NETWORKS.items() if ip in sn), None)
    if special is not None and not ip.is_link_local:
        raise ValueError(f"{ip} is a {special} address")
    if net.prefixlen <= 30 and ip == net.network_address:
        raise ValueError(f"{ip} is the network address of {net}; pick a host address in it")
    if net.prefixlen <= 30 and ip == net.broadcast_address:
        raise ValueError(f"{ip} is the broadcast address of {net}; pick a host address in it")


@_memo
def _endpoint(value: str) -> str:
    """ADDR:PORT with both parts required (service rules)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError("expected ADDRESS:PORT, e.g. 10.32.0.5:80")
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 address") from None
    if not _is_port(port_text):
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    _unicast(addr, "a service endpoint")
    return f"{addr}:{int(port_text)}"


def _fqdn(value: str) -> str:
    if not _HOST_RE.match(value):
        raise ValueError("not a valid DNS name")
    return value if value.endswith(".") else value + "."


def _domain(value: str) -> str:
    fq = _fqdn(value)
    return fq.lower()


# An interface name as the kernel accepts it (IFNAMSIZ 16 with the NUL; no "/", ":" or space),
# narrowed to characters that mean nothing to nftables, plus nft's trailing "*" wildcard.
IFNAME_RE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,15}|[A-Za-z0-9_.-]{1,14}\*")


def _ifname(value: str) -> str:
    if not IFNAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an interface name: 1-15 characters of letters, digits, '_', '.',"
            " '-' (a final '*' matches every interface starting so)"
        )
    return value


def _listen(value: str) -> str:
    host, port = split_host_port(value, 53)
    _unicast(ipaddress.IPv4Address(_ipv4(host)), "listened on or queried", any_ok=True)
    return f"{host}:{port}"


def _nickname(value: str) -> str:
    # Shown in every peer's status output: no newlines, escapes or bells from the network.
    if not value or not value.isprintable():
        raise ValueError("a nickname is printable text (no control characters or newlines)")
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
Pool = Annotated[str, AfterValidator(_pool)]
PeerNameText = Annotated[str, AfterValidator(_peer_name)]
Target = Annotated[str, AfterValidator(_target)]
Endpoint = Annotated[str, AfterValidator(_endpoint)]
Fqdn = Annotated[str, AfterValidator(_fqdn)]
Port = Annotated[int, Field(ge=1, le=65535)]
Ifname = Annotated[str, AfterValidator(_ifname)]


class PeerSpec(_Strict):
    """This peer's identity; both optional (Weave derives the name from the machine)."""

    name: PeerNameText | None = Field(None, description="Peer name like 3e:80:e7:5a:63:a7")
    nickname: Annotated[str, AfterValidator(_nickname)] | None = Field(
        None, max_length=255, description="Defaults to the hostname"
    )


class DatapathMode(StrEnum):
    AUTO = "auto"
    FASTDP = "fastdp"
    SLEEVE = "sleeve"


class DatapathSpec(_Strict):
    mode: Annotated[DatapathMode, Field(strict=False)] = DatapathMode.AUTO
    # At least 1280: below IPv6's minimum the kernel drops IPv6 from the bridge, and with it
    # the per-link settings weaved owns there.
    mtu: int | None = Field(
        None,
        ge=1280,
        le=65535,
        description="Overlay MTU (1280-65535); default 1376 or derived from the underlay",
    )


class InitMode(StrEnum):
    CONSENSUS = "consensus"
    SEED = "seed"
    OBSERVER = "observer"


class IpamInitSpec(_Strict):
    mode: Annotated[InitMode, Field(strict=False)] = InitMode.CONSENSUS
    peer_count: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="consensus: how many peers start together (quorum N/2+1); default: peers + 1",
    )
    seeds: list[PeerNameText] = Field(default_factory=list, description="seed: peer names")


class IpallocSpec(_Strict):
    range: Pool = DEFAULT_RANGE
    default_subnet: Pool | None = Field(None, description="Defaults to the whole range")
    init: IpamInitSpec = Field(default_factory=IpamInitSpec)


@_memo
def _expose_target(value: str) -> str:
    if value == "net:default":
        return value
    if value.startswith("net:"):
        net = ipaddress.IPv4Network(_cidr(value[4:]))
        if net.prefixlen >= 30:
            raise ValueError(f"{net} is too small to hold containers (Weave refuses /30 and /31)")
        return f"net:{_pool(str(net))}"
    return _addr_cidr(value)


def _names_list(value: object) -> object:
    """One FQDN (the first form of the spec) stands for a list of one."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError("write one DNS name or a list of them")
    return value


def _distinct_names(names: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"{name} is listed twice (DNS names are case-insensitive)")
        seen.add(name.lower())
    return names


DnsNames = Annotated[
    list[Fqdn],
    Field(min_length=1),
    BeforeValidator(_names_list, json_schema_input_type=Fqdn | list[Fqdn]),
    AfterValidator(_distinct_names),
]


class ExposeSpec(_Strict):
    """An address of the host on the overlay (Weave's `weave expose`)."""

    cidr: Annotated[str, AfterValidator(_expose_target)] = Field(
        description="ADDR/LEN, net:CIDR (allocated by IPAM) or net:default"
    )
    dns_name: DnsNames | None = Field(
        None, description="Register this FQDN, or each FQDN of a list, for the address"
    )

    @property
    def dns_names(self) -> tuple[str, ...]:
        """Every name of the address, whichever form the spec used."""
        return tuple(self.dns_name or ())


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class ExportRule(_Strict):
    """Make an overlay service reachable on a host port (DNAT host:port → overlay, SNAT back)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    protocol: Annotated[Protocol, Field(strict=False)] = Protocol.TCP
    port: Port = Field(description="Port on the host")
    in_interface: Ifname | None = Field(None, description="Only from this interface")
    to: Endpoint = Field(description="Overlay address:port")


class ImportRule(_Strict):
    """Make an outside service reachable from the overlay at an exposed address:port."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    protocol: Annotated[Protocol, Field(strict=False)] = Protocol.TCP
    address: Endpoint = Field(description="Overlay address:port containers connect to")
    to: Endpoint = Field(description="The outside service's address:port")


class BindRule(_Strict):
    """A stable overlay endpoint bound to wherever the service lives now (late binding)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    protocol: Annotated[Protocol, Field(strict=False)] = Protocol.TCP
    address: Endpoint = Field(description="Stable overlay address:port")
    to: Endpoint = Field(description="Current location of the service in the overlay")


class RouteRule(_Strict):
    """Carry traffic from a host network port to an endpoint elsewhere in the overlay (e.g. an
    import on another host), joining networks that cannot reach each other."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    protocol: Annotated[Protocol, Field(strict=False)] = Protocol.TCP
    port: Port
    in_interface: Ifname | None = Field(None, description="Only from this interface")
    to: Endpoint


class ServicesSpec(_Strict):
    export: list[ExportRule] = Field(default_factory=list)
    import_: list[ImportRule] = Field(default_factory=list, alias="import")
    bind: list[BindRule] = Field(default_factory=list)
    route: list[RouteRule] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class DnsSpec(_Strict):
    enabled: bool = True
    domain: Annotated[str, AfterValidator(_domain)] = DEFAULT_DOMAIN
    ttl: int = Field(1, ge=0, le=86400)
    upstream: list[Annotated[str, AfterValidator(_listen)]] = Field(
        default_factory=list, description="ADDR[:PORT]; empty = the host's /etc/resolv.conf"
    )
    listen: Annotated[str, AfterValidator(_listen)] | None = Field(
        None, description="ADDR[:PORT]; default: the bridge's first exposed address, port 53"
    )


class HttpApiSpec(_Strict):
    """Weave's HTTP API (status, report, /ip, /name): any local user can reach it."""

    enabled: bool = Field(False, description="Serve Weave's HTTP API (read-write)")
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:6784"


class MetricsSpec(_Strict):
    enabled: bool = True
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:6782"


_DOCKER_URL = re.compile(
    r"^(unix:///[^\s]+|(tcp|http|https)://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?|ssh://\S+)$"
)


def _docker_url(value: str) -> str:
    if not _DOCKER_URL.match(value):
        raise ValueError(
            "a Docker endpoint is unix:///PATH, tcp://HOST:PORT, http(s)://HOST:PORT or ssh://…"
        )
    return value


def _plugin_socket(value: str) -> str:
    if not (value.startswith("/") and value.endswith(".sock") and len(value) < 100):
        raise ValueError(
            "the plugin socket is an absolute path ending in .sock (its name: the driver's)"
        )
    return value


class DockerPluginSpec(_Strict):
    """Docker's network and IPAM driver (libnetwork's remote protocol), as Weave's `weavemesh`."""

    enabled: bool = Field(False, description="Serve the Docker network plugin (--net=weave)")
    socket: Annotated[str, AfterValidator(_plugin_socket)] = Field(
        "/run/docker/plugins/weavemesh.sock",
        description="Where dockerd finds the plugin; the file's name is the driver's name",
    )
    network: str = Field(
        "weave",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})?$",
        description="Docker network created (and re-created) on the default subnet; '' for none",
    )


DEFAULT_HOSTNAME_MATCH = "(.*)"  # Weave's --hostname-match default
DEFAULT_HOSTNAME_REPLACEMENT = "$1"  # Weave's --hostname-replacement default


def _regexp(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


class DockerSpec(_Strict):
    auto_attach: bool = Field(False, description="Attach containers as Docker starts them")
    socket: Annotated[str, AfterValidator(_docker_url)] = "unix:///var/run/docker.sock"
    plugin: DockerPluginSpec = Field(default_factory=DockerPluginSpec)
    # Weave proxy's hostname rules: which name a container gets in weaveDNS.
    hostname_from_label: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Label whose value (when set) replaces the container's name as its DNS"
        " name (Weave's --hostname-from-label)",
    )
    hostname_match: Annotated[str, AfterValidator(_regexp)] = Field(
        DEFAULT_HOSTNAME_MATCH,
        max_length=1024,
        description="Regexp applied to the container's name (Weave's --hostname-match)",
    )
    hostname_replacement: str = Field(
        DEFAULT_HOSTNAME_REPLACEMENT,
        max_length=255,
        description="What each match becomes; $1, ${name} are groups (Weave's"
        " --hostname-replacement)",
    )


_DURATION = re.compile(r"^([0-9]{1,5})(s|m)?$")


def seconds_of(value: int | str) -> int:
    """60, "60s" or "2m" → seconds (1 s to 1 h: a rollout waits that long at most)."""
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError("a duration is seconds: 60, 60s or 2m")
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    if not 1 <= seconds <= 3600:
        raise ValueError("a duration between 1s and 1h")
    return seconds


class ProbeSpec(_Strict):
    """One check that the network still works after a change; exactly one key."""

    ping: Annotated[str, AfterValidator(_ipv4)] | None = Field(None, description="ICMP echo")
    tcp: Endpoint | None = Field(None, description="ADDRESS:PORT accepts a TCP connection")
    dns: Fqdn | None = Field(None, description="the name resolves through weaveDNS")
    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, min_length=1, max_length=64, description="argv; passes when it exits 0"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeSpec:
        given = [k for k in ("ping", "tcp", "dns", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a probe is exactly one of ping, tcp, dns, command")
        return self


class RolloutSpec(_Strict):
    """Apply a changed spec with a safety net: probes must pass within `confirm`, or the
    daemon goes back to the last good spec."""

    confirm: Annotated[int | str, AfterValidator(seconds_of)] | None = Field(
        None, description="seconds (60, 60s, 2m) the probes have to pass; unset: no safety net"
    )
    default_probes: bool = Field(
        True, description="peers connected before reconnect; weaveDNS answers a name it knows"
    )
    probes: list[ProbeSpec] = Field(default_factory=list, max_length=64)


class Spec(_Strict):
    """A host's whole weaved configuration (`/etc/weave/weave.yaml`)."""

    version: Literal[1]
    peer: PeerSpec = Field(default_factory=PeerSpec)
    peers: list[Target] = Field(default_factory=list, description="Mesh targets: host or host:port")
    port: Port = Field(
        DEFAULT_PORT, description="Mesh TCP/sleeve UDP port; fast datapath uses port+1"
    )
    password_file: str | None = None
    trusted_subnets: list[Cidr] = Field(default_factory=list)
    conn_limit: int = Field(200, ge=0)
    discovery: bool = True
    datapath: DatapathSpec = Field(default_factory=DatapathSpec)
    ipalloc: IpallocSpec = Field(default_factory=IpallocSpec)
    expose: list[ExposeSpec] = Field(default_factory=list)
    services: ServicesSpec = Field(default_factory=ServicesSpec)
    dns: DnsSpec = Field(default_factory=DnsSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    http_api: HttpApiSpec = Field(default_factory=HttpApiSpec)
    docker: DockerSpec = Field(default_factory=DockerSpec)
    multicast_route: bool = Field(True, description="Add 224.0.0.0/4 via ethwe in containers")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    @property
    def mtu(self) -> int:
        return self.datapath.mtu or DEFAULT_MTU
