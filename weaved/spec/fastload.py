"""A spec's YAML built straight from libyaml's parser events: the same dicts, lists and scalars
ruamel.yaml's safe loader returns, at a third of its cost (1 000 service rules: ~35 ms instead
of ~100 ms, paid on every edit the daemon reads).

The safe loader composes a node graph and then walks it with a constructor that resolves every
scalar through a generic machinery; here one loop over the events does both, with ruamel's own
resolver table and scalar constructors, so a value is typed exactly as the safe loader types it.
Anything this loop does not handle the way the safe loader would — a %YAML or %TAG directive, a
second document, a mapping used as a key, a duplicate key, a tag it would not construct — raises
`Unsupported`, and the caller falls back to the full loader (which then says what is wrong).

The loop keeps `guard`'s bounds itself (depth, keys, values, aliases, a value's length; no
tags), counting events, which are never fewer than prescan's tokens: whatever prescan would
refuse is left to the full loader, which runs prescan and says why. So the common case walks
libyaml's output once, not twice (prescan's token walk was ~20 ms of a 1 000-rule spec).
"""

from __future__ import annotations

from typing import Any

from _ruamel_yaml import CParser  # type: ignore[import-not-found]  # libyaml, via ruamel.yaml.clib
from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.nodes import ScalarNode

from weaved.spec.guard import MAX_ALIASES, MAX_DEPTH, MAX_KEYS, MAX_SCALAR_CHARS, MAX_VALUES

STR = "tag:yaml.org,2002:str"
# The implicit types a plain scalar may resolve to that are built here; others: Unsupported.
BUILT = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float")}

# The safe loader's own resolver and constructor (YAML 1.2: no %YAML directive gets here).
_SAFE = YAML(typ="safe", pure=False)
_RESOLVERS: dict[Any, list[tuple[str, Any]]] = dict(_SAFE.resolver.versioned_resolver)
_CONSTRUCTOR: SafeConstructor = _SAFE.constructor
_NO_KEY = object()


class Unsupported(ValueError):
    """Left to the full loader."""


def _scalar(event: Any) -> Any:
    value: str = event.value
    if not event.implicit[0]:  # quoted (tags are refused before this runs)
        return value
    # ruamel's VersionedResolver.resolve: the resolvers registered for the first character
    for tag, regexp in _RESOLVERS.get(value[:1], []) + _RESOLVERS.get(None, []):
        if regexp.match(value):
            if tag == STR:
                return value
            if tag not in BUILT:
                raise Unsupported(f"implicit type {tag}")
            return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, ScalarNode(tag, value))
    return value


def load(text: str) -> Any:
    """The single document of `text` as plain Python data (None for an empty stream)."""
    return load_counted(text)[0]


def load_counted(text: str) -> tuple[Any, int]:
    """`load`, and how many aliases the document uses (0: no value is shared, so the data is
    no bigger than the text)."""
    parser = CParser(text)
    anchors: dict[str, Any] = {}
    root: Any = None
    stack: list[list[Any]] = []  # [container, the key waiting for its value or _NO_KEY]
    documents = 0
    values = keys = aliases = 0
    while (event := parser.get_event()) is not None:
        kind = type(event)
        if kind is ScalarEvent:
            values += 1
            if event.tag is not None or values > MAX_VALUES:
                raise Unsupported("a tag, or more values than the guard allows")
            if len(event.value) > MAX_SCALAR_CHARS:
                raise Unsupported("a value longer than the guard allows")
            value = _scalar(event)
        elif kind is MappingStartEvent:
            if event.tag is not None or len(stack) >= MAX_DEPTH:
                raise Unsupported("a tag, or deeper than the guard allows")
            value = {}
        elif kind is SequenceStartEvent:
            if event.tag is not None or len(stack) >= MAX_DEPTH:
                raise Unsupported("a tag, or deeper than the guard allows")
            value = []
        elif kind is AliasEvent:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise Unsupported("more aliases than the guard allows")
            if event.anchor not in anchors:
                raise Unsupported(f"undefined alias {event.anchor!r}")
            value = anchors[event.anchor]
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            stack.pop()
            continue
        elif kind is DocumentStartEvent:
            documents += 1
            if documents > 1 or event.version is not None or event.tags:
                raise Unsupported("directives or more than one document")
            continue
        else:  # stream start/end, document end
            continue
        if kind is not AliasEvent and event.anchor is not None:
            anchors[event.anchor] = value
        if not stack:
            root = value
        else:
            top = stack[-1]
            parent = top[0]
            if isinstance(parent, list):
                parent.append(value)
            elif top[1] is _NO_KEY:
                keys += 1
                if keys > MAX_KEYS:
                    raise Unsupported("more keys than the guard allows")
                if isinstance(value, dict | list):
                    raise Unsupported("a mapping or sequence as a key")
                if value in parent:
                    raise Unsupported(f"duplicate key {value!r}")
                top[1] = value
            else:
                parent[top[1]] = value
                top[1] = _NO_KEY
        if kind is MappingStartEvent or kind is SequenceStartEvent:
            stack.append([value, _NO_KEY])
    return root, aliases
