"""A tiny Docker image built offline: the static busybox and its applets, nothing else.

No registry is reachable in tests, so the image is a root filesystem tarball made here and
`docker import`ed into the test's private dockerd.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from tests.helpers import Dockerd

BUSYBOX = Path("/bin/busybox")
IMAGE = "weaved-test/busybox:1"
APPLETS = (
    "sh",
    "cat",
    "echo",
    "hostname",
    "ip",
    "ls",
    "nc",
    "ping",
    "sleep",
    "true",
    "wc",
)


def busybox_available() -> bool:
    return BUSYBOX.is_file() and shutil.which("docker") is not None


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def write_rootfs(path: Path, busybox: Path = BUSYBOX) -> Path:
    """A root filesystem tarball: /bin/busybox, /bin/<applet> → busybox, the usual mount points."""
    with tarfile.open(path, "w") as tar:
        for name in ("bin", "dev", "etc", "proc", "root", "sys"):
            _dir(tar, name)
        _dir(tar, "tmp", 0o1777)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return path


def import_busybox(dockerd: Dockerd, tag: str = IMAGE) -> str:
    """Import the image into `dockerd` (once) and return its tag."""
    if dockerd.docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="wd-image-") as tmp:
        tarball = write_rootfs(Path(tmp) / "rootfs.tar")
        dockerd.docker("import", "--change", 'CMD ["/bin/sh"]', str(tarball), tag)
    return tag


def run_container(dockerd: Dockerd, name: str, *args: str, image: str = IMAGE) -> str:
    """Start a detached container that just sleeps; returns its full ID."""
    out = dockerd.docker("run", "-d", "--name", name, *args, image, "/bin/sleep", "600")
    return out.stdout.strip()


def remove_containers(dockerd: Dockerd) -> None:
    """Every container of `dockerd`, removed (a test's cleanup before dockerd stops)."""
    ids = dockerd.docker("ps", "-aq", check=False).stdout.split()
    if ids:
        dockerd.docker("rm", "-f", *ids, check=False)
