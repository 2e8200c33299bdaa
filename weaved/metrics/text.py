"""Prometheus' text exposition exactly as Weave Net 2.8.1 (Go's client_golang) writes it.
Pure.

prometheus_client's `generate_latest` prints `1.0` and `0.0` where Go prints `1` and `0`;
dashboards and scripts written against Weave compare the text, so the families collected by
prometheus_client are written here the Go way: families sorted by name, samples by label
values, label names sorted, numbers as Go's `strconv.FormatFloat(v, 'g', -1, 64)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal

from prometheus_client.core import Metric

__all__ = ["CONTENT_TYPE", "go_float", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def go_float(value: float) -> str:
    """Go's shortest `%g`: `1`, `0.5`, `100000`, `1.048576e+06`, `1e-05`, `NaN`, `+Inf`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as Go's shortest formatting does.
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    assert isinstance(digits_tuple.exponent, int)
    point = len(digits) + digits_tuple.exponent  # digits before the decimal point
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # Go: %e when exp < -4 || exp >= 6 (shortest)
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(families: Iterable[Metric]) -> str:
    out: list[str] = []
    named = []
    for family in families:
        name = family.name
        if family.type == "counter":  # prometheus_client keeps `_total` off the family name
            name += "_total"
        named.append((name, family))
    for name, family in sorted(named, key=lambda item: item[0]):
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        if not samples:
            continue  # Go's gatherer drops families with no metrics
        out.append(f"# HELP {name} {_escape_help(family.documentation)}\n")
        out.append(f"# TYPE {name} {family.type}\n")
        rows = []
        for sample in samples:
            labels = sorted(sample.labels.items())
            rows.append(([v for _, v in labels], sample.name, labels, sample.value))
        for _, sample_name, labels, value in sorted(rows, key=lambda r: r[0]):
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            out.append(f"{sample_name}{{{text}}}" if text else sample_name)
            out.append(f" {go_float(value)}\n")
    return "".join(out)
