"""The FORWARD chain of iptables' filter table, read and (only for our own rules) written.

Docker sets that chain's policy to DROP. nftables cannot override a drop from another table,
so when the policy is DROP weaved inserts two ACCEPT rules for its bridge there, marked with
the comment `weaved`, and leaves every other rule alone.
"""

from __future__ import annotations

import shutil
import subprocess

from weaved.errors import ApplyError
from weaved.model.resources import IPT_COMMENT, Kind, Resource, attrs


class Iptables:
    def __init__(self) -> None:
        self.binary = shutil.which("iptables")
        self.writes = 0

    def _run(self, *args: str) -> str:
        assert self.binary is not None
        proc = subprocess.run(
            [self.binary, "-w", "5", *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ApplyError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def observe(self) -> tuple[list[Resource], bool]:
        """(our rules, whether FORWARD drops by default)."""
        if self.binary is None:
            return [], False
        try:
            lines = self._run("-t", "filter", "-S", "FORWARD").splitlines()
        except ApplyError:
            return [], False  # no filter table in this namespace
        drop = any(line.strip() == "-P FORWARD DROP" for line in lines)
        ours = []
        for line in lines:
            words = line.split()
            if f"--comment {IPT_COMMENT}" not in line or len(words) < 4 or words[0] != "-A":
                continue
            for flag in ("-i", "-o"):
                if flag in words:
                    dev = words[words.index(flag) + 1]
                    direction = "in" if flag == "-i" else "out"
                    ours.append(
                        Resource(
                            f"ipt/filter/FORWARD/{dev}-{direction}",
                            Kind.IPT_RULE,
                            attrs(
                                table="filter",
                                chain="FORWARD",
                                match=f"{flag} {dev}",
                                target=words[words.index("-j") + 1] if "-j" in words else "",
                            ),
                        )
                    )
        return ours, drop

    def _spec(self, resource: Resource) -> list[str]:
        return [
            *resource.get("match").split(),
            "-m",
            "comment",
            "--comment",
            IPT_COMMENT,
            "-j",
            resource.get("target"),
        ]

    def insert(self, resource: Resource) -> None:
        self._run("-t", "filter", "-I", "FORWARD", "1", *self._spec(resource))
        self.writes += 1

    def delete(self, resource: Resource) -> None:
        self._run("-t", "filter", "-D", "FORWARD", *self._spec(resource))
        self.writes += 1
