"""Dataset shift (Ovadia et al. 2019): accuracy, NLL and uncertainty under rotation and noise."""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_generator, check_real
from .._choices import parse_choice
from ..core.base import UncertaintyModel
from ..core.metrics import accuracy, auto_batch_size, expected_calibration_error, nll
from .scores import Score, compute_scores, parse_scores, sample_probs
from .suite import check_in_range

ROTATIONS = tuple(range(0, 181, 15))
NOISE_STDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)


class ShiftKind(str, enum.Enum):
    """Kinds of dataset shift."""

    ROTATION = "rotation"
    NOISE = "noise"


def _check_images(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be images (batch, channels, height, width), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating-point pixels, got {x.dtype}; use x.float() / 255")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    return x


def rotate(x: Tensor, degrees: float, fill: float = 0.0) -> Tensor:
    """Rotate images ``(batch, channels, height, width)`` counter-clockwise by ``degrees``.

    Bilinear interpolation; pixels rotated in from outside the image get ``fill``.

    >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0, 1] = 1.0  # top middle
    >>> rotate(x, 90)[0, 0].round().tolist()  # now middle left
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = _check_images(x)
    theta = math.radians(check_real("degrees", degrees))
    fill = check_real("fill", fill)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid maps each output pixel's (x, y) to the input point it samples; y points
    # down, so sampling at the output point turned by +theta in these coordinates turns the
    # image counter-clockwise on screen.
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    shifted = x - fill
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def add_noise(
    x: Tensor,
    std: float,
    generator: torch.Generator | None = None,
    pixel_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """``x`` plus i.i.d. Gaussian noise of standard deviation ``std``, clipped to the range."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of pixels")
    std = check_real("std", std, 0.0)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    check_in_range(x, pixel_range)  # clipping would rescale inputs on another scale
    generator = check_generator(generator)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + std * noise).clamp(*pixel_range)


@torch.no_grad()
def shift_curve(
    model: UncertaintyModel,
    x: Tensor,
    y: Tensor,
    kind: str | ShiftKind = "rotation",
    levels: Sequence[float] | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    scores: str | Sequence[str | Score] = ("entropy", "mutual_information"),
    *,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Accuracy, NLL, ECE and mean scores at each shift level: one row per level.

    ``kind="rotation"`` turns the images by ``levels`` degrees (default 0 to 180 in steps of
    15); ``kind="noise"`` adds Gaussian pixel noise with standard deviations ``levels``.

    Example:
        >>> import safety_bhn
        >>> model = safety_bhn.build_model("map", hidden=[8], seed=0)
        >>> x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
        >>> rows = shift_curve(model, x, y, "rotation", [0, 90], progress=False)
        >>> [r["level"] for r in rows], sorted(rows[0])[:3]
        ([0.0, 90.0], ['accuracy', 'ece', 'entropy'])
    """
    kind = parse_choice(kind, ShiftKind, "shift kind")
    x = _check_images(x)
    y = model.check_targets(y, x.shape[0]).cpu()
    check_in_range(x, pixel_range)
    if levels is None:
        levels = ROTATIONS if kind is ShiftKind.ROTATION else NOISE_STDS
    if isinstance(levels, numbers.Real):
        levels = [levels]
    if len(levels) == 0:
        raise ValueError("levels is empty")
    floor = -math.inf if kind is ShiftKind.ROTATION else 0.0  # angles may be negative
    bad = [v for v in levels if not (isinstance(v, numbers.Real) and floor <= v < math.inf)]
    if bad:
        what = "finite angles in degrees" if kind is ShiftKind.ROTATION else "noise stds >= 0"
        raise ValueError(f"levels must be {what}, got {bad}")
    chosen = parse_scores(scores)
    n = model.check_samples(model.default_samples if n_samples is None else n_samples)
    batch_size = auto_batch_size(model, n)
    if generator is None:  # the noise is drawn on the CPU (add_noise), seeded either way
        noise_gen = torch.Generator().manual_seed(0)
    elif generator.device.type == "cpu":
        noise_gen = generator
    else:  # a GPU generator: a CPU one seeded from it, so the curve repeats from the seed
        noise_gen = torch.Generator().manual_seed(generator.initial_seed())
    rows = []
    for level in tqdm(levels, desc=f"shift {kind.value}", disable=not progress, leave=False):
        if kind is ShiftKind.ROTATION:
            shifted = rotate(x, level, fill=pixel_range[0])
        else:
            shifted = add_noise(x, level, noise_gen, pixel_range)
        probs = sample_probs(model, shifted, n, generator, batch_size)
        predictive = probs.mean(0)
        row: dict[str, Any] = {
            "shift": kind.value,
            "level": float(level),
            "accuracy": accuracy(predictive, y),
            "nll": nll(predictive, y),
            "ece": expected_calibration_error(predictive, y),
        }
        row.update({s.value: v.mean().item() for s, v in compute_scores(probs, chosen).items()})
        rows.append(row)
    return rows
