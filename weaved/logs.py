"""Logging set-up: today's format on a terminal, journald-native under systemd.

systemd connects a service's stderr to the journal and says so in JOURNAL_STREAM
("DEVICE:INODE" of that stream). There, each record is written as one line starting with its
syslog priority (`<3>` error … `<7>` debug), which journald stores as the entry's PRIORITY
(`journalctl -p err` finds errors); no timestamp (the journal has one); a multi-line message
(a spec diagnostic, a traceback) stays one entry, its line breaks written as `\\n`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# logging level → syslog priority (sd-daemon(3)'s SD_ERR … SD_DEBUG prefixes).
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    for level, priority in sorted(PRIORITIES.items(), reverse=True):
        if levelno >= level:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """`<P>logger: message key=value…`, one line per record."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # includes the traceback, if any
        one_line = text.replace("\r", "").replace("\n", "\\n")
        return f"<{syslog_priority(record.levelno)}>{one_line}"


def stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is the journal stream systemd gave us (not one inherited by a child
    whose stderr was redirected elsewhere: the device and inode must match)."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def setup_logging(
    verbose: bool = False,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Configure the root logger once for the process; returns the handler it installed."""
    stream = stream if stream is not None else sys.stderr
    environ = environ if environ is not None else os.environ
    handler = logging.StreamHandler(stream)
    if stream_is_journal(stream, environ):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
