"""The CNI plugin executable: `weaved-cni`, also installed as `weave-net` and `weave-ipam` so
existing Weave conflists work (the name it is run by picks the role).

A runtime runs it with CNI_* in the environment and the network configuration on stdin; it
prints a result (exit 0) or a CNI error object (exit 1) on stdout. The work is done by the
running daemon, asked over its control socket; a chained IPAM plugin (`ipam.type`, e.g.
host-local) is run from here, as CNI's conventions say, and its addresses handed to the daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weaved.cni.core import (
    CniError,
    Code,
    Command,
    Interface,
    Invocation,
    IpConfig,
    NetConf,
    Result,
    Route,
    dns_name,
    parse_conf,
    parse_env,
    parse_ipam_result,
    render_result,
    version_answer,
)

DEFAULT_SOCKET = "/run/weave/weaved.sock"
IPAM_ROLE = "weave-ipam"
CALL_TIMEOUT = 120.0

Caller = Callable[[str, dict[str, Any]], dict[str, Any]]


def daemon_caller(socket_path: str) -> Caller:
    """POST to the daemon's /cni endpoints; CniError when it cannot be reached."""
    from weaved.control import Client
    from weaved.errors import DaemonError

    client = Client(socket_path, CALL_TIMEOUT)

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not Path(socket_path).exists():
            raise CniError(
                Code.TRY_AGAIN_LATER,
                f"weaved daemon not running at {socket_path}",
                "start it: systemctl start weaved (or `weaved daemon`)",
            )
        try:
            answer = client.call("POST", path, body)
        except DaemonError as exc:
            raise CniError(
                Code.TRY_AGAIN_LATER, str(exc).splitlines()[0], f"weaved daemon at {socket_path}"
            ) from None
        if not isinstance(answer, dict):
            raise CniError(Code.IO_FAILURE, f"weaved daemon answered {answer!r}")
        if "error" in answer:
            err = answer["error"]
            code = Code(err["code"]) if err.get("code") in list(Code) else Code.IO_FAILURE
            raise CniError(code, str(err.get("msg")))
        result: dict[str, Any] = answer.get("result") or {}
        return result

    return call


def exec_plugin(inv: Invocation, conf: NetConf, kind: str, command: Command) -> bytes:
    """Run a chained (IPAM) plugin found on CNI_PATH with the same environment and conf."""
    if "/" in kind or not kind:
        raise CniError(Code.INVALID_CONFIG, f"ipam.type {kind!r} is not a plugin name")
    for directory in inv.path:
        exe = Path(directory) / kind
        if exe.is_file() and os.access(exe, os.X_OK):
            break
    else:
        raise CniError(
            Code.INVALID_CONFIG,
            f"IPAM plugin {kind!r} not found in CNI_PATH ({':'.join(inv.path) or 'empty'})",
            "install it (Debian: containernetworking-plugins) or fix ipam.type",
        )
    env = {**os.environ, "CNI_COMMAND": command.value}
    proc = subprocess.run(
        [str(exe)],
        input=json.dumps(conf.raw).encode(),
        env=env,
        capture_output=True,
        timeout=CALL_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        try:
            err = json.loads(proc.stdout)
            msg = str(err.get("msg", proc.stdout.decode(errors="replace")))
        except ValueError:
            msg = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        raise CniError(Code.IO_FAILURE, f"IPAM plugin {kind} {command.value} failed: {msg}")
    return proc.stdout


def _net_add(inv: Invocation, conf: NetConf, call: Caller) -> Result:
    body: dict[str, Any] = {
        "container_id": inv.container_id,
        "ifname": inv.ifname,
        "netns": inv.netns,
        "hairpin": conf.hairpin,
        "mtu": conf.mtu,
        "subnet": conf.subnet,
        "routes": [r.to_json() for r in conf.routes],
        "dns_name": dns_name(inv),
    }
    kind = conf.chained_ipam
    if kind is not None:
        ipam = parse_ipam_result(exec_plugin(inv, conf, kind, Command.ADD))
        body["ips"] = [str(ip.address) for ip in ipam.ips]
        body["gateway"] = next((str(i.gateway) for i in ipam.ips if i.gateway), None)
        body["routes"] += [r.to_json() for r in ipam.routes]
        try:
            answer = call("/cni/add", body)
        except CniError:
            exec_plugin(inv, conf, kind, Command.DEL)  # give the address back
            raise
    else:
        answer = call("/cni/add", body)
    return _result(answer)


def _result(answer: dict[str, Any]) -> Result:
    import ipaddress

    return Result(
        interfaces=tuple(
            Interface(i["name"], i["mac"], i.get("sandbox", "")) for i in answer["interfaces"]
        ),
        ips=tuple(
            IpConfig(
                ipaddress.IPv4Interface(i["address"]),
                ipaddress.IPv4Address(i["gateway"]) if i.get("gateway") else None,
                i.get("interface"),
            )
            for i in answer["ips"]
        ),
        routes=tuple(
            Route(
                ipaddress.IPv4Network(r["dst"]),
                ipaddress.IPv4Address(r["gw"]) if r.get("gw") else None,
            )
            for r in answer.get("routes", [])
        ),
        dns=dict(answer.get("dns") or {}),
    )


def run(role: str, env: dict[str, str], stdin: bytes, call: Caller) -> dict[str, Any] | None:
    """One invocation: the JSON to print (None: nothing, as DEL/CHECK succeed silently)."""
    inv = parse_env(env)
    conf = parse_conf(stdin, inv.command)
    if inv.command is Command.VERSION:
        return version_answer(conf.version)
    base = {"container_id": inv.container_id, "ifname": inv.ifname, "netns": inv.netns}
    if role == IPAM_ROLE:
        return _ipam_role(inv, conf, call, base)
    if inv.command is Command.ADD:
        return render_result(_net_add(inv, conf, call), conf.version)
    if inv.command is Command.DEL:
        kind = conf.chained_ipam
        call("/cni/del", {**base, "chained_ipam": kind is not None})
        if kind is not None:
            exec_plugin(inv, conf, kind, Command.DEL)
        return None
    if inv.command is Command.CHECK:
        if conf.version.startswith("0.3"):
            raise CniError(Code.INCOMPATIBLE_VERSION, f"CHECK is not defined for {conf.version}")
        call("/cni/check", base)
        return None
    if inv.command is Command.STATUS:
        try:
            call("/cni/status", {})
        except CniError as exc:  # STATUS has its own code for "cannot serve ADD now"
            raise CniError(Code.NOT_AVAILABLE, exc.msg, exc.details) from None
        return None
    # GC (1.1): attachments the runtime still has; weaved forgets the rest.
    call("/cni/gc", {"valid": conf.raw.get("cni.dev/valid-attachments") or []})
    return None


def _ipam_role(
    inv: Invocation, conf: NetConf, call: Caller, base: dict[str, Any]
) -> dict[str, Any] | None:
    """`weave-ipam` as the IPAM plugin of another interface plugin (bridge, macvlan, …): an
    address from weaved's IPAM for the container, held until DEL; no veth of ours."""
    ipam_base = {**base, "ipam_only": True}
    if inv.command is Command.ADD:
        answer = call(
            "/cni/add",
            {
                **ipam_base,
                "subnet": conf.subnet,
                "routes": [r.to_json() for r in conf.routes],
                "dns_name": dns_name(inv),
            },
        )
        return render_result(_result({"interfaces": [], **answer}), conf.version)
    if inv.command is Command.DEL:
        call("/cni/del", ipam_base)
        return None
    if inv.command is Command.CHECK:
        call("/cni/check", base)
        return None
    if inv.command is Command.GC:
        valid = conf.raw.get("cni.dev/valid-attachments") or []
        call("/cni/gc", {"valid": valid, "ipam_only": True})
    return None  # STATUS: the interface plugin reports


def main() -> None:
    role = Path(sys.argv[0]).name
    env = dict(os.environ)
    version = "0.3.0"
    try:
        stdin = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
        with_version = _peek_version(stdin)
        version = with_version or version
        socket_path = env.get("WEAVED_SOCKET") or DEFAULT_SOCKET
        out = run(role, env, stdin, daemon_caller(socket_path))
    except CniError as exc:
        sys.stdout.write(json.dumps(exc.to_json(version)) + "\n")
        sys.exit(1)
    except Exception as exc:  # a bug still answers in CNI's terms
        err = CniError(Code.IO_FAILURE, f"weaved-cni internal error: {exc!r}")
        sys.stdout.write(json.dumps(err.to_json(version)) + "\n")
        sys.exit(1)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    sys.exit(0)


def _peek_version(stdin: bytes) -> str | None:
    try:
        raw = json.loads(stdin)
    except ValueError:
        return None
    v = raw.get("cniVersion") if isinstance(raw, dict) else None
    return str(v) if v else None
