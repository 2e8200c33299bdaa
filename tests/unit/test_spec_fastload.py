"""The event-built spec document equals ruamel.yaml's safe loader's, type for type, or is left
to it (Unsupported); it never accepts what the safe loader refuses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from tests.helpers import REPO
from tests.spec_corpus import GOOD, hostile_specs
from weaved.spec import fastload
from weaved.spec.guard import prescan

SNIPPETS = [
    "a: 010\nb: 0o17\nc: 0x1F\nd: 1_000\ne: +5\nf: -0\ng: 0b101\nh: 00\n",
    "a: 1.5\nb: .inf\nc: -.Inf\nd: .nan\ne: 1e3\nf: 1.\ng: .5\nh: 6.8523015e+5\n",
    "a: True\nb: yes\nc: no\nd: on\ne: FALSE\nf: off\ng: y\n",
    "a: ~\nb:\nc: Null\nd: null\ne: ''\nf: \"\"\n",
    'a: "1"\nb: \'true\'\nc: "~"\n1: x\n2.5: y\ntrue: z\nnull: w\n',
    "a: 2001-12-14\n",
    "a: 2001-12-14t21:59:43.10-05:00\n",
    "a: &x [1, 2]\nb: *x\nc: &y {k: v}\nd: [*y, *y]\n",
    "a: 1\na: 2\n",
    "true: 1\n1: 2\n",
    "a: *nope\n",
    "--- 1\n--- 2\n",
    "%YAML 1.1\n---\na: yes\nb: 010\n",
    "a: =\nb: <<\n",
    "? [1, 2]\n: x\n",
    "? {a: 1}\n: x\n",
    "a: |\n  line one\n  line two\nb: >\n  folded\n  text\nc: plain\n  continued\n",
    "- 1\n- [a, {b: c}]\n- - d\n  - e\n",
    "",
    "# only a comment\n",
    "just a scalar\n",
    "a: {b: [1, {c: [x, y]}]}\n",
    "a: -\nb: - x\n",
    "a: 12:30\nb: 1:20:30\nc: 0.1.2\n",
]


def typed(value: Any) -> Any:
    """The value with every scalar's type next to it (1 == True == 1.0 otherwise)."""
    if isinstance(value, dict):
        return {typed(k): typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value if value == value else "nan")


def texts() -> list[tuple[str, str]]:
    out = [(f"snippet-{i}", s) for i, s in enumerate(SNIPPETS)]
    out += [(p.name, p.read_text()) for p in sorted((REPO / "examples").rglob("*.yaml"))]
    out.append(("good", GOOD.decode()))
    for name, (raw, _line) in hostile_specs().items():
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            continue
        if not prescan(text)[1]:  # only what the guard lets through reaches a loader
            out.append((name, text))
    return out


@pytest.mark.parametrize(("name", "text"), texts(), ids=[n for n, _ in texts()])
def test_same_document_as_the_safe_loader_or_left_to_it(name: str, text: str) -> None:
    try:
        expected = YAML(typ="safe", pure=False).load(io.StringIO(text))
    except (YAMLError, ValueError, TypeError, KeyError):
        with pytest.raises((YAMLError, ValueError, TypeError, KeyError)):
            fastload.load(text)
        return
    try:
        got = fastload.load(text)
    except fastload.Unsupported:
        return  # left to the full loader: fine, only slower
    if name.startswith(("laughs", "billion", "alias-of")):  # millions of values expanded
        assert set(got) == set(expected)
        return
    if name == "alias-cycle":  # a list that holds itself, both ways
        assert got["peers"][0] is got["peers"] and expected["peers"][0] is expected["peers"]
        return
    assert typed(got) == typed(expected)


def test_the_large_spec_is_built_here_not_left_to_the_full_loader() -> None:
    import sys

    sys.path.insert(0, str(Path(REPO / "bench" / "reconcile")))
    from run import big_spec  # type: ignore[import-not-found]

    text = big_spec(1000)
    expected = YAML(typ="safe", pure=False).load(io.StringIO(text))
    assert typed(fastload.load(text)) == typed(expected)


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 30 + "]" * 30 + "\n",  # deeper than MAX_DEPTH
        "a: !!str x\n",  # a tag
        "a: &x 1\nb: [" + ", ".join(["*x"] * 70) + "]\n",  # more aliases than MAX_ALIASES
        "a: " + "x" * 5000 + "\n",  # a value longer than MAX_SCALAR_CHARS
    ],
    ids=["depth", "tag", "aliases", "long-value"],
)
def test_the_guards_bounds_are_kept_without_prescan(text: str) -> None:
    """The fast path runs before prescan: past a bound it leaves the text to the full loader
    (which runs prescan and says why)."""
    assert prescan(text)[1]  # prescan refuses it
    with pytest.raises(fastload.Unsupported):
        fastload.load_counted(text)


def test_aliases_are_counted() -> None:
    assert fastload.load_counted("a: &x [1]\nb: *x\n") == ({"a": [1], "b": [1]}, 1)
    assert fastload.load_counted("a: [1]\n")[1] == 0
