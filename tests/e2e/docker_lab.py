"""Real Docker containers on lab hosts: each host's private dockerd (in the host's namespace)
and what the tests do with its containers (run with weaveDNS's flags, attach by name through the
host's daemon, exec, look names up). Shared by the Docker lab tests.

`docker_lab` brings up two lab hosts, each running `weaved daemon` and then its own dockerd (as
when weaved.service comes up before docker.service), with busybox imported offline; the specs
are examples/lab/host{1,2}.yaml plus a `docker:` section each test module writes."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest

from tests.docker_image import busybox_available, import_busybox, remove_containers, run_container
from tests.helpers import Dockerd
from weaved.lab.lab import Lab, examples_dir

HOSTS = ("host1", "host2")
SKIP_WITHOUT_DOCKER = pytest.mark.skipif(
    shutil.which("dockerd") is None or not busybox_available() or examples_dir() is None,
    reason="needs dockerd, the docker CLI, /bin/busybox and examples/lab",
)

SUBNET = ipaddress.IPv4Network("10.32.0.0/12")  # examples/lab: ipalloc.range


@dataclass(frozen=True)
class HostNetns:
    """A lab host's network namespace, where its dockerd runs."""

    name: str


@dataclass(frozen=True)
class Attached:
    name: str
    host: str
    id: str
    ip: str


class DockerLab:
    def __init__(self, lab: Lab, dockerds: dict[str, Dockerd]) -> None:
        self.lab = lab
        self.dockerds = dockerds

    def weaved(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.lab.exec(host, ["weaved", *args], capture=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: weaved {' '.join(args)} → {proc.returncode}\n{proc}")
        return proc

    def docker(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.dockerds[host].docker(*args, check=check, timeout=60)

    def run(self, host: str, name: str, *, hostname: bool = True) -> str:
        """`docker run $(weaved dns-args NAME) --name NAME …` (with `hostname`, else
        `$(weaved dns-args)`): the container asks its host's weaveDNS. Returns its full ID."""
        dns_args = self.weaved(host, "dns-args", *([name] if hostname else [])).stdout.split()
        assert (f"--hostname={name}.weave.local" in dns_args) is hostname
        return run_container(self.dockerds[host], name, *dns_args)

    def attach(self, host: str, name: str) -> Attached:
        """Started on HOST's dockerd, attached by name through HOST's daemon."""
        cid = self.run(host, name)
        out = self.weaved(host, "attach", name).stdout
        (ip,) = out.split()  # one address a line, like Weave's
        assert ipaddress.IPv4Address(ip) in SUBNET
        return Attached(name, host, cid, ip)

    def in_container(self, c: Attached, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.docker(c.host, "exec", c.name, *argv, check=False)

    def lookup(self, c: Attached, name: str) -> list[str]:
        """Addresses busybox nslookup in C finds for NAME (through C's resolv.conf)."""
        out = self.in_container(c, "busybox", "nslookup", name).stdout
        answer = out.split("Name:", 1)[1] if "Name:" in out else ""
        return sorted(w for w in answer.split() if is_ipv4(w))

    def nxdomain(self, c: Attached, name: str) -> bool:
        """C's weaveDNS server answers that NAME does not exist (not merely: no answer)."""
        out = self.in_container(c, "busybox", "nslookup", name).stdout
        return f"can't find {name}: NXDOMAIN" in out

    def ps(self, host: str, *targets: str) -> str:
        return self.weaved(host, "ps", *targets, check=False).stdout


def dns_status(dlab: DockerLab, host: str) -> str:
    """`weaved status dns`, one record a line: name, address, container, origin peer."""
    lines = dlab.weaved(host, "status", "dns").stdout.splitlines()
    return "".join(" ".join(line.split()) + "\n" for line in lines)


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def follows_docker(lab: Lab, host: str) -> bool:
    return "docker events followed" in lab.host(host).log.read_text()


def unique(name: str) -> str:
    """A lab name of this test process's own: the same module may run in two checkouts at
    once (lab names, namespaces and plugin sockets in /run/docker/plugins must not meet)."""
    return f"{name}{os.getpid() % 1000}"


@contextmanager
def docker_lab(
    name: str,
    tmp_path_factory: pytest.TempPathFactory,
    docker_section: Callable[[str, Dockerd], str],
) -> Iterator[tuple[Lab, dict[str, Dockerd]]]:
    """The lab `name` up with `docker_section(host, dockerd)` appended to each host's spec;
    everything (containers, dockerds, then the lab) goes at the end."""
    lab = Lab(name)
    examples = examples_dir()
    assert examples is not None
    specs = tmp_path_factory.mktemp("specs")
    dockerds = {h: Dockerd(HostNetns(f"wd-{lab.name}-h{h[-1]}")) for h in HOSTS}
    for host, dockerd in dockerds.items():
        text = (examples / "lab" / f"{host}.yaml").read_text()
        assert "\ndocker:" not in text
        (specs / f"{host}.yaml").write_text(text + docker_section(host, dockerd))
    with ExitStack() as stack:
        stack.callback(lab.down)  # last: after every dockerd inside the hosts has stopped
        lab.up(len(HOSTS), spec_dir=specs, resync=2.0)
        for dockerd in dockerds.values():
            stack.enter_context(dockerd)
            stack.callback(remove_containers, dockerd)
            import_busybox(dockerd)
        yield lab, dockerds
