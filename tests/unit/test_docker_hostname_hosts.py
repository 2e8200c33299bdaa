"""Weave proxy's hostname rules and Weave's /etc/hosts rewrite, as pure functions."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from weaved.attach.cli import parse_add_host
from weaved.attach.hostname import HostnameRules, dns_name, replace_all, rules_of
from weaved.docker.hosts import hosts_contents, rewrite_etc_hosts
from weaved.errors import UsageError
from weaved.spec.models import DockerSpec


def test_default_rules_leave_the_name_alone() -> None:
    assert dns_name(HostnameRules(), "web-1", None) == "web-1"
    assert HostnameRules().is_default


def test_match_and_replacement_as_weaves_documentation() -> None:
    rules = HostnameRules(None, "^aws-[0-9]+-(.*)$", "my-app-$1")
    assert dns_name(rules, "aws-12798186823-foo", None) == "my-app-foo"
    assert dns_name(rules, "other", None) == "other"  # no match: unchanged


def test_go_replace_all_skips_the_empty_match_after_a_match() -> None:
    # Python's re.sub would give "my-app-foomy-app-"; Go's ReplaceAllString "my-app-foo".
    assert replace_all("(.*)", "foo", "my-app-$1") == "my-app-foo"
    assert replace_all("o", "foo", "0") == "f00"


@pytest.mark.parametrize(
    ("template", "expected"),
    [("${1}x", "foox"), ("$1x", "f"), ("$$1", "f$1"), ("${n}", "foo"), ("$", "f$"), ("$9", "f")],
)
def test_go_template_expansion(template: str, expected: str) -> None:
    # `$1x` names the group "1x", which does not exist: Go expands it to nothing.
    assert replace_all("(?P<n>o+)", "foo", template) == expected


def test_label_replaces_the_name_when_set_and_not_empty() -> None:
    rules = HostnameRules("works.weave.hostname")
    assert dns_name(rules, "c1", {"works.weave.hostname": "db"}) == "db"
    assert dns_name(rules, "c1", {"works.weave.hostname": ""}) == "c1"
    assert dns_name(rules, "c1", None) == "c1"


def test_spec_keys_and_a_bad_regexp_is_refused() -> None:
    spec = DockerSpec.model_validate(
        {"hostname_match": "^app-(.*)$", "hostname_replacement": "$1", "hostname_from_label": "x"}
    )
    assert dns_name(rules_of(spec), "app-web", None) == "web"
    with pytest.raises(ValidationError, match="not a regular expression"):
        DockerSpec.model_validate({"hostname_match": "(unclosed"})


def test_hosts_contents_are_weaves() -> None:
    text = hosts_contents(
        "web.weave.local.", [ipaddress.IPv4Address("10.32.0.5")], ["db:10.32.0.9", "bad"]
    )
    lines = text.splitlines()
    assert lines[:3] == [
        "# created by Weave - BEGIN",
        "# container hostname",
        "10.32.0.5       web.weave.local web",
    ]
    assert "10.32.0.9       db" in lines
    assert "127.0.0.1       localhost" in lines
    assert lines[-1] == "# created by Weave - END"
    assert "10.32.0.5       web\n" in hosts_contents(
        "web.", [ipaddress.IPv4Address("10.32.0.5")], []
    )


def test_add_host_is_checked() -> None:
    assert parse_add_host("db:10.32.0.9") == "db:10.32.0.9"
    for bad in ("db", "db:", ":10.0.0.1", "db:notanip"):
        with pytest.raises(UsageError, match="--add-host"):
            parse_add_host(bad)


def test_rewrite_leaves_the_old_inode_with_our_contents(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("docker's\n")
    held = hosts.open()  # as the container's bind mount holds the inode
    rewrite_etc_hosts(hosts, "ours\n")
    held.seek(0)
    assert held.read() == "ours\n"
    hosts.write_text("docker again\n")  # Docker rewrites its file: the container's is not it
    held.seek(0)
    assert held.read() == "ours\n"
    held.close()
