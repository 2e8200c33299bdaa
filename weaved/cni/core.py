"""The CNI contract as plain data: the runtime's environment and network configuration in,
results and error objects out (CNI spec 1.1.0, and 1.0.0, 0.4.0, 0.3.1, 0.3.0 that runtimes
still send). No I/O here: the executable (`plugin.py`) reads the environment and stdin.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_VERSION = "0.3.0"  # a conf without cniVersion (as Weave's own default conflist)
WEAVE_IPAM = "weave-ipam"  # `ipam.type` that means the daemon's own IPAM (not exec'd)
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")  # IFNAMSIZ-1, no slash, colon or space
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Code(IntEnum):
    """Error codes the CNI spec reserves (section "Error")."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50  # STATUS: the plugin cannot serve ADD now
    LIMITED_CONNECTIVITY = 51


class Command(StrEnum):
    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    VERSION = "VERSION"
    STATUS = "STATUS"
    GC = "GC"


class CniError(Exception):
    """A failure the runtime is told about as a CNI error object (stdout, exit 1)."""

    def __init__(self, code: Code, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str = DEFAULT_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": int(self.code), "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Invocation:
    """What the runtime put in the environment (CNI_*)."""

    command: Command
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS, "K=V;K2=V2"
    path: tuple[str, ...] = ()  # CNI_PATH, where chained plugins are looked for

    def arg(self, key: str) -> str | None:
        return dict(self.args).get(key)


def parse_env(env: dict[str, str]) -> Invocation:
    """CNI_COMMAND and the variables it needs; `CniError(INVALID_ENV)` naming what is wrong."""
    raw = env.get("CNI_COMMAND", "")
    try:
        command = Command(raw)
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise CniError(
            Code.INVALID_ENV,
            f"CNI_COMMAND={raw!r} is not a CNI command (one of {known})"
            if raw
            else "CNI_COMMAND is not set: this program is a CNI plugin, run by a container"
            " runtime (see the README's CNI section)",
        ) from None
    args = []
    for item in filter(None, env.get("CNI_ARGS", "").split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(Code.INVALID_ENV, f"CNI_ARGS item {item!r} is not KEY=VALUE")
        args.append((key, value))
    inv = Invocation(
        command,
        env.get("CNI_CONTAINERID", ""),
        env.get("CNI_NETNS", ""),
        env.get("CNI_IFNAME", ""),
        tuple(args),
        tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
    )
    if command in (Command.ADD, Command.DEL, Command.CHECK):
        if not inv.container_id:
            raise CniError(Code.INVALID_ENV, f"CNI_CONTAINERID is required for {command}")
        if not _CONTAINER_ID.match(inv.container_id):
            raise CniError(
                Code.INVALID_ENV, f"CNI_CONTAINERID={inv.container_id!r} has invalid characters"
            )
        if not inv.ifname:
            raise CniError(Code.INVALID_ENV, f"CNI_IFNAME is required for {command}")
        if not _IFNAME.match(inv.ifname):
            raise CniError(Code.INVALID_ENV, f"CNI_IFNAME={inv.ifname!r} is not an interface name")
        if command is not Command.DEL and not inv.netns:
            raise CniError(Code.INVALID_ENV, f"CNI_NETNS is required for {command}")
    return inv


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network
    gw: ipaddress.IPv4Address | None = None

    def to_json(self) -> dict[str, str]:
        out = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        return out


@dataclass(frozen=True)
class NetConf:
    """The parts of one plugin's configuration weaved reads (others are ignored, as the spec
    asks of unknown fields)."""

    version: str
    name: str
    type: str
    hairpin: bool = False
    ipam: dict[str, Any] = field(default_factory=dict)  # empty: the daemon's IPAM
    routes: tuple[Route, ...] = ()  # `ipam.routes` (Weave's place) or top-level `routes`
    mtu: int = 0
    prev_result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def chained_ipam(self) -> str | None:
        """The IPAM plugin to exec, or None when weaved's own IPAM gives the address."""
        kind = str(self.ipam.get("type", "")) if self.ipam else ""
        return None if kind in ("", WEAVE_IPAM) else kind

    @property
    def subnet(self) -> str | None:
        """`ipam.subnet` with weaved's IPAM: allocate in that subnet instead of the default."""
        if self.chained_ipam is None and self.ipam.get("subnet"):
            return str(self.ipam["subnet"])
        return None


def _routes(items: Any, where: str) -> tuple[Route, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise CniError(Code.INVALID_CONFIG, f"{where} must be a list of {{dst, gw}} objects")
    out = []
    for item in items:
        try:
            dst = ipaddress.IPv4Network(str(item["dst"]), strict=False)
            gw = ipaddress.IPv4Address(str(item["gw"])) if item.get("gw") else None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CniError(
                Code.INVALID_CONFIG, f"{where}: {item!r} is not a route {{dst, gw}} ({exc})"
            ) from None
        out.append(Route(dst, gw))
    return tuple(out)


def parse_conf(data: bytes, command: Command) -> NetConf:
    """The network configuration on stdin; CniError(DECODE_FAILURE/INVALID_CONFIG/…)."""
    try:
        raw = json.loads(data.decode() if data else "")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(
            Code.DECODE_FAILURE, f"the network configuration on stdin is not JSON: {exc}"
        ) from None
    if not isinstance(raw, dict):
        raise CniError(Code.DECODE_FAILURE, "the network configuration must be a JSON object")
    version = str(raw.get("cniVersion") or DEFAULT_VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            Code.INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    if command is Command.VERSION:
        return NetConf(version, "", "", raw=raw)
    name, kind = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not name:
        raise CniError(Code.INVALID_CONFIG, 'the network configuration has no "name"')
    if not isinstance(kind, str) or not kind:
        raise CniError(Code.INVALID_CONFIG, 'the network configuration has no "type"')
    hairpin = raw.get("hairpinMode", False)
    if not isinstance(hairpin, bool):
        raise CniError(Code.INVALID_CONFIG, f"hairpinMode must be true or false, not {hairpin!r}")
    ipam = {} if raw.get("ipam") is None else raw["ipam"]
    if not isinstance(ipam, dict):
        raise CniError(Code.INVALID_CONFIG, '"ipam" must be an object')
    mtu = raw.get("mtu", 0)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not (mtu == 0 or 576 <= mtu <= 65535):
        raise CniError(Code.INVALID_CONFIG, f"mtu {mtu!r} must be 0 or 576..65535")
    routes = _routes(ipam.get("routes"), "ipam.routes") + _routes(raw.get("routes"), "routes")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(Code.INVALID_CONFIG, "prevResult must be an object")
    if ipam.get("subnet") and ipam.get("type", WEAVE_IPAM) == WEAVE_IPAM:
        try:
            ipaddress.IPv4Network(str(ipam["subnet"]), strict=True)
        except ValueError as exc:
            raise CniError(Code.INVALID_CONFIG, f"ipam.subnet: {exc}") from None
    return NetConf(version, name, kind, hairpin, ipam, routes, mtu, prev, raw)


# --- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    sandbox: str = ""  # the netns path for the container side; empty for the host side


@dataclass(frozen=True)
class IpConfig:
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    interface: int | None = None  # index into `interfaces`


@dataclass(frozen=True)
class Result:
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IpConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: dict[str, Any] = field(default_factory=dict)


def render_result(result: Result, version: str) -> dict[str, Any]:
    """The result in the layout of `version` (0.3.x/0.4.0 give each IP a "version": "4")."""
    ips = []
    for ip in result.ips:
        item: dict[str, Any] = {"address": str(ip.address)}
        if version.startswith("0."):
            item["version"] = "4"
        if ip.gateway is not None:
            item["gateway"] = str(ip.gateway)
        if ip.interface is not None:
            item["interface"] = ip.interface
        ips.append(item)
    out: dict[str, Any] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [
            {"name": i.name, "mac": i.mac, **({"sandbox": i.sandbox} if i.sandbox else {})}
            for i in result.interfaces
        ]
    out["ips"] = ips
    if result.routes:
        out["routes"] = [r.to_json() for r in result.routes]
    out["dns"] = dict(result.dns)
    return out


def parse_ipam_result(data: bytes) -> Result:
    """What a chained IPAM plugin (host-local, …) printed for ADD: its addresses and routes.
    Only IPv4 is taken (weaved's network is IPv4)."""
    try:
        raw = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(
            Code.DECODE_FAILURE, f"the IPAM plugin's result is not JSON: {exc}"
        ) from None
    if not isinstance(raw, dict):
        raise CniError(Code.DECODE_FAILURE, "the IPAM plugin's result is not a JSON object")
    if "code" in raw and "msg" in raw:
        raise CniError(
            Code(int(raw["code"])) if raw["code"] in list(Code) else Code.IO_FAILURE,
            f"IPAM plugin: {raw['msg']}",
            str(raw.get("details", "")),
        )
    ips = []
    for item in raw.get("ips") or []:
        try:
            iface = ipaddress.ip_interface(str(item["address"]))
            gw = item.get("gateway")
        except (KeyError, TypeError, ValueError) as exc:
            raise CniError(Code.DECODE_FAILURE, f"IPAM plugin gave a bad address: {exc}") from None
        if isinstance(iface, ipaddress.IPv4Interface):
            ips.append(IpConfig(iface, ipaddress.IPv4Address(gw) if gw else None))
    if not ips:
        raise CniError(Code.IO_FAILURE, "the IPAM plugin gave no IPv4 address")
    routes = tuple(r for r in _routes(raw.get("routes"), "IPAM result routes"))
    return Result(ips=tuple(ips), routes=routes, dns=dict(raw.get("dns") or {}))


def version_answer(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def dns_name(inv: Invocation) -> str | None:
    """The name to register: K8S_POD_NAME from CNI_ARGS (Kubernetes), else none (a runtime
    that names containers passes it as K8S_POD_NAME too, as podman does)."""
    name = inv.arg("K8S_POD_NAME")
    return name or None
