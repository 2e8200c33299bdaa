"""The CNI contract without a runtime or a daemon: environment, configuration, results and error
objects for every command and version, and the plugin's dispatch with a fake daemon."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weaved.attach import store
from weaved.cni.core import (
    SUPPORTED_VERSIONS,
    CniError,
    Code,
    Command,
    Interface,
    IpConfig,
    Result,
    Route,
    parse_conf,
    parse_env,
    parse_ipam_result,
    render_result,
)
from weaved.cni.plugin import run
from weaved.cni.plumbing import veth_names
from weaved.cni.records import CniRecord, load_records
from weaved.cni.setup import CONFLIST, setup_cni

REPO = Path(__file__).resolve().parents[2]

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
}


def conf(**extra: Any) -> bytes:
    return json.dumps(
        {"cniVersion": "1.0.0", "name": "weave", "type": "weave-net", **extra}
    ).encode()


def code_of(fn: Any, *args: Any) -> Code:
    with pytest.raises(CniError) as err:
        fn(*args)
    return err.value.code


def test_env_parsing() -> None:
    inv = parse_env(ENV)
    assert inv.command is Command.ADD and inv.arg("K8S_POD_NAME") == "web-0"
    assert inv.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert parse_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert parse_env({"CNI_COMMAND": "VERSION"}).command is Command.VERSION


@pytest.mark.parametrize(
    "change",
    [
        {"CNI_COMMAND": ""},
        {"CNI_COMMAND": "ATTACH"},
        {"CNI_CONTAINERID": ""},
        {"CNI_CONTAINERID": "a/b"},
        {"CNI_IFNAME": ""},
        {"CNI_IFNAME": "a-very-long-interface-name"},
        {"CNI_NETNS": ""},
        {"CNI_ARGS": "novalue"},
    ],
)
def test_bad_env_is_invalid_env(change: dict[str, str]) -> None:
    assert code_of(parse_env, {**ENV, **change}) is Code.INVALID_ENV


def test_conf_parsing() -> None:
    c = parse_conf(conf(hairpinMode=True, ipam={"routes": [{"dst": "10.96.0.0/12"}]}), Command.ADD)
    assert c.hairpin and c.chained_ipam is None
    assert c.routes == (Route(ipaddress.IPv4Network("10.96.0.0/12")),)
    assert parse_conf(conf(ipam={"type": "host-local"}), Command.ADD).chained_ipam == "host-local"
    assert parse_conf(conf(ipam={"type": "weave-ipam"}), Command.ADD).chained_ipam is None
    no_version = json.dumps({"name": "weave", "type": "weave-net"}).encode()
    assert parse_conf(no_version, Command.ADD).version == "0.3.0"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", Code.DECODE_FAILURE),
        (b"{not json", Code.DECODE_FAILURE),
        (b"[]", Code.DECODE_FAILURE),
        (
            json.dumps({"cniVersion": "0.2.0", "name": "w", "type": "t"}).encode(),
            Code.INCOMPATIBLE_VERSION,
        ),
        (json.dumps({"cniVersion": "1.0.0", "type": "t"}).encode(), Code.INVALID_CONFIG),
        (json.dumps({"cniVersion": "1.0.0", "name": "w"}).encode(), Code.INVALID_CONFIG),
        (conf(hairpinMode="yes"), Code.INVALID_CONFIG),
        (conf(ipam=[]), Code.INVALID_CONFIG),
        (conf(mtu=12), Code.INVALID_CONFIG),
        (conf(ipam={"routes": [{"dst": "nonsense"}]}), Code.INVALID_CONFIG),
        (conf(ipam={"subnet": "10.0.0.1/8"}), Code.INVALID_CONFIG),
    ],
)
def test_malformed_conf(data: bytes, code: Code) -> None:
    assert code_of(parse_conf, data, Command.ADD) is code


def test_result_layout_per_version() -> None:
    result = Result(
        (Interface("vethweplc1", "aa:bb:cc:dd:ee:01"), Interface("eth0", "aa:bb", "/run/netns/x")),
        (IpConfig(ipaddress.IPv4Interface("10.32.0.2/12"), ipaddress.IPv4Address("10.32.0.1"), 1),),
        (Route(ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("10.32.0.1")),),
    )
    for version in SUPPORTED_VERSIONS:
        out = render_result(result, version)
        assert out["cniVersion"] == version
        assert out["ips"][0]["address"] == "10.32.0.2/12"
        assert ("version" in out["ips"][0]) == version.startswith("0.")
        assert out["interfaces"][1]["sandbox"] == "/run/netns/x"
        assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.32.0.1"}]


def test_ipam_result() -> None:
    raw = {
        "cniVersion": "0.4.0",
        "ips": [
            {"version": "4", "address": "10.40.0.2/24", "gateway": "10.40.0.1"},
            {"version": "6", "address": "fd00::2/64"},
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    r = parse_ipam_result(json.dumps(raw).encode())
    assert [str(i.address) for i in r.ips] == ["10.40.0.2/24"]
    assert str(r.ips[0].gateway) == "10.40.0.1"
    assert code_of(parse_ipam_result, b'{"ips": []}') is Code.IO_FAILURE


class FakeDaemon:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, body))
        if path == "/cni/add":
            return {
                "interfaces": [
                    {"name": "vethweplc1", "mac": "m1"},
                    {"name": "eth0", "mac": "m2", "sandbox": body["netns"]},
                ],
                "ips": [{"address": "10.32.0.2/12", "gateway": "10.32.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.32.0.1"}],
            }
        return {}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_command_and_version(version: str) -> None:
    daemon = FakeDaemon()
    data = json.dumps({"cniVersion": version, "name": "weave", "type": "weave-net"}).encode()
    out = run("weave-net", ENV, data, daemon)
    assert out is not None and out["cniVersion"] == version
    assert daemon.calls[0][1]["dns_name"] == "web-0"
    assert run("weave-net", {**ENV, "CNI_COMMAND": "DEL"}, data, daemon) is None
    assert daemon.calls[-1][0] == "/cni/del"
    check_env = {**ENV, "CNI_COMMAND": "CHECK"}
    if version.startswith("0.3"):
        assert code_of(run, "weave-net", check_env, data, daemon) is Code.INCOMPATIBLE_VERSION
    else:
        assert run("weave-net", check_env, data, daemon) is None
    answer = run("weave-net", {"CNI_COMMAND": "VERSION"}, data, daemon)
    assert answer == {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_missing_chained_ipam_plugin_is_a_config_error() -> None:
    data = conf(ipam={"type": "no-such-ipam"})
    env = {**ENV, "CNI_PATH": "/nonexistent"}
    assert code_of(run, "weave-net", env, data, FakeDaemon()) is Code.INVALID_CONFIG


def test_error_object() -> None:
    err = CniError(Code.TRY_AGAIN_LATER, "weaved daemon not running at /run/weave/weaved.sock")
    assert err.to_json("1.0.0") == {
        "cniVersion": "1.0.0",
        "code": 11,
        "msg": "weaved daemon not running at /run/weave/weaved.sock",
    }


def test_example_conflist_is_what_setup_cni_installs(tmp_path: Path) -> None:
    example = REPO / "examples" / "cni" / "10-weave.conflist"
    assert json.loads(example.read_text()) == CONFLIST
    first = json.dumps({"cniVersion": CONFLIST["cniVersion"], **CONFLIST["plugins"][0]})
    assert parse_conf(first.encode(), Command.ADD).hairpin
    plugin = tmp_path / "weaved-cni"
    plugin.write_text("")
    done = setup_cni(tmp_path / "net.d", tmp_path / "bin", plugin)
    assert len(done) == 3 and os.readlink(tmp_path / "bin" / "weave-net") == str(plugin)
    assert json.loads((tmp_path / "net.d" / "10-weave.conflist").read_text()) == CONFLIST
    assert setup_cni(tmp_path / "net.d", tmp_path / "bin", plugin) == []  # idempotent
    (tmp_path / "net.d" / "10-weave.conflist").write_text("{}")
    (tmp_path / "bin" / "weave-ipam").unlink()
    (tmp_path / "bin" / "weave-ipam").write_text("foreign")
    done = setup_cni(tmp_path / "net.d", tmp_path / "bin", plugin)
    assert all(line.startswith("left ") for line in done) and len(done) == 2


def test_records_round_trip_and_veth_names(tmp_path: Path) -> None:
    rec = CniRecord(
        "abc",
        "eth0",
        "/run/netns/x",
        veth_names("abc", "eth0")[0],
        (ipaddress.IPv4Interface("10.32.0.2/12"),),
        True,
        True,
        "web",
        "aa:bb",
    )
    store.RecordFile(tmp_path / "cni.json").reset([rec])  # as the daemon writes it
    assert load_records(tmp_path / "cni.json") == {"abc/eth0": rec}
    (tmp_path / "bad.json").write_text("{")
    assert load_records(tmp_path / "bad.json") == {}
    assert load_records(tmp_path / "missing.json") == {}
    names = {veth_names(f"c{i}", "eth0")[0] for i in range(500)}
    assert len(names) == 500
    assert veth_names("abc", "eth0")[0] != veth_names("abc", "eth1")[0]
    # The second name (for when the first is another container's) is more of the same hash.
    digest = hashlib.sha256(b"abc/eth0").hexdigest()
    assert veth_names("abc", "eth0") == ("vethweplc" + digest[:6], "vethweplc" + digest[6:12])
    seconds = {veth_names(f"c{i}", "eth0")[1] for i in range(500)}
    assert all(len(n) == 15 and n.startswith("vethweplc") for n in names | seconds)


def test_status_and_gc_ask_the_daemon() -> None:
    daemon = FakeDaemon()
    data = conf(**{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]})
    data_11 = data.replace(b'"1.0.0"', b'"1.1.0"')
    assert run("weave-net", {"CNI_COMMAND": "STATUS"}, data_11, daemon) is None
    assert run("weave-net", {"CNI_COMMAND": "GC"}, data_11, daemon) is None
    assert daemon.calls == [
        ("/cni/status", {}),
        ("/cni/gc", {"valid": [{"containerID": "a", "ifname": "eth0"}]}),
    ]


def test_status_without_daemon_is_not_available_and_ipam_gc_is_its_own() -> None:
    def down(_path: str, _body: dict[str, Any]) -> dict[str, Any]:
        raise CniError(Code.TRY_AGAIN_LATER, "weaved daemon not running at /x")

    data_11 = conf().replace(b'"1.0.0"', b'"1.1.0"')
    assert code_of(run, "weave-net", {"CNI_COMMAND": "STATUS"}, data_11, down) is Code.NOT_AVAILABLE
    daemon = FakeDaemon()
    valid = [{"containerID": "a", "ifname": "eth0"}]
    data = conf(**{"cni.dev/valid-attachments": valid}).replace(b'"1.0.0"', b'"1.1.0"')
    assert run("weave-ipam", {"CNI_COMMAND": "GC"}, data, daemon) is None
    assert daemon.calls == [("/cni/gc", {"valid": valid, "ipam_only": True})]


def test_setup_cni_command_installs_a_working_plugin(tmp_path: Path) -> None:
    """`weaved setup-cni` as a user runs it; the links it makes answer as the plugin."""
    if shutil.which("weaved-cni") is None:
        pytest.skip("weaved-cni is not installed (pip install -e .)")
    net_d, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    argv = [sys.executable, "-m", "weaved", "setup-cni"]
    out = subprocess.run(
        [*argv, "--conf-dir", str(net_d), "--bin-dir", str(bin_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"wrote {net_d / '10-weave.conflist'}" in out
    assert json.loads((net_d / "10-weave.conflist").read_text()) == CONFLIST
    for name in ("weave-net", "weave-ipam"):
        answer = subprocess.run(
            [str(bin_dir / name)],
            input=conf(),
            env={**os.environ, "CNI_COMMAND": "VERSION"},
            capture_output=True,
            check=True,
        ).stdout
        assert "1.0.0" in json.loads(answer)["supportedVersions"]
