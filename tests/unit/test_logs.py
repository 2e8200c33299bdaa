"""Logs: journald-native (priority prefixes, one entry per event) when stderr is the journal,
today's format on a terminal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from weaved.logs import setup_logging, stream_is_journal, syslog_priority


@pytest.fixture
def restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def journal_env(path: Path) -> dict[str, str]:
    status = os.stat(path)
    return {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}


def emit_all(path: Path, env: dict[str, str]) -> list[str]:
    with open(path, "w") as stream:
        handler = setup_logging(verbose=True, stream=stream, environ=env)
        log = logging.getLogger("weaved.test")
        log.debug("idle detail key=%s", 1)
        log.info("converged changes=%d writes=%d", 2, 3)
        log.warning("peer name collision peer=%s", "aa:bb")
        log.error("spec invalid, keeping the last good spec in force:\n%s", "line 1\n  ^ here")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("converge crashed reason=%s", "resync")
        handler.flush()
    return path.read_text().splitlines()


@pytest.mark.usefixtures("restore_root_logger")
def test_under_journald_each_event_is_one_line_with_its_syslog_priority(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    out.touch()
    lines = emit_all(out, journal_env(out))
    assert len(lines) == 5  # one entry per event, multi-line ones included
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    assert lines[1] == "<6>weaved.test: converged changes=2 writes=3"  # no timestamp
    assert lines[3].endswith("in force:\\nline 1\\n  ^ here")
    assert "Traceback" in lines[4] and "ValueError: boom" in lines[4]


@pytest.mark.usefixtures("restore_root_logger")
def test_on_a_terminal_the_format_is_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    out.touch()
    other = tmp_path / "elsewhere"
    other.touch()
    # JOURNAL_STREAM inherited from a parent whose stderr went to the journal: not ours.
    lines = emit_all(out, journal_env(other))
    assert lines[1].endswith(" INFO weaved.test: converged changes=2 writes=3")
    assert lines[1][:4].isdigit()  # today's asctime prefix
    assert "line 1" in lines[4] and not lines[4].startswith("<")


def test_journal_stream_must_be_device_and_inode(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    out.touch()
    with open(out) as stream:
        assert stream_is_journal(stream, journal_env(out))
        assert not stream_is_journal(stream, {})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "garbage"})


def test_priorities() -> None:
    assert syslog_priority(logging.CRITICAL) == 2
    assert syslog_priority(logging.ERROR) == 3
    assert syslog_priority(logging.WARNING) == 4
    assert syslog_priority(logging.INFO) == 6
    assert syslog_priority(logging.DEBUG) == 7
    assert syslog_priority(logging.INFO + 5) == 6
