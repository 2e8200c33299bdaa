from __future__ import annotations

from pathlib import Path

import pytest

from weaved.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_validate_ok_and_error_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(REPO / "examples" / "minimal.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nport: 0\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:7: error: port:" in err


def test_validate_uses_dash_f(tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\n")
    assert main(["-f", str(spec), "validate"]) == 0


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 64
    assert "usage: weaved" in capsys.readouterr().out


def test_help_lists_every_command() -> None:
    text = build_parser().format_help()
    for command in (
        "validate",
        "plan",
        "apply",
        "reset",
        "daemon",
        "status",
        "report",
        "lab",
        "schema",
    ):
        assert command in text


def test_schema_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert '"additionalProperties": false' in capsys.readouterr().out


def test_dns_args_with_a_container_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\nexpose: [{cidr: 10.2.1.1/24}]\n")
    base = ["-f", str(spec), "--socket", str(tmp_path / "none.sock"), "dns-args"]
    assert main(base) == 0
    assert capsys.readouterr().out == "--dns=10.2.1.1 --dns-search=weave.local.\n"
    assert main([*base, "c2"]) == 0
    assert capsys.readouterr().out == (
        "--dns=10.2.1.1 --hostname=c2.weave.local --dns-search=weave.local.\n"
    )
