"""Weave Net 2.8.1's wire facts, captures and outputs (`shared/weave-wire`, next to the
repository): where they are, and loading them. Every test that reads them is skipped, with
`MISSING` as the reason, in a clone without `../shared` (collection never fails)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

WIRE = Path(__file__).resolve().parents[2] / "shared" / "weave-wire"
VECTORS = WIRE / "vectors"
OUTPUTS = WIRE / "outputs"

AVAILABLE = WIRE.is_dir()
MISSING = (
    f"Weave Net 2.8.1 reference data not available: {WIRE} "
    "(put shared/weave-wire beside the repository)"
)
# For tests (or whole modules: `pytestmark = needs_wire`) that read shared/weave-wire.
needs_wire = pytest.mark.skipif(not AVAILABLE, reason=MISSING)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(MISSING if not AVAILABLE else f"{path} not available")
    return path


def load_vector(name: str) -> Any:
    return json.loads(_need(VECTORS / name).read_text())


def read_output(relative: str | Path) -> str:
    """An output file of a live Weave network (`outputs/<case>/<host>/<file>`)."""
    return _need(OUTPUTS / relative).read_text()


def params(items: Iterable[Any], ids: Sequence[str] | None = None, width: int = 1) -> list[Any]:
    """Parameters built from the reference data at import time (`width` argument names); one
    skipped parameter with the reason when the data is absent, so the test says why."""
    listed = list(items) if AVAILABLE else []
    if not listed:
        reason = MISSING if not AVAILABLE else "no such vectors in shared/weave-wire"
        skip = pytest.mark.skip(reason=reason)
        return [pytest.param(*([None] * width), marks=skip, id="no-weave-wire")]
    if ids is not None:
        spread = [tuple(item) if width > 1 else (item,) for item in listed]
        return [pytest.param(*item, id=i) for item, i in zip(spread, ids, strict=True)]
    return listed
