#!/usr/bin/env bash
# The whole test suite: lint, types, import layers, unit, integration (root, namespaces), e2e (lab, dockerd).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${WEAVED_VENV:-$here/.venv}
export PATH="$venv/bin:$PATH"

echo "== ruff"; ruff check weaved tests bench; ruff format --check weaved tests bench
echo "== mypy"; mypy
echo "== import layers"; lint-imports --no-cache  # .importlinter: no upward import, no cycle
echo "== schema"; python -m weaved schema | diff -u schemas/weave.schema.json - >/dev/null \
  || { echo "schemas/weave.schema.json is stale: python -m weaved schema > schemas/weave.schema.json"; exit 1; }

# Tests that need Docker start their own dockerd inside a test namespace (tests/helpers.py).
echo "== pytest"
pytest -q -p no:cacheprovider "$@" tests
