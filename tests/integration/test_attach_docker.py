"""Real Docker containers attached by name and by ID, with a private dockerd in a test namespace.

The host namespace runs dockerd (its own bridge on 10.99.0.1/24) and `weaved apply` (after
dockerd, so weaved sees Docker's FORWARD DROP policy and adds its two accept rules). The spec
points `docker.socket` at the private dockerd.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_image import busybox_available, import_busybox, run_container
from tests.helpers import Dockerd, Netns, stop_process, wait_for
from weaved.attach import observe
from weaved.attach.model import Attachment, AttachmentState
from weaved.attach.netns import opened, run_in_netns
from weaved.integrations.docker_events import ContainerEvent, DockerEventWatcher, EventAction

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.docker,
    pytest.mark.skipif(
        shutil.which("dockerd") is None or not busybox_available(),
        reason="needs dockerd, the docker CLI and /bin/busybox",
    ),
]


class DockerHost:
    def __init__(self, ns: Netns, dockerd: Dockerd, spec: Path) -> None:
        self.ns = ns
        self.dockerd = dockerd
        self.spec = spec
        self.url = f"unix://{dockerd.sock}"

    def weaved(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "weaved", "-f", str(self.spec), *args]
        return self.ns.run(argv, check=check, timeout=60)

    def observe(self, known: list[Attachment] | None = None) -> list[Attachment]:
        with opened(f"/run/netns/{self.ns.name}") as fd:
            return run_in_netns(fd, lambda: observe.observe_attachments(self.url, known or []))


@pytest.fixture
def docker_host(tmp_path: Path) -> Iterator[DockerHost]:
    with Netns("wdad") as ns, Dockerd(ns) as dockerd:
        spec = tmp_path / "weave.yaml"
        spec.write_text(
            'version: 1\npeer: {name: "3e:80:e7:5a:63:a7"}\n'
            "expose: [{cidr: 10.2.1.1/24}]\n"
            f"docker: {{socket: 'unix://{dockerd.sock}'}}\n"
        )
        ns.weaved(spec, "apply")
        import_busybox(dockerd)
        try:
            yield DockerHost(ns, dockerd, spec)
        finally:
            names = dockerd.docker("ps", "-aq", check=False).stdout.split()
            if names:
                dockerd.docker("rm", "-f", *names, check=False)


def test_attach_by_name_and_id_then_ping(docker_host: DockerHost) -> None:
    d = docker_host.dockerd
    id1 = run_container(d, "wd-c1")
    id2 = run_container(d, "wd-c2")
    assert docker_host.weaved("attach", "10.2.1.31/24", "wd-c1").stdout == "10.2.1.31\n"
    assert docker_host.weaved("attach", "10.2.1.32/24", id2[:12]).stdout == "10.2.1.32\n"

    # Over the weave bridge (ethwe), not Docker's: the ping leaves through ethwe.
    assert "10.2.1.32/24" in d.docker("exec", "wd-c2", "ip", "addr", "show", "ethwe").stdout
    d.docker("exec", "wd-c1", "ping", "-c", "1", "-W", "2", "10.2.1.32")
    d.docker("exec", "wd-c2", "ping", "-c", "1", "-W", "2", "10.2.1.1")
    route = d.docker("exec", "wd-c1", "ip", "route", "get", "10.2.1.32").stdout
    assert "dev ethwe" in route
    # Docker makes its containers with IPv6 disabled, so ethwe has none either: no IPv6
    # announcements of a new container for the bridge to flood (bench/reconcile/containers.py's
    # `--container-ipv6 off` makes its namespaces so).
    conf = "/proc/sys/net/ipv6/conf"
    ipv6_off = [f"{conf}/default/disable_ipv6", f"{conf}/ethwe/disable_ipv6"]
    assert d.docker("exec", "wd-c1", "cat", *ipv6_off).stdout.split() == ["1", "1"]

    # ps: Docker's short IDs, container-side MACs, Weave's layout.
    mac1 = d.docker("exec", "wd-c1", "cat", "/sys/class/net/ethwe/address").stdout.strip()
    mac2 = d.docker("exec", "wd-c2", "cat", "/sys/class/net/ethwe/address").stdout.strip()
    listing = docker_host.weaved("ps").stdout.splitlines()
    assert listing[0] == "weave:expose 3e:80:e7:5a:63:a7 10.2.1.1/24"
    assert sorted(listing[1:]) == sorted(
        [f"{id1[:12]} {mac1} 10.2.1.31/24", f"{id2[:12]} {mac2} 10.2.1.32/24"]
    )
    assert docker_host.weaved("ps", "wd-c2").stdout == f"{id2[:12]} {mac2} 10.2.1.32/24\n"

    # The veth is named after the container's PID, as Weave names it.
    pid1 = d.docker("inspect", "-f", "{{.State.Pid}}", "wd-c1").stdout.strip()
    assert docker_host.ns.ip("link", "show", f"vethwepl{pid1}", check=False).returncode == 0

    # Idempotent by either name; observe knows the containers by their Docker IDs.
    before = docker_host.observe()
    assert docker_host.weaved("attach", "10.2.1.31/24", id1).stdout == "10.2.1.31\n"
    assert docker_host.observe() == before
    assert {a.target.key for a in before} == {id1, id2}
    assert {a.target.name for a in before} == {"wd-c1", "wd-c2"}

    # Detach by name removes the interface; the other container is untouched.
    assert docker_host.weaved("detach", "wd-c1").stdout == "10.2.1.31\n"
    assert d.docker("exec", "wd-c1", "ip", "link", "show", "ethwe", check=False).returncode != 0
    assert [a.target.key for a in docker_host.observe()] == [id2]


def test_container_death_is_observed(docker_host: DockerHost) -> None:
    d = docker_host.dockerd
    cid = run_container(d, "wd-dies")
    docker_host.weaved("attach", "10.2.1.41/24", "wd-dies")
    known = docker_host.observe()
    assert [a.target.key for a in known] == [cid]
    veth = known[0].veth
    d.docker("rm", "-f", "wd-dies")
    # Until the kernel has torn the namespace down the veth lingers: never reported ATTACHED,
    # and what the caller knew (the addresses to release) is kept.
    dying = docker_host.observe(known)
    assert dying[0].state is not AttachmentState.ATTACHED and dying[0].addresses
    wait_for(
        lambda: docker_host.ns.ip("link", "show", veth, check=False).returncode != 0, timeout=30
    )
    after = docker_host.observe(known)
    assert len(after) == 1 and after[0].state is AttachmentState.GONE
    assert after[0].target.key == cid and [str(a) for a in after[0].addresses] == ["10.2.1.41/24"]


def test_docker_errors(docker_host: DockerHost) -> None:
    d = docker_host.dockerd
    unknown = docker_host.weaved("attach", "10.2.1.51/24", "wd-nosuch", check=False)
    assert unknown.returncode == 1 and "No such container: wd-nosuch" in unknown.stderr
    run_container(d, "wd-stopped")
    d.docker("stop", "-t", "0", "wd-stopped")
    stopped = docker_host.weaved("attach", "10.2.1.52/24", "wd-stopped", check=False)
    assert stopped.returncode == 1 and "Container wd-stopped is not running" in stopped.stderr
    run_container(d, "wd-hostnet", "--net=host")
    hostnet = docker_host.weaved("attach", "10.2.1.53/24", "wd-hostnet", check=False)
    assert hostnet.returncode == 1 and "host network namespace" in hostnet.stderr
    # Docker not reachable: said so, with a hint.
    bad = docker_host.spec.with_name("bad.yaml")
    bad.write_text(docker_host.spec.read_text().replace(str(d.sock), str(d.sock) + ".nothere"))
    argv = [sys.executable, "-m", "weaved", "-f", str(bad), "attach", "10.2.1.54/24", "x"]
    down = docker_host.ns.run(argv, check=False)
    assert down.returncode == 1 and "Docker is not reachable" in down.stderr


def test_docker_events_watcher(docker_host: DockerHost) -> None:
    d = docker_host.dockerd
    events: queue.Queue[ContainerEvent] = queue.Queue()
    watcher = DockerEventWatcher(docker_host.url, events.put)
    watcher.start()
    try:
        assert events.get(timeout=20).action is EventAction.RESYNC
        cid = run_container(d, "wd-events")
        d.docker("rm", "-f", "wd-events")
        seen: list[ContainerEvent] = []
        while len(seen) < 3:
            seen.append(events.get(timeout=20))
    finally:
        watcher.stop()
    assert [(e.action, e.container_id, e.name) for e in seen] == [
        (EventAction.START, cid, "wd-events"),
        (EventAction.DIE, cid, "wd-events"),
        (EventAction.DESTROY, cid, "wd-events"),
    ]
    assert seen[1].exit_code is not None


def test_a_daemon_started_before_docker_follows_it_and_its_restarts(tmp_path: Path) -> None:
    """weaved.service may well start before docker.service: the daemon waits for Docker, then
    auto-attaches what it starts, by name in weaveDNS, and after Docker restarts attaches the
    containers Docker brought back before the daemon was listening again."""
    with Netns("wdaf") as ns:
        dockerd = Dockerd(ns)
        spec = tmp_path / "weave.yaml"
        spec.write_text(
            'version: 1\npeer: {name: "3e:80:e7:5a:63:a8"}\n'
            "expose: [{cidr: 10.2.1.1/24}]\n"
            f"docker: {{socket: 'unix://{dockerd.sock}', auto_attach: true}}\n"
        )
        log = tmp_path / "daemon.log"
        proc = ns.popen_weaved(spec, "daemon", "--resync", "2", log=log)
        try:
            wait_for(lambda: "converged" in ns.weaved(spec, "status", check=False).stdout, 30)
            with dockerd:
                import_busybox(dockerd)
                cid = run_container(dockerd, "wd-late", "--restart=always", "--stop-timeout=1")
                ip = _attached_ip(ns, spec, dockerd, "wd-late", cid)
                # Its name in weaveDNS is the container's name (its hostname is the short ID).
                assert ns.weaved(spec, "dns-lookup", "wd-late").stdout.split() == [ip]

                pid = dockerd.docker("inspect", "-f", "{{.State.Pid}}", "wd-late").stdout
                dockerd.restart()
                again = dockerd.docker("inspect", "-f", "{{.State.Pid}}", "wd-late").stdout
                assert again != pid  # a new process in a new namespace
                _attached_ip(ns, spec, dockerd, "wd-late", cid)
            # Docker gone with its containers: the daemon releases them without any event.
            wait_for(lambda: cid[:12] not in ns.weaved(spec, "ps").stdout, timeout=30)
        finally:
            code = stop_process(proc)
        text = log.read_text()
        assert code == 0, text
        assert text.count("container events not followed") == 1, text  # once, not per attempt
        assert text.count("docker events followed") == 2, text
        assert text.count("docker events lost") == 2, text  # the restart, then the end
        # Docker restarted the container before the daemon was listening again.
        assert "start missed while Docker was not followed container=wd-late" in text, text


def _attached_ip(ns: Netns, spec: Path, dockerd: Dockerd, name: str, cid: str) -> str:
    """Wait until the daemon has attached NAME (in `weaved ps` and inside the container)."""

    def cidr() -> str:
        words = ns.weaved(spec, "ps", name, check=False).stdout.split()
        return words[2] if len(words) == 3 and words[0] == cid[:12] else ""

    def inside() -> bool:
        current = cidr()
        ethwe = dockerd.docker("exec", name, "ip", "-4", "addr", "show", "ethwe", check=False)
        return bool(current) and f"inet {current} " in ethwe.stdout

    wait_for(inside, timeout=30, interval=0.3)
    return cidr().split("/")[0]
