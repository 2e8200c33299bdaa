"""The daemon does its whole job under the systemd unit's sandbox.

systemd is not PID 1 here, so each restriction of systemd/weaved.service is reproduced with the
kernel feature systemd itself uses:
  CapabilityBoundingSet=   setpriv --bounding-set (and no inheritable capabilities)
  NoNewPrivileges=yes      setpriv --no-new-privs
  ProtectSystem=strict +   a private mount namespace where every mount but /proc, /sys, /dev is
  ReadWritePaths=          read-only, except the state/runtime directory and /etc/netns
  SystemCallFilter=,       a seccomp filter from systemd's own syscall groups
  RestrictAddressFamilies= (`systemd-analyze syscall-filter`), EPERM otherwise
                           (tests/seccomp_exec.py)
Under it the daemon converges a spec (bridge, addresses, nftables, sysctls), serves its API and
attaches a named network namespace (setns, veth, /etc/netns/NAME/resolv.conf); then traffic
flows from that namespace to the host's overlay address.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, Netns, netns, stop_process, wait_for

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c9"}\nexpose: [{cidr: 10.2.1.1/24}]\n'

UNIT = REPO / "systemd" / "weaved.service"
pytestmark = [
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv missing"),
    pytest.mark.skipif(
        subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], check=False).returncode,
        reason="python3-seccomp missing (bootstrap.sh installs it)",
    ),
]


def unit_capabilities() -> list[str]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "systemd" / "weaved.service")
    caps = unit["Service"]["CapabilityBoundingSet"].split()
    return [c.removeprefix("CAP_").lower() for c in caps]


SANDBOX = r"""
set -e
# ReadWritePaths=: these stay writable (a bind mount of their own, left out of the remount).
for path in "$WORK" /etc/netns; do mount --bind "$path" "$path"; done
# ProtectSystem=strict: every other mount read-only (the API filesystems excepted).
awk '$3 != "nsfs" { print $2 }' /proc/self/mounts | sort -u | while read -r mnt; do
  case "$mnt" in
    /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$WORK"|/etc/netns) ;;
    *) mount -o remount,bind,ro "$mnt" 2>/dev/null || true ;;
  esac
done
touch /usr/.weaved-sandbox-probe 2>/dev/null && { echo "/usr is writable" >&2; exit 1; }
exec setpriv --no-new-privs --inh-caps=-all --bounding-set="$CAPS" -- "$@"
"""


def sandboxed_daemon(
    host: Netns, spec: Path, log: Path, caps: list[str]
) -> subprocess.Popen[bytes]:
    bounding = "-all," + ",".join(f"+{c}" for c in caps)
    seccomp = ["/usr/bin/python3", str(REPO / "tests/seccomp_exec.py"), str(UNIT), "--"]
    argv = [
        *["ip", "netns", "exec", host.name, "unshare", "--mount", "--propagation", "slave"],
        *["env", f"WORK={spec.parent}", f"CAPS={bounding}", "sh", "-c", SANDBOX, "-"],
        *seccomp,
        *host.weaved_argv(spec, "daemon"),
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_daemon_converges_and_attaches_under_the_unit_sandbox(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    Path("/etc/netns").mkdir(exist_ok=True)  # the unit's ExecStartPre=+mkdir does this
    log = tmp_path / "daemon.log"
    with netns("wdsbx") as host, netns("wdsbxc") as container:
        proc = sandboxed_daemon(host, spec, log, unit_capabilities())
        try:
            wait_for(lambda: "daemon ready" in log.read_text() or proc.poll() is not None, 30)
            assert proc.poll() is None, log.read_text()
            status = Path(f"/proc/{proc.pid}/status").read_text()
            assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
            bounding = int(status.split("CapBnd:\t")[1].split()[0], 16)
            assert bounding == sum(1 << CAP_NUMBERS[c] for c in unit_capabilities())

            # bridge, addresses, nftables, sysctls: converged, and the plan is empty.
            assert host.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
            assert "weaved" in host.nft("list", "tables").stdout
            conf = "/proc/sys/net/ipv6/conf/weave/"
            sysctls = host.run(
                ["cat", conf + "autoconf", conf + "accept_ra", conf + "addr_gen_mode"]
            )
            assert sysctls.stdout.split() == ["0", "0", "1"]
            promote = host.run(["cat", "/proc/sys/net/ipv4/conf/weave/promote_secondaries"])
            assert promote.stdout.strip() == "1"

            # attach: the daemon enters the container's namespace and plumbs it.
            host.weaved(spec, "attach", "10.2.1.5/24", container.name, timeout=60)
            addresses = container.ip("-o", "addr", "show", "dev", "ethwe").stdout
            assert "10.2.1.5/24" in addresses
            container.run(["ping", "-c1", "-W2", "10.2.1.1"])
            resolv = Path("/etc/netns") / container.name / "resolv.conf"
            assert resolv.read_text().startswith("# written by weaved")
            host.weaved(spec, "detach", "10.2.1.5/24", container.name, timeout=60)

            text = log.read_text()
            for bad in (" ERROR ", "Permission denied", "Read-only file system", "CAP_"):
                assert bad not in text, text
        finally:
            assert stop_process(proc) == 0, log.read_text()
            shutil.rmtree(Path("/etc/netns") / container.name, ignore_errors=True)


CAP_NUMBERS = {
    "net_bind_service": 10,
    "net_admin": 12,
    "net_raw": 13,
    "sys_ptrace": 19,
    "sys_admin": 21,
}


def test_without_sys_admin_attach_fails(tmp_path: Path) -> None:
    """CAP_SYS_ADMIN is in the set for one reason, setns(2) into the container's namespace:
    without it, attaching is refused (and the rest still works)."""
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    log = tmp_path / "daemon.log"
    caps = [c for c in unit_capabilities() if c != "sys_admin"]
    with netns("wdsbx") as host, netns("wdsbxc") as container:
        proc = sandboxed_daemon(host, spec, log, caps)
        try:
            wait_for(lambda: "daemon ready" in log.read_text() or proc.poll() is not None, 30)
            assert host.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
            attach = host.weaved(spec, "attach", "10.2.1.5/24", container.name, check=False)
            assert attach.returncode != 0 and "setns: Operation not permitted" in attach.stderr
            assert container.ip("link", "show", "ethwe", check=False).returncode != 0
        finally:
            stop_process(proc)
            shutil.rmtree(Path("/etc/netns") / container.name, ignore_errors=True)
