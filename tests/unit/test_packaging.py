from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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


def unit_file() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "systemd" / "weaved.service")
    return unit


def test_unit_brings_the_daemon_back_after_kill_and_crash_but_not_after_reset() -> None:
    from weaved.daemon.service import EXIT_LEFT

    service = unit_file()["Service"]
    # Restart=on-failure would leave weaved stopped after `kill <pid>` (SIGTERM exits 0).
    assert service["Restart"] == "always"
    assert service["RestartPreventExitStatus"] == str(EXIT_LEFT)
    assert service["SuccessExitStatus"] == str(EXIT_LEFT)
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_unit_keeps_only_the_capabilities_it_needs() -> None:
    service = unit_file()["Service"]
    caps = set(service["CapabilityBoundingSet"].split())
    assert caps == {
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
    }
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_scores_at_most_3_5_in_systemd_analyze_security() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(REPO / "systemd/weaved.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for weaved.service: ([\d.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found[1]) <= 3.5, proc.stdout


def test_bootstrap_and_build_install_from_the_lock_files() -> None:
    bootstrap = (REPO / "packaging" / "bootstrap.sh").read_text()
    build = (REPO / "packaging" / "build-deb.sh").read_text()
    assert "--require-hashes" in bootstrap and "requirements-dev.lock" in bootstrap
    assert "--require-hashes" in build and "requirements.lock" in build
    for name in ("requirements.lock", "requirements-dev.lock"):
        for line in (REPO / "packaging" / name).read_text().splitlines():
            assert line.startswith("#") or re.fullmatch(
                r"\S+==\S+ --hash=sha256:[0-9a-f]{64}", line
            )
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "cryptography" not in pyproject  # declared, never imported: 16 MB in the package


def test_man_page_and_completion_come_from_the_parser() -> None:
    from weaved.cli.docs import render_bash, render_man
    from weaved.cli.parser import build_parser

    man = render_man(build_parser(), "2026-01-01")
    assert man.startswith('.TH WEAVED 1 "2026-01-01"')
    for heading in (".SH SYNOPSIS", ".SH OPTIONS", '.SS "plan"', '.SS "lab up"', ".SH EXIT STATUS"):
        assert heading in man
    assert "\\-\\-detailed\\-exitcode" in man
    bash = render_bash(build_parser())
    plan_line = next(line for line in bash.splitlines() if line.strip().startswith('"plan")'))
    assert "--json" in plan_line and "--detailed-exitcode" in plan_line
    assert "peers connections dns ipam targets" in bash


def test_lock_files_cover_every_dependency_of_pyproject() -> None:
    import tomllib

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    def locked(lock: str) -> set[str]:
        text = (REPO / "packaging" / lock).read_text()
        return {name(line) for line in text.splitlines() if line and not line.startswith("#")}

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {name(r) for r in project["dependencies"]}
    dev = {name(r) for r in project["optional-dependencies"]["dev"]}
    hint = "pyproject.toml changed: run packaging/lock.sh"
    assert runtime <= locked("requirements.lock"), hint
    assert runtime | dev <= locked("requirements-dev.lock"), hint
