"""The hostile spec corpus through `validate`, in-process and as the CLI under a memory limit:
every spec refused with a location, nothing crashes, hangs or echoes a huge line."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.spec_corpus import GOOD, hostile_specs
from weaved.dataplane.fake import FakeDataplane
from weaved.engine.reconcile import apply_spec, plan_spec
from weaved.errors import Bug, SpecError
from weaved.spec.diagnostics import SpecProblems
from weaved.spec.loader import load_spec, parse_spec_bytes

CORPUS = hostile_specs()
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_refused_with_a_location_quickly(name: str) -> None:
    raw, line = CORPUS[name]
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        parse_spec_bytes(raw, "w.yaml")
    seconds = time.monotonic() - start
    assert seconds < 3.0, f"{name} took {seconds:.1f}s"
    text = str(info.value)
    assert "position" not in text
    assert max(len(row) for row in text.splitlines()) < 500, "a long line was echoed whole"
    if isinstance(info.value, SpecProblems):
        first = info.value.problems[0]
        assert first.line >= 1 and first.col >= 1, text
        if line:
            assert first.line == line, text
        assert f"w.yaml:{first.line}:{first.col}: error:" in text
    else:
        assert name == "oversized" and "at most" in text, text


def test_the_good_spec_of_the_corpus_is_valid() -> None:
    parse_spec_bytes(GOOD, "w.yaml")


def test_anchors_and_aliases_within_bounds_still_work() -> None:
    spec = parse_spec_bytes(
        b"version: 1\npeers: &p [192.0.2.1, 192.0.2.2]\nipalloc: {init: {mode: consensus}}\n"
        b"expose: [{cidr: 10.2.1.1/24, dns_name: &n a.weave.local}]\n"
    )
    assert spec.peers == ["192.0.2.1:6783", "192.0.2.2:6783"]


def test_a_long_line_is_shown_around_the_caret_only() -> None:
    raw, _ = CORPUS["long-line-error-at-end"]
    with pytest.raises(SpecProblems) as info:
        parse_spec_bytes(raw, "w.yaml")
    rows = str(info.value).splitlines()
    excerpt, caret = rows[1], rows[2]
    assert excerpt.startswith("    2 | …") and "999.1.1.1" in excerpt
    assert excerpt[caret.index("^") :].startswith("999.1.1.1")


def test_encoding_problems_point_at_the_byte() -> None:
    with pytest.raises(SpecProblems) as info:
        parse_spec_bytes(b"version: 1\npeer: {nickname: caf\xe9}\n", "w.yaml")
    assert "w.yaml:2:21: error: not UTF-8: byte 0xe9" in str(info.value)
    with pytest.raises(SpecProblems) as info:
        parse_spec_bytes(b"version: 1\nport: 67\x0083\n", "w.yaml")
    assert "w.yaml:2:9: error: a NUL byte is not allowed" in str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "symlink-to-dev-zero"])
def test_special_files_are_refused_at_once(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "weave.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target = Path("/dev/zero")
    elif kind == "directory":
        target.mkdir()
    else:
        target.symlink_to("/dev/zero")
    result: list[BaseException] = []

    def load() -> None:
        try:
            load_spec(target)
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(3.0)
    assert not thread.is_alive(), "reading the spec blocked"
    assert isinstance(result[0], SpecError), result
    assert "not a regular file" in str(result[0])


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "world-readable"])
def test_special_password_files_are_refused(tmp_path: Path, kind: str) -> None:
    password = tmp_path / "pw"
    if kind == "fifo":
        os.mkfifo(password)
    elif kind == "dev-zero":
        password = Path("/dev/zero")
    else:
        password.write_text("secret\n")
        password.chmod(0o644)
    spec = tmp_path / "w.yaml"
    spec.write_text(f"version: 1\npassword_file: {password}\n")
    start = time.monotonic()
    with pytest.raises(SpecProblems) as info:
        load_spec(spec)
    assert time.monotonic() - start < 3.0
    assert f"{spec}:2:16: error: password_file:" in str(info.value)


CLI_CASES = [
    "billion-laughs",
    "flow-nesting-100000",
    "python-object-tag",
    "huge-integer",
    "100000-keys",
    "binary",
    "long-line-error-at-end",
]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is missing")
def test_cli_validate_under_a_memory_limit(tmp_path: Path) -> None:
    """The real command, 1 GiB of address space at most, 20 s each: exit 1 with a location."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    special = {"fifo": tmp_path / "fifo.yaml", "dev-zero": Path("/dev/zero")}
    os.mkfifo(special["fifo"])
    files = dict(special)
    for name in CLI_CASES:
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_bytes(CORPUS[name][0])
    for name, path in files.items():
        argv = ["prlimit", "--as=1073741824", sys.executable, "-m", "weaved", "validate", str(path)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
        assert proc.returncode == 1, (name, proc.returncode, proc.stderr[-2000:])
        located = f"{path}:" in proc.stderr and ": error:" in proc.stderr
        refused = "not a regular file" in proc.stderr or "at most" in proc.stderr
        assert located or refused, (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and len(proc.stderr) < 5000, name


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is missing")
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_cli_plan_and_apply_refuse_before_touching_anything(tmp_path: Path, command: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    files = {"fifo": fifo}
    for name in ("billion-laughs", "flow-nesting-100000"):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_bytes(CORPUS[name][0])
    for name, path in files.items():
        argv = ["prlimit", "--as=1073741824", sys.executable, "-m", "weaved", command]
        argv += ["-f", str(path), "--socket", str(tmp_path / "none.sock")]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
        assert proc.returncode == 1, (name, proc.returncode, proc.stderr[-2000:])
        assert f"{path}" in proc.stderr and "Traceback" not in proc.stderr, name


def _mutants(seed: int, count: int) -> list[bytes]:
    """Byte-level mutations of every example: flips, deletions, duplications, splices of
    YAML punctuation — what an editor accident or a fuzzer makes of a real spec."""
    rng = random.Random(seed)
    sources = [p.read_bytes() for p in sorted((REPO / "examples").rglob("*.yaml"))]
    tokens = [b"[", b"]", b"{", b"}", b": ", b"- ", b"&a ", b"*a", b"!!", b"<<: ", b"\t", b"'"]
    tokens += [b'"', b"\n  ", b"#", b"\xff", b"\x00", b"0x", b"-1", b"65535", b"::", b"/33"]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.3:
                data[at] = rng.randrange(256)
            elif roll < 0.5:
                del data[at : at + rng.randint(1, 8)]
            elif roll < 0.7:
                span = data[at : at + rng.randint(1, 40)]
                data[at:at] = span * rng.randint(1, 3)
            else:
                data[at:at] = rng.choice(tokens)
        out.append(bytes(data))
    return out


def test_mutated_examples_are_refused_with_a_location_or_converge() -> None:
    """Every mutant is refused with a location, or it is accepted and converges: applied to
    an (in-memory) host, a second plan finds nothing left to do."""
    accepted = 0
    for raw in _mutants(seed=1815, count=400):
        start = time.monotonic()
        try:
            spec = parse_spec_bytes(raw, "w.yaml", check_files=False)
        except SpecProblems as exc:
            assert all(p.line >= 1 and p.col >= 1 for p in exc.problems), (raw, str(exc))
            continue
        finally:
            assert time.monotonic() - start < 2.0, raw
        dataplane = FakeDataplane()
        apply_spec(spec, dataplane)
        assert plan_spec(spec, dataplane).plan.empty, raw
        accepted += 1
    assert accepted > 20  # the mutations leave enough specs valid to mean something


def test_a_crash_inside_the_loader_is_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*_args: object, **_kw: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr("weaved.spec.loader.check_spec", explode)
    with pytest.raises(Bug, match=r"w\.yaml: internal error while loading the spec: KeyError"):
        parse_spec_bytes(b"version: 1\n", "w.yaml")


def test_a_large_hosts_spec_is_within_the_bounds() -> None:
    """Issue 16's large host: 1 000 exposed subnets and 1 000 service rules with every key
    written out (the key and value bounds once refused it at 1 000 keys)."""
    lines = ["version: 1", "expose:"]
    lines += [f"  - {{cidr: 10.{100 + i // 250}.{i % 250}.1/24}}" for i in range(1000)]
    lines += ["services:", "  export:"]
    lines += [
        f'    - {{name: s{i}, port: {10000 + i}, to: "10.100.0.{2 + i % 200}:80",'
        f" protocol: tcp, in_interface: eth0}}"
        for i in range(1000)
    ]
    spec = parse_spec_bytes(("\n".join(lines) + "\n").encode(), "w.yaml")
    assert len(spec.expose) == 1000 and len(spec.services.export) == 1000
