"""Located spec problems and how they are printed (file:line:col, the line, a caret, a hint)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from weaved.errors import SpecError

SpecPath = tuple[str | int, ...]


def format_path(path: SpecPath) -> str:
    """('expose', 1, 'cidr') -> 'expose[1].cidr'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    path: SpecPath
    message: str
    hint: str = ""
    line: int = 0  # 1-based; 0 = unknown
    col: int = 0  # 1-based


EXCERPT_CHARS = 100  # of a long line, only this much around the caret is shown
MESSAGE_CHARS = 300
SHOWN_PROBLEMS = 30


@dataclass(frozen=True)
class SourceText:
    filename: str
    text: str

    @cached_property
    def _lines(self) -> list[str]:
        return self.text.splitlines()

    def line(self, number: int) -> str:
        return self._lines[number - 1] if 0 < number <= len(self._lines) else ""


def _printable(text: str) -> str:
    """Never echo control characters to a terminal (one for one, so the caret stays put)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def excerpt(line: str, col: int) -> tuple[str, int]:
    """The part of `line` to show and the caret's 0-based offset in it."""
    if len(line) <= EXCERPT_CHARS:
        return _printable(line), max(col - 1, 0)
    start = max(0, min(col - 1 - EXCERPT_CHARS // 2, len(line) - EXCERPT_CHARS))
    shown = _printable(line[start : start + EXCERPT_CHARS])
    head = "…" if start else ""
    tail = "…" if start + EXCERPT_CHARS < len(line) else ""
    return head + shown + tail, max(col - 1 - start, 0) + len(head)


def render_problem(problem: Problem, source: SourceText) -> str:
    where = _printable(source.filename)
    if problem.line:
        where += f":{problem.line}:{problem.col}"
    # A problem of the file as a whole (syntax, encoding, bounds) has no spec path to name.
    path = f"{_printable(_clip(format_path(problem.path), 120))}: " if problem.path else ""
    head = f"{where}: error: {path}{_printable(_clip(problem.message))}"
    parts = [head]
    if problem.line:
        text, caret = excerpt(source.line(problem.line), problem.col)
        gutter = f"{problem.line:>5} | "
        parts.append(gutter + text)
        parts.append(" " * (len(gutter) - 2) + "| " + " " * caret + "^")
    if problem.hint:
        parts.append(f"  hint: {_printable(_clip(problem.hint))}")
    return "\n".join(parts)


class SpecProblems(SpecError):
    """Every problem of one spec file, reported together."""

    def __init__(self, problems: Sequence[Problem], source: SourceText) -> None:
        # In file order, as a reader fixes them.
        self.problems = tuple(sorted(problems, key=lambda p: (p.line or 1 << 30, p.col)))
        self.source = source
        count = len(self.problems)
        body = "\n".join(render_problem(p, source) for p in self.problems[:SHOWN_PROBLEMS])
        if count > SHOWN_PROBLEMS:
            body += f"\n… and {count - SHOWN_PROBLEMS} more"
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{body}\n{source.filename}: {count} {noun}; nothing was changed")
