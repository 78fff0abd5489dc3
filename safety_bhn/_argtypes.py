"""argparse value types shared by every sub-command: positive and non-negative numbers, folders."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ._checks import MAX_SEED


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def seed_int(text: str) -> int:
    """A seed: an integer in 0..MAX_SEED (torch seeds hold 64 bits)."""
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_SEED} (torch seeds hold 64 bits), got {text}"
        )
    return value


def folder(text: str) -> str:
    """A folder, absolute (so a run saved here is found from another working directory), with
    ``~`` expanded as the data loaders expand it; an empty name is refused, not read as ".".
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return str(Path(text).expanduser().resolve())
