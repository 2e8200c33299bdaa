"""TX checksum offload through the ethtool ioctl (SIOCETHTOOL), in the caller's namespace.

A veth left with TX checksum offload hands packets on with the checksum still to be filled in;
a userspace datapath (sleeve) that captures them off the bridge would forward them broken, and
TCP across hosts would never connect. Weave turns it off on the container's end; so do we.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x00000016
ETHTOOL_STXCSUM = 0x00000017
IFREQ_SIZE = 40


def ifreq(ifname: str, data_address: int) -> bytes:
    """struct ifreq with ifr_name and ifr_data (a pointer to the ethtool command)."""
    name = ifname.encode()
    if len(name) > 15:
        raise ValueError(f"interface name too long: {ifname!r}")
    packed = struct.pack("16sP", name, data_address)
    return packed + b"\x00" * (IFREQ_SIZE - len(packed))


def _ethtool_value(ifname: str, cmd: int, value: int = 0) -> int:
    command = ctypes.create_string_buffer(struct.pack("=II", cmd, value), 8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq(ifname, ctypes.addressof(command)))
    result: int = struct.unpack("=II", command.raw)[1]
    return result


def tx_checksum(ifname: str) -> bool:
    """Whether TX checksum offload is on for `ifname`."""
    return bool(_ethtool_value(ifname, ETHTOOL_GTXCSUM))


def set_tx_checksum(ifname: str, on: bool) -> None:
    _ethtool_value(ifname, ETHTOOL_STXCSUM, 1 if on else 0)
