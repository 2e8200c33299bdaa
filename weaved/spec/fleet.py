"""Fleet checks: what makes the hosts of one network disagree, found offline (for CI).

Pure: takes every host's loaded spec and a way to say where a value is written, returns the
problems. Each problem points at the host that differs and names where the others say
otherwise, so both places are in front of whoever fixes it.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

from weaved.spec.diagnostics import SpecPath
from weaved.spec.models import BindRule, ImportRule, InitMode, Spec, split_host_port

Location = tuple[str, int, int]  # file, line, col (1-based)


@dataclass(frozen=True)
class HostView:
    name: str  # the host's key in a cluster file, or the per-host file's name
    spec: Spec
    locate: Callable[[SpecPath], Location]
    address: str | None = None  # host:port others reach it at (cluster files say it)
    hostname: str | None = None


@dataclass(frozen=True)
class FleetProblem:
    where: Location
    host: str
    message: str
    hint: str = ""
    also: tuple[Location, ...] = ()  # where the hosts it disagrees with say otherwise


def check_fleet(hosts: Sequence[HostView]) -> list[FleetProblem]:
    if len(hosts) < 2:
        return []
    return [
        *_agree(hosts, ("ipalloc", "range"), "ipalloc.range", lambda s: s.ipalloc.range),
        *_agree(
            hosts,
            ("ipalloc", "default_subnet"),
            "ipalloc.default_subnet",
            lambda s: s.ipalloc.default_subnet or "(unset: the whole range)",
        ),
        *_agree(hosts, ("ipalloc", "init", "mode"), "ipalloc.init.mode", _init_mode),
        *_agree(
            [h for h in hosts if h.spec.ipalloc.init.mode is InitMode.SEED],
            ("ipalloc", "init", "seeds"),
            "the seed set",
            lambda s: ", ".join(sorted(s.ipalloc.init.seeds)),
        ),
        *_agree(hosts, ("password_file",), "encryption", _encrypted),
        *_agree(hosts, ("dns", "domain"), "dns.domain", lambda s: s.dns.domain),
        *_unknown_seeds(hosts),
        *_duplicates(hosts, ("peer", "name"), "peer name", lambda h: [h.spec.peer.name]),
        *_duplicates(
            hosts, ("peer", "nickname"), "peer nickname", lambda h: [h.spec.peer.nickname]
        ),
        *_duplicates(hosts, ("address",), "host address", lambda h: [h.address]),
        *_unknown_targets(hosts),
        *_shared_addresses(hosts),
    ]


def _init_mode(spec: Spec) -> str:
    return spec.ipalloc.init.mode.value


def _encrypted(spec: Spec) -> str:
    return "on (password_file)" if spec.password_file else "off"


def _agree(
    hosts: Sequence[HostView], path: SpecPath, what: str, value: Callable[[Spec], Hashable]
) -> Iterator[FleetProblem]:
    """Every host that differs from the most common value (the first host's on a tie)."""
    if len(hosts) < 2:
        return
    values = [value(h.spec) for h in hosts]
    counts = Counter(values)
    top = max(counts.values())
    usual = next(v for v in values if counts[v] == top)
    keeper = next(h for h, v in zip(hosts, values, strict=True) if v == usual)
    for host, seen in zip(hosts, values, strict=True):
        if seen != usual:
            yield FleetProblem(
                host.locate(path),
                host.name,
                f"{what} is {seen} on {host.name} but {usual} on {keeper.name}"
                f" ({_show(keeper.locate(path))})",
                "every host of one network must agree on it",
                (keeper.locate(path),),
            )


def _show(where: Location) -> str:
    return f"{where[0]}:{where[1]}:{where[2]}"


def _unknown_seeds(hosts: Sequence[HostView]) -> Iterator[FleetProblem]:
    """Seeds must be peers of the fleet; known only when every host names itself."""
    names = {h.spec.peer.name for h in hosts}
    if None in names:
        return
    for host in hosts:
        for index, seed in enumerate(host.spec.ipalloc.init.seeds):
            if seed not in names:
                yield FleetProblem(
                    host.locate(("ipalloc", "init", "seeds", index)),
                    host.name,
                    f"seed {seed} is the peer name of no host here",
                    "seeds are peer names of hosts of this network (peer.name)",
                )


def _duplicates(
    hosts: Sequence[HostView],
    path: SpecPath,
    what: str,
    values: Callable[[HostView], list[str | None]],
) -> Iterator[FleetProblem]:
    first: dict[str, HostView] = {}
    for host in hosts:
        for value in values(host):
            if value is None:
                continue
            if value in first:
                other = first[value]
                yield FleetProblem(
                    host.locate(path),
                    host.name,
                    f"{what} {value} of {host.name} is also {other.name}'s"
                    f" ({_show(other.locate(path))})",
                    f"every host needs its own {what}",
                    (other.locate(path),),
                )
            else:
                first[value] = host


def _unknown_targets(hosts: Sequence[HostView]) -> Iterator[FleetProblem]:
    """`peers` entries that are no host of the file; known only when every host has an
    address (cluster files)."""
    if any(h.address is None for h in hosts):
        return
    known: set[str] = set()
    for h in hosts:
        known.add(h.address or "")
        known.add(split_host_port(h.address or "")[0])
        known.update(n.lower().rstrip(".") for n in (h.name, h.hostname) if n)
    for host in hosts:
        for index, target in enumerate(host.spec.peers):
            if target not in known and split_host_port(target)[0] not in known:
                yield FleetProblem(
                    host.locate(("peers", index)),
                    host.name,
                    f"peer {target} of {host.name} is no host of this file",
                    "name a host's address, or add the host to the file",
                )


def _claims(host: HostView) -> Iterator[tuple[str, SpecPath, str]]:
    """(address, path, what) this host answers for on the overlay."""
    for index, entry in enumerate(host.spec.expose):
        if not entry.cidr.startswith("net:"):
            ip = str(ipaddress.IPv4Interface(entry.cidr).ip)
            yield ip, ("expose", index, "cidr"), f"exposed address {ip}"
    services = host.spec.services
    rules: list[tuple[str, int, ImportRule | BindRule]] = [
        *(("import", i, r) for i, r in enumerate(services.import_)),
        *(("bind", i, r) for i, r in enumerate(services.bind)),
    ]
    for group, index, rule in rules:
        path = ("services", group, index, "address")
        yield rule.address, path, f"service address {rule.address}"


def _shared_addresses(hosts: Sequence[HostView]) -> Iterator[FleetProblem]:
    first: dict[str, tuple[HostView, SpecPath]] = {}
    for host in hosts:
        for address, path, what in _claims(host):
            if address in first and first[address][0] is not host:
                other, other_path = first[address]
                yield FleetProblem(
                    host.locate(path),
                    host.name,
                    f"{what} of {host.name} is also {other.name}'s"
                    f" ({_show(other.locate(other_path))})",
                    "two hosts answering for one overlay address break it for both",
                    (other.locate(other_path),),
                )
            first.setdefault(address, (host, path))
