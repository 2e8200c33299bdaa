from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_systemd_unit_runs_the_daemon_with_notify() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "systemd" / "weaved.service")
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["ExecStart"] == "/usr/bin/weaved daemon"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_readme_commands_are_the_ci_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "bash packaging/bootstrap.sh demo" in readme
    assert "bash packaging/bootstrap.sh test" in readme
    assert "packaging/bootstrap.sh test" in (REPO / ".ci" / "run").read_text()


def test_bootstrap_uses_debian_python() -> None:
    script = (REPO / "packaging" / "bootstrap.sh").read_text()
    assert "/usr/bin/python3 -m venv" in script
    assert "python3-nftables" in script
