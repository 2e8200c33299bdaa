"""The CNI plugin driven exactly as a runtime drives it (CNI_* in the environment, the conf on
stdin, run in the host's namespace) against a real `weaved daemon`: containers are named
network namespaces, chained IPAM is Debian's host-local (containernetworking-plugins)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Netns, saved_text, stop_process, wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

CNI_PATH = "/usr/lib/cni"
SPEC = """version: 1
peer: {name: "3e:80:e7:5a:63:c1"}
ipalloc: {range: 10.32.0.0/12, default_subnet: 10.32.0.0/16}
expose: [{cidr: "net:default"}]
"""


def conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "weave", "type": "weave-net", **extra}


class Host:
    def __init__(self, ns: Netns, tmp: Path) -> None:
        self.ns, self.tmp = ns, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.spec = tmp / "weave.yaml"
        self.plugin = tmp / "bin" / "weave-net"  # the name Weave's conflists use
        self.plugin.parent.mkdir()
        self.plugin.write_text(f"#!{sys.executable}\nfrom weaved.cni.plugin import main\nmain()\n")
        self.plugin.chmod(0o755)

    def cni(
        self,
        command: str,
        cid: str,
        netns: str | None,
        cfg: dict[str, Any],
        args: str = "",
        role: str = "weave-net",
    ) -> tuple[int, Any]:
        exe = self.plugin.parent / role  # the name it runs by picks the role
        if not exe.exists():
            exe.symlink_to(self.plugin)
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
            "CNI_ARGS": args,
            "WEAVED_SOCKET": str(self.tmp / "weaved.sock"),
        }
        if netns is not None:
            env["CNI_NETNS"] = netns if netns.startswith("/") else f"/run/netns/{netns}"
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, str(exe)],
            env=env,
            input=json.dumps(cfg),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with Netns("wdcni") as ns:
        h = Host(ns, tmp_path)
        h.spec.write_text(SPEC)
        h.proc = ns.popen_weaved(h.spec, "daemon", "--resync", "2", log=tmp_path / "daemon.log")
        try:
            wait_for(
                lambda: "converged at" in ns.weaved(h.spec, "status", check=False).stdout,
                timeout=30,
            )
            wait_for(lambda: "inet " in ns.ip("-4", "addr", "show", "weave").stdout, timeout=30)
            yield h
        finally:
            if h.proc is not None:
                stop_process(h.proc)  # the one running now (a test may have restarted it)


def addr_of(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def test_add_ping_check_del_with_weaved_ipam(host: Host) -> None:
    with Netns("wdcnic") as c1, Netns("wdcnic") as c2:
        rc, r1 = host.cni("ADD", "c1aaaaaaaaaa", c1.name, conf("1.0.0"), "K8S_POD_NAME=web")
        assert rc == 0, r1
        rc, r2 = host.cni("ADD", "c2bbbbbbbbbb", c2.name, conf("0.3.1", hairpinMode=True))
        assert rc == 0, r2
        a1, a2 = addr_of(r1), addr_of(r2)
        assert a1 != a2 and a1.startswith("10.32.") and a2.startswith("10.32.")
        assert "version" not in r1["ips"][0] and r2["ips"][0]["version"] == "4"
        assert r1["interfaces"][1] == {
            "name": "eth0",
            "mac": r1["interfaces"][1]["mac"],
            "sandbox": f"/run/netns/{c1.name}",
        }
        # No routes in the conf: a default route via the bridge's (exposed) address.
        gw = r1["ips"][0]["gateway"]
        assert f"default via {gw} dev eth0" in c1.ip("route").stdout
        c1.run(["ping", "-c", "2", "-W", "2", a2])
        # K8S_POD_NAME is c1's name in weaveDNS, reached at the link address the result names.
        assert r1["dns"]["nameservers"] == ["169.254.53.53"]
        dig = ["dig", "+short", "+time=2", "+tries=3", "@169.254.53.53", "web.weave.local"]
        assert c2.run(dig).stdout.split() == [a1]
        # The veths are weaved's bridge ports (planned, so nothing to change), hairpin as asked.
        veth2 = r2["interfaces"][0]["name"]
        links = json.loads(host.ns.run(["bridge", "-j", "-d", "link", "show"]).stdout)
        assert {x["ifname"]: x.get("hairpin") for x in links}[veth2] is True
        wait_for(
            lambda: (
                host.ns.weaved(host.spec, "plan", "--detailed-exitcode", check=False).returncode
                == 0
            ),
            timeout=10,
        )
        # ADD again gives the same address; CHECK is fine; tampering makes CHECK fail.
        rc, again = host.cni("ADD", "c1aaaaaaaaaa", c1.name, conf("1.0.0"))
        assert rc == 0 and addr_of(again) == a1
        assert host.cni("CHECK", "c1aaaaaaaaaa", c1.name, conf("1.0.0", prevResult=r1))[0] == 0
        c1.ip("addr", "flush", "dev", "eth0")
        rc, err = host.cni("CHECK", "c1aaaaaaaaaa", c1.name, conf("1.0.0", prevResult=r1))
        assert rc == 1 and err["code"] == 5 and f"address {a1}/" in err["msg"]
        # DEL releases: the veth goes, DEL again is fine, a new container may get the address.
        assert host.cni("DEL", "c1aaaaaaaaaa", c1.name, conf("1.0.0"))[0] == 0
        assert host.cni("DEL", "c1aaaaaaaaaa", c1.name, conf("1.0.0"))[0] == 0
        assert host.cni("DEL", "c1aaaaaaaaaa", None, conf("1.0.0"))[0] == 0
        assert "eth0" not in c1.ip("link").stdout
        assert "vethweplc" in host.ns.ip("link").stdout  # c2's is still there
        assert host.cni("DEL", "c2bbbbbbbbbb", c2.name, conf("0.3.1"))[0] == 0
        assert "vethweplc" not in host.ns.ip("link").stdout


def test_default_route_exposes_the_subnet_when_the_bridge_has_no_address(host: Host) -> None:
    """Weave's plugin gives the bridge an address (weave:expose) for the default route; weaved
    adds that `expose` to the spec and the ADD goes on once the daemon applied it."""
    host.spec.write_text(SPEC.replace('expose: [{cidr: "net:default"}]\n', ""))
    wait_for(lambda: "inet 10." not in host.ns.ip("-4", "addr", "show", "weave").stdout, timeout=30)
    with Netns("wdcnic") as c1:
        rc, r1 = host.cni("ADD", "ex1", c1.name, conf(ipam={"subnet": "10.35.0.0/16"}))
        assert rc == 0, r1
        gw = r1["ips"][0]["gateway"]
        assert gw.startswith("10.35.") and f"{gw}/16" in host.ns.ip("addr", "show", "weave").stdout
        assert f"default via {gw} dev eth0" in c1.ip("route").stdout
        assert "net:10.35.0.0/16" in host.spec.read_text()
        host.ns.run(["ping", "-c", "2", "-W", "2", addr_of(r1)])  # the host reaches it
        # Routes in the conf: nothing is exposed for them.
        with Netns("wdcnic") as c2:
            routed = conf(ipam={"subnet": "10.36.0.0/16", "routes": [{"dst": "10.32.0.0/12"}]})
            rc, r2 = host.cni("ADD", "ex2", c2.name, routed)
            assert rc == 0, r2
            assert "net:10.36" not in host.spec.read_text()
            assert "default" not in c2.ip("route").stdout
            assert host.cni("DEL", "ex2", c2.name, routed)[0] == 0
        assert host.cni("DEL", "ex1", c1.name, conf())[0] == 0


def test_chained_host_local_ipam(host: Host, tmp_path: Path) -> None:
    if not Path(CNI_PATH, "host-local").exists():
        pytest.skip("needs host-local (apt-get install containernetworking-plugins)")
    data = tmp_path / "host-local"
    ipam = {"type": "host-local", "subnet": "10.40.7.0/24", "dataDir": str(data)}
    cfg = conf("0.4.0", ipam=ipam)
    with Netns("wdcnic") as c1, Netns("wdcnic") as c2:
        rc, r1 = host.cni("ADD", "hl1", c1.name, cfg)
        assert rc == 0, r1
        rc, r2 = host.cni("ADD", "hl2", c2.name, cfg)
        assert rc == 0, r2
        assert addr_of(r1) == "10.40.7.2" and addr_of(r2) == "10.40.7.3"
        c1.run(["ping", "-c", "2", "-W", "2", addr_of(r2)])
        assert (data / "weave" / "10.40.7.2").exists()
        assert host.cni("DEL", "hl1", c1.name, cfg)[0] == 0
        assert not (data / "weave" / "10.40.7.2").exists()
        assert host.cni("DEL", "hl2", c2.name, cfg)[0] == 0


def test_errors_a_runtime_can_act_on(host: Host) -> None:
    with Netns("wdcnic") as c1:
        rc, err = host.cni("ADD", "e1", "wdcni-nosuchns", conf())
        assert rc == 1 and err["code"] == 3 and "does not exist" in err["msg"]
        rc, err = host.cni("ADD", "e1", c1.name, {"cniVersion": "9.9.9"})
        assert rc == 1 and err["code"] == 1
        rc, err = host.cni("ADD", "e1", c1.name, conf(ipam={"type": "no-such-ipam"}))
        assert rc == 1 and err["code"] == 7 and "not found in CNI_PATH" in err["msg"]
        not_a_netns = host.tmp / "plain-file"
        not_a_netns.write_text("")
        rc, err = host.cni("ADD", "e1", str(not_a_netns), conf())
        assert rc == 1 and err["code"] == 5 and str(not_a_netns) in err["msg"], err
        assert "vethweplc" not in host.ns.ip("link").stdout  # nothing half-made is left
        rc, ver = host.cni("VERSION", "", None, conf())
        assert rc == 0 and "1.0.0" in ver["supportedVersions"]
        rc, ok = host.cni("ADD", "e2", c1.name, conf())
        assert rc == 0, ok
        assert host.proc is not None
        stop_process(host.proc)
        rc, err = host.cni("ADD", "e1", c1.name, conf())
        assert rc == 1 and err["code"] == 11
        assert err["msg"] == f"weaved daemon not running at {host.tmp / 'weaved.sock'}"
        # `weaved reset` removes what weaved owns, the CNI veths included.
        assert "vethweplc" in host.ns.ip("link").stdout
        host.ns.weaved(host.spec, "reset")
        assert "vethweplc" not in host.ns.ip("link").stdout
        assert not (host.tmp / "state" / "cni.json").exists()
        assert not (host.tmp / "state" / "cni.json.log").exists()


def restart(host: Host, *, wipe_ipam: bool = False, wipe_state: bool = False) -> None:
    assert host.proc is not None
    stop_process(host.proc)
    if wipe_state:
        shutil.rmtree(host.tmp / "state")
    elif wipe_ipam:
        for path in (host.tmp / "state").iterdir():
            if path.name != "cni.json" and path.is_file() and "ipam" in path.name:
                path.unlink()
    log = host.tmp / "daemon.log"
    host.proc = host.ns.popen_weaved(host.spec, "daemon", "--resync", "2", log=log)
    wait_for(
        lambda: "converged at" in host.ns.weaved(host.spec, "status", check=False).stdout,
        timeout=30,
    )


@pytest.mark.parametrize("wipe_ipam", [False, True], ids=["restart", "restart-empty-ipam"])
def test_daemon_restart_keeps_cni_attachments(host: Host, wipe_ipam: bool) -> None:
    with Netns("wdcnic") as c1, Netns("wdcnic") as c2:
        rc, r1 = host.cni("ADD", "r1", c1.name, conf(), "K8S_POD_NAME=kept")
        assert rc == 0, r1
        veth = r1["interfaces"][0]["name"]

        def alias() -> str:
            return str(json.loads(host.ns.ip("-j", "link", "show", veth).stdout)[0].get("ifalias"))

        assert alias().startswith("weaved-cni id=r1 if=eth0 ip=")
        host.ns.ip("link", "set", "dev", veth, "alias", "")  # as plugged by an older weaved
        assert alias() == "None"
        restart(host, wipe_ipam=wipe_ipam)
        assert alias().startswith("weaved-cni id=r1 if=eth0 ip=")  # the record written back
        # Re-observed, not recreated: CHECK passes, the address is still held (not reused).
        assert host.cni("CHECK", "r1", c1.name, conf(prevResult=r1))[0] == 0
        rc, r2 = host.cni("ADD", "r2", c2.name, conf())
        assert rc == 0, r2
        assert addr_of(r2) != addr_of(r1)
        c2.run(["ping", "-c", "2", "-W", "2", addr_of(r1)])
        assert host.cni("DEL", "r1", c1.name, conf())[0] == 0
        assert host.cni("DEL", "r2", c2.name, conf())[0] == 0


def test_restart_with_empty_state_reclaims_from_the_kernel(host: Host, tmp_path: Path) -> None:
    """Weave's relaunch reclaim: the state directory (cni.json, IPAM's ring) is lost; each CNI
    veth's alias still says whose it is, so the addresses are claimed again before any new ADD
    is answered, the names come back, and DEL still cleans up."""
    chained = Path(CNI_PATH, "host-local").exists()
    hl = conf(ipam={"type": "host-local", "subnet": "10.40.7.0/24", "dataDir": str(tmp_path)})
    with Netns("wdcnic") as c1, Netns("wdcnic") as c2, Netns("wdcnic") as c3:
        rc, r1 = host.cni("ADD", "re1" + "a" * 61, c1.name, conf(), "K8S_POD_NAME=kept")
        assert rc == 0, r1
        if chained:
            rc, r2 = host.cni("ADD", "re2", c2.name, hl)
            assert rc == 0, r2
        a1 = addr_of(r1)
        restart(host, wipe_state=True)
        assert not (host.tmp / "state" / "cni.json").exists() or "re1" in saved_text(
            host.tmp / "state" / "cni.json"
        )
        ps = host.ns.weaved(host.spec, "ps").stdout
        assert f"re1aaaaaaaaa {r1['interfaces'][1]['mac']} {r1['ips'][0]['address']}" in ps
        listing = host.ns.weaved(host.spec, "status", "cni").stdout
        assert "re1aaaaaaaaa eth0 vethweplc" in listing and "dns=kept" in listing
        assert ("re2 eth0" in listing and "ipam=chained" in listing) == chained
        assert "Service: cni" in host.ns.weaved(host.spec, "status").stdout
        # Not handed to someone else: the next container gets another address.
        rc, r3 = host.cni("ADD", "re3", c3.name, conf())
        assert rc == 0, r3
        assert addr_of(r3) != a1
        assert host.cni("CHECK", "re1" + "a" * 61, c1.name, conf(prevResult=r1))[0] == 0
        dig = ["dig", "+short", "+time=2", "+tries=3", "@169.254.53.53", "kept.weave.local"]
        assert c3.run(dig).stdout.split() == [a1]
        c3.run(["ping", "-c", "2", "-W", "2", a1])
        # DEL cleans up as before: the veth goes and the address is free again.
        assert host.cni("DEL", "re1" + "a" * 61, c1.name, conf())[0] == 0
        assert "eth0" not in c1.ip("link").stdout
        assert "re1aaaaaaaaa" not in host.ns.weaved(host.spec, "ps").stdout
        if chained:
            assert host.cni("DEL", "re2", c2.name, hl)[0] == 0
            assert not (tmp_path / "weave" / addr_of(r2)).exists()
        with Netns("wdcnic") as c4:
            rc, r4 = host.cni("ADD", "re4", c4.name, conf())
            assert rc == 0 and addr_of(r4) == a1, r4  # released by DEL, given out again
            assert host.cni("DEL", "re4", c4.name, conf())[0] == 0
        assert host.cni("DEL", "re3", c3.name, conf())[0] == 0
        assert "vethweplc" not in host.ns.ip("link").stdout


def run_conflist(
    host: Host,
    command: str,
    cid: str,
    netns: str,
    conflist: dict[str, Any],
    runtime: dict[str, Any],
) -> dict[str, Any] | None:
    """What libcni does with a conflist: each plugin in turn (DEL in reverse), ADD's result of
    one as `prevResult` of the next, `runtimeConfig` for the capabilities a plugin declares."""
    plugins = conflist["plugins"] if command == "ADD" else list(reversed(conflist["plugins"]))
    prev: dict[str, Any] | None = None
    for plugin in plugins:
        cfg = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        caps = plugin.get("capabilities", {})
        cfg["runtimeConfig"] = {k: v for k, v in runtime.items() if caps.get(k)}
        if prev is not None:
            cfg["prevResult"] = prev
        if plugin["type"] == "weave-net":
            rc, out = host.cni(command, cid, netns, cfg)
        else:
            env = {
                **os.environ,
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": cid,
                "CNI_NETNS": f"/run/netns/{netns}",
                "CNI_IFNAME": "eth0",
                "CNI_PATH": CNI_PATH,
            }
            proc = subprocess.run(
                ["ip", "netns", "exec", host.ns.name, f"{CNI_PATH}/{plugin['type']}"],
                env=env,
                input=json.dumps(cfg),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            rc, out = proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None
        assert rc == 0, (plugin["type"], out)
        if command == "ADD":
            prev = out
    return prev


def test_conflist_with_portmap(host: Host) -> None:
    if not Path(CNI_PATH, "portmap").exists():
        pytest.skip("needs portmap (apt-get install containernetworking-plugins)")
    from weaved.cni.setup import CONFLIST

    ports = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
    with Netns("wdcnic") as c1:
        result = run_conflist(host, "ADD", "pm1", c1.name, CONFLIST, ports)
        assert result is not None
        server = subprocess.Popen(
            ["ip", "netns", "exec", c1.name, sys.executable, "-c", SERVE_ONCE],
            stdout=subprocess.PIPE,
        )
        try:
            gw = result["ips"][0]["gateway"]  # the host's address on the bridge
            wait_for(lambda: c1.run(["ss", "-ltn"]).stdout.count(":80 ") > 0, timeout=10)
            got = host.ns.run(["curl", "-s", "--max-time", "5", f"http://{gw}:18080/"]).stdout
            assert got.startswith("hello from pm1")
        finally:
            server.kill()
            server.wait()
        run_conflist(host, "DEL", "pm1", c1.name, CONFLIST, ports)
        assert "eth0" not in c1.ip("link").stdout


SERVE_ONCE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(1)
c, _ = s.accept(); c.recv(1024)
c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 14\\r\\n\\r\\nhello from pm1")
c.close()
"""


def test_namespace_removed_without_del_is_released(host: Host) -> None:
    with Netns("wdcnic") as c1:
        rc, r1 = host.cni("ADD", "gone1", c1.name, conf())
        assert rc == 0, r1
    # The runtime lost the container without telling us: the daemon notices within seconds.
    records = host.tmp / "state" / "cni.json"
    wait_for(lambda: "gone1" not in saved_text(records), timeout=15)
    with Netns("wdcnic") as c2:
        rc, r2 = host.cni("ADD", "gone2", c2.name, conf())
        assert rc == 0 and addr_of(r2) == addr_of(r1)  # given out again: it was released
        assert host.cni("DEL", "gone2", c2.name, conf())[0] == 0


def test_weave_ipam_under_the_standard_bridge_plugin(host: Host) -> None:
    """`weave-ipam` as another plugin's IPAM: Debian's `bridge` runs it from CNI_PATH."""
    if not Path(CNI_PATH, "bridge").exists():
        pytest.skip("needs bridge (apt-get install containernetworking-plugins)")
    ipam_plugin = host.plugin.parent / "weave-ipam"
    ipam_plugin.symlink_to(host.plugin)
    cfg = {
        "cniVersion": "1.0.0",
        "name": "br",
        "type": "bridge",
        "bridge": "cnibr0",
        "ipam": {"type": "weave-ipam", "subnet": "10.33.0.0/16"},
    }
    env = {
        **os.environ,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{ipam_plugin.parent}:{CNI_PATH}",
        "WEAVED_SOCKET": str(host.tmp / "weaved.sock"),
    }

    def bridge(command: str, cid: str, ns: str) -> tuple[int, Any]:
        run_env = {**env, "CNI_COMMAND": command, "CNI_CONTAINERID": cid}
        run_env["CNI_NETNS"] = f"/run/netns/{ns}"
        proc = subprocess.run(
            ["ip", "netns", "exec", host.ns.name, f"{CNI_PATH}/bridge"],
            env=run_env,
            input=json.dumps(cfg),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None

    with Netns("wdcnic") as c1, Netns("wdcnic") as c2:
        rc, r1 = bridge("ADD", "bi1", c1.name)
        assert rc == 0, r1
        rc, r2 = bridge("ADD", "bi2", c2.name)
        assert rc == 0, r2
        a1, a2 = addr_of(r1), addr_of(r2)
        assert a1 != a2 and a1.startswith("10.33.") and a2.startswith("10.33.")
        c1.run(["ping", "-c", "2", "-W", "2", a2])
        assert "vethweplc" not in host.ns.ip("link").stdout  # the interface is bridge's
        assert bridge("DEL", "bi1", c1.name)[0] == 0
        assert bridge("DEL", "bi1", c1.name)[0] == 0
        rc, r3 = bridge("ADD", "bi3", c1.name)
        assert rc == 0 and addr_of(r3) == a1  # released by DEL, given out again
        assert bridge("DEL", "bi3", c1.name)[0] == 0
        assert bridge("DEL", "bi2", c2.name)[0] == 0
    host.ns.ip("link", "del", "cnibr0", check=False)


def test_weave_830_cni_plugin(host: Host) -> None:
    """Weave's test/830_cni_plugin_test.sh: confs without cniVersion, CNI_NETNS as
    /proc/PID/ns/net, `weave-ipam` with a route; a container removed without DEL frees its
    address for the next one, and traffic to that address reaches the new container."""
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(ns: Netns) -> str:
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "300"])
        procs[ns.name] = proc
        wait_for(lambda: Path(f"/proc/{proc.pid}/ns/net").exists(), timeout=5)
        return f"/proc/{proc.pid}/ns/net"

    def connect(cid: str, netns_path: str, cfg: dict[str, Any]) -> str:
        env = {
            **os.environ,
            "CNI_VERSION": "1",
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": cid,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": netns_path,
            "CNI_PATH": CNI_PATH,
            "WEAVED_SOCKET": str(host.tmp / "weaved.sock"),
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", host.ns.name, str(host.plugin)],
            env=env,
            input=json.dumps(cfg),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return addr_of(json.loads(proc.stdout))

    plain = {"name": "weave", "type": "weave-net"}
    routed = {**plain, "ipam": {"type": "weave-ipam", "routes": [{"dst": "10.32.0.0/12"}]}}
    try:
        with Netns("wdcnic") as c1, Netns("wdcnic") as c2, Netns("wdcnic") as c3:
            c1ip = connect("c1", start(c1), plain)
            c2ip = connect("c2", start(c2), routed)
            assert "10.32.0.0/12 via" in c2.ip("route").stdout
            c1.run(["ping", "-c", "2", "-W", "2", c2ip])
            c2.run(["ping", "-c", "2", "-W", "2", c1ip])
            # `docker rm -f c2`: the process goes, no DEL is sent.
            procs[c2.name].kill()
            procs[c2.name].wait()
            c2.ip("link", "del", "eth0", check=False)
            records = host.tmp / "state" / "cni.json"
            wait_for(lambda: '"c2"' not in saved_text(records), timeout=15)
            assert connect("c3", start(c3), plain) == c2ip
            c1.run(["ping", "-c", "2", "-W", "2", c2ip])
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_gc_releases_what_the_runtime_no_longer_has(host: Host) -> None:
    with Netns("wdcnic") as c1, Netns("wdcnic") as c2, Netns("wdcnic") as c3:
        assert host.cni("ADD", "keep", c1.name, conf("1.1.0"))[0] == 0
        rc, r2 = host.cni("ADD", "stale", c2.name, conf("1.1.0"))
        assert rc == 0, r2
        # An address weave-ipam gave another network's interface: not weave-net's to collect.
        c3.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        other = {"cniVersion": "1.1.0", "name": "br", "type": "bridge"}
        ipam_cfg = {**other, "ipam": {"type": "weave-ipam"}}
        rc, r3 = host.cni("ADD", "other", c3.name, ipam_cfg, role="weave-ipam")
        assert rc == 0, r3
        gc = conf(
            "1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
        )
        assert host.cni("GC", "", None, gc)[0] == 0
        assert host.cni("STATUS", "", None, conf("1.1.0"))[0] == 0
        records = saved_text(host.tmp / "state" / "cni.json")
        assert '"keep"' in records and '"stale"' not in records and '"other"' in records
        assert "eth0" not in c2.ip("link").stdout
        # That network's own GC (its interface plugin passes it on to weave-ipam) does.
        gc_other = {**ipam_cfg, "cni.dev/valid-attachments": []}
        assert host.cni("GC", "", None, gc_other, role="weave-ipam")[0] == 0
        records = saved_text(host.tmp / "state" / "cni.json")
        assert '"keep"' in records and '"other"' not in records
        assert host.cni("DEL", "keep", c1.name, conf("1.1.0"))[0] == 0
        assert host.proc is not None
        stop_process(host.proc)
        rc, err = host.cni("STATUS", "", None, conf("1.1.0"))
        assert rc == 1 and err["code"] == 50 and "not running" in err["msg"], err
