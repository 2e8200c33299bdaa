"""The Debian package: build it, install it, run the packaged weaved, purge it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, netns, sh

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian host")


def test_build_install_run_purge(tmp_path: Path) -> None:
    if Path("/opt/weaved").exists() or Path("/usr/bin/weaved").exists():
        pytest.skip("a weaved package is already installed on this host")
    deb = sh(
        ["bash", str(REPO / "packaging" / "build-deb.sh"), str(tmp_path)], timeout=600
    ).stdout.strip()
    contents = sh(["dpkg-deb", "--contents", deb]).stdout
    for path in (
        "./usr/bin/weaved",
        "./lib/systemd/system/weaved.service",
        "./usr/share/weaved/examples/minimal.yaml",
        "./opt/weaved/venv/bin/weaved",
    ):
        assert path in contents
    sh(["dpkg", "-i", deb], timeout=300)
    try:
        assert sh(["/usr/bin/weaved", "--version"]).stdout.startswith("weaved ")
        sh(["/usr/bin/weaved", "validate", "/usr/share/weaved/examples/services.yaml"])
        spec = tmp_path / "weave.yaml"
        spec.write_text("version: 1\nexpose: [{cidr: 10.2.1.1/24}]\n")
        with netns() as ns:
            ns.run(["/usr/bin/weaved", "-f", str(spec), "apply"])
            assert (
                "weaved" in ns.nft("list", "tables").stdout
            )  # the packaged venv reaches libnftables
    finally:
        sh(["dpkg", "--purge", "weaved"], timeout=300)
    assert not Path("/usr/bin/weaved").exists() and not Path("/opt/weaved").exists()
