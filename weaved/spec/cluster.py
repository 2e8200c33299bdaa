"""One file for the whole cluster: shared settings once, a section per host.

    version: 1
    kind: cluster
    shared:            # any key of a host spec, for every host
      ipalloc: {range: 10.40.0.0/16}
    hosts:
      h1:
        address: 192.0.2.1       # where the others reach h1 (their default `peers`)
        hostname: h1.example     # optional: the machine's hostname, to select the section
        peer: {name: "02:00:00:00:00:01"}
        expose: [{cidr: 10.40.0.1/16}]

A host's effective spec is `shared` with its section laid over it (mappings merge key by key,
lists and values replace) plus, unless either sets `peers`, the other hosts' addresses. It is
validated exactly as a per-host file, and every problem points into the cluster file. The file
goes through the same guard as any spec (weaved/spec/guard.py) before any loader sees it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from weaved.spec.checks import check_spec
from weaved.spec.diagnostics import Problem, SourceText, SpecPath, SpecProblems
from weaved.spec.guard import Scan
from weaved.spec.located import load_located, locate, plain, pydantic_problems, record_positions
from weaved.spec.models import Spec, parse_peer_name_text

HOST_ENV = "WEAVED_HOST"
_CLUSTER_LINE = re.compile(r"^kind:[ \t]*(['\"]?)cluster\1[ \t]*(#.*)?$", re.MULTILINE)
_HOST_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TOP_KEYS = {"version", "kind", "shared", "hosts"}
HOST_OWN_KEYS = ("address", "hostname")  # a host section's keys beside the spec's


def is_cluster_text(text: str) -> bool:
    return _CLUSTER_LINE.search(text) is not None


def wanted_host(explicit: str | None = None) -> str:
    """Which section this machine runs: --host (env WEAVED_HOST), else the hostname."""
    return explicit or os.environ.get(HOST_ENV) or socket.gethostname()


@dataclass(frozen=True)
class HostSection:
    key: str
    address: str | None  # host:port, normalised like a `peers` entry
    hostname: str | None
    data: dict[str, Any]  # the effective per-host spec, plain data


@dataclass(frozen=True)
class Cluster:
    source: SourceText
    positions: dict[SpecPath, tuple[int, int]]
    hosts: dict[str, HostSection]

    def origin(self, key: str, path: SpecPath) -> SpecPath:
        """Where a value of host `key`'s effective spec is written in the cluster file: its
        own section wins over `shared`; a value from neither points at the section's key."""
        for depth in range(len(path), 0, -1):
            for prefix in (("hosts", key), ("shared",)):
                if (*prefix, *path[:depth]) in self.positions:
                    return (*prefix, *path)
        return ("hosts", key)

    def where(self, key: str, path: SpecPath, *, at_key: bool = False) -> tuple[int, int]:
        origin = self.origin(key, path)
        return locate(origin, self.positions, key=at_key or origin == ("hosts", key))


def _problem(path: SpecPath, message: str, hint: str, positions: Any) -> Problem:
    return Problem(path, message, hint, *locate(path, positions, key=True))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _address(value: Any) -> str:
    from weaved.spec.models import _target

    if not isinstance(value, str):
        raise ValueError("write the host's address as a string, e.g. 192.0.2.1")
    return _target(value)


def _structure(data: dict[str, Any], positions: Any) -> Iterator[Problem]:
    for key in data:
        if key not in _TOP_KEYS:
            yield _problem(
                (key,),
                f"unknown key {key!r} in a cluster file",
                "put host settings under `shared:` or a host's section",
                positions,
            )
    if data.get("version") != 1:
        yield _problem(("version",), "a cluster file needs `version: 1`", "", positions)
    if not isinstance(data.get("shared", {}), dict):
        yield _problem(("shared",), "`shared` is a mapping of spec keys", "", positions)
    hosts = data.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        yield _problem(
            ("hosts",),
            "a cluster file needs `hosts:`, one section per host",
            "e.g. hosts: {h1: {address: 192.0.2.1}}",
            positions,
        )
        return
    for key, section in hosts.items():
        if not _HOST_KEY.match(key):
            yield _problem(
                ("hosts", key),
                f"host key {key!r} is not a simple name",
                "letters, digits, '.', '_' and '-'",
                positions,
            )
        if section is not None and not isinstance(section, dict):
            yield _problem(("hosts", key), "a host section is a mapping", "", positions)
        elif section and "version" in section:
            yield _problem(("hosts", key, "version"), "`version` belongs at the top", "", positions)


def parse_cluster(text: str, source: SourceText, scan: Scan) -> Cluster:
    """The cluster's structure and each host's effective data (not yet validated as specs)."""
    document = load_located(text, source, scan)
    positions: dict[SpecPath, tuple[int, int]] = {}
    record_positions(document, (), positions)
    data = plain(document)
    problems = list(_structure(data, positions))
    if problems:
        raise SpecProblems(problems, source)
    shared = data.get("shared") or {}
    sections = {str(k): dict(v or {}) for k, v in data["hosts"].items()}
    addresses: dict[str, str | None] = {}
    for key, section in sections.items():
        try:
            raw = section.get("address")
            addresses[key] = None if raw is None else _address(raw)
        except ValueError as exc:
            problems.append(_problem(("hosts", key, "address"), str(exc), "", positions))
        hostname = section.get("hostname")
        if hostname is not None and not isinstance(hostname, str):
            problems.append(_problem(("hosts", key, "hostname"), "write a string", "", positions))
    if problems:
        raise SpecProblems(problems, source)
    hosts: dict[str, HostSection] = {}
    for key, section in sections.items():
        own = {k: v for k, v in section.items() if k not in HOST_OWN_KEYS}
        merged = {"version": 1, **_merge(shared, own)}
        if "peers" not in merged:
            others = [a for k, a in addresses.items() if k != key and a is not None]
            merged["peers"] = [a for a in dict.fromkeys(others) if a != addresses[key]]
        hosts[key] = HostSection(key, addresses[key], section.get("hostname"), merged)
    return Cluster(source, positions, hosts)


def select_host(cluster: Cluster, wanted: str) -> HostSection:
    """The section whose key, hostname, peer name or nickname is `wanted` (key first)."""
    short = wanted.split(".")[0]
    try:
        peer_name: int | None = parse_peer_name_text(wanted)
    except ValueError:
        peer_name = None
    tests: list[Callable[[HostSection], bool]] = [
        lambda h: h.key == wanted,
        lambda h: h.hostname in (wanted, wanted.rstrip(".")),
        lambda h: _peer_name_of(h) == peer_name and peer_name is not None,
        lambda h: (h.data.get("peer") or {}).get("nickname") == wanted,
        lambda h: h.key == short or (h.hostname or "").split(".")[0] == short,
    ]
    for test in tests:
        found = [h for h in cluster.hosts.values() if test(h)]
        if len(found) == 1:
            return found[0]
    names = ", ".join(cluster.hosts)
    raise SpecProblems(
        [
            _problem(
                ("hosts",),
                f"no host section is {wanted!r} (the key, hostname, peer name or"
                " nickname of exactly one host)",
                f"pick one of {names} with --host NAME (env {HOST_ENV})",
                cluster.positions,
            )
        ],
        cluster.source,
    )


def _peer_name_of(host: HostSection) -> int | None:
    name = (host.data.get("peer") or {}).get("name")
    try:
        return parse_peer_name_text(name) if isinstance(name, str) else None
    except ValueError:
        return None


def host_problems(cluster: Cluster, host: HostSection, check_files: bool) -> list[Problem]:
    """Every problem of one host's effective spec, located in the cluster file."""

    def located(p: Problem) -> Problem:
        origin = cluster.origin(host.key, p.path)
        line, col = cluster.where(host.key, p.path, at_key=p.message.startswith("unknown key"))
        suffix = f" (for host {host.key})" if origin[0] == "shared" else ""
        return Problem(origin, p.message + suffix, p.hint, line, col)

    try:
        spec = Spec.model_validate(host.data)
    except ValidationError as exc:
        return [located(p) for p in pydantic_problems(exc, {})]
    return [located(p) for p in check_spec(spec, check_files=check_files)]


def host_spec(cluster: Cluster, host: HostSection, *, check_files: bool = True) -> Spec:
    problems = host_problems(cluster, host, check_files)
    if problems:
        raise SpecProblems(_unique(problems), cluster.source)
    return Spec.model_validate(host.data)


def _unique(problems: list[Problem]) -> list[Problem]:
    """A bad shared value is one problem, not one per host."""
    seen: dict[tuple[int, int, str], Problem] = {}
    for p in problems:
        bare = p.message.split(" (for host ")[0]
        if (p.line, p.col, bare) in seen:
            seen[p.line, p.col, bare] = Problem(p.path, bare, p.hint, p.line, p.col)
        else:
            seen[p.line, p.col, bare] = p
    return list(seen.values())


def all_host_problems(cluster: Cluster, check_files: bool) -> list[Problem]:
    return _unique(
        [p for h in cluster.hosts.values() for p in host_problems(cluster, h, check_files)]
    )


def parse_cluster_host(text: str, source: SourceText, scan: Scan, check_files: bool) -> Spec:
    """The loader's entry for a cluster file: this machine's host spec."""
    cluster = parse_cluster(text, source, scan)
    return host_spec(cluster, select_host(cluster, wanted_host()), check_files=check_files)


def cluster_schema() -> dict[str, Any]:
    """JSON Schema of a cluster file, built from the host spec's own schema."""
    from weaved.spec.schema import SCHEMA_ID

    spec = Spec.model_json_schema(by_alias=True, mode="validation")
    defs = spec.pop("$defs", {})
    properties: dict[str, Any] = {k: v for k, v in spec["properties"].items() if k != "version"}
    settings: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    host = {
        **settings,
        "properties": {
            **properties,
            "address": {"type": "string", "description": "host[:port] the others reach it at"},
            "hostname": {"type": "string", "description": "the machine's hostname"},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.replace("weave.schema", "cluster.schema"),
        "title": "ClusterSpec",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "kind", "hosts"],
        "properties": {
            "version": {"const": 1},
            "kind": {"const": "cluster"},
            "shared": {"$ref": "#/$defs/HostSettings"},
            "hosts": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": _HOST_KEY.pattern},
                "additionalProperties": {"$ref": "#/$defs/Host"},
            },
        },
        "$defs": {**defs, "HostSettings": settings, "Host": host},
    }
