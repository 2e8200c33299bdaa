"""Checks that span several fields or look at files; each problem names its exact spec path."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator

from weaved.errors import SpecError
from weaved.model.addresses import ipv4_address, ipv4_interface
from weaved.spec.diagnostics import Problem, SpecPath, format_path
from weaved.spec.guard import MAX_PASSWORD_BYTES, read_regular_file
from weaved.spec.models import (
    BindRule,
    ExportRule,
    ImportRule,
    InitMode,
    RouteRule,
    Spec,
    split_host_port,
)

# Sections whose checks read other sections: skipped while those others are invalid, so a
# problem is never reported as a consequence of another one.
CHECK_DEPENDS = {"expose": {"ipalloc"}, "services": {"expose"}}


def check_spec(spec: Spec, *, check_files: bool = True) -> list[Problem]:
    return [
        *_ipalloc(spec),
        *_peers(spec),
        *_expose(spec),
        *_services(spec),
        *_ports(spec),
        *(_password_file(spec) if check_files else ()),
    ]


def _ipalloc(spec: Spec) -> Iterator[Problem]:
    alloc = spec.ipalloc
    if alloc.default_subnet is not None:
        inner = ipaddress.IPv4Network(alloc.default_subnet)
        outer = ipaddress.IPv4Network(alloc.range)
        if not inner.subnet_of(outer):
            yield Problem(
                ("ipalloc", "default_subnet"),
                f"default subnet {inner} is not inside range {outer}",
                "pick a subnet of ipalloc.range, or leave it out to use the whole range",
            )
    init = alloc.init
    if init.mode is InitMode.SEED and not init.seeds:
        yield Problem(
            ("ipalloc", "init", "mode"),
            "mode 'seed' needs the list 'seeds'",
            "list the peer names that share the range at start",
        )
    if init.mode is not InitMode.SEED and init.seeds:
        yield Problem(
            ("ipalloc", "init", "seeds"),
            f"'seeds' does not apply to mode {init.mode.value!r}",
            "set mode: seed, or remove seeds",
        )
    if init.mode is not InitMode.CONSENSUS and init.peer_count is not None:
        yield Problem(
            ("ipalloc", "init", "peer_count"),
            f"'peer_count' does not apply to mode {init.mode.value!r}",
            "set mode: consensus, or remove peer_count",
        )
    seen: dict[str, int] = {}
    for index, name in enumerate(init.seeds):
        if name in seen:
            yield Problem(
                ("ipalloc", "init", "seeds", index),
                f"seed {name} is listed twice",
                f"it is already seeds[{seen[name]}]",
            )
        seen.setdefault(name, index)


def _peers(spec: Spec) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for index, target in enumerate(spec.peers):
        if target in seen:
            yield Problem(
                ("peers", index),
                f"peer {target} is listed twice",
                f"it is already peers[{seen[target]}]; remove one",
            )
        seen.setdefault(target, index)


def exposed_addresses(spec: Spec) -> dict[ipaddress.IPv4Address, int]:
    """Literal expose addresses → their index in `expose`."""
    out: dict[ipaddress.IPv4Address, int] = {}
    for index, entry in enumerate(spec.expose):
        if not entry.cidr.startswith("net:"):
            out.setdefault(ipv4_interface(entry.cidr).ip, index)
    return out


def _expose(spec: Spec) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for index, entry in enumerate(spec.expose):
        key = entry.cidr if entry.cidr.startswith("net:") else str(ipv4_interface(entry.cidr).ip)
        if key in seen:
            yield Problem(
                ("expose", index, "cidr"),
                f"{entry.cidr} is already exposed",
                f"see expose[{seen[key]}]",
            )
        seen.setdefault(key, index)
        if entry.cidr.startswith("net:") and entry.cidr != "net:default":
            net = ipaddress.IPv4Network(entry.cidr[4:])
            if not net.subnet_of(ipaddress.IPv4Network(spec.ipalloc.range)):
                yield Problem(
                    ("expose", index, "cidr"),
                    f"{net} is outside ipalloc.range {spec.ipalloc.range}",
                    "IPAM can only allocate inside the range; give a literal ADDR/LEN instead",
                )


def _services(spec: Spec) -> Iterator[Problem]:
    services = spec.services
    names: set[str] = set()
    listeners: set[tuple[str, int, str | None]] = set()
    exposed = exposed_addresses(spec)
    rules: list[tuple[str, int, ExportRule | ImportRule | BindRule | RouteRule]] = [
        *(("export", i, r) for i, r in enumerate(services.export)),
        *(("import", i, r) for i, r in enumerate(services.import_)),
        *(("bind", i, r) for i, r in enumerate(services.bind)),
        *(("route", i, r) for i, r in enumerate(services.route)),
    ]
    for group, index, rule in rules:
        path: tuple[str | int, ...] = ("services", group, index)
        if rule.name in names:
            yield Problem(
                (*path, "name"),
                f"service name {rule.name!r} is used twice",
                "names identify rules in plan output; make them unique",
            )
        names.add(rule.name)
        if isinstance(rule, ExportRule | RouteRule):
            key = (rule.protocol.value, rule.port, rule.in_interface)
            if key in listeners:
                yield Problem(
                    (*path, "port"),
                    f"{rule.protocol.value} port {rule.port} is already taken",
                    "two rules cannot DNAT the same host port",
                )
            listeners.add(key)
        else:
            ip = ipv4_address(rule.address.rpartition(":")[0])
            if ip not in exposed:
                yield Problem(
                    (*path, "address"),
                    f"{ip} is not an exposed address of this host",
                    f"add `- cidr: {ip}/<len>` to expose so the host answers for it",
                )


def _ports(spec: Spec) -> Iterator[Problem]:
    """The mesh listens on every address (TCP and UDP `port`, fastdp's VXLAN on UDP port+1);
    nothing else of this host may want those ports, nor two listeners one port."""
    if spec.port == 65535:
        yield Problem(
            ("port",),
            "port 65535 leaves no room for the fast datapath, which uses port+1 (UDP)",
            "pick a port up to 65534 (Weave's is 6783)",
        )
    mesh = {
        ("tcp", spec.port): f"the mesh's TCP port (port: {spec.port})",
        ("udp", spec.port): f"the sleeve's UDP port (port: {spec.port})",
        ("udp", spec.port + 1): f"the fast datapath's UDP port (port+1 = {spec.port + 1})",
    }
    taken: dict[tuple[str, int], tuple[str, str]] = {}  # (proto, port) → (host, owner)

    def claim(
        path: SpecPath, protos: tuple[str, ...], listen: str, set_by_user: bool
    ) -> Iterator[Problem]:
        host, port = split_host_port(listen, 53)
        for proto in protos:
            if (proto, port) in mesh:
                if set_by_user:
                    yield Problem(
                        path, f"{proto} port {port} is {mesh[proto, port]}", "pick another port"
                    )
                else:  # the default of a key not in the file: point at `port`, which is
                    yield Problem(
                        ("port",),
                        f"{mesh[proto, port]} is the default {format_path(path)}'s port",
                        f"pick another port, or set {format_path(path)}",
                    )
                return
            other = taken.get((proto, port))
            if other is not None and (host == other[0] or "0.0.0.0" in (host, other[0])):
                yield Problem(
                    path, f"{proto} {host}:{port} is also {other[1]}", "pick another port"
                )
                return
        for proto in protos:
            taken.setdefault((proto, port), (host, format_path(path)))

    if spec.metrics.enabled:
        metrics_set = "listen" in spec.metrics.model_fields_set
        yield from claim(("metrics", "listen"), ("tcp",), spec.metrics.listen, metrics_set)
    if spec.dns.enabled:
        dns_listen = spec.dns.listen or "default:53"
        yield from claim(("dns", "listen"), ("udp", "tcp"), dns_listen, spec.dns.listen is not None)
    forwards: list[tuple[str, int, ExportRule | RouteRule]] = [
        *(("export", i, r) for i, r in enumerate(spec.services.export)),
        *(("route", i, r) for i, r in enumerate(spec.services.route)),
    ]
    for group, index, rule in forwards:
        if (key := (rule.protocol.value, rule.port)) in mesh:
            yield Problem(
                ("services", group, index, "port"),
                f"{key[0]} port {key[1]} is {mesh[key]}",
                "forwarding it elsewhere would cut this host off the mesh; pick another port",
            )


def _password_file(spec: Spec) -> Iterator[Problem]:
    if spec.password_file is None:
        return
    path = ("password_file",)
    try:
        st = os.stat(spec.password_file)
        secret = read_regular_file(spec.password_file, MAX_PASSWORD_BYTES, "the password file")
    except OSError as exc:
        yield Problem(
            path,
            f"cannot read {spec.password_file}: {exc.strerror}",
            "create it with the shared password, mode 0600 (on a machine without the hosts'"
            " secrets, e.g. CI: `weaved validate --skip-host-files`)",
        )
        return
    except SpecError as exc:
        summary, _, hint = str(exc).partition("\n  hint: ")
        yield Problem(path, summary, hint)
        return
    if st.st_mode & stat.S_IROTH:
        yield Problem(
            path, f"{spec.password_file} is readable by everyone", f"chmod 600 {spec.password_file}"
        )
    if not secret.strip():
        yield Problem(path, f"{spec.password_file} is empty", "write the shared password into it")


def read_password(spec: Spec) -> bytes | None:
    """The password bytes as Weave uses them (the file's content, trailing newline dropped)."""
    if spec.password_file is None:
        return None
    secret = read_regular_file(spec.password_file, MAX_PASSWORD_BYTES, "the password file")
    return secret.rstrip(b"\r\n")
