"""The netlink and /proc/sys calls both sides of a container's veth share, with the kernel's
refusals turned into `AttachError`s that say what was being done.

Each helper acts in the calling thread's network namespace: the host's, or a container's when
it runs on a thread `netns.run_in_netns` moved there.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.dataplane.sysctl import write_proc_sys
from weaved.errors import ApplyError

IFF_UP = 0x1
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
NSID_UNASSIGNED = {-1, 0xFFFFFFFF}
Changes = list[str]


class AttachError(ApplyError):
    """The kernel refused part of an attach or detach; what this call created was removed."""


def nl(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a pyroute2 or `nlsock.Netlink` method; a refusal becomes an AttachError naming
    `what` and errno."""
    try:
        return fn(*args, **kwargs)
    except NetlinkError as exc:
        code = exc.code
    except OSError as exc:
        if exc.errno is None:
            raise
        code = exc.errno
    raise refusal(what, code) from None


def refusal(what: str, code: int) -> AttachError:
    """The kernel's refusal (errno `code`) of `what`, as an AttachError."""
    name = errno.errorcode.get(code, str(code))
    return AttachError(f"{what}: {name} ({os.strerror(code)})")


def nsid(value: Any) -> int | None:
    """A netlink nsid attribute, None when the kernel has assigned none."""
    if value is None:
        return None
    number = int(value)
    return None if number in NSID_UNASSIGNED or number < 0 else number


def netnsid(ipr: IPRoute, fd: int) -> int | None:
    """The nsid this namespace has for the namespace open at `fd`."""
    answer = ipr.get_netnsid(fd=fd)
    return nsid(answer.get("nsid")) if answer else None


def link_kind(link: Any) -> str:
    """The link's kind ("veth", "bridge", …); "" for a link without IFLA_LINKINFO."""
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def write_sysctl(path: str, value: str) -> bool:
    """dataplane.sysctl.write_proc_sys (one open, no read: the caller knows it differs), a
    refusal as an AttachError; False when the setting is missing (its link or IPv6 gone)."""
    try:
        return write_proc_sys(path, value)
    except OSError as exc:
        raise AttachError(f"cannot set {path} = {value}: {exc.strerror}") from None
