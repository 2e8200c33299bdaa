#!/usr/bin/env bash
# Install everything weaved needs on a fresh Debian 12 (as root), then run a job:
#   bootstrap.sh demo   -> three-host lab converged from examples/, status, plan, pings, DNS
#   bootstrap.sh test   -> the whole test suite (unit, integration, e2e), lint and types
#   bootstrap.sh env    -> only install
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${WEAVED_VENV:-$here/.venv}
job=${1:-env}

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap.sh: run as root (it installs Debian packages and creates network namespaces)" >&2
  exit 1
fi

apt_packages=(
  python3 python3-venv python3-dev python3-nftables nftables iproute2 procps kmod ethtool
  iputils-ping netcat-openbsd iptables util-linux curl
  dnsutils iperf3 busybox-static tcpdump docker.io dnsmasq dnsperf gcc
  python3.11 binutils lintian systemd init-system-helpers man-db python3-seccomp
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The environment is built from Debian's own interpreter, never another python3 on PATH.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")'; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
fi
# Exactly the pinned versions (packaging/lock.sh writes the lock from pyproject.toml).
lock="$here/packaging/requirements-dev.lock"
stamp="$venv/.installed-$(cat "$here/pyproject.toml" "$lock" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  "$venv/bin/pip" install -q --require-hashes --no-deps -r "$lock"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here"
  touch "$stamp"
fi
# libnftables' Python binding is Debian's python3-nftables: expose just that module to the venv.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/nftables "$site/nftables"
"$venv/bin/python" -c 'import nftables' || { echo "bootstrap: cannot import nftables" >&2; exit 1; }

export PATH="$venv/bin:$PATH"
case "$job" in
  env) echo "bootstrap: environment ready in $venv" ;;
  demo) exec "$venv/bin/weaved" lab demo ;;
  test) exec "$here/packaging/run-tests.sh" ;;
  *) echo "bootstrap.sh: unknown job '$job' (demo, test, env)" >&2; exit 64 ;;
esac
