"""`weaved attach --rewrite-hosts` rewrites /etc/hosts with the addresses attach printed, with
or without a daemon (the local runner's output was printed but never used)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from weaved.cli import container_commands
from weaved.context import Context


def test_local_attach_hands_its_addresses_to_the_rewrite(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from weaved.attach import cli as attach_cli

    monkeypatch.setattr(container_commands, "daemon_for", lambda _ctx: None)
    monkeypatch.setattr(attach_cli, "run_local", lambda _a, _c: print("10.32.9.20") or 0)
    seen: list[str] = []
    monkeypatch.setattr(
        container_commands, "_rewrite_hosts", lambda _a, _c, printed: seen.append(printed)
    )
    args = argparse.Namespace(
        attach_command="attach", words=["10.32.9.20/12", "web"], json=False, rewrite_hosts=True
    )
    ctx = Context.resolve(str(tmp_path / "weave.yaml"), str(tmp_path), str(tmp_path / "s.sock"))
    assert container_commands.cmd_attach(args, ctx) == 0
    assert seen == ["10.32.9.20"]
    assert capsys.readouterr().out == "10.32.9.20\n"
