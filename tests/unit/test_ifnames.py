"""weaved/dataplane/ifnames.py: the interface list read through ctypes is the socket module's."""

from __future__ import annotations

import socket

from weaved.dataplane.ifnames import if_nameindex


def test_same_as_the_socket_modules_list() -> None:
    assert sorted(if_nameindex()) == sorted(socket.if_nameindex())


def test_names_are_text_and_indexes_positive() -> None:
    listed = if_nameindex()
    assert ("lo", socket.if_nametoindex("lo")) in [(n, i) for i, n in listed]
    assert all(isinstance(name, str) and index > 0 for index, name in listed)
