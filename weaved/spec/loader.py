"""YAML text → Spec, keeping where every key and item came from so errors can point at it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.error import YAMLError

from weaved.errors import Bug, SpecError
from weaved.spec import fastload
from weaved.spec.checks import CHECK_DEPENDS, check_spec
from weaved.spec.cluster import is_cluster_text
from weaved.spec.diagnostics import Problem, SourceText, SpecProblems
from weaved.spec.guard import (
    MAX_SPEC_BYTES,
    decode_spec,
    expanded_size,
    prescan,
    read_regular_file,
    text_problems,
)
from weaved.spec.located import (
    Positions,
    load_located,
    locate,
    plain,
    pydantic_problems,
    record_positions,
)
from weaved.spec.models import Spec

log = logging.getLogger(__name__)


def _checks_of_valid_sections(
    data: dict[str, Any], found: list[Problem], positions: Positions, check_files: bool
) -> list[Problem]:
    """The semantic checks of the sections that did validate, so that every problem of the
    file is reported at once, not only the first kind."""
    broken = {str(p.path[0]) for p in found if p.path}
    partial = {k: v for k, v in data.items() if k not in broken}
    partial["version"] = 1
    try:
        spec = Spec.model_validate(partial)
    except ValidationError:
        return []
    skip = broken | {s for s, deps in CHECK_DEPENDS.items() if deps & broken}
    return [
        Problem(p.path, p.message, p.hint, *locate(p.path, positions))
        for p in check_spec(spec, check_files=check_files)
        if not p.path or str(p.path[0]) not in skip
    ]


def _fast_parse(text: str, check_files: bool) -> Spec | None:
    """The common case, a valid spec, built from libyaml's events within the guard's bounds
    (fastload keeps them); None means "go and locate problems" (or: leave it to the full
    loader). Without an alias the document is no bigger than its bounded text, so only an
    aliased one is measured again."""
    try:
        document, aliases = fastload.load_counted(text)
        if aliases:
            expanded_size(document)
        spec = Spec.model_validate(document)
    except (YAMLError, ValidationError, ValueError, TypeError, KeyError):
        return None
    return None if check_spec(spec, check_files=check_files) else spec


def parse_spec_text(text: str, filename: str = "<spec>", *, check_files: bool = True) -> Spec:
    """Parse and validate; raises SpecProblems listing every problem with its location.
    Nothing else escapes: should a check or loader still fail on some input, that is a
    weaved bug, reported as one (the traceback is logged at debug level)."""
    try:
        return _parse_spec_text(text, filename, check_files)
    except SpecError:
        raise
    except Exception as exc:
        log.debug("loading the spec crashed", exc_info=True)
        raise Bug(
            f"{filename}: internal error while loading the spec: {exc!r}\n"
            "  hint: this is a weaved bug; please report it with the spec file"
        ) from None


def _parse_spec_text(text: str, filename: str, check_files: bool) -> Spec:
    source = SourceText(filename, text)
    cluster = is_cluster_text(text)
    if not cluster and not text_problems(text):  # the common case: one walk of the events
        fast = _fast_parse(text, check_files)
        if fast is not None:
            return fast
    scan, refused = prescan(text)
    if refused:
        raise SpecProblems(refused, source)
    if cluster:  # one file for every host: this machine's section of it
        from weaved.spec.cluster import parse_cluster_host

        return parse_cluster_host(text, source, scan, check_files)
    # Something is wrong: parse again keeping every key's line and column to say where.
    document = load_located(text, source, scan)
    positions: Positions = {}
    record_positions(document, (), positions)
    data = plain(document)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = pydantic_problems(exc, positions)
        problems += _checks_of_valid_sections(data, problems, positions, check_files)
        raise SpecProblems(problems, source) from None
    problems = [
        Problem(p.path, p.message, p.hint, *locate(p.path, positions))
        for p in check_spec(spec, check_files=check_files)
    ]
    if problems:
        raise SpecProblems(problems, source)
    return spec


def read_spec_file(path: str | Path) -> bytes:
    """The raw bytes of a spec file: a regular file of bounded size, never a FIFO or device."""
    p = Path(path)
    try:
        return read_regular_file(p, MAX_SPEC_BYTES, "the spec")
    except FileNotFoundError:
        raise SpecError(
            f"{p}: spec file not found\n  hint: create it (see examples/) or pass -f FILE"
        ) from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec: {exc.strerror}") from None


def spec_text(raw: bytes, filename: str) -> str:
    """The spec's text, or SpecProblems locating the first byte that is not acceptable text."""
    text, problems = decode_spec(raw)
    if problems:
        raise SpecProblems(problems, SourceText(filename, text))
    return text


def parse_spec_bytes(raw: bytes, filename: str = "<spec>", *, check_files: bool = True) -> Spec:
    return parse_spec_text(spec_text(raw, filename), filename, check_files=check_files)


def load_spec(path: str | Path, *, check_files: bool = True) -> Spec:
    """Read a spec file; every failure is a SpecError naming the file."""
    return parse_spec_bytes(read_spec_file(path), str(path), check_files=check_files)
