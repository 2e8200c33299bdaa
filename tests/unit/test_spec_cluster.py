"""Cluster files: one file for every host, each host's section selected and validated alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaved.cli.main import main
from weaved.spec.diagnostics import SpecProblems, format_path
from weaved.spec.loader import load_spec, parse_spec_text

CLUSTER = """\
version: 1
kind: cluster
shared:
  ipalloc:
    range: 10.40.0.0/16
  services:
    export:
      - {name: web, port: 8080, to: "10.40.0.9:80"}
hosts:
  h1:
    address: 192.0.2.1
    peer: {name: "02:00:00:00:00:01"}
    expose: [{cidr: 10.40.0.1/16}]
  h2:
    address: 192.0.2.2
    hostname: node2.example
    peer: {name: "02:00:00:00:00:02", nickname: second}
    ipalloc: {default_subnet: 10.40.1.0/24}
  h3:
    address: 192.0.2.3:7000
    peers: [192.0.2.1]
"""


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


@pytest.mark.parametrize(
    "wanted", ["h2", "node2.example", "node2", "02:00:00:00:00:02", "2:0:0:0:0:2", "second"]
)
def test_a_host_is_selected_by_key_hostname_peer_name_or_nickname(
    wanted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEAVED_HOST", wanted)
    spec = parse_spec_text(CLUSTER, "cluster.yaml")
    assert spec.peer.name == "02:00:00:00:00:02"


def test_shared_settings_merge_under_the_host_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h2")
    spec = parse_spec_text(CLUSTER, "cluster.yaml")
    # mappings merge key by key: the shared range stays beside the host's subnet
    assert spec.ipalloc.range == "10.40.0.0/16"
    assert spec.ipalloc.default_subnet == "10.40.1.0/24"
    assert [r.name for r in spec.services.export] == ["web"]
    # without `peers` anywhere, a host's targets are the other hosts' addresses
    assert spec.peers == ["192.0.2.1:6783", "192.0.2.3:7000"]


def test_explicit_peers_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h3")
    assert parse_spec_text(CLUSTER, "c.yaml").peers == ["192.0.2.1:6783"]


def test_no_such_host_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h9")
    with pytest.raises(SpecProblems) as info:
        parse_spec_text(CLUSTER, "cluster.yaml")
    assert "'h9'" in str(info.value) and "h1, h2, h3" in str(info.value)
    assert "--host" in str(info.value)


def test_problems_point_into_the_cluster_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h1")
    text = CLUSTER.replace("range: 10.40.0.0/16", "range: 10.40.0.0/33").replace(
        "    expose: [{cidr: 10.40.0.1/16}]", "    expose: [{cidr: 10.40.0.1/16}]\n    bogus: 1"
    )
    with pytest.raises(SpecProblems) as info:
        parse_spec_text(text, "cluster.yaml")
    found = {(format_path(p.path), p.line, p.col) for p in info.value.problems}
    assert ("shared.ipalloc.range", 5, 12) in found
    assert ("hosts.h1.bogus", 14, 5) in found


def test_structure_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h1")
    with pytest.raises(SpecProblems) as info:
        parse_spec_text("version: 1\nkind: cluster\npeers: []\n", "c.yaml")
    messages = [p.message for p in info.value.problems]
    assert any("unknown key 'peers'" in m for m in messages)
    assert any("needs `hosts:`" in m for m in messages)


def test_cluster_files_go_through_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVED_HOST", "h1")
    bomb = "kind: cluster\nversion: 1\na: &a [1, 1]\nb: &b [*a, *a]\nc: !!python/object x\n"
    with pytest.raises(SpecProblems) as info:
        parse_spec_text(bomb, "c.yaml")
    assert "tags" in str(info.value)


def test_the_per_host_format_is_unchanged() -> None:
    assert parse_spec_text("version: 1\npeers: [192.0.2.1]\n").peers == ["192.0.2.1:6783"]


def test_render_prints_a_valid_per_host_spec(
    cluster_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["render", str(cluster_file), "--host", "node2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# host h2 of")
    rendered = tmp_path / "h2.yaml"
    rendered.write_text(out)
    spec = load_spec(rendered)
    assert spec.ipalloc.default_subnet == "10.40.1.0/24"
    assert "kind" not in out and "address" not in out


def test_cluster_schema_is_exported_and_current(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema", "--cluster"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["kind"] == {"const": "cluster"}
    assert "address" in schema["$defs"]["Host"]["properties"]
    assert "version" not in schema["$defs"]["HostSettings"]["properties"]
    stored = Path(__file__).resolve().parents[2] / "schemas" / "cluster.schema.json"
    assert json.loads(stored.read_text()) == schema


def test_the_readme_cluster_example_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"## Rolling out from Git\n.*?```yaml\n(.*?)```", readme, re.S)
    assert found is not None
    path = tmp_path / "cluster.yaml"
    path.write_text(found.group(1))
    assert main(["validate", "--skip-host-files", str(path)]) == 0
    assert "valid (2 hosts)" in capsys.readouterr().out
