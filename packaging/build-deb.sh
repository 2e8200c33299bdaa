#!/usr/bin/env bash
# Build weaved_<version>_<arch>.deb, reproducibly: two builds of one commit are byte-identical.
#   packaging/build-deb.sh [OUTDIR]          (DEB_VERSION=… overrides the version, for tests)
# Payload: a private environment in /opt/weaved/venv bound to /usr/bin/python3.11, with exactly
# the packages of packaging/requirements.lock (versions and hashes pinned) and no pip,
# setuptools or console scripts but `weaved`; /usr/bin/weaved, the systemd unit, the man page and
# bash completion generated from the parser, iproute2's name for protocol 87, examples, docs.
# Nothing is written into the source tree: the sources are copied to a temporary directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/dist}
deb_dir="$here/packaging/debian"
python=/usr/bin/python3.11
pyver=3.11
upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/pyproject.toml" | head -n1)
version=${DEB_VERSION:-$upstream}
arch=$(dpkg --print-architecture)

# One timestamp for everything: the commit's, else the changelog's.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$here" log -1 --format=%ct 2>/dev/null ||
    date -d "$(sed -n 's/^ -- .*>  //p' "$deb_dir/changelog" | head -n1)" +%s)
fi
export SOURCE_DATE_EPOCH TZ=UTC LC_ALL=C.UTF-8 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
umask 022

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
venv="$root/opt/weaved/venv"
site="$venv/lib/python$pyver/site-packages"

# --- the environment ---------------------------------------------------------------------------
mkdir -p "$work/src"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/weaved" "$work/src/"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --no-compile)
"${pip[@]}" --require-hashes --no-deps -r "$here/packaging/requirements.lock"
grep '^setuptools==' "$here/packaging/requirements-dev.lock" > "$work/backend.lock"
"${pip[@]}" --require-hashes --no-deps -r "$work/backend.lock"
"${pip[@]}" --no-deps --no-build-isolation "$work/src"
"$venv/bin/python" -m pip uninstall -q -y setuptools pip
# Only the interpreter links and our entry point; pip wrote the staging path into it.
find "$venv/bin" -mindepth 1 ! -name 'python*' ! -name weaved ! -name weaved-cni -delete
sed -i "1s|^#!.*|#!/opt/weaved/venv/bin/python$pyver|" "$venv/bin/weaved" "$venv/bin/weaved-cni"
# RECORD lists the console scripts (staging-path shebangs) and direct_url.json (the staging
# path): drop those lines.
find "$site" -path '*.dist-info/RECORD' -exec sed -i -e '\|^\.\./\.\./\.\./bin/|d' -e '/direct_url.json,/d' {} +
rm -rf "$venv/include" "$venv/lib64"
find "$site" -name direct_url.json -delete
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$site" -name '*.so*' -type f -exec strip --strip-unneeded --remove-section=.comment \
  --remove-section=.note {} +
# venv wrote the build path into pyvenv.cfg; this is what the installed environment is.
cat > "$venv/pyvenv.cfg" <<CFG
home = /usr/bin
include-system-site-packages = false
version = $("$python" -c 'import platform; print(platform.python_version())')
executable = $python
command = $python -m venv /opt/weaved/venv
CFG
# libnftables' binding is Debian's python3-nftables: only that module is shared with the system.
ln -s /usr/lib/python3/dist-packages/nftables "$site/nftables"
if grep -rqF "$work" "$root"; then
  echo "build-deb: the staging path leaked into: $(grep -rlF "$work" "$root")" >&2
  exit 1
fi

# --- files around it ---------------------------------------------------------------------------
install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/weaved" \
  "$root/usr/share/doc/weaved" "$root/usr/share/man/man1" "$root/etc/weave" \
  "$root/usr/share/bash-completion/completions" "$root/etc/iproute2/rt_protos.d" \
  "$root/usr/share/lintian/overrides" "$root/DEBIAN"
ln -s /opt/weaved/venv/bin/weaved "$root/usr/bin/weaved"
# The CNI plugin under Weave's names in Debian's CNI plugin directory (podman, cri-o look
# there); `weaved setup-cni` links it into /opt/cni/bin for kubelet and containerd.
install -d "$root/usr/lib/cni"
for name in weave-net weave-ipam; do ln -s /opt/weaved/venv/bin/weaved-cni "$root/usr/lib/cni/$name"; done
install -m 0644 "$here/systemd/weaved.service" "$root/lib/systemd/system/weaved.service"
cp -r "$here/examples" "$root/usr/share/weaved/examples"
cp -r "$here/schemas" "$root/usr/share/weaved/schemas"
install -m 0644 "$deb_dir/rt_protos.conf" "$root/etc/iproute2/rt_protos.d/weaved.conf"
install -m 0644 "$deb_dir/copyright" "$root/usr/share/doc/weaved/copyright"
install -m 0644 "$deb_dir/lintian-overrides" "$root/usr/share/lintian/overrides/weaved"
gzip -9n < "$here/README.md" > "$root/usr/share/doc/weaved/README.md.gz"
{
  if [ "$version" != "$upstream" ]; then
    printf 'weaved (%s) unstable; urgency=medium\n\n  * Rebuild.\n\n -- %s  %s\n\n' \
      "$version" "weaved developers <dev@weaved.invalid>" "$(date -R -d "@$SOURCE_DATE_EPOCH")"
  fi
  cat "$deb_dir/changelog"
} | gzip -9n > "$root/usr/share/doc/weaved/changelog.gz"
docs=(env PYTHONPATH="$site" "$venv/bin/python" -m weaved.cli.docs)
"${docs[@]}" man "$(date -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" | gzip -9n \
  > "$root/usr/share/man/man1/weaved.1.gz"
"${docs[@]}" bash > "$root/usr/share/bash-completion/completions/weaved"
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +

# --- control ----------------------------------------------------------------------------------
# The compiled extensions are manylinux wheels: they need only glibc, at the newest symbol
# version any of them references.
glibc=$(find "$site" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
size=$(find "$root" -path "$root/DEBIAN" -prune -o -type f -printf '%s\n' |
  awk '{ kb += int(($1 + 1023) / 1024) } END { print kb }')
cat > "$root/DEBIAN/control" <<CONTROL
Package: weaved
Version: $version
Architecture: $arch
Maintainer: weaved developers <dev@weaved.invalid>
Installed-Size: $size
Depends: python$pyver, libc6 (>= $glibc), python3-nftables, iproute2, iptables
Recommends: docker.io
Section: net
Priority: optional
Homepage: https://weaved.invalid/
Description: declarative container network, wire-compatible with Weave Net 2.8.1
 One agent per host joins a peer-to-peer mesh; containers on every host plug
 into one virtual Ethernet switch. A YAML spec per host (/etc/weave/weave.yaml)
 is converged by a reconciler: weaved plan shows the difference, weaved apply
 makes it so, the weaved service keeps it so.
CONTROL
echo /etc/iproute2/rt_protos.d/weaved.conf > "$root/DEBIAN/conffiles"
install -m 0755 "$deb_dir/postinst" "$deb_dir/prerm" "$deb_dir/postrm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

# Permissions and times do not depend on the umask or the clock of the build.
chmod -R u+rwX,go+rX,go-w "$root"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/weaved_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
