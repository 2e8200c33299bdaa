"""sysctls under /proc/sys (per network namespace): the bridge's own, and the settings weaved
owns (read, written, their original values recorded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from weaved.errors import ApplyError

PROC = Path("/proc/sys/net")

# IPv6 autoconfiguration off on the bridge: no SLAAC, no router advertisements, no link-local.
IPV6_OFF = {"autoconf": "0", "accept_ra": "0", "addr_gen_mode": "1"}


def _path(ifname: str, key: str) -> Path:
    return PROC / "ipv6" / "conf" / ifname / key


def write_proc_sys(path: str, value: str) -> bool:
    """Write /proc/sys/`path` (of the calling thread's namespace) when the caller knows it
    differs: one open, no read (a read first costs another path walk). False when it is
    missing (its link or the host's IPv6 gone): nothing to write. A refusal is the OSError;
    the caller says what it was doing (an ApplyError, attach's AttachError)."""
    try:
        fd = os.open(f"/proc/sys/{path}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return True


def ipv6_autoconf(ifname: str) -> str:
    """'off' when every setting of IPV6_OFF holds (or the host has no IPv6), else 'on'."""
    if not (PROC / "ipv6").exists():
        return "off"
    for key, want in IPV6_OFF.items():
        try:
            if _path(ifname, key).read_text().strip() != want:
                return "on"
        except OSError:
            return "on"
    return "off"


def enable_promote_secondaries(ifname: str) -> int:
    """promote_secondaries on (the plan says it is off: no read first); the number of writes."""
    try:
        return int(write_proc_sys(f"net/ipv4/conf/{ifname}/promote_secondaries", "1"))
    except OSError as exc:
        raise ApplyError(f"set {ifname} promote_secondaries on: {exc.strerror}") from exc


def disable_ipv6_autoconf(ifname: str) -> int:
    """Returns the number of writes made."""
    if not (PROC / "ipv6").exists():
        return 0
    writes = 0
    for key, want in IPV6_OFF.items():
        path = _path(ifname, key)
        if path.read_text().strip() != want:
            path.write_text(want)
            writes += 1
    return writes


def disable_ipv6(ifname: str) -> int:
    """IPv6 off on a link (a container's bridge port: model/host.py); the number of writes
    made (0: the link or the host's IPv6 is gone)."""
    try:
        return int(write_proc_sys(f"net/ipv6/conf/{ifname}/disable_ipv6", "1"))
    except OSError as exc:
        raise ApplyError(f"set {ifname} ipv6 off: {exc.strerror}") from exc


# --- settings weaved owns (model.host.SYSCTLS) ------------------------------------------------
def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    """The value, or None when the setting does not exist (e.g. its interface is gone)."""
    try:
        return sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    sysctl_path(name).write_text(value)


class Originals:
    """The values settings had before weaved first changed them, persisted (JSON, in the state
    directory) before each first change, so `reset` restores them even after a crash. The
    record is also the proof of ownership: a setting weaved never changed is never restored.
    Without a state directory the record lives in memory (tests)."""

    FILE = "sysctl-originals.json"

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / self.FILE if state_dir is not None else None
        self._memory: dict[str, str] = {}

    def load(self) -> dict[str, str]:
        if self.path is None:
            return dict(self._memory)
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ApplyError(
                f"cannot read {self.path}: {exc}\n"
                "  hint: it records sysctl values to restore on reset; fix or remove it"
            ) from exc
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _store(self, values: dict[str, str]) -> None:
        if self.path is None:
            self._memory = dict(values)
            return
        if not values:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ApplyError(f"cannot record sysctl originals in {self.path}: {exc}") from exc

    def record(self, name: str, value: str) -> None:
        values = self.load()
        if name not in values:
            values[name] = value
            self._store(values)

    def forget(self, name: str) -> None:
        values = self.load()
        if values.pop(name, None) is not None:
            self._store(values)

    def forget_vanished(self) -> list[str]:
        """Drop the originals of settings that no longer exist (an interface's, gone with it:
        a new interface starts from the kernel's default, recorded again if changed)."""
        values = self.load()
        gone = [name for name in values if read_sysctl(name) is None]
        if gone:
            self._store({k: v for k, v in values.items() if k not in gone})
        return gone
