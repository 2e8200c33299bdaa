"""The last spec the daemon accepted, kept in the state directory.

A bad edit must never take the network down: while running, the daemon keeps its last good
spec in force; at a (re)start with a bad file on disk it starts from this copy instead of
refusing to run, and says loudly that the file on disk is being ignored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from weaved.errors import WeavedError
from weaved.spec.loader import load_spec
from weaved.spec.models import Spec

log = logging.getLogger(__name__)
NAME = "last-good-spec.yaml"


def last_good_path(state_dir: Path) -> Path:
    return state_dir / NAME


def save_last_good(state_dir: Path, raw: bytes) -> None:
    """Atomically (a crash leaves the old copy or the new one); best effort: a full or
    read-only state directory costs the fallback, never the running network."""
    path = last_good_path(state_dir)
    try:
        if path.exists() and path.read_bytes() == raw:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{NAME}.", dir=state_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot keep a copy of the spec path=%s error=%s", path, exc.strerror)


def load_start_spec(spec_path: Path, state_dir: Path) -> tuple[Spec, str | None]:
    """The spec to start with and, when it is the saved copy, why the file was refused.
    Raises the file's own error when there is no usable copy either."""
    try:
        return load_spec(spec_path), None
    except WeavedError as exc:
        problem = str(exc)
        copy = last_good_path(state_dir)
        if not copy.exists():
            raise
        try:
            spec = load_spec(copy)
        except WeavedError as copy_exc:
            log.error("the saved last good spec is unusable too path=%s:\n%s", copy, copy_exc)
            raise exc from None
    log.error(
        "SPEC FILE REFUSED, starting from the last good spec path=%s copy=%s:\n%s",
        spec_path,
        copy,
        problem,
    )
    return spec, problem
