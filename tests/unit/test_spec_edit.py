from __future__ import annotations

from pathlib import Path

import pytest

from weaved.errors import SpecError
from weaved.spec.edit import connect, expose, forget, hide

TEXT = """\
# this host
version: 1
peers:
  - 192.0.2.11   # the hub
  - 192.0.2.12
expose: [{cidr: 10.2.1.1/24}]  # the host's own address
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "weave.yaml"
    path.write_text(TEXT)
    return path


def test_connect_appends_and_keeps_comments(spec: Path) -> None:
    result = connect(spec, ["192.0.2.13", "192.0.2.11:6783"])
    assert result.peers == ["192.0.2.11:6783", "192.0.2.12:6783", "192.0.2.13:6783"]
    text = spec.read_text()
    assert "# this host" in text and "# the hub" in text and "# the host's own address" in text


def test_connect_replace(spec: Path) -> None:
    assert connect(spec, ["192.0.2.99"], replace=True).peers == ["192.0.2.99:6783"]


def test_forget_removes_by_normal_form(spec: Path) -> None:
    assert forget(spec, ["192.0.2.12:6783"]).peers == ["192.0.2.11:6783"]


def test_an_edit_that_would_be_invalid_changes_nothing(spec: Path) -> None:
    with pytest.raises(SpecError, match="peers"):
        connect(spec, ["not a host!"])
    assert spec.read_text() == TEXT


def test_expose_and_hide(spec: Path) -> None:
    result = expose(spec, ["net:default"], "me.weave.local.")
    assert [e.cidr for e in result.expose] == ["10.2.1.1/24", "net:default"]
    assert result.expose[1].dns_names == ("me.weave.local.",)
    assert [e.cidr for e in hide(spec, ["10.2.1.1/24"]).expose] == ["net:default"]
    assert "# this host" in spec.read_text()


def test_file_mode_is_kept(spec: Path) -> None:
    spec.chmod(0o640)
    connect(spec, ["192.0.2.77"])
    assert spec.stat().st_mode & 0o777 == 0o640


def test_connect_of_a_peer_spelled_differently_is_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("version: 1\npeers: [host.example]\n")
    spec = connect(path, ["Host.Example.", "host.example:6783"])
    assert spec.peers == ["host.example:6783"]


def test_expose_of_an_existing_entry_keeps_its_names_and_adds_the_new_one(spec: Path) -> None:
    # Weave's `expose ADDR -h NAME` run twice: both names are the address's (issue 11.6).
    assert expose(spec, ["10.2.1.1/24"], "a.weave.local").expose[0].dns_names == ("a.weave.local.",)
    assert "dns_name: a.weave.local" in spec.read_text()  # one name: the single form
    result = expose(spec, ["10.2.1.1/24"], "b.weave.local")
    assert result.expose[0].dns_names == ("a.weave.local.", "b.weave.local.")
    # The same name again (another spelling) changes nothing; no name keeps them all.
    assert expose(spec, ["10.2.1.1/24"], "B.weave.local.").expose[0].dns_names == (
        "a.weave.local.",
        "b.weave.local.",
    )
    assert expose(spec, ["10.2.1.1/24"]).expose[0].dns_names == (
        "a.weave.local.",
        "b.weave.local.",
    )
    assert "# the host's own address" in spec.read_text()


def test_expose_adds_to_a_block_list_of_names(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\nexpose:\n  - cidr: 10.2.1.1/24\n    dns_name:\n      - a.weave.local.\n"
    )
    result = expose(path, ["10.2.1.1/24"], "c.weave.local.")
    assert result.expose[0].dns_names == ("a.weave.local.", "c.weave.local.")


def test_expose_edits_an_entry_of_ipam_twice(spec: Path) -> None:
    """`net:default` is plain YAML only in block style: a second edit once wrote it as
    `{cidr: net:default, …}`, which does not parse, and `expose` failed."""
    expose(spec, ["net:default"], "one.weave.local")
    result = expose(spec, ["net:default"], "two.weave.local")
    assert result.expose[1].dns_names == ("one.weave.local.", "two.weave.local.")
    assert [e.cidr for e in expose(spec, ["10.2.1.9/24"]).expose][1:] == [
        "net:default",
        "10.2.1.9/24",
    ]
    assert [e.cidr for e in hide(spec, ["10.2.1.1/24"]).expose] == ["net:default", "10.2.1.9/24"]
