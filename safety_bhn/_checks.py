"""Checks of numeric and flag arguments, shared so that every module words its errors alike."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum``, or a ValueError naming ``name``.

    Integer NumPy scalars are accepted; ``bool``, floats and strings are not.

    >>> check_int("k", np.int64(3))
    3
    """
    try:
        n = operator.index(value)  # ints, integer NumPy scalars and 0-d integer arrays
    except TypeError:
        n = None
    if isinstance(value, bool | np.bool_) or n is None or n < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return n


#: The largest seed the toolkit takes. torch seeds hold 64 bits (up to 2**64 - 1), and some
#: seeds are derived from the one given (fit seeds its validation draws with ``seed + 1``, a
#: safe agent its cost model likewise), so half that range is kept for them.
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: Any, maximum: int = MAX_SEED) -> int:
    """``value`` as an ``int`` seed in ``0..maximum``, or a ValueError naming ``name``.

    >>> check_seed("seed", np.uint64(2**63 - 1)) == MAX_SEED
    True
    """
    seed = check_int(name, value, minimum=0)
    if seed > maximum:
        raise ValueError(f"{name} must be at most {maximum} (torch seeds hold 64 bits), got {seed}")
    return seed


def check_real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``).

    NumPy scalars are accepted; NaN, infinities, ``bool`` and strings are not.

    >>> check_real("lr", 1e-3, 0.0, low_open=True)
    0.001
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    try:
        ok = ok and math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if low is not None and high is not None:
            kind = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low == 0:
            kind = "a positive number" if low_open else "a non-negative number"
        elif low is not None:
            kind = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            kind = f"a finite number <= {high:g}"
        else:
            kind = "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return float(value)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a ``bool``; strings such as ``"false"`` are refused rather than read as true.

    >>> check_flag("safe", np.bool_(False))
    False
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_generator(generator: Any) -> torch.Generator | None:
    """``generator`` if it is None or a ``torch.Generator``, else a ValueError naming the fix."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} "
            f"{generator!r}; e.g. generator=torch.Generator().manual_seed(0)"
        )
    return generator


def plain_value(name: str, value: Any) -> Any:
    """``value`` as plain Python (numbers, strings, lists) that a checkpoint can store and
    ``load(weights_only=True)`` can read back: NumPy scalars and arrays and one-element or
    small tensors are converted; anything else raises a ValueError naming the option."""
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):  # np.float64 is a float
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain_value(name, v) for v in value]
    raise ValueError(
        f"option {name}={value!r} must be a number, string or list of them (it is saved in "
        f"the checkpoint), got {type(value).__name__}"
    )


def check_positive_ints(name: str, values: Sequence[int]) -> list[int]:
    """``values`` (a list of positive integers, or one) as a non-empty list of ``int``."""
    values = [values] if isinstance(values, numbers.Integral) else values
    try:
        ints = [check_int(name, v) for v in values]
    except (TypeError, ValueError):  # not a list, or a bad entry
        ints = []
    if not ints:
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return ints
