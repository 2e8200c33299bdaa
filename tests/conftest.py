from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tiers by folder: integration and e2e need root (namespaces, netlink, nftables).
    for item in items:
        path = str(item.fspath)
        if "/tests/integration/" in path or "/tests/e2e/" in path:
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root"))
        if "/tests/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
