"""Table cells shared by the benchmark's tables: a number or "n/a", and a ratio that is None
when either side is missing."""

from __future__ import annotations

from typing import Optional


def fmt(x: Optional[float], spec: str = ".0f") -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b
