"""`weaved lab …`: bring a local multi-host lab up and down, run commands on its hosts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weaved.lab.lab import Lab


def add_lab_parser(sub: Any, handler: Callable[..., int]) -> None:
    lab = sub.add_parser("lab", help="local multi-host lab in network namespaces")
    lab.add_argument("--name", default="lab", help="lab name (namespaces wd-NAME-…; default lab)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    p = lab_sub.add_parser("up", help="create N hosts, each running weaved daemon")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument(
        "--topology",
        choices=["star", "line", "ring"],
        default="star",
        help="star uses examples/lab/hostN.yaml where present",
    )
    p.add_argument("--spec-dir", type=Path, help="directory with hostN.yaml specs")

    lab_sub.add_parser("down", help="stop every daemon and delete every namespace of the lab")
    p = lab_sub.add_parser("stop", help="stop one host's daemon (its namespace stays)")
    p.add_argument("host")
    p = lab_sub.add_parser("start", help="start one host's daemon again")
    p.add_argument("host")
    p = lab_sub.add_parser("list", help="hosts, addresses, daemons")
    p.add_argument("--json", action="store_true", help="as JSON")

    p = lab_sub.add_parser(
        "container", help="namespace containers attached through a host's daemon"
    )
    csub = p.add_subparsers(dest="container_command", metavar="ACTION", required=True)
    c = csub.add_parser("add", help="create namespace NAME and `weaved attach` it on HOST")
    c.add_argument("host")
    c.add_argument("container", metavar="NAME")
    c.add_argument("addresses", nargs="*", metavar="ADDR", help="default: one from IPAM")
    c.add_argument("--hostname", metavar="FQDN", help="its DNS name (default: NAME.weave.local.)")
    c = csub.add_parser("rm", help="detach and delete a container")
    c.add_argument("container", metavar="NAME")
    c = csub.add_parser("exec", help="run a command in a container")
    c.add_argument("container", metavar="NAME")
    c.add_argument("argv", nargs=argparse.REMAINDER)

    p = lab_sub.add_parser(
        "exec", help="run a command on a lab host (weaved … uses that host's spec)"
    )
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)

    p = lab_sub.add_parser(
        "demo", help="three hosts from examples/lab: status and plan of each, then down"
    )
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    lab.set_defaults(func=handler)


def _banner(text: str) -> None:
    sys.stdout.write(f"\n===== {text} =====\n")
    sys.stdout.flush()


def _demo_dns(lab: Lab, hosts: list[str]) -> int:
    """Every host asks its own weaveDNS (with dig) for every host's name."""
    failed = 0
    for asker in hosts:
        _banner(f"{asker}: DNS answers from weaveDNS (dig)")
        server = lab.exec(asker, ["weaved", "dns-args"], capture=True).stdout.split()
        address = server[0].removeprefix("--dns=") if server else ""
        for name in hosts:
            proc = lab.exec(
                asker,
                ["dig", "+short", "+time=2", "+tries=3", f"@{address}", f"{name}.weave.local"],
                capture=True,
            )
            answer = proc.stdout.strip() or "(no answer)"
            failed |= int(proc.returncode != 0 or not proc.stdout.strip())
            sys.stdout.write(f"dig @{address} {name}.weave.local → {answer}\n")
    return failed


def _demo_containers(lab: Lab, hosts: list[str]) -> int:
    """A container per host (addresses from IPAM), then every container pings every other by
    its weaveDNS name across the hosts."""
    failed = 0
    names = [f"demo-c{i + 1}" for i in range(len(hosts))]
    for host, name in zip(hosts, names, strict=True):
        _banner(f"{host}: weaved attach {name}")
        sys.stdout.write(lab.add_container(host, name) + "\n")
    for host in hosts:
        _banner(f"{host}: weaved ps")
        failed |= lab.exec(host, ["weaved", "ps"]).returncode
    for name in names:
        _banner(f"{name}: ping the other containers by name")
        for other in names:
            if other == name:
                continue
            proc = lab.in_container(name, ["ping", "-c", "2", "-W", "2", "-i", "0.3", other])
            tail = proc.stdout.strip().splitlines()[-2:] if proc.stdout else [proc.stderr.strip()]
            failed |= int(proc.returncode != 0)
            sys.stdout.write(f"ping {other}: {' | '.join(tail)}\n")
    return failed


def run_demo(lab: Lab, hosts: int, keep: bool) -> int:
    _banner(f"lab up: {hosts} hosts")
    state = lab.up(hosts)
    try:
        converged = lab.wait_mesh() and lab.wait_in_sync()
        sys.stdout.write(f"mesh {'converged' if converged else 'NOT converged after 30 s'}\n")
        for host in state.hosts:
            sys.stdout.write(
                f"{host.name}: netns {host.netns}, underlay {host.address}, spec {host.spec}\n"
            )
        failed = 0
        for host in state.hosts:
            _banner(f"{host.name}: weaved status")
            failed |= lab.exec(host.name, ["weaved", "status"]).returncode
            _banner(f"{host.name}: weaved plan --detailed-exitcode")
            failed |= lab.exec(host.name, ["weaved", "plan", "--detailed-exitcode"]).returncode
        failed |= _demo_dns(lab, [h.name for h in state.hosts])
        failed |= _demo_containers(lab, [h.name for h in state.hosts])
        return 1 if failed else 0
    finally:
        if not keep:
            _banner("lab down")
            for item in lab.down():
                sys.stdout.write(f"removed {item}\n")


def _container(lab: Lab, args: argparse.Namespace) -> int:
    if args.container_command == "add":
        sys.stdout.write(
            lab.add_container(args.host, args.container, args.addresses, args.hostname) + "\n"
        )
        return 0
    if args.container_command == "rm":
        lab.remove_container(args.container)
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    proc = lab.in_container(args.container, argv or ["ip", "addr"])
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def run_lab(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    command = args.lab_command
    if command == "up":
        state = lab.up(args.hosts, args.spec_dir, args.topology)
        for host in state.hosts:
            sys.stdout.write(
                f"{host.name} {host.address} netns={host.netns} pid={host.pid} spec={host.spec}\n"
            )
        return 0
    if command == "down":
        for item in lab.down():
            sys.stdout.write(f"removed {item}\n")
        return 0
    if command == "container":
        return _container(lab, args)
    if command == "stop":
        sys.stdout.write(
            f"{args.host}: {'stopped' if lab.stop_host(args.host) else 'not running'}\n"
        )
        return 0
    if command == "start":
        host = lab.start_host(args.host)
        sys.stdout.write(f"{host.name}: pid={host.pid}\n")
        return 0
    if command == "list":
        lab_state = lab.load()
        if args.json:
            hosts = [] if lab_state is None else lab_state.hosts
            rows = [
                {
                    "name": h.name,
                    "address": h.address,
                    "netns": h.netns,
                    "pid": h.pid,
                    "spec": str(h.spec),
                }
                for h in hosts
            ]
            sys.stdout.write(
                json.dumps({"lab": args.name, "up": lab_state is not None, "hosts": rows}, indent=2)
                + "\n"
            )
            return 0
        if lab_state is None:
            sys.stdout.write(f"lab {args.name!r} is not up\n")
            return 0
        for host in lab_state.hosts:
            sys.stdout.write(
                f"{host.name} {host.address} netns={host.netns} pid={host.pid} spec={host.spec}\n"
            )
        return 0
    if command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return lab.exec(args.host, argv or ["weaved", "status"]).returncode
    if command == "demo":
        return run_demo(lab, args.hosts, args.keep)
    return 64
