"""Located spec problems and how they are printed (file:line:col, the line, a caret, a hint)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SourceText:
    filename: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


def render_problem(problem: Problem, source: SourceText) -> str:
    where = source.filename
    if problem.line:
        where += f":{problem.line}:{problem.col}"
    head = f"{where}: error: {format_path(problem.path)}: {problem.message}"
    parts = [head]
    if problem.line:
        text = source.line(problem.line)
        gutter = f"{problem.line:>5} | "
        parts.append(gutter + text)
        parts.append(" " * (len(gutter) - 2) + "| " + " " * max(problem.col - 1, 0) + "^")
    if problem.hint:
        parts.append(f"  hint: {problem.hint}")
    return "\n".join(parts)


class SpecProblems(SpecError):
    """Every problem of one spec file, reported together."""

    def __init__(self, problems: Sequence[Problem], source: SourceText) -> None:
        # In file order, as a reader fixes them.
        self.problems = tuple(sorted(problems, key=lambda p: (p.line or 1 << 30, p.col)))
        self.source = source
        count = len(self.problems)
        body = "\n".join(render_problem(p, source) for p in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{body}\n{source.filename}: {count} {noun}; nothing was changed")
