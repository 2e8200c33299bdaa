"""Issue 10.3 with a live Weave Net 2.8.1 router: when the password differs or one side has
none, weaved's `status connections` names the password, never only "read: connection reset
by peer"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.conftest import MixedFactory, weaved_spec
from tests.interop.weave_host import wait_until
from weaved.lab.lab import host_address


@pytest.mark.parametrize(
    ("ours", "weaves", "expected"),
    [
        # the key exchange fails: either side may notice first; both say it is the password
        (
            "weaved-side-secret",
            "weave-side-secret",
            r"the password likely differs|Unable to decrypt TCP msg \(is the password the same",
        ),
        # one side has no password: the features say so (Weave's own words), or the reset
        # during the key exchange is explained
        (
            None,
            "weave-side-secret",
            r"no password specified, but peer requested an encrypted|likely requires a password",
        ),
        (
            "weaved-side-secret",
            None,
            r"password specified, but peer requested an unencrypted|password likely differs",
        ),
    ],
    ids=["different", "weaved-has-none", "weave-has-none"],
)
def test_status_connections_names_the_password(
    mixed_lab: MixedFactory, tmp_path: Path, ours: str | None, weaves: str | None, expected: str
) -> None:
    extra = ""
    if ours is not None:
        secret = tmp_path / "password"
        secret.write_text(ours + "\n")
        secret.chmod(0o600)
        extra = f"password_file: {secret}\n"
    m = mixed_lab(
        {1: weaved_spec(1, [3], extra)},
        weave_peers=(),
        weave_args=["--password", weaves] if weaves else [],
    )
    target = f"{host_address(3)}:6783"

    def line() -> str:
        out = m.weaved("host1", "status", "connections")
        return next((x for x in out.splitlines() if target in x), "")

    # Before issue 10.3 the line could stay "read: connection reset by peer" for good.
    assert wait_until(lambda: "password" in line(), 40), f"{line()!r}\n{m.weave.log_text()}"
    text = line()
    assert re.search(expected, text), text
    assert "established" not in text


def test_same_password_connects_encrypted_and_both_say_so(
    mixed_lab: MixedFactory, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("shared-secret\n")
    secret.chmod(0o600)
    m = mixed_lab(
        {1: weaved_spec(1, [3], f"password_file: {secret}\n")},
        weave_peers=(),
        weave_args=["--password", "shared-secret"],
    )

    def line(text: str) -> str:
        return next((x for x in text.splitlines() if "established" in x), "")

    assert wait_until(lambda: line(m.weaved("host1", "status", "connections")) != "", 40), (
        m.weaved("host1", "status", "connections") + m.weave.log_text()[-2000:]
    )
    assert wait_until(lambda: line(m.weave.status("connections")) != "", 20)
    ours, weaves = (
        line(m.weaved("host1", "status", "connections")),
        line(m.weave.status("connections")),
    )
    # Weave's attribute quirk (no separator) and the encrypted overlay's MTU, on both sides
    assert re.search(r" established encrypted   sleeve 02:00:00:00:01:03\(host3\) ", ours), ours
    assert re.search(r" established encrypted   sleeve 02:00:00:00:01:01\(host1\) ", weaves)
    mtu = re.compile(r"encrypted=truemtu=(\d+)$")
    assert mtu.search(ours) and mtu.search(weaves), (ours, weaves)
    assert mtu.search(ours).group(1) == mtu.search(weaves).group(1)  # type: ignore[union-attr]
    for text in (m.weaved("host1", "status"), m.weave.status()):
        assert "     Encryption: enabled\n" in text
