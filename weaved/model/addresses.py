"""IPv4 addresses, interfaces and networks from their text, remembered.

A spec with thousands of exposed addresses and service rules is parsed and compiled again at
every edit, and almost all of its addresses are the text they were before; ipaddress's parsing
(pure Python) was a third of an edit's compile. The objects are immutable, so sharing is safe.
"""

from __future__ import annotations

import functools
import ipaddress

_SIZE = 8192  # bounded: the texts of one large host, not every text ever seen


@functools.lru_cache(maxsize=_SIZE)
def ipv4_address(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


@functools.lru_cache(maxsize=_SIZE)
def ipv4_interface(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


@functools.lru_cache(maxsize=_SIZE)
def ipv4_network(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)
