"""The one interface every uncertainty model implements (BHN, MC dropout, factorial VI, MAP)."""

from __future__ import annotations

import math
import numbers
import operator
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_generator, check_int
from .._io import save_state
from .primary import WeightLayer

FORMAT_VERSION = 1


class UncertaintyModel(nn.Module, ABC):
    """Base class: a primary network plus a (possibly degenerate) posterior over its weights.

    Shapes put samples first: ``sample_logits`` returns ``(n_samples, batch, classes)``.
    Each of the ``n_samples`` draws is one set of weights (one dropout mask, one ``g``,
    one weight sample) applied to the whole batch, never a fresh draw per input.

    Subclasses implement :meth:`draw` (the random quantities of ``n`` posterior samples),
    :meth:`forward_draw` (the network under a draw) and :meth:`loss`.
    """

    method: str = ""
    default_samples: int = 100

    def __init__(
        self, layers: Sequence[WeightLayer], config: dict[str, Any], prob_clip: float = 0.0
    ) -> None:
        super().__init__()
        if isinstance(prob_clip, bool) or not (
            isinstance(prob_clip, numbers.Real) and 0.0 <= prob_clip < 0.5
        ):
            raise ValueError(
                f"prob_clip must lie in [0, 0.5) (0 turns clipping off), got {prob_clip!r}"
            )
        self.layers = list(layers)
        self.config = dict(config)
        self.in_shape = tuple(config["in_shape"])
        self.n_classes = int(config["n_classes"])
        self.prob_clip = float(prob_clip)

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def draw(self, n_samples: int, generator: torch.Generator | None = None) -> Any:
        """Draw the random quantities of ``n_samples`` posterior samples."""

    @abstractmethod
    def forward_draw(self, x: Tensor, draw: Any) -> Tensor:
        """Logits ``(n_samples, batch, classes)`` of checked input ``x`` under ``draw``."""

    @abstractmethod
    def loss(self, x: Tensor, y: Tensor, n_data: int, kl_weight: float = 1.0) -> Tensor:
        """Training loss per data point (negative ELBO for the Bayesian methods).

        It runs every training step, so it checks nothing: pass inputs through
        :meth:`check_input` and :meth:`check_targets`, and ``n_data >= 1``, as
        :func:`safety_bhn.fit` does.
        """

    # -- shared behaviour ---------------------------------------------------------------
    def nll(self, logits: Tensor, y: Tensor) -> Tensor:
        """Mean negative log-likelihood of labels ``y`` (batch,) under ``logits`` (batch, C).

        With ``prob_clip = c > 0`` the probability of the true class is clipped to
        ``[c, 1 - c]`` first, as the BHN authors' code did (``c = 0.001``, for BHN and
        dropout alike): an example already fitted with probability above ``1 - c``, or one
        given up as below ``c``, then adds no gradient. It bounds the loss per example
        (``-log c``) and stops the push towards ever more confident fits.
        """
        if self.prob_clip == 0.0:
            return F.cross_entropy(logits, y)
        p = F.softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return -p.clamp(self.prob_clip, 1.0 - self.prob_clip).log().mean()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: Tensor) -> Tensor:
        """Validate ``x`` (shape, dtype, finiteness) and move it to the model's device."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point tensor (pixels scaled to [0, 1]), got {x.dtype}; "
                "convert with x.float() / 255"
            )
        flat = (math.prod(self.in_shape),)
        ok = x.dim() >= 1 and (
            tuple(x.shape[1:]) == self.in_shape
            or (self.layers[0].kind == "linear" and tuple(x.shape[1:]) == flat)
        )
        if not ok:
            expected = f"(batch, {', '.join(map(str, self.in_shape))})"
            if self.layers[0].kind == "linear" and flat != self.in_shape:
                expected += f" or (batch, {flat[0]})"
            raise ValueError(f"x has shape {tuple(x.shape)}; expected {expected}")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch (shape[0] == 0)")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite values")
        dtype = next(self.parameters()).dtype  # float64 input (e.g. from numpy) is cast
        return x.to(device=self.device, dtype=dtype)

    def check_targets(self, y: Tensor, batch: int) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(
                f"y must be a torch.Tensor of class labels, got {type(y).__name__}; convert "
                "with torch.as_tensor(y)"
            )
        if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(
                f"y must hold integer class labels (int64, int32, int16, int8 or uint8), got "
                f"{y.dtype}; one-hot or probability targets: y.argmax(1)"
            )
        if y.shape != (batch,):
            raise ValueError(f"y has shape {tuple(y.shape)}; expected ({batch},)")
        if y.numel() and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"y has labels outside 0..{self.n_classes - 1}")
        return y.to(self.device).long()

    @staticmethod
    def check_samples(n_samples: int) -> int:
        """Validate a number of posterior samples and return it as an ``int``.

        ``n_samples`` is the length of the leading axis of everything sampled from the
        posterior: logits and probabilities are ``(n_samples, batch, classes)``, one draw of
        weights per sample. It must be a positive integer (``bool`` is refused); anything else
        raises a ValueError naming the value. Integer NumPy scalars are accepted.

        >>> UncertaintyModel.check_samples(100)
        100
        """
        try:
            n = operator.index(n_samples)  # ints, and integer NumPy scalars
        except TypeError:
            n = 0
        if isinstance(n_samples, bool) or n < 1:
            raise ValueError(
                f"n_samples must be a positive integer (the leading axis of "
                f"(n_samples, batch, classes)), got {n_samples!r}"
            )
        return n

    def sample_logits(
        self,
        x: Tensor,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Logits of ``n_samples`` independent posterior samples: ``(n_samples, batch, classes)``.

        One draw is made and applied to every input; ``batch_size`` only splits the inputs
        into chunks to bound memory. As with any ``nn.Module``, gradients flow to ``x`` and
        the parameters (training and FGSM use them): for inference alone, call it under
        ``torch.no_grad()``, or the graph of every chunk is kept.
        """
        n = self.check_samples(self.default_samples if n_samples is None else n_samples)
        x = self.check_input(x)
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size)
        draw = self.draw(n, check_generator(generator))
        if batch_size is None or batch_size >= x.shape[0]:
            return self.forward_draw(x, draw)
        return torch.cat([self.forward_draw(c, draw) for c in x.split(batch_size)], dim=1)

    def predict_proba(
        self,
        x: Tensor,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Posterior predictive ``mean_s softmax(logits_s)``: ``(batch, classes)``."""
        logits = self.sample_logits(x, n_samples, generator, batch_size)
        return F.softmax(logits, dim=-1).mean(0)

    def sampled(self, generator: torch.Generator | None = None) -> SampledNetwork:
        """Freeze one posterior draw: a callable network, usable as a context manager.

        Example:
            >>> import safety_bhn
            >>> model = safety_bhn.build_model("bhn", hidden=[16], in_shape=(4,), n_classes=3)
            >>> with model.sampled(torch.Generator().manual_seed(0)) as net:
            ...     net(torch.zeros(2, 4)).shape
            torch.Size([2, 3])

        The draw is frozen, so it carries no autograd graph: gradients of ``net(x)`` reach
        ``x`` (as FGSM needs) and the point-estimate weights, never the posterior's own
        parameters, and ``net`` can be differentiated any number of times.
        """
        generator = check_generator(generator)  # MAP's draw, which takes none, took any
        with torch.no_grad():
            draw = self.draw(1, generator)
        return SampledNetwork(self, draw)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the configuration and weights to ``path`` atomically (temp file + rename);
        an existing folder, or a name ending in a separator (``"runs/new/"``), gets
        ``path/model.pt``, the file :func:`safety_bhn.load` reads from a folder."""
        if Path(path).is_dir() or str(path).endswith(("/", os.sep)):  # "new/" was a file "new"
            path = Path(path) / "model.pt"
        payload = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return save_state(path, payload)


class SampledNetwork:
    """A network fixed at one posterior draw: ``net(x)`` returns logits ``(batch, classes)``."""

    def __init__(self, model: UncertaintyModel, draw: Any) -> None:
        self.model = model
        self.draw = draw

    def __call__(self, x: Tensor) -> Tensor:
        return self.model.forward_draw(self.model.check_input(x), self.draw)[0]

    def predict_proba(self, x: Tensor) -> Tensor:
        return F.softmax(self(x), dim=-1)

    def __enter__(self) -> SampledNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
