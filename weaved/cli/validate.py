"""`weaved validate FILE…` (each file, then the fleet they make) and `weaved render`.

Every file goes through the spec loader and its guard; a cluster file is checked host by
host, per-host files are checked as today; then the hosts that loaded are checked against
each other (weaved/spec/fleet.py). Output: human text, JSON, or GitHub Actions annotations.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weaved.spec.cluster import (
    Cluster,
    all_host_problems,
    host_spec,
    is_cluster_text,
    parse_cluster,
    select_host,
    wanted_host,
)
from weaved.spec.diagnostics import (
    Problem,
    SourceText,
    SpecPath,
    SpecProblems,
    render_problem,
)
from weaved.spec.fleet import FleetProblem, HostView, Location, check_fleet
from weaved.spec.guard import prescan
from weaved.spec.loader import parse_spec_text, read_spec_file, spec_text
from weaved.spec.located import load_located, locate, record_positions


@dataclass(frozen=True)
class Finding:
    """One problem, wherever it came from, with the text of its file for excerpts."""

    source: SourceText
    problem: Problem
    also: tuple[Location, ...] = ()


def _read(path: Path) -> tuple[str, SourceText, Any]:
    text = spec_text(read_spec_file(path), str(path))
    source = SourceText(str(path), text)
    scan, refused = prescan(text)
    if refused:
        raise SpecProblems(refused, source)
    return text, source, scan


def load_cluster_file(path: Path) -> Cluster:
    text, source, scan = _read(path)
    if not is_cluster_text(text):
        raise SpecProblems(
            [Problem(("kind",), "not a cluster file", "start it with `kind: cluster`", 1, 1)],
            source,
        )
    return parse_cluster(text, source, scan)


def hosts_of_file(path: Path, check_files: bool) -> list[HostView]:
    """The hosts a file describes, located; SpecProblems when any of them is invalid."""
    text, source, scan = _read(path)
    if is_cluster_text(text):
        cluster = parse_cluster(text, source, scan)
        problems = all_host_problems(cluster, check_files)
        if problems:
            raise SpecProblems(problems, source)
        return [
            HostView(
                key,
                host_spec(cluster, host, check_files=False),
                _cluster_locator(cluster, key),
                host.address,
                host.hostname,
            )
            for key, host in cluster.hosts.items()
        ]
    spec = parse_spec_text(text, str(path), check_files=check_files)
    positions: dict[SpecPath, tuple[int, int]] = {}
    record_positions(load_located(text, source, scan), (), positions)

    def where(spec_path: SpecPath) -> Location:
        return (str(path), *locate(spec_path, positions))

    return [HostView(spec.peer.nickname or path.stem, spec, where)]


def _cluster_locator(cluster: Cluster, key: str) -> Any:
    def where(spec_path: SpecPath) -> Location:
        return (cluster.source.filename, *cluster.where(key, spec_path))

    return where


def collect(paths: list[Path], check_files: bool) -> tuple[list[Finding], int]:
    """Every finding of the files and their fleet, and how many hosts were checked."""
    findings: list[Finding] = []
    hosts: list[HostView] = []
    sources: dict[str, SourceText] = {}
    for path in paths:
        try:
            found = hosts_of_file(path, check_files)
        except SpecProblems as exc:
            findings += [Finding(exc.source, p) for p in exc.problems]
            continue
        except Exception as exc:  # a file that cannot be read at all (SpecError)
            message = str(exc).splitlines()[0].removeprefix(f"{path}: ")
            findings.append(Finding(SourceText(str(path), ""), Problem((), message)))
            continue
        hosts += found
        sources[str(path)] = SourceText(str(path), Path(path).read_text(errors="replace"))
    for fp in check_fleet(hosts):
        findings.append(_finding(fp, sources))
    return findings, len(hosts)


def _finding(fp: FleetProblem, sources: dict[str, SourceText]) -> Finding:
    file, line, col = fp.where
    source = sources.get(file, SourceText(file, ""))
    return Finding(source, Problem((), fp.message, fp.hint, line, col), fp.also)


def _escape(text: str, prop: bool = False) -> str:
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def render_github(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        p = f.problem
        where = f"file={_escape(f.source.filename, True)}"
        if p.line:
            where += f",line={p.line},col={p.col}"
        path = f"{_path(p.path)}: " if p.path else ""
        hint = f" (hint: {p.hint})" if p.hint else ""
        lines.append(f"::error {where},title=weaved validate::{_escape(path + p.message + hint)}")
    return "\n".join(lines)


def _path(path: SpecPath) -> str:
    from weaved.spec.diagnostics import format_path

    return format_path(path)


def render_json(findings: list[Finding], hosts: int, files: list[str]) -> str:
    items = [
        {
            "file": f.source.filename,
            "line": f.problem.line,
            "col": f.problem.col,
            "path": _path(f.problem.path) if f.problem.path else "",
            "message": f.problem.message,
            "hint": f.problem.hint,
            "also": [{"file": a[0], "line": a[1], "col": a[2]} for a in f.also],
        }
        for f in findings
    ]
    answer: dict[str, Any] = {
        "file": ", ".join(files),
        "valid": not findings,
        "hosts": hosts,
        "problems": items,
    }
    if findings:
        answer["error"] = render_text(findings)
    return json.dumps(answer, indent=2)


def render_text(findings: list[Finding]) -> str:
    return "\n".join(render_problem(f.problem, f.source) for f in findings)


def run_validate(args: argparse.Namespace, default: Path) -> int:
    paths = [Path(f) for f in args.file] or [default]
    fmt = "json" if args.json else args.format
    findings, hosts = collect(paths, check_files=not args.skip_host_files)
    if fmt == "json":
        sys.stdout.write(render_json(findings, hosts, [str(p) for p in paths]) + "\n")
    elif fmt == "github":
        if findings:
            sys.stdout.write(render_github(findings) + "\n")
    elif findings:
        count = len(findings)
        sys.stderr.write(
            render_text(findings)
            + f"\n{count} problem{'s' if count != 1 else ''} in {', '.join(map(str, paths))}\n"
        )
    else:
        noun = "host" if hosts == 1 else "hosts"
        sys.stdout.write(f"{', '.join(map(str, paths))}: valid ({hosts} {noun})\n")
    return 1 if findings else 0


def render_host(path: Path, host: str | None) -> str:
    """The effective per-host spec a cluster file gives `host`, as a per-host spec file."""
    from ruamel.yaml import YAML

    cluster = load_cluster_file(path)
    section = select_host(cluster, wanted_host(host))
    host_spec(cluster, section, check_files=False)  # refuses what the host would refuse
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.dump(section.data, buffer)
    return f"# host {section.key} of {path} (weaved render)\n" + buffer.getvalue()
