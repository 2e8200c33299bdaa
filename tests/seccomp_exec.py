"""Run a command under the unit's SystemCallFilter= and RestrictAddressFamilies= (with
SystemCallErrorNumber=EPERM), the way systemd installs them: a seccomp filter loaded before
exec. Run by Debian's /usr/bin/python3 (python3-seccomp); the filter stays across exec.

    seccomp_exec.py UNIT_FILE -- ARGV...
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys

import seccomp  # type: ignore[import-not-found]


def syscall_groups() -> dict[str, list[str]]:
    """systemd's own group table (`systemd-analyze syscall-filter`): group → members."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            groups[current] = []
        elif current and line.startswith("    ") and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        if name.startswith("@"):
            found |= expand(groups.get(name, []), groups)
        elif name:
            found.add(name)
    return found


def unit_service(path: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    with open(path) as unit:
        lines = [raw.strip() for raw in unit]
    for line in lines:
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def main(argv: list[str]) -> int:
    unit, argv = argv[0], argv[argv.index("--") + 1 :]
    service = unit_service(unit)
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in service["SystemCallFilter"]:
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    families = [getattr(socket, name) for name in service["RestrictAddressFamilies"][0].split()]
    assert service["SystemCallErrorNumber"] == ["EPERM"]

    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed - {"socket"}):
        with contextlib.suppress(RuntimeError, ValueError):  # not a syscall of this arch
            flt.add_rule(seccomp.ALLOW, name)
    for family in families:
        flt.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, int(family)))
    flt.load()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
