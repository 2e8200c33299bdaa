"""A spec's YAML with the line and column of every key and item, and pydantic's errors placed
there: what the loader and the cluster file (`cluster.py`) both point at when they report."""

from __future__ import annotations

import io
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from weaved.spec.diagnostics import Problem, SourceText, SpecPath, SpecProblems
from weaved.spec.guard import ExpansionError, Scan, expanded_size, syntax_problem

Positions = dict[SpecPath, tuple[int, int]]

_HINTS = {
    "extra_forbidden": "remove it, or check its spelling against `weaved schema`",
    "missing": "add this key",
    "int_type": "write a plain number without quotes",
    "bool_type": "write true or false",
    "string_type": "write a string (quote it if YAML reads it as something else)",
    "list_type": "write a YAML list (items starting with '- ')",
    "literal_error": "the only supported spec version is 1",
    "enum": "use one of the values listed",
    "model_type": "write a mapping of key: value pairs",
}


def record_positions(node: Any, path: SpecPath, out: Positions) -> None:
    """Record (line, col) 1-based for every key value and list item below `node`."""
    if isinstance(node, CommentedMap):
        for key in node:
            kline, kcol, vline, vcol = node.lc.key(key) + node.lc.value(key)
            child = (*path, str(key))
            out[child] = (vline + 1, vcol + 1)
            out[(*child, "<key>")] = (kline + 1, kcol + 1)
            record_positions(node[key], child, out)
    elif isinstance(node, CommentedSeq):
        for index, item in enumerate(node):
            line, col = node.lc.item(index)
            out[(*path, index)] = (line + 1, col + 1)
            record_positions(item, (*path, index), out)


def plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def locate(path: SpecPath, positions: Positions, *, key: bool = False) -> tuple[int, int]:
    """The closest known position for `path` (walking up to a parent if needed)."""
    if key and (*path, "<key>") in positions:
        return positions[(*path, "<key>")]
    probe = path
    while probe:
        if probe in positions:
            return positions[probe]
        probe = probe[:-1]
    return (1, 1)


def pydantic_problems(exc: ValidationError, positions: Positions) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path: SpecPath = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        kind = err["type"]
        message = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = f"unknown key {path[-1]!r}"
        line, col = locate(path, positions, key=kind == "extra_forbidden")
        problems.append(Problem(path, message, _HINTS.get(kind, ""), line, col))
    return problems


def load_located(text: str, source: SourceText, scan: Scan) -> CommentedMap:
    """The document with every key's line and column, or SpecProblems saying where it breaks."""
    try:
        document = YAML(typ="rt").load(io.StringIO(text))
        expanded_size(document)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecProblems([syntax_problem(exc, line, col)], source) from None
    except ExpansionError as exc:
        line, col = scan.first_alias or (1, 1)
        hint = "write the values out instead of using anchors and aliases"
        raise SpecProblems([Problem((), str(exc), hint, line, col)], source) from None
    except (YAMLError, ValueError, TypeError, KeyError, RecursionError) as exc:
        # The pre-scan bounds what reaches here; should a loader still fail, say so, located.
        message = f"YAML: {type(exc).__name__}: {str(exc)[:200]}"
        raise SpecProblems([Problem((), message, "", 1, 1)], source) from None
    if document is None:
        return CommentedMap()
    if not isinstance(document, CommentedMap):
        raise SpecProblems(
            [Problem((), "the spec must be a mapping", "start with `version: 1`", 1, 1)], source
        )
    return document
