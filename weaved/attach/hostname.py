"""The DNS name of a Docker container under the hostname rules of Weave's proxy
(`--hostname-from-label`, `--hostname-match`, `--hostname-replacement`), spec keys
`docker.hostname_from_label`, `docker.hostname_match`, `docker.hostname_replacement`.

Weave's proxy set a container's hostname at `docker create` to the result; weaved follows
Docker instead of intercepting it, so the result is the name registered in weaveDNS (qualified
with the domain). A hostname the user gave inside the domain still wins, as it did with Weave
(the proxy only filled in an empty hostname).

Semantics are Go's: the label's value (when the label is set and not empty) replaces the
container's name, then every match of the regexp is replaced with the template, where `$1`,
`${1}`, `$name` and `${name}` expand to groups (`$$` is a `$`), and an empty match right after
a match is skipped (so the default `(.*)` → `$1` leaves a name unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from weaved.spec.models import DEFAULT_HOSTNAME_MATCH as DEFAULT_MATCH
from weaved.spec.models import DEFAULT_HOSTNAME_REPLACEMENT as DEFAULT_REPLACEMENT
from weaved.spec.models import DockerSpec

_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class HostnameRules:
    from_label: str | None = None
    match: str = DEFAULT_MATCH
    replacement: str = DEFAULT_REPLACEMENT

    @property
    def is_default(self) -> bool:
        return not self.from_label and (self.match, self.replacement) == (
            DEFAULT_MATCH,
            DEFAULT_REPLACEMENT,
        )


def rules_of(docker: DockerSpec) -> HostnameRules:
    return HostnameRules(
        docker.hostname_from_label, docker.hostname_match, docker.hostname_replacement
    )


def expand(template: str, match: re.Match[str]) -> str:
    """Go's `Regexp.Expand`: `$name`/`${name}` is the group (empty when there is none)."""
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char != "$" or i + 1 == len(template):
            out.append(char)
            i += 1
            continue
        if template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if template[i + 1] == "{":
            close = template.find("}", i + 2)
            name = template[i + 2 : close] if close > 0 else ""
            if not name or not _WORD.fullmatch(name):
                out.append(char)  # not a reference: Go copies the `$` as is
                i += 1
                continue
            i = close + 1
        else:
            word = _WORD.match(template, i + 1)
            if word is None:
                out.append(char)
                i += 1
                continue
            name, i = word.group(), word.end()
        out.append(_group(match, name))
    return "".join(out)


def _group(match: re.Match[str], name: str) -> str:
    try:
        value = match.group(int(name) if name.isdigit() else name)
    except IndexError:  # no such group: Go expands it to nothing
        return ""
    return value or ""


def replace_all(pattern: str, text: str, template: str) -> str:
    """Go's `Regexp.ReplaceAllString` (empty matches abutting a match are not replaced)."""
    out: list[str] = []
    last = 0
    previous_end = -1
    for match in re.finditer(pattern, text):
        if match.start() == match.end() == previous_end:
            continue
        out.append(text[last : match.start()])
        out.append(expand(template, match))
        last = previous_end = match.end()
    out.append(text[last:])
    return "".join(out)


def dns_name(rules: HostnameRules, name: str, labels: Mapping[str, str] | None) -> str:
    """The container's name in weaveDNS (before the domain) under the rules."""
    if rules.from_label:
        name = (labels or {}).get(rules.from_label) or name
    return replace_all(rules.match, name, rules.replacement)
