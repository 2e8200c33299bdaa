"""Weave's commands weaved has no use for say what to do instead (exit 1, not argparse's 64)."""

from __future__ import annotations

import pytest

from weaved import __version__
from weaved.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [["env"], ["env", "--restore"], ["config"], ["launch", "--ipalloc-range", "x"], ["stop"]],
)
def test_removed_commands_explain_and_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"weaved {argv[0]}: ") and len(err.strip().splitlines()) == 1


def test_version_as_weave_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"weaved {__version__}\n"
