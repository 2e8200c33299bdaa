"""Runners the integration tests, e2e tests and benchmarks start in network namespaces (not
part of the product): `sleeve_peer` (one mesh peer with sleeve's data path, no daemon),
`fastdp_daemon` (a daemon with the fast datapath, no IPAM), `sleeve_testbed` (hosts and
containers in namespaces, each host running `sleeve_peer`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def python_env() -> dict[str, str]:
    """The environment for `python -m tests.tools.…` in a subprocess, from any directory:
    this repository first on the import path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *([path] if path else [])])}
