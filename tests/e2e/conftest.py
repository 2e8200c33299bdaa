"""Fixtures shared by the lab tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from weaved.lab.lab import Lab

LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """`make(name, {index: spec text}, resync=2.0)`: a lab whose hosts run those specs;
    every lab made is taken down after the test."""
    labs: list[Lab] = []

    def make(name: str, specs: dict[int, str], resync: float = 2.0) -> Lab:
        spec_dir = tmp_path / name
        spec_dir.mkdir()
        for index, text in specs.items():
            (spec_dir / f"host{index}.yaml").write_text(text)
        lab = Lab(name)
        labs.append(lab)
        lab.up(len(specs), spec_dir=spec_dir, resync=resync)
        return lab

    yield make
    for lab in labs:
        lab.down()
