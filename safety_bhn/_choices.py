"""String options as `str` Enums, checked early with a "did you mean" hint."""

from __future__ import annotations

import difflib
import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)


def did_you_mean(value: object, valid: list[str]) -> str:
    """``". Did you mean 'x'?"`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value).lower().replace("-", "_"), valid, n=1)
    return f". Did you mean {close[0]!r}?" if close else ""


def parse_choice(value: str | E, choices: type[E], what: str) -> E:
    """Return ``value`` as a member of ``choices`` or raise a ValueError that names the fix.

    >>> from safety_bhn.core.build import Method
    >>> parse_choice("bhn", Method, "method")
    <Method.BHN: 'bhn'>
    """
    if isinstance(value, choices):
        return value
    valid = [c.value for c in choices]
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        for c in choices:
            if c.value == key:
                return c
    expected = ", ".join(map(repr, valid))
    raise ValueError(
        f"unknown {what} {value!r}; expected one of {expected}{did_you_mean(value, valid)}"
    )
