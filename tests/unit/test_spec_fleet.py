"""Fleet checks: hosts that disagree are found offline, each with both locations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weaved.cli.main import main
from weaved.spec.diagnostics import SpecPath
from weaved.spec.fleet import FleetProblem, HostView, Location, check_fleet
from weaved.spec.loader import parse_spec_text


def host(name: str, text: str, address: str | None = None) -> HostView:
    def where(path: SpecPath) -> Location:
        return (f"{name}.yaml", len(path), 1)  # enough to tell paths apart

    spec = parse_spec_text("version: 1\n" + text, check_files=False)
    return HostView(name, spec, where, address)


def messages(problems: list[FleetProblem]) -> list[str]:
    return [p.message for p in problems]


def test_agreeing_hosts_have_no_problems() -> None:
    hosts = [host("a", "peer: {name: '02:00:00:00:00:01'}\n"), host("b", "peers: [192.0.2.1]\n")]
    assert check_fleet(hosts) == []


def test_a_single_host_is_never_a_fleet_problem() -> None:
    assert check_fleet([host("a", "ipalloc: {range: 10.50.0.0/16}\n")]) == []


def test_the_odd_one_out_is_blamed_with_the_others_location() -> None:
    hosts = [
        host("a", ""),
        host("b", ""),
        host("c", "ipalloc: {range: 10.50.0.0/16}\n"),
    ]
    (problem,) = check_fleet(hosts)
    assert problem.host == "c" and problem.where == ("c.yaml", 2, 1)
    assert problem.also == (("a.yaml", 2, 1),)
    assert "10.50.0.0/16 on c but 10.32.0.0/12 on a (a.yaml:2:1)" in problem.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ipalloc: {default_subnet: 10.32.1.0/24}\n", "ipalloc.default_subnet"),
        ("password_file: /etc/weave/password\n", "encryption is on"),
        ("dns: {domain: example.org}\n", "dns.domain is example.org."),
        ("ipalloc: {init: {mode: observer}}\n", "ipalloc.init.mode is observer"),
    ],
)
def test_each_shared_setting_must_agree(text: str, expected: str) -> None:
    problems = check_fleet([host("a", ""), host("b", ""), host("c", text)])
    assert len(problems) == 1 and expected in problems[0].message


def test_seed_sets_and_unknown_seeds() -> None:
    seeds = "ipalloc: {init: {mode: seed, seeds: ['02:00:00:00:00:01', '%s']}}\n"
    hosts = [
        host("a", "peer: {name: '02:00:00:00:00:01'}\n" + seeds % "02:00:00:00:00:02"),
        host("b", "peer: {name: '02:00:00:00:00:02'}\n" + seeds % "02:00:00:00:00:02"),
        host("c", "peer: {name: '02:00:00:00:00:03'}\n" + seeds % "02:00:00:00:00:09"),
    ]
    found = messages(check_fleet(hosts))
    assert any(
        m.startswith("the seed set is 02:00:00:00:00:01, 02:00:00:00:00:09 on c") for m in found
    )
    assert "seed 02:00:00:00:00:09 is the peer name of no host here" in found


def test_duplicate_names_addresses_and_overlay_addresses() -> None:
    a = "peer: {name: '02:00:00:00:00:01'}\nexpose: [{cidr: 10.32.0.1/12}]\n"
    b = (
        "peer: {name: '02:00:00:00:00:01'}\nexpose: [{cidr: 10.32.0.1/12}]\n"
        "services: {import: [{name: db, address: '10.32.0.1:5432', to: '192.0.2.9:5432'}]}\n"
    )
    c = (
        "expose: [{cidr: 10.32.0.1/12}]\n"
        "services: {import: [{name: db, address: '10.32.0.1:5432', to: '192.0.2.9:5432'}]}\n"
    )
    found = messages(
        check_fleet(
            [
                host("a", a, "192.0.2.1:6783"),
                host("b", b, "192.0.2.1:6783"),
                host("c", c, "192.0.2.3:6783"),
            ]
        )
    )
    assert "peer name 02:00:00:00:00:01 of b is also a's (a.yaml:2:1)" in found
    assert "host address 192.0.2.1:6783 of b is also a's (a.yaml:1:1)" in found
    assert "exposed address 10.32.0.1 of b is also a's (a.yaml:3:1)" in found
    assert "service address 10.32.0.1:5432 of c is also b's (b.yaml:4:1)" in found


def test_targets_must_name_hosts_of_the_file() -> None:
    hosts = [
        host("a", "peers: [192.0.2.2, b, 192.0.2.9]\n", "192.0.2.1:6783"),
        host("b", "peers: ['192.0.2.1:6783']\n", "192.0.2.2:6783"),
    ]
    assert messages(check_fleet(hosts)) == ["peer 192.0.2.9:6783 of a is no host of this file"]


CLUSTER = """\
version: 1
kind: cluster
shared:
  ipalloc: {range: 10.40.0.0/16}
  password_file: /nonexistent/weave-password
hosts:
  h1: {address: 192.0.2.1}
  h2: {address: 192.0.2.2}
  h3:
    address: 192.0.2.3
    ipalloc: {range: 10.41.0.0/16}
"""


def test_validate_cluster_file_github_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    assert main(["validate", "--skip-host-files", "--format", "github", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"::error file={path},line=11,col=22,title=weaved validate::ipalloc.range is"
        f" 10.41.0.0/16 on h3 but 10.40.0.0/16 on h1 ({path}:4:20)"
        " (hint: every host of one network must agree on it)"
    ]


def test_validate_needs_the_password_file_unless_told_to_skip_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.replace("    ipalloc: {range: 10.41.0.0/16}\n", ""))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "cannot read /nonexistent/weave-password" in err and "--skip-host-files" in err
    assert err.count("cannot read") == 1  # a shared problem is reported once, not per host
    assert main(["validate", "--skip-host-files", str(path)]) == 0
    assert "valid (3 hosts)" in capsys.readouterr().out


def test_validate_per_host_files_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "h1.yaml").write_text("version: 1\ndns:\n  domain: a.local\n")
    (tmp_path / "h2.yaml").write_text("version: 1\ndns:\n  domain: b.local\n")
    files = [str(tmp_path / "h1.yaml"), str(tmp_path / "h2.yaml")]
    assert main(["validate", "--json", *files]) == 1
    report = json.loads(capsys.readouterr().out)
    (problem,) = report["problems"]
    assert (problem["file"], problem["line"], problem["col"]) == (files[1], 3, 11)
    assert problem["also"] == [{"file": files[0], "line": 3, "col": 11}]
    assert report["hosts"] == 2 and report["valid"] is False
