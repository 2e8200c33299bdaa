"""CLI conventions: --json where people script, usage errors that never collide with 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from weaved.cli.container_commands import ps_json
from weaved.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def weaved(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weaved", *args], capture_output=True, text=True, check=False
    )


def test_validate_json_valid_and_invalid(tmp_path: Path) -> None:
    ok = weaved("validate", "--json", str(REPO / "examples" / "minimal.yaml"))
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nexpose: [{cidr: 10.2.1.1/99}]\n")
    proc = weaved("validate", "--json", str(bad))
    answer = json.loads(proc.stdout)
    assert proc.returncode == 1 and answer["valid"] is False
    assert f"{bad}:2:17" in answer["error"]


@pytest.mark.parametrize(
    "argv", [["plan", "--bogus"], ["nonsense"], ["status", "nosuchsection"], ["lab", "x"]]
)
def test_usage_errors_exit_64_not_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 64


def test_ps_json_from_weaves_lines() -> None:
    text = "weave:expose 3e:80:e7:5a:63:a7 10.2.1.1/24\nabc123def456 12:34:56:78:9a:bc\n"
    assert ps_json(text) == [
        {"container": "weave:expose", "mac": "3e:80:e7:5a:63:a7", "addresses": ["10.2.1.1/24"]},
        {"container": "abc123def456", "mac": "12:34:56:78:9a:bc", "addresses": []},
    ]


def test_lab_list_json_when_not_up() -> None:
    proc = weaved("lab", "--name", "wdt-nolab", "list", "--json")
    if proc.returncode != 0 and "root" in proc.stderr:
        pytest.skip("weaved lab needs root")
    assert json.loads(proc.stdout) == {"lab": "wdt-nolab", "up": False, "hosts": []}
