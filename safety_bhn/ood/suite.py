"""OOD suites: named out-of-distribution sets built around an in-distribution test set.

Built-in sets (Hendrycks & Gimpel 2017; Krueger et al. 2017): ``fashion_mnist`` (real images
from the data folder), ``uniform_noise``, ``gaussian_noise`` (mean mid-range, std the full
range, clipped to the pixel range), ``inverted`` (``lo + hi - x``) and ``held_out_classes``
(test inputs of classes the model was not trained on). Register your own with
:func:`register_ood_set`. Set names, like suite names, ignore case and read ``-`` as ``_``.

The generated sets are clipped to the pixel range, so that float rounding (``lo + hi - x``
can land an ulp outside it) never pushes them past the range check.
"""

from __future__ import annotations

import enum
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, check_seed
from .._choices import did_you_mean, parse_choice
from ..data import class_list, load_dataset, select_classes

SetSource = Tensor | Dataset | Callable[..., "Tensor | Dataset"]


class OODSetName(str, enum.Enum):
    """The built-in OOD sets."""

    FASHION_MNIST = "fashion_mnist"
    UNIFORM_NOISE = "uniform_noise"
    GAUSSIAN_NOISE = "gaussian_noise"
    INVERTED = "inverted"
    HELD_OUT_CLASSES = "held_out_classes"


class SuiteName(str, enum.Enum):
    """Named suites: ``mnist`` (the four sets that need no class split) and ``mnist_held_out``
    (in-distribution = digits 0-4, plus the held-out digits 5-9 as a fifth set)."""

    MNIST = "mnist"
    MNIST_HELD_OUT = "mnist_held_out"


MNIST_SETS = ("fashion_mnist", "uniform_noise", "gaussian_noise", "inverted")
HELD_OUT_KNOWN = (0, 1, 2, 3, 4)


@dataclass
class SetContext:
    """What a set factory gets: the in-distribution inputs it must resemble in shape and range."""

    x_in: Tensor
    """in-distribution inputs (the suite's, after subsampling)"""
    n: int
    """how many examples to make"""
    generator: torch.Generator
    """the source of randomness (seeded by the suite)"""
    pixel_range: tuple[float, float]
    """(low, high) of valid input values"""
    data_dir: str | os.PathLike | None = None
    """folder with real data sets (fashion-mnist/...)"""
    x_novel: Tensor | None = None
    """inputs of the held-out classes, when the suite was built with known_classes"""


def _fashion_mnist(ctx: SetContext) -> Tensor:
    """Fashion-MNIST test images, mapped from [0, 1] onto the in-distribution pixel range:
    any affine preprocessing of the digits (0-255 pixels, standardising) maps [0, 1] onto
    that range, so the clothes get the digits' preprocessing, and not a scale of their own."""
    x, _ = load_dataset("fashion_mnist", "test", ctx.data_dir)
    x = x[torch.randperm(x.shape[0], generator=ctx.generator)[: ctx.n]]
    lo, hi = ctx.pixel_range
    return x if (lo, hi) == (0.0, 1.0) else (lo + (hi - lo) * x).to(ctx.x_in.dtype).clamp(lo, hi)


def _uniform_noise(ctx: SetContext) -> Tensor:
    lo, hi = ctx.pixel_range
    shape = (ctx.n, *ctx.x_in.shape[1:])
    noise = torch.rand(shape, generator=ctx.generator, dtype=ctx.x_in.dtype)
    return (lo + (hi - lo) * noise).clamp(lo, hi)


def _gaussian_noise(ctx: SetContext) -> Tensor:
    lo, hi = ctx.pixel_range
    shape = (ctx.n, *ctx.x_in.shape[1:])
    noise = torch.randn(shape, generator=ctx.generator, dtype=ctx.x_in.dtype)
    return ((lo + hi) / 2 + (hi - lo) * noise).clamp(lo, hi)


def _inverted(ctx: SetContext) -> Tensor:
    lo, hi = ctx.pixel_range
    return (lo + hi - ctx.x_in[: ctx.n]).clamp(lo, hi)


def _held_out_classes(ctx: SetContext) -> Tensor:
    if ctx.x_novel is None:
        raise ValueError(
            "the 'held_out_classes' set needs a class split: build the suite with labels and "
            "known_classes (e.g. suite 'mnist_held_out', for a model trained on digits 0-4)"
        )
    return ctx.x_novel[: ctx.n]


_REGISTRY: dict[str, SetSource] = {
    OODSetName.FASHION_MNIST.value: _fashion_mnist,
    OODSetName.UNIFORM_NOISE.value: _uniform_noise,
    OODSetName.GAUSSIAN_NOISE.value: _gaussian_noise,
    OODSetName.INVERTED.value: _inverted,
    OODSetName.HELD_OUT_CLASSES.value: _held_out_classes,
}


def _key(name: str) -> str:
    """What a set or suite name is matched by: case and ``-`` for ``_`` do not count."""
    return name.strip().lower().replace("-", "_")


def _registered(name: object) -> str | None:
    """The registered set that ``name`` stands for (in any case, ``-`` for ``_``), or None."""
    if not isinstance(name, str):
        return None
    if name in _REGISTRY:
        return name
    return next((n for n in _REGISTRY if _key(n) == _key(name)), None)


def register_ood_set(name: str, source: SetSource, *, overwrite: bool = False) -> None:
    """Add an OOD set to the registry so :func:`build_suite` can use it by name (any case).

    ``source`` is a tensor ``(N, *input_shape)``, a ``Dataset`` whose items are inputs or
    ``(input, label)`` pairs, or a callable returning either: called with no arguments, or
    with one :class:`SetContext` if it takes a parameter. ``overwrite=True`` replaces a set
    registered before; the built-in sets cannot be replaced.

    Example:
        >>> register_ood_set("blank", lambda ctx: torch.zeros(ctx.n, *ctx.x_in.shape[1:]))
        >>> suite = build_suite(torch.rand(8, 1, 4, 4), sets=["blank", "inverted"])
        >>> suite.names
        ['blank', 'inverted']
        >>> unregister_ood_set("blank")
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an OOD set name must be a non-empty string, got {name!r}")
    reserved = ["all", *(c.value for c in SuiteName)]
    if _key(name) in reserved or "," in name:
        raise ValueError(
            f"OOD set name {name!r} cannot be used: {', '.join(map(repr, reserved))} name "
            "suites and commas separate set names in build_suite(sets=...); pick another name"
        )
    if not (isinstance(source, Tensor | Dataset) or callable(source)):
        raise TypeError(
            f"OOD set {name!r}: source must be a tensor, a Dataset or a callable, "
            f"got {type(source).__name__}"
        )
    existing = _registered(name)
    if existing is not None and existing != name:
        raise ValueError(
            f"OOD set name {name!r} differs from the registered set {existing!r} only in case, "
            f"spaces or '-' for '_', which set names ignore; register it as {existing!r} (with "
            "overwrite=True to replace it) or pick another name"
        )
    if existing in {s.value for s in OODSetName}:  # reports name it: it keeps its meaning
        raise ValueError(
            f"{existing!r} is a built-in OOD set and cannot be replaced (nor, once replaced, "
            f"restored); register yours under another name, e.g. '{existing}_custom'"
        )
    if existing is not None and not overwrite:
        raise ValueError(f"an OOD set named {name!r} is already registered; pass overwrite=True")
    _REGISTRY[name] = source


def unregister_ood_set(name: str) -> None:
    """Remove a user-registered set (built-in sets cannot be removed)."""
    found = _registered(name)
    if found in {s.value for s in OODSetName}:
        raise ValueError(f"{name!r} is a built-in OOD set and cannot be removed")
    if found is None:
        raise ValueError(
            f"no OOD set named {name!r} is registered; registered sets: "
            f"{', '.join(_REGISTRY)}{did_you_mean(name, list(_REGISTRY))}"
        )
    del _REGISTRY[found]


def available_sets() -> list[str]:
    """Names of every registered OOD set (built-in first)."""
    return list(_REGISTRY)


def _to_tensor(name: str, data: object) -> Tensor:
    if isinstance(data, Dataset) and not isinstance(data, Tensor):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"OOD set {name!r}: the Dataset must define __len__") from None
        if n == 0:
            raise ValueError(f"OOD set {name!r} is empty")
        items = [data[i] for i in range(n)]
        items = [it[0] if isinstance(it, tuple | list) else it for it in items]
        data = torch.stack([torch.as_tensor(it) for it in items])
    if not isinstance(data, Tensor):
        raise TypeError(
            f"OOD set {name!r} must be a tensor or a Dataset, got {type(data).__name__}"
        )
    return data


def check_set(
    name: str, x: Tensor | Dataset, x_in: Tensor, pixel_range: tuple[float, float]
) -> Tensor:
    """Validate an OOD set against the in-distribution inputs and return it as a tensor.

    Raises a ValueError naming the set for an empty set, a different input shape, integer
    pixels, NaN, or values outside ``pixel_range`` (the in-distribution set's range).
    """
    x = _to_tensor(name, x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"OOD set {name!r} is empty (shape {tuple(x.shape)})")
    if tuple(x.shape[1:]) != tuple(x_in.shape[1:]):
        raise ValueError(
            f"OOD set {name!r} has inputs of shape {tuple(x.shape[1:])} but the "
            f"in-distribution inputs are {tuple(x_in.shape[1:])}; reshape it, e.g. "
            f"x.view(-1, {', '.join(map(str, x_in.shape[1:]))})"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"OOD set {name!r} has dtype {x.dtype} but the in-distribution set is {x_in.dtype} "
            f"in [{pixel_range[0]:g}, {pixel_range[1]:g}]; scale it (e.g. x.float() / 255)"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"OOD set {name!r} contains NaN or infinite values")
    lo, hi = pixel_range
    x_lo, x_hi = x.min().item(), x.max().item()
    tol = _range_tolerance(lo, hi)
    if x_lo < lo - tol or x_hi > hi + tol:
        raise ValueError(
            f"OOD set {name!r} has values in [{x_lo:.4g}, {x_hi:.4g}], outside the "
            f"in-distribution pixel range [{lo:g}, {hi:g}]; rescale it to that range (a "
            "detector could otherwise spot the range, not the content)"
        )
    in_lo, in_hi = x_in.min().item(), x_in.max().item()
    if 0 < x_hi - x_lo < 0.05 * (in_hi - in_lo):  # constant sets (span 0) are legitimate
        warnings.warn(
            f"OOD set {name!r} spans only [{x_lo:.4g}, {x_hi:.4g}] against the in-distribution "
            f"inputs' [{in_lo:.4g}, {in_hi:.4g}]; if it is on another scale (divided by 255 "
            "twice, or [0, 1] against 0-255 pixels), rescale it, or a detector may spot the "
            "scale rather than the content",
            stacklevel=3,
        )
    return x.to(x_in.dtype)


def _range_tolerance(lo: float, hi: float) -> float:
    """How far outside ``[lo, hi]`` values may stray by rounding: ``1e-6``, relative to the
    range's magnitude when that exceeds one (an ulp of float32 pixels near 256 is 3e-5)."""
    return 1e-6 * max(1.0, abs(lo), abs(hi))


def check_pixel_range(pixel_range: object) -> tuple[float, float]:
    """``pixel_range`` as two finite floats ``(low, high)`` with low < high, or a ValueError."""
    try:
        lo, hi = (float(v) for v in pixel_range)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(
            f"pixel_range must be two numbers (low, high), got {pixel_range!r}; e.g. "
            "pixel_range=(0, 1) for pixels in [0, 1]"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"pixel_range must be finite (low, high) with low < high, got {pixel_range}; e.g. "
            "pixel_range=(0, 1) for pixels in [0, 1]"
        )
    return lo, hi


def check_in_range(x: Tensor, pixel_range: tuple[float, float], what: str = "x") -> None:
    """Raise a ValueError unless ``pixel_range`` is ``(low, high)`` with low < high and ``x``
    lies inside it: an attack or shift that clips to the range would otherwise rescale
    inputs on another scale (0-255 pixels, standardised images) without a word."""
    lo, hi = check_pixel_range(pixel_range)
    x_lo, x_hi = float(x.min()), float(x.max())
    tol = _range_tolerance(lo, hi)
    if x_lo < lo - tol or x_hi > hi + tol:
        raise ValueError(
            f"{what} has values in [{x_lo:g}, {x_hi:g}], outside pixel_range [{lo:g}, {hi:g}]; "
            "pass the range your inputs use (e.g. pixel_range=(x.min(), x.max()) for "
            "standardised images), or scale them (e.g. x.float() / 255)"
        )


def _pixel_range(x_in: Tensor, pixel_range: tuple[float, float] | None) -> tuple[float, float]:
    if pixel_range is None:
        lo, hi = x_in.min().item(), x_in.max().item()
        return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)
    return check_pixel_range(pixel_range)


@dataclass
class OODSuite:
    """An in-distribution set and named OOD sets of the same shape, dtype and range.

    Build one with :func:`build_suite`, or directly and then :meth:`add` sets.
    """

    x_in: Tensor
    y_in: Tensor | None = None
    pixel_range: tuple[float, float] | None = None
    sets: dict[str, Tensor] = field(default_factory=dict)
    #: the classes the in-distribution labels were relabelled from (``y_in`` = i for class
    #: ``known_classes[i]``), when the suite was built for a model that learned only these
    known_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x_in, Tensor):
            raise TypeError(f"x_in must be a tensor, got {type(self.x_in).__name__}")
        if self.x_in.dim() < 2 or self.x_in.shape[0] == 0:
            raise ValueError(
                f"x_in must be a non-empty batch (N, *input_shape), got {tuple(self.x_in.shape)}"
            )
        if not self.x_in.is_floating_point():
            raise ValueError(
                f"x_in has dtype {self.x_in.dtype}; pass floating-point pixels, e.g. "
                "x.float() / 255"
            )
        if not torch.isfinite(self.x_in).all():
            raise ValueError("x_in contains NaN or infinite values")
        y = self.y_in
        if y is not None:
            if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
                got = getattr(y, "dtype", type(y).__name__)
                raise ValueError(f"y_in must be an integer tensor of class indices, got {got}")
            if tuple(y.shape) != (self.x_in.shape[0],):
                raise ValueError(
                    f"y_in has shape {tuple(y.shape)}; expected ({self.x_in.shape[0]},)"
                )
            if (y < 0).any():
                raise ValueError(f"y_in must hold class indices >= 0, got {int(y.min())}")
        self.pixel_range = _pixel_range(self.x_in, self.pixel_range)
        lo, hi = self.pixel_range
        tol = _range_tolerance(lo, hi)
        if self.x_in.min().item() < lo - tol or self.x_in.max().item() > hi + tol:
            raise ValueError(f"x_in has values outside pixel_range [{lo:g}, {hi:g}]")
        sets, self.sets = dict(self.sets), {}
        for name, x in sets.items():
            self.add(name, x)

    def add(self, name: str, data: Tensor | Dataset) -> OODSuite:
        """Add (or replace) the OOD set ``name`` after checking shape, dtype and range."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an OOD set name must be a non-empty string, got {name!r}")
        assert self.pixel_range is not None
        self.sets[name] = check_set(name, data, self.x_in, self.pixel_range)
        return self

    @property
    def names(self) -> list[str]:
        return list(self.sets)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.sets:
            raise ValueError(f"the suite has no OOD set {name!r}; it has {self.names}")
        return self.sets[name]

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self.sets.items())

    def __len__(self) -> int:
        return len(self.sets)


def _make(name: str, source: SetSource, ctx: SetContext) -> Tensor | Dataset:
    if isinstance(source, Tensor | Dataset):
        return source
    try:
        takes_context = bool(inspect.signature(source).parameters)
    except (TypeError, ValueError):
        takes_context = True
    return source(ctx) if takes_context else source()


def set_names(sets: str | Sequence[str]) -> list[str]:
    """The OOD set names that ``sets`` (as :func:`build_suite` takes it) stands for.

    >>> set_names("mnist_held_out")[0]
    'held_out_classes'
    """
    return _resolve_sets(sets)[0]


def _resolve_sets(sets: str | Sequence[str]) -> tuple[list[str], bool]:
    """Names of the sets to build, and whether the suite needs the held-out class split."""
    if not isinstance(sets, str | Sequence):
        raise ValueError(
            f"sets must be a suite name ('mnist', 'mnist_held_out'), 'all', set names joined by "
            f"commas, or a list of set names, got {sets!r}"
        )
    if isinstance(sets, str):
        if _key(sets) == "all":
            return available_sets(), False
        if "," not in sets and _registered(sets) is None:
            suites = [c.value for c in SuiteName]
            if _key(sets) not in suites:
                hint = did_you_mean(sets, suites + list(_REGISTRY))
                raise ValueError(
                    f"unknown OOD suite or set {sets!r}; suites: {', '.join(suites)}; sets "
                    f"(one, or several joined by commas): {', '.join(_REGISTRY)}; or "
                    f"'all'{hint or '.'}"
                )
            suite = parse_choice(sets, SuiteName, "OOD suite (or set)")
            if suite is SuiteName.MNIST:
                return list(MNIST_SETS), False
            return [OODSetName.HELD_OUT_CLASSES.value, *MNIST_SETS], True
        sets = [s.strip() for s in sets.split(",") if s.strip()]
    names = []
    for name in sets:
        found = _registered(name)
        if found is None:
            raise ValueError(
                f"unknown OOD set {name!r}; registered sets: {', '.join(_REGISTRY)}"
                + did_you_mean(name, list(_REGISTRY))
            )
        names.append(found)
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("no OOD sets given")
    return names, OODSetName.HELD_OUT_CLASSES.value in names


def needs_class_split(sets: str | Sequence[str]) -> bool:
    """Whether ``sets`` asks for the ``held_out_classes`` set by name (``"all"`` does not: it
    includes the set only where the model's classes leave some out).

    >>> needs_class_split("mnist_held_out"), needs_class_split("all")
    (True, False)
    """
    return _resolve_sets(sets)[1]


def held_out_split(
    x: Tensor, y: Tensor, known_classes: Sequence[int] = HELD_OUT_KNOWN
) -> tuple[Tensor, Tensor, Tensor]:
    """Split labelled data into the known classes ``(x_known, y_known)`` and ``x_novel``.

    Labels of the known classes are relabelled ``0..len(known_classes)-1`` in the given order,
    so a model with ``n_classes=len(known_classes)`` can be trained on them.

    >>> x, y = torch.rand(6, 2), torch.tensor([0, 5, 1, 6, 4, 9])
    >>> xk, yk, xn = held_out_split(x, y, known_classes=[0, 1, 4])
    >>> yk.tolist(), xn.shape[0]
    ([0, 1, 2], 3)
    """
    known = [int(c) for c in known_classes]
    x_known, y_known = select_classes(x, y, known)  # checks y, the sizes and the classes
    novel = ~torch.isin(y, torch.as_tensor(known, dtype=y.dtype))
    if not novel.any():
        raise ValueError(
            f"known_classes {known} must split the labels into known and novel classes; the "
            f"labels present are {y.unique().tolist()}"
        )
    return x_known, y_known, x[novel]


def build_suite(
    x: Tensor,
    y: Tensor | None = None,
    sets: str | Sequence[str] = "mnist",
    *,
    known_classes: Sequence[int] | None = None,
    n: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    pixel_range: tuple[float, float] | None = None,
) -> OODSuite:
    """Build an :class:`OODSuite` around the in-distribution test inputs ``x``.

    Args:
        x: in-distribution test inputs ``(N, *input_shape)``, e.g. MNIST test images.
        y: their labels (needed for ``held_out_classes`` and for accuracy in reports).
        sets: a suite name (``"mnist"``, ``"mnist_held_out"``), ``"all"`` registered sets
            (``held_out_classes`` among them only when ``known_classes`` is given), or set
            names (a list or a comma-separated string).
        known_classes: the classes the model was trained on, in the order of its outputs;
            inputs of other classes become the ``held_out_classes`` set (default for
            ``"mnist_held_out"``: digits 0-4). The in-distribution set keeps only the known
            classes, relabelled ``0..K-1``; the suite records them, and
            :func:`~safety_bhn.ood.evaluate_ood` refuses a model with another class count.
        n: use at most ``n`` in-distribution inputs (a seeded random subset) and make each
            generated set the same size; larger user sets are subsampled to ``n``.
        seed: seeds the subsets and the noise sets.
        data_dir: folder holding ``fashion-mnist/`` (see :func:`safety_bhn.data.load_dataset`).
        pixel_range: valid input range (default ``(0, 1)`` if ``x`` lies in it, else ``x``'s
            min and max).

    Example:
        >>> suite = build_suite(torch.rand(10, 1, 28, 28), sets="uniform_noise,inverted")
        >>> suite.names, tuple(suite["inverted"].shape)
        (['uniform_noise', 'inverted'], (10, 1, 28, 28))
    """
    names, needs_split = _resolve_sets(sets)
    held_out = OODSetName.HELD_OUT_CLASSES.value
    if needs_split and known_classes is None:
        known_classes = HELD_OUT_KNOWN
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    n = None if n is None else check_int("n", n)
    seed = check_seed("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    x_novel = known = None
    if known_classes is not None:
        if y is None:
            raise ValueError("known_classes (and the held_out_classes set) need the labels y")
        known = tuple(class_list(known_classes))
        x_known, y_known = select_classes(x, y, known)  # checks y and the classes
        # asked for by name, the held-out set must exist; "all" has it where classes are left
        if held_out in names and (needs_split or x_known.shape[0] < x.shape[0]):
            x, y, x_novel = held_out_split(x, y, known)
            x_novel = x_novel[torch.randperm(x_novel.shape[0], generator=gen)]
        else:
            x, y = x_known, y_known
    if x_novel is None:  # held-out classes exist only for a model that lacks some
        names = [s for s in names if s != held_out]
    if x.dim() >= 1 and x.shape[0] > 0 and n is not None and n < x.shape[0]:
        keep = torch.randperm(x.shape[0], generator=gen)[:n]
        x, y = x[keep], (y[keep] if y is not None else None)
    suite = OODSuite(x, y, pixel_range, known_classes=known)
    assert suite.pixel_range is not None
    ctx = SetContext(suite.x_in, suite.x_in.shape[0], gen, suite.pixel_range, data_dir, x_novel)
    for name in names:
        data = _make(name, _REGISTRY[name], ctx)
        if isinstance(data, Dataset) and not isinstance(data, Tensor):
            data = _to_tensor(name, data)  # so that n subsamples it as it does a tensor
        if isinstance(data, Tensor) and data.dim() >= 2 and n is not None and data.shape[0] > n:
            data = data[torch.randperm(data.shape[0], generator=gen)[:n]]
        if isinstance(data, Tensor) and data.dim() >= 2:
            per_example = tuple(suite.x_in.shape[1:])

            def squeezed(shape: tuple[int, ...]) -> list[int]:
                return [d for d in shape if d != 1]

            # a set or an in-distribution set that is flat, or shapes that differ only by
            # size-1 axes ((N, 28, 28) for (N, 1, 28, 28)), are reshaped; any other layout
            # (channels last) is left for add() to refuse: reshaping would scramble pixels
            if tuple(data.shape[1:]) != per_example and (
                (
                    (data.dim() == 2 or len(per_example) == 1)
                    and data[0].numel() == suite.x_in[0].numel()
                )
                or squeezed(data.shape[1:]) == squeezed(per_example)
            ):
                data = data.reshape(data.shape[0], *per_example)
        suite.add(name, data)
    return suite
