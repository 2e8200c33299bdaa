"""Hostile and mutated specs, generated (none is stored: some are megabytes): every one must be
refused with a location, quickly and in bounded memory, by validate, plan, apply and the daemon.

Each entry: name → (file bytes, the 1-based line the refusal must point at, or 0 for "any").
"""

from __future__ import annotations

import random

GOOD = b'version: 1\npeer: {name: "3e:80:e7:5a:63:a7"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


def _billion_laughs(levels: int = 9) -> bytes:
    lines = ["version: 1", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"peers: *a{levels}")
    return ("\n".join(lines) + "\n").encode()


def _deep_block(levels: int) -> bytes:
    out = ["version: 1", "peers:"]
    out += ["  " * (i + 1) + "- " for i in range(levels)]
    return ("\n".join(out) + "x\n").encode()


def _many_keys(count: int) -> bytes:
    return b"version: 1\n" + b"".join(b"k%d: %d\n" % (i, i) for i in range(count))


def hostile_specs() -> dict[str, tuple[bytes, int]]:
    rng = random.Random(18)
    long_value = "x" * 200_000
    return {
        # Resource bombs.
        "billion-laughs": (_billion_laughs(), 0),
        "laughs-under-the-alias-limit": (_billion_laughs(6), 0),  # 54 aliases, 4 million values
        "alias-cycle": (b"version: 1\npeers: &a [*a]\n", 0),
        "alias-of-alias-chain": (
            b"version: 1\nx0: &x0 [[[[[[[[[[1]]]]]]]]]]\n"
            + b"".join(
                b"x%d: &x%d [[[[[[[[[[*x%d]]]]]]]]]]\n" % (i, i, i - 1) for i in range(1, 40)
            )
            + b"peers: *x39\n",
            0,
        ),
        "flow-nesting-100000": (b"version: 1\npeers: " + b"[" * 100_000 + b"\n", 2),
        "flow-nesting-5000-closed": (b"version: 1\npeers: " + b"[" * 5000 + b"]" * 5000 + b"\n", 2),
        "flow-mapping-nesting": (b"version: 1\npeer: " + b"{a: " * 3000 + b"1" + b"}" * 3000, 2),
        "block-nesting-500": (_deep_block(500), 0),
        "compact-nesting": (b"version: 1\npeers:\n" + b"- " * 5000 + b"x\n", 3),
        "merge-key": (b"version: 1\nbase: &b {port: 6784}\npeer:\n  <<: *b\n", 4),
        "merge-key-scalar": (b"version: 1\npeer:\n  <<: 1\n", 3),
        "merge-key-list": (b"version: 1\ndns:\n  <<: [1, 2]\n", 3),
        "python-object-tag": (b"version: 1\npeers: !!python/object/apply:os.system ['true']\n", 2),
        "python-name-tag": (b"version: 1\nport: !!python/name:os.system\n", 2),
        "custom-tag": (b"version: 1\npeer: !foo {name: x}\n", 2),
        "huge-integer": (b"version: 1\nport: " + b"9" * 100_000 + b"\n", 2),
        "5000-digit-integer": (b"version: 1\nport: " + b"9" * 4200 + b"\n", 2),
        "100000-keys": (_many_keys(100_000), 0),
        "3000-keys": (_many_keys(3_000), 0),
        "900-unknown-keys": (_many_keys(900), 0),
        "oversized": (b"version: 1\n" + b"# padding\n" * 40_000, 0),
        "long-scalar": (f'version: 1\npeer: {{nickname: "{long_value}"}}\n'.encode(), 2),
        "long-line-error-at-end": (
            b"version: 1\npeers: [" + b"a-rather-long-host-name, " * 1_500 + b"999.1.1.1]\n",
            2,
        ),
        "5000-values": (b"version: 1\npeers: [" + b"a, " * 5_000 + b"b]\n", 2),
        # Encodings.
        "binary": (bytes(rng.randrange(256) for _ in range(4096)), 0),
        "nul-byte": (b"version: 1\nport: 67\x0083\n", 2),
        "latin-1": (b"version: 1\npeer: {nickname: caf\xe9}\n", 2),
        "utf-16-bom": ("version: 1\n".encode("utf-16"), 1),
        "utf-16-le": ("version: 1\n".encode("utf-16-le"), 1),
        "utf-32": ("version: 1\n".encode("utf-32"), 1),
        "bell-raw": (b"version: 1\npeer: {nickname: a\x07b}\n", 2),
        "escape-sequence-raw": (b"version: 1\n\x1b[2J\x1b[31mport: 1\n", 2),
        "truncated-utf-8": (b"version: 1\npeer: {nickname: \xe2\x82}\n", 2),
        # Structure.
        "top-level-list": (b"- version: 1\n", 1),
        "top-level-scalar": (b"hello\n", 1),
        "two-documents": (b"version: 1\n---\nversion: 1\n", 0),
        "duplicate-key": (b"version: 1\nport: 1\nport: 2\n", 3),
        "complex-key": (b"version: 1\n? [a, b]\n: 1\n", 2),
        "unclosed-flow": (b"version: 1\npeers: [a, b\nport: 1\n", 0),
        # Accepted before, but meaning something else than they look like.
        "octal-looking-peer": (b"version: 1\npeers: [192.0.2.012]\n", 2),
        "octet-over-255": (b"version: 1\npeers: [999.1.1.1]\n", 2),
        "short-dotted-peer": (b"version: 1\npeers: [10.1.2]\n", 2),
        "peer-unspecified": (b"version: 1\npeers: [0.0.0.0]\n", 2),
        "peer-broadcast": (b"version: 1\npeers: [255.255.255.255]\n", 2),
        "peer-multicast": (b"version: 1\npeers: [224.0.0.1]\n", 2),
        "peer-port-in-other-digits": (
            "version: 1\npeers: ['host:\uff16\uff17\uff18\uff13']\n".encode(),
            2,
        ),
        "dns-listen-multicast": (b"version: 1\ndns: {listen: '224.0.0.251:53'}\n", 2),
        "export-to-unspecified": (
            b"version: 1\nservices:\n  export:\n  - {name: x, port: 8080, to: '0.0.0.0:80'}\n",
            4,
        ),
        "docker-socket-not-a-url": (b"version: 1\ndocker: {socket: /var/run/docker.sock}\n", 2),
        "mtu-below-ipv6-minimum": (b"version: 1\ndatapath: {mtu: 576}\n", 2),
        "range-everything": (b"version: 1\nipalloc: {range: 0.0.0.0/0}\n", 2),
        "range-loopback": (b"version: 1\nipalloc: {range: 127.0.0.0/8}\n", 2),
        "range-multicast": (b"version: 1\nipalloc: {range: 224.0.0.0/4}\n", 2),
        "range-reserved": (b"version: 1\nipalloc: {range: 240.0.0.0/4}\n", 2),
        "range-link-local": (b"version: 1\nipalloc: {range: 169.254.0.0/16}\n", 2),
        "range-slash-30": (b"version: 1\nipalloc: {range: 10.32.0.0/30}\n", 2),
        "range-slash-32": (b"version: 1\nipalloc: {range: 10.32.0.1/32}\n", 2),
        "expose-network-address": (b"version: 1\nexpose: [{cidr: 10.2.1.0/24}]\n", 2),
        "expose-broadcast-address": (b"version: 1\nexpose: [{cidr: 10.2.1.255/24}]\n", 2),
        "expose-multicast": (b"version: 1\nexpose: [{cidr: 224.0.0.5/24}]\n", 2),
        "expose-loopback": (b"version: 1\nexpose: [{cidr: 127.0.0.2/8}]\n", 2),
        "multicast-peer-name": (b'version: 1\npeer: {name: "03:00:00:00:00:01"}\n', 2),
        "multicast-seed": (
            b'version: 1\nipalloc: {init: {mode: seed, seeds: ["01:00:00:00:00:02"]}}\n',
            2,
        ),
        "duplicate-peer-by-case": (b"version: 1\npeers: [Host.example, host.example]\n", 2),
        "duplicate-peer-by-dot": (b"version: 1\npeers: [host.example., host.example]\n", 2),
        "port-65535": (b"version: 1\nport: 65535\n", 2),
        "metrics-on-mesh-port": (b"version: 1\nmetrics: {listen: '127.0.0.1:6783'}\n", 2),
        "dns-on-fastdp-port": (b"version: 1\ndns: {listen: '10.2.1.1:6784'}\n", 2),
        "dns-and-metrics-same-port": (
            b"version: 1\nmetrics: {listen: '0.0.0.0:5353'}\ndns: {listen: '10.2.1.1:5353'}\n",
            3,
        ),
        "port-on-default-metrics": (b"version: 1\nport: 6782\n", 2),
        "export-of-mesh-port": (
            b"version: 1\nservices:\n  export:\n  - {name: x, port: 6783, to: '10.32.0.5:80'}\n",
            4,
        ),
        "peer-count-float": (b"version: 1\nipalloc: {init: {peer_count: 1e9}}\n", 2),
        "peer-count-huge": (b"version: 1\nipalloc: {init: {peer_count: 1000000000}}\n", 2),
        "nickname-newline": (b'version: 1\npeer: {nickname: "a\\nb"}\n', 2),
        "nickname-bell": (b'version: 1\npeer: {nickname: "a\\ab"}\n', 2),
        "nickname-escape": (b'version: 1\npeer: {nickname: "\\e[31mred"}\n', 2),
    }
