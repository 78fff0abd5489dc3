"""Checks of the environments' settings, so that a bad one is named when the env is made."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any


def real(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite float in ``[low, high]``; a bool, a string or NaN is refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = {(True, True): f" in [{low}, {high}]", (True, False): f" >= {low}"}
        where = bounds.get((low is not None, high is not None), "")
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (NumPy integers too; bools refused)."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n
