"""The part of Go's text/template that `weave report -f` users write, over the report's JSON:
text, field paths (`{{.Router.Name}}`, `{{.}}`), `{{json .X}}`, `{{range .X}}…{{end}}` (lists
and maps, in key order as Go), `{{if .X}}…{{else}}…{{end}}`. Anything else: ValueError (the
API answers 400 with it, as Weave does for a template that does not parse)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_PATH = re.compile(r"^\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


@dataclass
class _Node:
    kind: str  # "text", "value", "json", "range", "if"
    arg: str = ""
    body: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)  # {{else}} part


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", …) and ("action", …), with Go's `{{-`/`-}}` trimming of the text around."""
    out: list[tuple[str, str]] = []
    last = 0
    trim_next = False
    for found in _ACTION.finditer(template):
        text = template[last : found.start()]
        if trim_next:
            text = text.lstrip()
        if found.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", found.group(2)))
        trim_next = bool(found.group(3))
        last = found.end()
    tail = template[last:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _path(word: str) -> str:
    if not _PATH.match(word):
        raise ValueError(f"template: format:1: unsupported argument {word!r}")
    return word


def _parse(tokens: list[tuple[str, str]], pos: int, inside: str) -> tuple[list[_Node], int, str]:
    """Nodes up to the `{{end}}`/`{{else}}` closing `inside` ("" at the top)."""
    nodes: list[_Node] = []
    while pos < len(tokens):
        kind, text = tokens[pos]
        pos += 1
        if kind == "text":
            if text:
                nodes.append(_Node("text", text))
            continue
        words = text.split()
        if words in (["end"], ["else"]):
            if not inside:
                raise ValueError(f"template: format:1: unexpected {{{{{words[0]}}}}}")
            return nodes, pos, words[0]
        if len(words) == 2 and words[0] in ("range", "if"):
            node = _Node(words[0], _path(words[1]))
            node.body, pos, closed = _parse(tokens, pos, words[0])
            if closed == "else":
                node.other, pos, closed = _parse(tokens, pos, words[0])
            if closed != "end":
                raise ValueError(f"template: format:1: unexpected EOF in {words[0]}")
            nodes.append(node)
        elif len(words) == 2 and words[0] == "json":
            nodes.append(_Node("json", _path(words[1])))
        elif len(words) == 1:
            nodes.append(_Node("value", _path(words[0])))
        else:
            raise ValueError(
                f"template: format:1: unsupported action {{{{{text}}}}}"
                " (weaved serves field paths, json, range and if)"
            )
    if inside:
        raise ValueError(f"template: format:1: unexpected EOF in {inside}")
    return nodes, pos, ""


def _lookup(data: Any, path: str) -> Any:
    for key in [k for k in path.split(".") if k]:
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"template: format:1: can't evaluate field {key}")
        data = data[key]
    return data


def _go(value: Any) -> str:
    """How Go prints a value: strings bare, booleans lower case, nil as <nil>."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    return "map[" + " ".join(f"{k}:{_go(v)}" for k, v in sorted(value.items())) + "]"


def _truth(value: Any) -> bool:
    return bool(value)  # Go: false, 0, nil, empty string/list/map are false


def _run(nodes: list[_Node], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.arg)
        elif node.kind == "value":
            out.append(_go(_lookup(dot, node.arg)))
        elif node.kind == "json":
            out.append(json.dumps(_lookup(dot, node.arg), separators=(",", ":")))
        elif node.kind == "if":
            _run(node.body if _truth(_lookup(dot, node.arg)) else node.other, dot, out)
        else:
            items = _lookup(dot, node.arg)
            if isinstance(items, dict):
                items = [items[k] for k in sorted(items)]
            if not items:
                _run(node.other, dot, out)
            for item in items or ():
                _run(node.body, item, out)


def render(template: str, data: Any) -> str:
    nodes, _pos, _closed = _parse(_tokens(template), 0, "")
    out: list[str] = []
    _run(nodes, data, out)
    return "".join(out)
