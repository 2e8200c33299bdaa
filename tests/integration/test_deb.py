"""The Debian package as an operator meets it: built reproducibly, lintian-clean but for a
listed set of tags, installed with the real dpkg, upgraded while its service runs (the service
keeps running, on the new files), removed (`weaved reset` cleans the kernel) and purged
(nothing left on the host).

systemd is not PID 1 here: the maintainer scripts run in a private mount namespace where
/run/systemd/system exists, with `deb-systemd-invoke` and `systemctl` replaced by shims that log
their calls; the invoke shim really starts, restarts and stops `weaved daemon` in the test's
network namespace, as systemd would. deb-systemd-helper is the real one (enable state, .wants).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, Netns, netns, sh, wait_for

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian host"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

# lintian tags the package keeps, each explained in packaging/debian/lintian-overrides.
ACCEPTED_LINTIAN_TAGS = {
    "dir-or-file-in-opt",
    "unusual-interpreter",
    "script-not-executable",
    "executable-not-elf-or-script",
    "embedded-library",
}
UPGRADE_VERSION = "0.1.0+rebuild1"
SHIM_INVOKE = """#!/bin/sh
# deb-systemd-invoke ACTION UNIT, as systemd would carry it out for weaved.service.
echo "deb-systemd-invoke $*" >> "$SHIM_LOG"
stop() {
  [ -s "$SHIM_PID" ] || return 0
  kill "$(cat "$SHIM_PID")" 2>/dev/null || true
  while kill -0 "$(cat "$SHIM_PID")" 2>/dev/null; do sleep 0.1; done
  : > "$SHIM_PID"
}
case "$1" in
  start|restart)
    stop
    ip netns exec "$SHIM_NETNS" setsid /usr/bin/weaved daemon >> "$SHIM_DAEMON_LOG" 2>&1 &
    echo $! > "$SHIM_PID" ;;
  stop) stop ;;
esac
"""
# Offline operations on unit files (deb-systemd-helper's `systemctl --root=/ preset`) are real.
SHIM_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$SHIM_LOG"
case " $* " in *" --root="*) exec /bin/systemctl "$@" ;; esac
"""


def build(out: Path, version: str | None = None) -> Path:
    env = dict(os.environ)
    if version:
        env["DEB_VERSION"] = version
    script = str(REPO / "packaging" / "build-deb.sh")
    return Path(sh(["bash", script, str(out)], timeout=900, env=env).stdout.strip())


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("deb-a"))


def test_two_builds_are_byte_identical_and_leave_the_tree_clean(deb: Path, tmp_path: Path) -> None:
    before = sh(["git", "-C", str(REPO), "status", "--porcelain", "--ignored"]).stdout
    again = build(tmp_path)
    assert again.read_bytes() == deb.read_bytes()
    assert not (REPO / "build").exists()
    assert sh(["git", "-C", str(REPO), "status", "--porcelain", "--ignored"]).stdout == before


def test_payload_is_trimmed_and_bound_to_its_interpreter(deb: Path, tmp_path: Path) -> None:
    sh(["dpkg-deb", "-x", str(deb), str(tmp_path)])
    venv = tmp_path / "opt/weaved/venv"
    assert sorted(p.name for p in (venv / "bin").iterdir()) == [
        "python",
        "python3",
        "python3.11",
        "weaved",
        "weaved-cni",
    ]
    assert os.readlink(venv / "bin/python3.11") == "/usr/bin/python3.11"
    for script in ("weaved", "weaved-cni"):
        assert (venv / "bin" / script).read_text().startswith("#!/opt/weaved/venv/bin/python3.11\n")
    # The CNI plugin under Weave's names, where Debian's runtimes look for plugins.
    for name in ("weave-net", "weave-ipam"):
        assert os.readlink(tmp_path / "usr/lib/cni" / name) == "/opt/weaved/venv/bin/weaved-cni"
    site = venv / "lib/python3.11/site-packages"
    names = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not names & {"pip", "setuptools", "_distutils_hack", "cryptography", "wheel"}
    assert not list(tmp_path.rglob("*.pyc")) and not list(tmp_path.rglob("__pycache__"))
    assert "/tmp" not in (venv / "pyvenv.cfg").read_text()
    # Installed size: the old package was 53 MB.
    control = sh(["dpkg-deb", "-f", str(deb)]).stdout
    assert int(re.search(r"Installed-Size: (\d+)", control)[1]) < 25_000  # type: ignore[index]
    assert re.search(r"Depends: python3\.11, libc6 \(>= [\d.]+\), python3-nftables", control)
    # Debian's parts: man page and completion generated from the parser, protocol 87's name.
    man = gzip.decompress((tmp_path / "usr/share/man/man1/weaved.1.gz").read_bytes()).decode()
    assert man.startswith(".TH WEAVED 1") and '.SS "lab container add"' in man
    completion = (tmp_path / "usr/share/bash-completion/completions/weaved").read_text()
    assert "complete -o default -F _weaved weaved" in completion
    sh(["bash", "-n", str(tmp_path / "usr/share/bash-completion/completions/weaved")])
    protos = (tmp_path / "etc/iproute2/rt_protos.d/weaved.conf").read_text()
    assert re.search(r"^87\s+weaved$", protos, re.M)
    assert (tmp_path / "usr/share/doc/weaved/copyright").exists()
    assert (tmp_path / "usr/share/doc/weaved/changelog.gz").exists()


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed")
def test_lintian_reports_only_accepted_tags(deb: Path) -> None:
    proc = sh(["lintian", "--no-tag-display-limit", str(deb)], check=False, timeout=600)
    problems = [line for line in proc.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert problems == [], proc.stdout
    overrides = (REPO / "packaging/debian/lintian-overrides").read_text()
    tags = {m[1] for m in re.finditer(r"^weaved: (\S+)", overrides, re.M)}
    assert tags == ACCEPTED_LINTIAN_TAGS


# --- install, upgrade, remove, purge --------------------------------------------------------
def weave_paths() -> set[str]:
    """Every path on the host that could belong to weaved (dpkg's own records aside; /run only
    where the package puts things: other tests' labs live in /run too)."""
    roots = ["/etc", "/opt", "/usr", "/lib", "/var/lib", "/run/weave", "/run/systemd"]
    proc = sh(
        [
            "find",
            *roots,
            "-xdev",
            "-path",
            "/var/lib/dpkg",
            "-prune",
            "-o",
            "-iname",
            "*weave*",
            "-print",
        ],
        check=False,
        timeout=120,
    )
    return set(proc.stdout.splitlines())


class Dpkg:
    """The real dpkg, its maintainer scripts run in `ns` with systemd shims on PATH."""

    def __init__(self, ns: Netns, work: Path) -> None:
        self.ns, self.work = ns, work
        shims = work / "shims"
        shims.mkdir()
        (shims / "deb-systemd-invoke").write_text(SHIM_INVOKE)
        (shims / "systemctl").write_text(SHIM_SYSTEMCTL)
        for shim in shims.iterdir():
            shim.chmod(0o755)
        self.log = work / "calls.log"
        self.pidfile = work / "daemon.pid"
        self.spec = work / "weave.yaml"
        self.spec.write_text("version: 1\nexpose: [{cidr: 10.2.1.1/24}]\n")
        self.env = dict(
            os.environ,
            PATH=f"{shims}:{os.environ['PATH']}",
            SHIM_LOG=str(self.log),
            SHIM_PID=str(self.pidfile),
            SHIM_NETNS=ns.name,
            SHIM_DAEMON_LOG=str(work / "daemon.log"),
            WEAVED_SPEC=str(self.spec),
            WEAVED_STATE_DIR=str(work / "state"),
            WEAVED_SOCKET=str(work / "weaved.sock"),
        )

    def __call__(self, *args: str) -> str:
        script = (
            "mount -t tmpfs weaved-test /run/systemd && mkdir /run/systemd/system && "
            f'exec ip netns exec {self.ns.name} dpkg "$@"'
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "-", *args]
        deadline = time.monotonic() + 300
        while True:  # another dpkg/apt on this host holds the lock: wait for it
            proc = sh(argv, check=False, timeout=600, env=self.env)
            if proc.returncode == 0 or "lock" not in proc.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        calls = self.log.read_text() if self.log.exists() else ""
        self.log.write_text("")
        return calls

    def daemon_pid(self) -> int:
        text = self.pidfile.read_text().strip() if self.pidfile.exists() else ""
        return int(text) if text else 0

    def kill_daemon(self) -> None:
        if pid := self.daemon_pid():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    return (
        pid > 0
        and Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Dpkg]:
    if Path("/opt/weaved").exists() or Path("/usr/bin/weaved").exists():
        pytest.skip("a weaved package is already installed on this host")
    with netns("wdeb") as ns:
        dpkg = Dpkg(ns, tmp_path)
        try:
            yield dpkg
        finally:
            dpkg.kill_daemon()
            if Path("/var/lib/dpkg/info/weaved.list").exists():
                sh(["dpkg", "--purge", "weaved"], check=False, timeout=300)


def test_install_upgrade_remove_purge(deb: Path, host: Dpkg, tmp_path: Path) -> None:
    before = weave_paths()
    upgrade = build(tmp_path / "upgrade", UPGRADE_VERSION)
    ns = host.ns

    calls = host("-i", str(deb))
    assert "deb-systemd-invoke start weaved.service" in calls
    assert Path("/etc/systemd/system/multi-user.target.wants/weaved.service").is_symlink()
    assert list(Path("/opt/weaved").rglob("*.pyc")), "postinst byte-compiles the environment"
    assert sh(["/usr/bin/weaved", "--version"]).stdout.startswith("weaved ")
    sh(["/usr/bin/weaved", "validate", "/usr/share/weaved/examples/services.yaml"])
    first = host.daemon_pid()
    sock = Path(host.env["WEAVED_SOCKET"])
    wait_for(lambda: sock.exists(), timeout=30)
    # The packaged daemon converged the test namespace and reached libnftables.
    wait_for(lambda: "weaved" in ns.nft("list", "tables").stdout, timeout=30)
    # iproute2 knows protocol 87 by name.
    ns.ip("route", "show", "proto", "weaved")

    calls = host("-i", str(upgrade))
    assert "deb-systemd-invoke restart weaved.service" in calls, calls
    assert "stop" not in calls, "an upgrade must not stop the service for good"
    second = host.daemon_pid()
    assert second != first and not alive(first) and alive(second)
    assert UPGRADE_VERSION in sh(["dpkg-query", "-W", "weaved"]).stdout
    wait_for(lambda: sock.exists(), timeout=30)

    calls = host("-r", "weaved")
    assert "deb-systemd-invoke stop weaved.service" in calls
    assert not alive(second)
    # `weaved reset` in prerm: nothing weaved owned is left in the namespace.
    assert "weaved" not in ns.nft("list", "tables").stdout
    assert ns.ip("link", "show", "weave", check=False).returncode != 0

    host("--purge", "weaved")
    left = weave_paths() - before
    assert left == set(), f"purge left: {sorted(left)}"
    assert not Path("/opt/weaved").exists()
    enabled = Path("/var/lib/systemd/deb-systemd-helper-enabled")
    assert not list(enabled.rglob("weaved*"))
