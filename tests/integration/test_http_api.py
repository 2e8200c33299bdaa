"""Weave's HTTP API on 127.0.0.1:6784 (`http_api.enabled`), served by `weaved daemon` in a
private namespace and called with curl as Weave's scripts and CNI plugin call it: text answers
and status codes as Weave 2.8.1's (see ../shared/weave-wire/outputs/*/ for recorded ones).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.docker_image import IMAGE, busybox_available, import_busybox, run_container
from tests.helpers import Dockerd, Netns, netns, stop_process, wait_for
from tests.wire import OUTPUTS, needs_wire

SPEC = (
    'version: 1\npeer: {name: "3e:80:e7:5a:63:b8"}\nipalloc: {range: 10.32.0.0/12}\n'
    "http_api: {enabled: true}\n"
)


def curl(ns: Netns, method: str, path: str, *extra: str) -> tuple[int, str]:
    proc = ns.run(
        [
            "curl",
            "-s",
            "-g",  # no globbing: `{{.Router.Name}}` is a Go template
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *extra,
            f"http://127.0.0.1:6784{path}",
        ],
        check=False,
    )
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


@contextmanager
def daemon(tmp_path: Path, text: str = SPEC, ns: Netns | None = None) -> Iterator[Netns]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(text)
    with contextlib.ExitStack() as stack:
        if ns is None:
            ns = stack.enter_context(netns("wdh"))
            ns.ip("link", "set", "lo", "up")
        proc = ns.popen_weaved(spec, "daemon", "--resync", "2", log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: curl(ns, "GET", "/status")[0] == 200, timeout=30, interval=0.2)
            yield ns
        finally:
            assert stop_process(proc) == 0, (tmp_path / "daemon.log").read_text()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Netns]:
    with daemon(tmp_path) as ns:
        yield ns


def test_status_report_and_sections(api: Netns) -> None:
    code, body = curl(api, "GET", "/status")
    assert code == 200 and "Service: router" in body
    for section in ("peers", "connections", "targets", "dns", "ipam"):
        assert curl(api, "GET", f"/status/{section}")[0] == 200, section
    code, body = curl(api, "GET", "/report")
    assert code == 200 and "Router" in json.loads(body)
    assert curl(api, "GET", "/ipinfo/defaultsubnet") == (200, "10.32.0.0/12")
    assert curl(api, "GET", "/nonsense")[0] == 404
    code, body = curl(api, "GET", "/metrics")
    assert code == 200 and "weaved_spec_valid 1" in body
    # Weave's status port serves the read-only part too.
    for path in ("/status/ipam", "/status/peers"):
        code, body = curl(api, "GET", path, "--connect-to", "127.0.0.1:6784:127.0.0.1:6782")
        assert code == 200 and curl(api, "GET", path)[1] == body, path
    code, body = curl(api, "GET", "/report", "--connect-to", "::127.0.0.1:6782")
    assert code == 200 and "Router" in json.loads(body)
    assert curl(api, "PUT", "/ip/x/10.32.0.9/12", "--connect-to", "::127.0.0.1:6782")[0] == 404
    code, body = curl(api, "DELETE", "/peer/02:00:00:00:00:99")
    assert code in (200, 400), body


def test_ip_allocate_lookup_claim_free_as_weaves_cni_plugin_does(api: Netns) -> None:
    code, first = curl(api, "POST", "/ip/c1")
    assert code == 200 and first.startswith("10.") and first.endswith("/12")
    assert curl(api, "POST", "/ip/c1") == (200, first)  # the same ident: the same address
    assert curl(api, "GET", "/ip/c1") == (200, first)
    code, sub = curl(api, "POST", "/ip/c2/10.32.5.0/24")
    assert code == 200 and sub.startswith("10.32.5.") and sub.endswith("/24")
    assert curl(api, "PUT", "/ip/c3/10.32.9.9/12")[0] == 204
    code, body = curl(api, "PUT", "/ip/c4/10.32.9.9/12")
    assert code == 400 and body.startswith("Unable to claim:")
    owned = json.loads(curl(api, "GET", "/ip")[1])["owned"]
    assert {o["containerid"] for o in owned} >= {"c1", "c2", "c3"}
    assert curl(api, "DELETE", "/ip/c3/10.32.9.9")[0] == 204
    code, body = curl(api, "DELETE", "/ip/c3/10.32.9.9")
    assert code == 400 and body.startswith("Unable to free:")
    assert curl(api, "DELETE", "/ip/c1")[0] == 204
    assert curl(api, "GET", "/ip/c1") == (200, "")
    assert curl(api, "POST", "/ip/c5/not-an-ip/24")[0] == 400


def test_names_put_and_delete(api: Netns) -> None:
    assert curl(api, "GET", "/domain") == (200, "weave.local.")
    assert curl(api, "PUT", "/name/c9/10.32.0.9", "-d", "fqdn=web.weave.local")[0] == 204
    status = curl(api, "GET", "/status/dns")[1]
    assert "web" in status and "10.32.0.9" in status, status
    assert curl(api, "DELETE", "/name/c9/10.32.0.9", "-d", "fqdn=web.weave.local")[0] == 204
    assert "10.32.0.9" not in curl(api, "GET", "/status/dns")[1]


def test_delete_peer_leaves_the_network_as_weave_reset(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns() as ns:
        ns.ip("link", "set", "lo", "up")
        proc = ns.popen_weaved(spec, "daemon", log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: curl(ns, "GET", "/status")[0] == 200, timeout=30, interval=0.2)
            assert curl(ns, "DELETE", "/peer")[0] == 204
            wait_for(lambda: proc.poll() is not None, timeout=20, interval=0.2)
            assert proc.returncode == 3  # EXIT_LEFT: systemd does not bring it back
        finally:
            stop_process(proc)


STATUS_PORT = ("--connect-to", "::127.0.0.1:6782")
RECORDED = sorted(OUTPUTS.glob("*/*/http-status-codes.json")) if OUTPUTS.is_dir() else []
# Weave's recorded files: name → (method, path, headers); the codes file names GET routes.
RECORDED_BODIES = {
    "ipinfo-defaultsubnet.txt": "/ipinfo/defaultsubnet",
    "ipinfo-tracker.txt": "/ipinfo/tracker",
    "domain.txt": "/domain",
    "dns-address.txt": "/dns-address",
    "dns-address-port.txt": "/dns-address-port",
}


def _shape(text: str) -> str:
    """A JSON body with its values' digits and addresses blurred: the form, not the network."""
    text = re.sub(r"\d+\.\d+\.\d+\.\d+(/\d+)?", "ADDR", text)
    text = re.sub(r'"c\d+"', '"ID"', text)
    return re.sub(r"\d+", "N", text)


@needs_wire
def test_every_recorded_weave_answer_matches(tmp_path: Path) -> None:
    """Walks Weave 2.8.1's recorded answers (`outputs/*/*/`): every route in
    http-status-codes.json with the same code, on 6784 and (Weave serves them there too) on
    the status port; the text bodies byte for byte where the network does not matter (range,
    domain, DNS address), and the JSON ones (`GET /ip`, `GET /name`) in form."""
    assert RECORDED, f"no http-status-codes.json under {OUTPUTS}"
    spec = SPEC + "dns: {listen: '127.0.0.1:53'}\n"
    with daemon(tmp_path, spec) as ns:
        for recorded in RECORDED:
            for name, code in json.loads(recorded.read_text()).items():
                path = "/" + name.replace("-", "/", 1)
                for extra in ((), STATUS_PORT):
                    got, body = curl(ns, "GET", path, *extra)
                    assert got == int(code), (recorded, path, extra, body)
        case = OUTPUTS / "two-peers-plain" / "host1"  # allocations and names recorded
        for file, path in RECORDED_BODIES.items():
            assert curl(ns, "GET", path) == (200, (case / file).read_text()), path
        assert curl(ns, "POST", "/ip/c1")[0] == 200
        assert curl(ns, "PUT", "/name/c1/10.32.0.1", "-d", "fqdn=c1.weave.local")[0] == 204
        code, owned = curl(ns, "GET", "/ip")
        assert code == 200 and _shape(owned) == _shape((case / "ip.json").read_text())
        code, names = curl(ns, "GET", "/name", "-H", "Accept: application/json")
        first = json.loads((case / "name.json").read_text())[0]
        assert code == 200 and _shape(json.dumps(json.loads(names)[0])) == _shape(json.dumps(first))
        code, report = curl(ns, "GET", "/report", "-H", "Accept: application/json")
        weave_report = json.loads((case / "report.json").read_text())
        ours = json.loads(report)
        assert code == 200 and list(weave_report) == [k for k in ours if k in weave_report]
        for key in ("IPAM", "DNS"):
            assert set(weave_report[key]) <= set(ours[key]), key
        # The status port's /status: the same text (up to the reconciler's last-converge line).
        port, api = (
            curl(ns, "GET", "/status", *x)[1].split("Service: reconciler")[0]
            for x in ((), STATUS_PORT)
        )
        assert port == api and "Service: router" in port


def test_connect_forget_and_expose_edit_the_spec_and_take_effect(
    api: Netns, tmp_path: Path
) -> None:
    spec = tmp_path / "weave.yaml"
    code, body = curl(api, "POST", "/connect", "-d", "peer=192.0.2.9", "-d", "peer=192.0.2.10:6783")
    assert (code, body) == (200, "")
    assert "192.0.2.9" in spec.read_text() and "192.0.2.10:6783" in spec.read_text()
    wait_for(lambda: "192.0.2.10\n" in curl(api, "GET", "/status/targets")[1], timeout=20)
    # One bad peer: Weave's 400 and its text, the good one kept all the same.
    code, body = curl(api, "POST", "/connect", "-d", "peer=:99", "-d", "peer=192.0.2.11")
    assert (code, body) == (400, 'invalid peer name ":99", should be host[:port]\n')
    assert "192.0.2.11" in spec.read_text()
    assert curl(api, "POST", "/forget", "-d", "peer=192.0.2.9") == (200, "")
    assert "192.0.2.9\n" not in spec.read_text() and "192.0.2.11" in spec.read_text()
    code, _ = curl(api, "POST", "/connect", "-d", "peer=192.0.2.12", "-d", "replace=true")
    assert code == 200 and "192.0.2.11" not in spec.read_text()
    wait_for(lambda: "192.0.2.10" not in curl(api, "GET", "/status/targets")[1], timeout=20)
    assert curl(api, "GET", "/connect")[0] == 405

    assert curl(api, "POST", "/expose/10.32.0.200/12") == (204, "")
    assert "10.32.0.200/12" in spec.read_text()
    # As Weave's: on the bridge when the answer comes (its CNI plugin routes via it next).
    assert "10.32.0.200/12" in api.run(["ip", "-4", "addr", "show", "weave"]).stdout
    assert curl(api, "POST", "/expose/10.32.0.300/12") == (
        400,
        "unable to parse ip addr: invalid CIDR address: 10.32.0.300/12\n",
    )
    code, body = curl(api, "POST", "/expose/10.32.0.201/12?skipNAT=maybe")
    assert (code, body) == (
        400,
        'unable to parse skipNAT option: strconv.ParseBool: parsing "maybe": invalid syntax\n',
    )


def test_weaves_texts_for_bad_and_odd_requests(api: Netns) -> None:
    assert curl(api, "DELETE", "/ip/nobody") == (400, "Delete: no addresses for nobody\n")
    assert curl(api, "POST", "/ip/c5/not-an-ip/24") == (
        400,
        "invalid CIDR address: not-an-ip/24\n",
    )
    assert curl(api, "POST", "/ip/c5/10.32.5.1/24") == (
        400,
        "invalid subnet - bits after network prefix are not all zero: 10.32.5.1/24\n",
    )
    assert curl(api, "DELETE", "/ip/c5/nope") == (400, "invalid IP Address: nope\n")
    assert curl(api, "PUT", "/name/c5/nope") == (400, "invalid IP Address: nope\n")
    assert curl(api, "GET", "/ip/c5/10.32.0.0/12") == (200, "")
    assert curl(api, "DELETE", "/peer/unknown") == (200, "0 IPs taken over from unknown\n")
    assert curl(api, "GET", "/ring") == (200, "")
    assert curl(api, "GET", "/ipinfo/tracker") == (200, "\n")
    assert curl(api, "PUT", "/status") == (405, "")
    assert curl(api, "GET", "/name") == (405, "")  # Weave: JSON only with Accept: application/json
    assert curl(api, "PUT", "/name/c6/10.32.0.6", "-d", "fqdn=six.weave.local")[0] == 204
    code, names = curl(api, "GET", "/name", "-H", "Accept: application/json")
    assert (
        code == 200
        and {"ContainerID": "c6", "Addr": "10.32.0.6"}.items()
        <= {
            k: v for e in json.loads(names) for k, v in e.items() if e["ContainerID"] == "c6"
        }.items()
    )
    # Go reads no body for DELETE: the fqdn must be in the query to narrow the deletion.
    assert curl(api, "DELETE", "/name/c6?fqdn=other.weave.local")[0] == 204
    assert "six" in curl(api, "GET", "/status/dns")[1]
    assert curl(api, "DELETE", "/name/c6?fqdn=six.weave.local")[0] == 204
    assert "six" not in curl(api, "GET", "/status/dns")[1]
    code, text = curl(
        api,
        "GET",
        "/report",
        "-G",
        "--data-urlencode",
        "format={{.Router.Name}}/{{json .IPAM.Range}}",
    )
    assert (code, text) == (200, '3e:80:e7:5a:63:b8/"10.32.0.0/12"')
    code, text = curl(api, "GET", "/report?format=a&format=b")
    assert (code, text) == (400, "error: must supply one format parameter\n")
    # The status port: read-only routes only.
    assert curl(api, "POST", "/status", *STATUS_PORT) == (405, "")
    assert curl(api, "POST", "/metrics", *STATUS_PORT) == (405, "")
    assert curl(api, "POST", "/ip/c7", *STATUS_PORT)[0] == 404
    assert curl(api, "GET", "/report?format={{.Router.Name}}", *STATUS_PORT)[1] == (
        "3e:80:e7:5a:63:b8"
    )


def test_check_alive_without_docker_and_no_dns_as_weave(tmp_path: Path) -> None:
    """Weave started without a Docker client ignores check-alive; without weaveDNS
    (`--no-dns`) its DNS routes are not there and its DNS status template fails."""
    spec = SPEC + "docker: {socket: 'unix:///run/wdh-no-docker.sock'}\ndns: {enabled: false}\n"
    with daemon(tmp_path, spec) as ns:
        code, cidr = curl(ns, "POST", "/ip/c7?check-alive=true")
        assert code == 200 and cidr.endswith("/12"), cidr
        assert curl(ns, "PUT", "/ip/c8/10.32.8.8/12?check-alive=true")[0] == 204
        for path in ("/domain", "/dns-address", "/name/c7/10.32.0.7"):
            assert curl(ns, "GET" if "name" not in path else "PUT", path) == (
                404,
                "404 page not found\n",
            ), path
        assert curl(ns, "GET", "/status/dns") == (500, "error during template execution\n")


@pytest.mark.docker
@pytest.mark.timeout(240)
@pytest.mark.skipif(
    shutil.which("dockerd") is None or not busybox_available(),
    reason="needs dockerd, the docker CLI and /bin/busybox",
)
def test_check_alive_asks_docker(tmp_path: Path) -> None:
    """A running container gets its address; a stopped or unknown one: Weave's 200 "cancelled",
    nothing allocated; a name for a dead container is removed again."""
    with netns("wdhd") as ns, Dockerd(ns) as dockerd:
        ns.ip("link", "set", "lo", "up")
        import_busybox(dockerd)
        alive = run_container(dockerd, "alive")
        dead = dockerd.docker("create", "--name", "dead", IMAGE, "/bin/true").stdout.strip()
        spec = SPEC + f"docker: {{socket: 'unix://{dockerd.sock}'}}\n"
        try:
            with daemon(tmp_path, spec, ns) as api:
                code, cidr = curl(api, "POST", f"/ip/{alive}?check-alive=true")
                assert code == 200 and cidr.endswith("/12"), cidr
                for ident in (dead, "no-such-container"):
                    assert curl(api, "POST", f"/ip/{ident}?check-alive=true") == (200, "cancelled")
                    assert curl(api, "GET", f"/ip/{ident}") == (200, "")
                    assert curl(api, "PUT", f"/ip/{ident}/10.32.9.9/12?check-alive=true") == (
                        200,
                        "cancelled",
                    )
                assert curl(api, "POST", f"/ip/{dead}")[0] == 200  # without the flag: allocated
                put = ("-d", "fqdn=dead.weave.local", "-d", "check-alive=true")
                assert curl(api, "PUT", f"/name/{dead}/10.32.0.77", *put)[0] == 204
                assert "dead" not in curl(api, "GET", "/status/dns")[1]
        finally:
            dockerd.docker("rm", "-f", alive, dead, check=False)


def test_a_client_that_hangs_up_withdraws_its_pending_allocation(tmp_path: Path) -> None:
    """Weave cancels an allocation when its HTTP request goes away; one left pending would take
    an address nobody asked for any more once IPAM has space."""
    spec = SPEC.replace("{range: 10.32.0.0/12}", "{range: 10.32.0.0/12, init: {mode: observer}}")
    with daemon(tmp_path, spec) as ns:
        assert curl(ns, "POST", "/ip/cw", "-m", "2")[0] == 0  # an observer has no ring: waits

        def pending() -> object:
            report = json.loads(curl(ns, "GET", "/report", "-H", "Accept: application/json")[1])
            return report["IPAM"]["PendingAllocates"]

        wait_for(lambda: not pending(), timeout=10, interval=0.3)
        assert "request withdrawn" in (tmp_path / "daemon.log").read_text()


WEAVE_UTIL = os.environ.get("WEAVE_UTIL", "")


@pytest.mark.skipif(
    not os.access(WEAVE_UTIL or "/nonexistent", os.X_OK),
    reason="WEAVE_UTIL must name a weaveutil binary built from Weave Net 2.8.1's source "
    "(its CNI plugins: weave-net, weave-ipam); see tests/interop/README.md",
)
def test_weaves_own_cni_plugins_work_against_the_api(tmp_path: Path) -> None:
    """Weave's weave-ipam and weave-net CNI plugins (the real binaries) get addresses from,
    and give them back to, weaved's HTTP API; a container plugged by weave-net reaches the
    host's exposed address."""
    for name in ("weave-ipam", "weave-net"):
        (tmp_path / name).symlink_to(WEAVE_UTIL)
    conf = {"cniVersion": "0.3.0", "name": "weave", "type": "weave-net"}

    def cni(ns: Netns, plugin: str, command: str, cid: str, ipam: dict[str, str]) -> str:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{container.name}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(tmp_path),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        stdin = json.dumps({**conf, "ipam": {"type": "weave-ipam", **ipam}})
        argv = ["ip", "netns", "exec", ns.name, str(tmp_path / plugin)]
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        return proc.stdout

    spec = SPEC + "expose: [{cidr: 10.32.0.100/12}]\n"
    with daemon(tmp_path, spec) as ns, Netns("wdhcni") as container:
        added = json.loads(cni(ns, "weave-ipam", "ADD", "cid1", {}))
        first = added["ips"][0]["address"]
        assert first.endswith("/12") and first == curl(ns, "GET", "/ip/cid1")[1]
        assert json.loads(cni(ns, "weave-ipam", "ADD", "cid1", {}))["ips"][0]["address"] == first
        sub = json.loads(cni(ns, "weave-ipam", "ADD", "cid2", {"subnet": "10.32.7.0/24"}))
        assert sub["ips"][0]["address"] == "10.32.7.1/24"
        cni(ns, "weave-ipam", "DEL", "cid1", {})
        assert curl(ns, "GET", "/ip/cid1") == (200, "")
        plugged = json.loads(cni(ns, "weave-net", "ADD", "c0ffee12345", {}))
        address = plugged["ips"][0]["address"].split("/")[0]
        assert address in container.run(["ip", "-4", "addr", "show", "eth0"]).stdout
        container.run(["ping", "-c", "1", "-W", "2", "10.32.0.100"])
        cni(ns, "weave-net", "DEL", "c0ffee12345", {})
        assert curl(ns, "GET", "/ip/c0ffee12345") == (200, "")
