"""weaveDNS served for real inside a private network namespace, queried with `dig`.

Each test gets its own namespace (`wd-test-dns-*`, addresses 10.99.0.0/24 on its loopback):
weaved's server on 10.99.0.1:53 and a fake upstream resolver (dnslib, below) on 10.99.0.2:53.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not (shutil.which("ip") and shutil.which("dig")), reason="needs iproute2 and dig"
    ),
]

SERVER = "10.99.0.1"
UPSTREAM = "10.99.0.2"

HOSTS = "\n".join(
    [
        "10.32.0.1 c1.weave.local",
        "10.32.0.9 C1.weave.local",
        "10.32.0.2 web",
        "10.32.0.3 web",
        "10.40.0.1 web",
        *(f"10.44.0.{i} big" for i in range(50)),
    ]
)

FAKE_UPSTREAM = r"""
import asyncio, sys
from dnslib import DNSRecord, RR, QTYPE, RCODE, A, PTR

def answer(data, tcp):
    q = DNSRecord.parse(data)
    name, qtype = str(q.q.qname).lower(), q.q.qtype
    r = q.reply()
    if name == "slow.test.":
        return None
    if name == "missing.test.":
        r.header.rcode = RCODE.NXDOMAIN
    elif name == "example.test." and qtype == QTYPE.A:
        r.add_answer(RR("example.test.", QTYPE.A, rdata=A("192.0.2.55"), ttl=60))
    elif name == "big.test.":
        for i in range(60):
            r.add_answer(RR("big.test.", QTYPE.A, rdata=A(f"192.0.2.{i + 1}"), ttl=60))
    elif name == "9.9.99.10.in-addr.arpa." and qtype == QTYPE.PTR:
        r.add_answer(RR(str(q.q.qname), QTYPE.PTR, rdata=PTR("ext.test."), ttl=60))
    out = r.pack()
    if not tcp and len(out) > 512:
        out = r.truncate().pack()
    return bytes(out)

class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        out = answer(data, False)
        if out:
            self.t.sendto(out, addr)

async def tcp(reader, writer):
    try:
        while True:
            n = int.from_bytes(await reader.readexactly(2), "big")
            out = answer(await reader.readexactly(n), True)
            if out:
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
    except Exception:
        writer.close()

async def main(host):
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Udp, local_addr=(host, 53))
    await asyncio.start_server(tcp, host, 53)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


@dataclass
class Dig:
    status: str
    flags: set[str]
    answers: list[list[str]]
    raw: str

    @property
    def addresses(self) -> list[str]:
        return [a[-1] for a in self.answers]


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"{what} did not start: {line!r} {err}")


@dataclass
class Netns:
    name: str
    procs: list[subprocess.Popen[str]]

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *argv: str, what: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        _wait_ready(proc, what)

    def dig(self, *args: str) -> Dig:
        out = self.run("dig", f"@{SERVER}", "+time=4", "+tries=1", *args).stdout
        status = re.search(r"status: (\w+)", out)
        flags = re.search(r"flags: ([a-z ]*);", out)
        answers: list[list[str]] = []
        if ";; ANSWER SECTION:" in out:
            section = out.split(";; ANSWER SECTION:\n", 1)[1].split("\n\n", 1)[0]
            answers = [line.split() for line in section.splitlines() if line.strip()]
        return Dig(
            status.group(1) if status else "",
            set(flags.group(1).split()) if flags else set(),
            answers,
            out,
        )


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    name = f"wd-test-dns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name, [])
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for addr in (SERVER, UPSTREAM):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        (tmp_path / "hosts").write_text(HOSTS + "\n")
        (tmp_path / "upstream.py").write_text(FAKE_UPSTREAM)
        ns.start(sys.executable, str(tmp_path / "upstream.py"), UPSTREAM, what="fake upstream")
        ns.start(
            sys.executable,
            "-m",
            "weaved.dns",
            "--listen",
            f"{SERVER}:53",
            "--hosts",
            str(tmp_path / "hosts"),
            "--upstream",
            UPSTREAM,
            "--timeout",
            "1",
            what="weaved dns",
        )
        yield ns
    finally:
        for proc in ns.procs:
            proc.terminate()
        for proc in ns.procs:
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_records_over_udp_and_tcp(netns: Netns) -> None:
    for transport in ("+notcp", "+tcp"):
        r = netns.dig(transport, "web.weave.local")
        assert r.status == "NOERROR", r.raw
        assert {"qr", "aa", "rd", "ra"} <= r.flags
        assert sorted(r.addresses) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
        assert {a[1] for a in r.answers} == {"1"}  # TTL
    assert sorted(netns.dig("+short", "web").raw.split()) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]


def test_case_variants_and_names_differing_in_case(netns: Netns) -> None:
    for name in ("c1.weave.local", "C1.WEAVE.LOCAL", "c1", "C1"):
        r = netns.dig(name)
        assert r.status == "NOERROR", r.raw
        assert sorted(r.addresses) == ["10.32.0.1", "10.32.0.9"]
        assert r.answers[0][0] == (name if name.endswith(".") else name + ".")


def test_nxdomain_and_empty_noerror(netns: Netns) -> None:
    r = netns.dig("nope.weave.local")
    assert r.status == "NXDOMAIN" and "aa" not in r.flags
    assert netns.dig("nope").status == "NXDOMAIN"
    for qtype in ("AAAA", "MX"):
        r = netns.dig("web.weave.local", qtype)
        assert (r.status, r.answers) == ("NOERROR", []), r.raw
        assert "aa" in r.flags


def test_reverse_lookups(netns: Netns) -> None:
    r = netns.dig("-x", "10.32.0.2")
    assert r.status == "NOERROR" and [a[-1] for a in r.answers] == ["web.weave.local."]
    # An address weaveDNS does not know goes upstream.
    r = netns.dig("-x", "10.99.9.9")
    assert [a[-1] for a in r.answers] == ["ext.test."], r.raw


def test_truncation_over_udp_then_the_full_set_over_tcp(netns: Netns) -> None:
    r = netns.dig("+ignore", "+noedns", "big.weave.local")
    assert "tc" in r.flags and 1 < len(r.answers) < 50, r.raw
    r = netns.dig("+ignore", "+bufsize=700", "big.weave.local")
    assert "tc" in r.flags and len(r.answers) > 29, r.raw
    r = netns.dig("+tcp", "big.weave.local")
    assert "tc" not in r.flags and sorted(r.addresses) == sorted(f"10.44.0.{i}" for i in range(50))
    r = netns.dig("+noedns", "big.weave.local")  # dig retries over TCP by itself
    assert len(r.answers) == 50, r.raw


def test_forwarding_to_the_upstream(netns: Netns) -> None:
    r = netns.dig("example.test")
    assert (r.status, r.addresses) == ("NOERROR", ["192.0.2.55"]), r.raw
    assert netns.dig("+tcp", "example.test").addresses == ["192.0.2.55"]
    assert netns.dig("missing.test").status == "NXDOMAIN"
    # Upstream answers truncated over UDP: a TCP client gets the full answer through us.
    assert len(netns.dig("+tcp", "big.test").answers) == 60
    assert "tc" in netns.dig("+ignore", "+noedns", "big.test").flags


def test_upstream_timeout_gives_servfail(netns: Netns) -> None:
    start = time.monotonic()
    r = netns.dig("slow.test")
    assert r.status == "SERVFAIL", r.raw
    assert time.monotonic() - start < 4


FLOOD_TCP = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 53), timeout=2)
    socks.append(s)
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_idle_tcp_clients_are_capped_and_queries_still_answered(
    netns: Netns, tmp_path: Path
) -> None:
    """500 idle TCP connections must not take 500 descriptors (nor stop answering)."""
    server_pid = netns.procs[-1].pid
    (tmp_path / "flood.py").write_text(FLOOD_TCP)
    netns.start(sys.executable, str(tmp_path / "flood.py"), SERVER, "500", "8", what="tcp flood")
    # Evicted clients are closed a loop turn after the accept that evicted them: let it settle.
    wait_for(lambda: len(os.listdir(f"/proc/{server_pid}/fd")) < 200, timeout=3)
    assert netns.dig("+tcp", "c1.weave.local").status == "NOERROR"
    assert netns.dig("c1.weave.local").status == "NOERROR"
