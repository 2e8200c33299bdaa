"""The kernel's notifications of a commit: the handles of the rules it added, and the
generation it made, read from the nftables multicast group instead of libnftables' echo
(which fetches every rule of the ruleset first: ~50 ms with thousands of rules).

Subscribe before the commit; the kernel queues its notifications before the commit returns.
Anything unreadable (a full socket buffer after a large commit) gives no handles, and the
caller lists the tables again.
"""

from __future__ import annotations

import socket
import struct

from weaved.dataplane import rtnl

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFT_MSG_NEWRULE = (10 << 8) | 6  # NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE
NFT_MSG_NEWGEN = (10 << 8) | 15
NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_USERDATA = 2, 3, 7
NFTA_GEN_ID = 1
UDATA_RULE_COMMENT = 0  # libnftnl's NFTNL_UDATA_RULE_COMMENT
FAMILIES = {socket.AF_INET: "ip", 7: "bridge"}  # NFPROTO_IPV4, NFPROTO_BRIDGE
COMMENT_PREFIX = "wd:"

Handles = dict[tuple[tuple[str, str], str], int]


class CommitNotes:
    """A subscription to the namespace's nftables notifications, for one commit."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
            sock.setblocking(False)
            self.sock = sock
        except OSError:
            pass

    def __enter__(self) -> CommitNotes:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.sock is not None:
            self.sock.close()

    def read(self) -> tuple[Handles, int | None]:
        """The added rules' handles by ((family, chain), comment without "wd:"), and the last
        generation announced; ({}, None) when the notifications could not all be read."""
        handles: Handles = {}
        generation = None
        if self.sock is None:
            return {}, None
        while True:
            try:
                data = rtnl.receive(self.sock)
            except BlockingIOError:
                return handles, generation
            except OSError:  # ENOBUFS: some were lost
                return {}, None
            for kind, start, end in rtnl.messages(data):
                if end - start < 4:
                    continue
                family = FAMILIES.get(data[start])
                body = start + 4  # after nfgenmsg
                if kind == NFT_MSG_NEWGEN:
                    for attr, a, b in rtnl.attrs(data, body, end):
                        if attr == NFTA_GEN_ID and b - a >= 4:
                            generation = int(struct.unpack_from("!I", data, a)[0])
                elif kind == NFT_MSG_NEWRULE and family is not None:
                    rule = _rule(data, body, end)
                    if rule is not None:
                        chain, comment, handle = rule
                        handles[((family, chain), comment)] = handle


def _rule(data: bytes, start: int, end: int) -> tuple[str, str, int] | None:
    chain, comment, handle = "", "", 0
    for attr, begin, stop in rtnl.attrs(data, start, end):
        if attr == NFTA_RULE_CHAIN:
            chain = data[begin:stop].split(b"\0", 1)[0].decode(errors="replace")
        elif attr == NFTA_RULE_HANDLE and stop - begin == 8:
            handle = int(struct.unpack_from("!Q", data, begin)[0])
        elif attr == NFTA_RULE_USERDATA:
            comment = _comment(data[begin:stop])
    if not chain or not handle or not comment.startswith(COMMENT_PREFIX):
        return None
    return chain, comment[len(COMMENT_PREFIX) :], handle


def _comment(udata: bytes) -> str:
    """The comment in a rule's user data (libnftnl's TLVs: type, length, value)."""
    offset = 0
    while offset + 2 <= len(udata):
        kind, length = udata[offset], udata[offset + 1]
        if kind == UDATA_RULE_COMMENT:
            value = udata[offset + 2 : offset + 2 + length]
            return value.split(b"\0", 1)[0].decode(errors="replace")
        offset += 2 + length
    return ""
