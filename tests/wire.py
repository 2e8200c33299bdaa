"""Weave Net 2.8.1's wire facts, captures and outputs (`shared/weave-wire`, next to the
repository): where they are, and loading a vector (the test is skipped without them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

WIRE = Path(__file__).resolve().parents[2] / "shared" / "weave-wire"
VECTORS = WIRE / "vectors"
OUTPUTS = WIRE / "outputs"


def load_vector(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())
