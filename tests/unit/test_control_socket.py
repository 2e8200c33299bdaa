"""The control socket appears at its path only once it listens: bound and listening under a
hidden name, then renamed into place (a client that found the path between the bind and the
listen was refused: a test that waited for the path and then asked for the status failed)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import pytest

from weaved import control
from weaved.control import Client, ControlServer, Request, Response


async def pong(_request: Request) -> Response:
    return Response(200, {"pong": True})


def test_the_socket_is_listening_before_it_takes_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weaved.sock"
    path.write_text("a stale file from a daemon that died")
    renamed: list[tuple[str, int]] = []
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(src))  # not refused: it listens already
        renamed.append((Path(src).name, stat.S_IMODE(os.stat(src).st_mode)))
        real_replace(src, dst)

    monkeypatch.setattr(control.os, "replace", replace)

    async def scenario() -> object:
        server = ControlServer(path, {("GET", "/ping"): pong})
        await server.start()
        try:
            return await asyncio.to_thread(Client(str(path), timeout=5).call, "GET", "/ping")
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == {"pong": True}
    assert renamed == [(".weaved.sock.new", 0o600)]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # stopped: nothing left behind


def test_a_start_that_fails_leaves_no_socket_and_serves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weaved.sock"

    def replace(src: str | Path, dst: str | Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(control.os, "replace", replace)

    async def scenario() -> ControlServer:
        server = ControlServer(path, {("GET", "/ping"): pong})
        with pytest.raises(PermissionError):
            await server.start()
        return server

    assert asyncio.run(scenario()).server is None
    assert list(tmp_path.iterdir()) == []
