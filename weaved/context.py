"""Where things are: spec file, state directory, control socket (flags, then environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from weaved.errors import PrivilegeError
from weaved.spec.models import DEFAULT_SPEC_PATH

DEFAULT_STATE_DIR = "/var/lib/weave"
DEFAULT_SOCKET = "/run/weave/weaved.sock"


@dataclass(frozen=True)
class Context:
    spec_path: Path
    state_dir: Path
    socket_path: Path

    @staticmethod
    def resolve(spec: str | None, state_dir: str | None, socket: str | None) -> Context:
        return Context(
            Path(spec or os.environ.get("WEAVED_SPEC") or DEFAULT_SPEC_PATH),
            Path(state_dir or os.environ.get("WEAVED_STATE_DIR") or DEFAULT_STATE_DIR),
            Path(socket or os.environ.get("WEAVED_SOCKET") or DEFAULT_SOCKET),
        )


def require_root(what: str, why: str = "it changes network state") -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root ({why})\n  hint: run it with sudo")
