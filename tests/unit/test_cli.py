from __future__ import annotations

from pathlib import Path

import pytest

from weaved.cli.main import main
from weaved.cli.parser import build_parser

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
    assert capsys.readouterr().out == "--dns=169.254.53.53 --dns-search=weave.local.\n"
    assert main([*base, "c2"]) == 0
    assert capsys.readouterr().out == (
        "--dns=169.254.53.53 --hostname=c2.weave.local --dns-search=weave.local.\n"
    )


@pytest.mark.parametrize(
    "argv",
    [["bogus"], ["plan", "--nope"], ["status", "nosuchsection"], ["daemon", "--resync", "x"]],
)
def test_usage_errors_exit_64_not_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """2 means "changes pending" for `plan --detailed-exitcode`; a typo must not say that."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 64
    assert "usage: weaved" in capsys.readouterr().err


def test_global_options_after_the_command(tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\n")
    args = build_parser().parse_args(["apply", "-f", str(spec), "--socket", "/x.sock", "-v"])
    assert (args.spec, args.socket, args.verbose) == (str(spec), "/x.sock", True)
    # Not given after the command: the value given before it stays.
    args = build_parser().parse_args(["-f", str(spec), "plan", "--json"])
    assert args.spec == str(spec) and args.json
    assert main(["validate", "-f", str(spec)]) == 0


def test_unknown_key_hint_names_the_schema_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\nbogus: 1\n")
    assert main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "`weaved schema`" in err and "--schema" not in err


def test_dns_args_prints_nothing_without_dns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\ndns: {enabled: false}\n")
    assert main(["dns-args", "-f", str(spec), "--socket", str(tmp_path / "none.sock")]) == 0
    assert capsys.readouterr().out == ""


def test_plan_as_non_root_does_not_claim_to_change_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text("version: 1\n")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["plan", "-f", str(spec), "--socket", str(tmp_path / "none.sock")]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "changes network state" not in err
