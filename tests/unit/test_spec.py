from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from weaved.errors import SpecError
from weaved.spec.diagnostics import SpecProblems
from weaved.spec.loader import load_spec, parse_spec_text
from weaved.spec.models import Spec, parse_peer_name_text
from weaved.spec.schema import render_schema

REPO = Path(__file__).resolve().parents[2]


def problems(text: str, **kw: bool) -> list[tuple[str, int, int, str]]:
    with pytest.raises(SpecProblems) as info:
        parse_spec_text(text, "weave.yaml", **kw)
    from weaved.spec.diagnostics import format_path

    return [(format_path(p.path), p.line, p.col, p.message) for p in info.value.problems]


def test_defaults() -> None:
    spec = parse_spec_text("version: 1\n")
    assert spec.ipalloc.range == "10.32.0.0/12"
    assert spec.dns.domain == "weave.local."
    assert spec.mtu == 1376 and spec.port == 6783 and spec.conn_limit == 200
    assert spec.datapath.mode == "auto" and spec.discovery is True


def test_every_example_is_valid() -> None:
    files = sorted((REPO / "examples").rglob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        load_spec(path, check_files=False)


def test_all_problems_reported_at_once_with_locations() -> None:
    text = (
        "version: 1\n"
        "datapath: {mode: fast}\n"
        "expose:\n"
        "  - cidr: 10.2.1.1/24\n"
        "  - cidr: 10.2.1.300/24\n"
        "bogus: 1\n"
        "conn_limit: '5'\n"
    )
    found = problems(text)
    assert found[0][:3] == ("datapath.mode", 2, 18)
    assert found[1][:3] == ("expose[1].cidr", 5, 11)
    assert "Octet 300" in found[1][3]
    assert ("bogus", 6, 1, "unknown key 'bogus'") in found
    assert any(p[0] == "conn_limit" and p[1] == 7 for p in found)


def test_rendered_error_has_line_caret_and_hint() -> None:
    with pytest.raises(SpecProblems) as info:
        parse_spec_text("version: 1\nexpose:\n  - cidr: net:10.40.0.0/31\n", "w.yaml")
    text = str(info.value)
    assert "w.yaml:3:11: error: expose[0].cidr: 10.40.0.0/31 is too small" in text
    assert "    3 |   - cidr: net:10.40.0.0/31" in text
    assert "      |           ^" in text
    assert "nothing was changed" in text


def test_yaml_syntax_error_is_located() -> None:
    found = problems("version: 1\npeers: [a, b\nport: 1\n")
    assert found[0][0] == "(top level)"
    assert found[0][1] >= 2 and "YAML syntax" in found[0][3]


def test_version_required_and_only_1() -> None:
    assert problems("peers: []\n")[0][:1] == ("version",)
    assert "1" in problems("version: 2\n")[0][3]


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        (
            "ipalloc: {range: 10.32.0.0/12, default_subnet: 10.64.0.0/16}",
            "ipalloc.default_subnet",
            "not inside range",
        ),
        ("ipalloc: {range: 10.32.0.1/12}", "ipalloc.range", "host bits"),
        ("peers: [192.0.2.1, '192.0.2.1:6783']", "peers[1]", "listed twice"),
        ("expose: [{cidr: 'net:10.32.0.0/30'}]", "expose[0].cidr", "/30 and /31"),
        ("expose: [{cidr: 10.2.1.1}]", "expose[0].cidr", "prefix length"),
        ("expose: [{cidr: 'net:10.99.0.0/16'}]", "expose[0].cidr", "outside ipalloc.range"),
        (
            "expose: [{cidr: 10.2.1.1/24, dns_name: [a.weave.local, A.Weave.Local.]}]",
            "expose[0].dns_name",
            "listed twice",
        ),
        ("expose: [{cidr: 10.2.1.1/24, dns_name: [a.x, 'b x']}]", "expose[0].dns_name[1]", "DNS"),
        ("expose: [{cidr: 10.2.1.1/24, dns_name: {a: 1}}]", "expose[0].dns_name", "a list"),
        ("expose: [{cidr: 10.2.1.1/24, dns_name: []}]", "expose[0].dns_name", "at least 1"),
        ("ipalloc: {init: {mode: seed}}", "ipalloc.init.mode", "needs the list 'seeds'"),
        (
            "ipalloc: {init: {mode: observer, peer_count: 3}}",
            "ipalloc.init.peer_count",
            "does not apply",
        ),
        ("peer: {name: '00:00:00:00:00:00'}", "peer.name", "reserved"),
        ("peer: {name: 'zz:00:00:00:00:01'}", "peer.name", "six groups"),
        ("peers: ['bad host!']", "peers[0]", "IPv4 address or host name"),
        ("peers: ['h:0']", "peers[0]", "port must be"),
        ("trusted_subnets: [300.0.0.0/8]", "trusted_subnets[0]", "CIDR"),
        (
            "services: {import: [{name: a, address: '10.9.9.9:1', to: '192.0.2.1:2'}]}",
            "services.import[0].address",
            "not an exposed address",
        ),
        (
            "services: {export: [{name: a, port: 80, to: '10.2.1.2:80'}, {name: a, port: 81, to: '10.2.1.2:80'}]}",
            "services.export[1].name",
            "used twice",
        ),
        (
            "services: {export: [{name: a, port: 80, to: '10.2.1.2:80'}, {name: b, port: 80, to: '10.2.1.2:80'}]}",
            "services.export[1].port",
            "already taken",
        ),
        (
            "services: {export: [{name: a, port: 80, to: '10.2.1.2'}]}",
            "services.export[0].to",
            "ADDRESS:PORT",
        ),
        ("dns: {ttl: -1}", "dns.ttl", "greater than or equal"),
        ("datapath: {mtu: 100}", "datapath.mtu", "greater than or equal"),
        ("discovery: 'yes'", "discovery", "boolean"),
    ],
)
def test_semantic_and_field_errors(text: str, path: str, fragment: str) -> None:
    found = problems("version: 1\n" + text + "\n")
    assert any(p[0] == path and fragment in p[3] for p in found), found
    assert all(p[1] >= 1 for p in found)


def test_password_file_checks(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    found = problems(f"version: 1\npassword_file: {secret}\n")
    assert found[0][0] == "password_file" and "readable by everyone" in found[0][3]
    os.chmod(secret, 0o600)
    parse_spec_text(f"version: 1\npassword_file: {secret}\n")
    found = problems(f"version: 1\npassword_file: {tmp_path / 'missing'}\n")
    assert "cannot read" in found[0][3]
    parse_spec_text(f"version: 1\npassword_file: {tmp_path / 'missing'}\n", check_files=False)


def test_peer_name_text_forms() -> None:
    assert parse_peer_name_text("::1") == 1
    assert parse_peer_name_text("12::34") == 0x120000000034
    assert parse_peer_name_text("aa:bb::") == 0xAABB00000000
    assert parse_peer_name_text("3e:80:e7:5a:63:a7") == 0x3E80E75A63A7
    for bad in ("1:2:3", "::1::", "1:2:3:4:5:6:7", "g::1"):
        with pytest.raises(ValueError):
            parse_peer_name_text(bad)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_schema_is_not_stale() -> None:
    committed = (REPO / "schemas" / "weave.schema.json").read_text()
    assert committed == render_schema(), (
        "regenerate: python -m weaved schema > schemas/weave.schema.json"
    )
    schema = json.loads(committed)
    assert schema["additionalProperties"] is False
    assert "services" in schema["properties"]


def test_spec_is_frozen() -> None:
    spec = Spec.model_validate({"version": 1})
    with pytest.raises(ValidationError):
        spec.port = 1  # type: ignore[misc]


def test_schema_and_semantic_problems_are_reported_together() -> None:
    found = problems("version: 1\nbogus: 1\npeers: [192.0.2.1, 192.0.2.1]\nport: 0\n")
    paths = [p[0] for p in found]
    assert paths == ["bogus", "peers[1]", "port"]


def test_checks_that_depend_on_a_broken_section_are_skipped() -> None:
    text = (
        "version: 1\nexpose: [{cidr: 10.2.1.300/24}]\n"
        "services: {import: [{name: a, address: '10.2.1.3:1', to: '192.0.2.1:2'}]}\n"
    )
    assert [p[0] for p in problems(text)] == ["expose[0].cidr"]


def test_an_exposed_address_has_one_name_or_several() -> None:
    # The single form stays valid (back-compatible); a list gives the address several names.
    one = parse_spec_text("version: 1\nexpose: [{cidr: 10.2.1.1/24, dns_name: a.weave.local}]\n")
    assert one.expose[0].dns_names == ("a.weave.local.",)
    many = parse_spec_text(
        "version: 1\nexpose:\n  - cidr: 10.2.1.1/24\n    dns_name: [a.weave.local, b.weave.local.]\n"
    )
    assert many.expose[0].dns_names == ("a.weave.local.", "b.weave.local.")
    assert parse_spec_text("version: 1\nexpose: [{cidr: 10.2.1.1/24}]\n").expose[0].dns_names == ()
