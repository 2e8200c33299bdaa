"""Mixed meshes: weaved hosts and a real Weave Net 2.8.1 router in lab namespaces.

Run only when `WEAVE_ROUTER` names a weaver binary (see tests/interop/README.md); otherwise
every test here is skipped at collection, with the reason."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.interop.weave_host import WeaveHost, weave_router
from weaved.lab.lab import Lab, host_address, peer_name

SEEDS = [peer_name(i) for i in (1, 2, 3)]
WEAVE_NAME = peer_name(3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = weave_router()
    for item in items:
        if "/tests/interop/" in str(item.fspath):
            item.add_marker(pytest.mark.interop)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def weaved_spec(index: int, peers: Sequence[int], extra: str = "") -> str:
    """A weaved host of the mixed mesh: IPAM seeded with all three peers (Weave's too), so
    the ring exists at once everywhere; fast datapath allowed (weaved to weaved), sleeve to
    Weave."""
    seeds = ", ".join(f'"{s}"' for s in SEEDS)
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"peers: [{', '.join(host_address(p) for p in peers)}]\n"
        "datapath: {mode: auto, mtu: 1376}\n"
        "ipalloc:\n"
        "  range: 10.32.0.0/12\n"
        f"  init: {{mode: seed, seeds: [{seeds}]}}\n"
        "dns: {domain: weave.local., ttl: 1}\n" + extra
    )


WEAVE_IPAM = [
    "--ipalloc-range",
    "10.32.0.0/12",
    "--ipalloc-init",
    "seed=" + ",".join(SEEDS),
]


class MixedLab:
    """Two weaved hosts (host1, host2) and Weave's router as host3, on one underlay."""

    def __init__(self, lab: Lab, weave: WeaveHost) -> None:
        self.lab = lab
        self.weave = weave

    def weaved(self, host: str, *args: str) -> str:
        proc = self.lab.exec(host, ["weaved", *args], capture=True, timeout=60)
        assert proc.returncode == 0, f"{host}: weaved {' '.join(args)}: {proc.stderr}"
        return proc.stdout


MixedFactory = Callable[..., MixedLab]


@pytest.fixture
def mixed_lab(tmp_path: Path) -> Iterator[MixedFactory]:
    """`make(weaved_specs={1: text, 2: text}, weave_peers=[1, 2], weave_args=[...])`."""
    yield from _mixed_labs(tmp_path)


@pytest.fixture(scope="module")
def mixed_lab_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedFactory]:
    """`mixed_lab` shared by a module's tests (one mesh, several read-only checks)."""
    yield from _mixed_labs(tmp_path_factory.mktemp("mixed"))


def _mixed_labs(tmp_path: Path) -> Iterator[MixedFactory]:
    made: list[tuple[Lab, WeaveHost]] = []

    def make(
        weaved_specs: dict[int, str],
        weave_peers: Sequence[int] = (1, 2),
        weave_args: Sequence[str] = (),
    ) -> MixedLab:
        name = f"ix{secrets.token_hex(2)}"
        spec_dir = tmp_path / name
        spec_dir.mkdir()
        for index, text in weaved_specs.items():
            (spec_dir / f"host{index}.yaml").write_text(text)
        lab = Lab(name)
        weave = WeaveHost(
            lab,
            3,
            WEAVE_NAME,
            "host3",
            [host_address(p) for p in weave_peers],
            [*WEAVE_IPAM, *weave_args],
        )
        made.append((lab, weave))
        lab.up(len(weaved_specs), spec_dir=spec_dir, resync=2.0)
        weave.__enter__()
        return MixedLab(lab, weave)

    yield make
    for lab, weave in made:
        weave.__exit__()
        lab.down()
