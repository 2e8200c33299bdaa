#!/usr/bin/env bash
# The whole test suite: lint, types, unit, integration (root, namespaces) and e2e (lab, dockerd).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${WEAVED_VENV:-$here/.venv}
export PATH="$venv/bin:$PATH"

echo "== ruff"; ruff check weaved tests bench
echo "== mypy"; mypy
echo "== schema"; python -m weaved schema | diff -u schemas/weave.schema.json - >/dev/null \
  || { echo "schemas/weave.schema.json is stale: python -m weaved schema > schemas/weave.schema.json"; exit 1; }

# Docker (for the tests that need a real dockerd): started here if not running, stopped after.
started_dockerd=""
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd for the docker tests"
  dockerd --data-root /var/lib/weaved-test-docker --exec-root /run/weaved-test-docker \
    -H unix:///run/weaved-test-docker.sock --pidfile /run/weaved-test-docker.pid \
    >/tmp/weaved-test-dockerd.log 2>&1 &
  started_dockerd=$!
  export DOCKER_HOST=unix:///run/weaved-test-docker.sock
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
cleanup() {
  if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null || true; wait "$started_dockerd" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== pytest"
pytest -q -p no:cacheprovider "$@" tests
