#!/usr/bin/env bash
# Build weaved_<version>_amd64.deb: a self-contained venv in /opt/weaved (built from Debian's
# /usr/bin/python3), /usr/bin/weaved, the systemd unit, examples and docs.
#   packaging/build-deb.sh [OUTDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/dist}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/pyproject.toml" | head -n1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
venv="$root/opt/weaved/venv"

/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "$here"
# pip wrote the staging path into scripts; the package lives in /opt/weaved/venv.
grep -rlI --null "$venv" "$venv/bin" | xargs -0 -r sed -i "s|$venv|/opt/weaved/venv|g"
rm -f "$venv/bin/activate"* "$venv/bin/Activate.ps1"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -s /usr/lib/python3/dist-packages/nftables "$site/nftables"
find "$venv" -name '__pycache__' -type d -prune -exec rm -rf {} +

install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/weaved" \
  "$root/usr/share/doc/weaved" "$root/etc/weave" "$root/DEBIAN"
ln -s /opt/weaved/venv/bin/weaved "$root/usr/bin/weaved"
install -m 0644 "$here/systemd/weaved.service" "$root/lib/systemd/system/weaved.service"
cp -r "$here/examples" "$root/usr/share/weaved/examples"
cp -r "$here/schemas" "$root/usr/share/weaved/schemas"
install -m 0644 "$here/README.md" "$root/usr/share/doc/weaved/README.md"

size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: weaved
Version: $version
Architecture: $arch
Maintainer: weaved developers <dev@weaved.invalid>
Installed-Size: $size
Depends: python3 (>= 3.11), python3-nftables, nftables, iproute2, iptables
Recommends: docker.io
Section: net
Priority: optional
Description: declarative container network, wire-compatible with Weave Net 2.8.1
 One agent per host joins a peer-to-peer mesh; containers on every host plug into one
 virtual Ethernet switch. A YAML spec per host (/etc/weave/weave.yaml) is converged by a
 reconciler: weaved plan shows the difference, weaved apply makes it so.
CONTROL
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl stop weaved.service 2>/dev/null || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p "$out"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/weaved_${version}_${arch}.deb" >/dev/null
echo "$out/weaved_${version}_${arch}.deb"
