"""`RegressionPosterior`: a core model trained with a Gaussian likelihood, the RL plug-in."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_flag, check_int, check_real, check_seed
from .._choices import parse_choice
from ..core.base import UncertaintyModel
from ..core.bhn import PriorMean
from ..core.build import NO_KL_METHODS, Method, build_model
from ..core.noise import stream_seed

Batch = tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]

#: build_model options that only safety_bhn.fit's classification training uses
TRAINING_ONLY_OPTIONS = frozenset({"prob_clip", "local_draws"})


def check_hidden(hidden: Any) -> list[int]:
    """MLP hidden widths as a list of positive ints; a bare int or a string is refused (``8``
    failed inside the model, ``"50"`` became the widths 5 and 0).

    >>> check_hidden((64, np.int64(32)))
    [64, 32]
    """
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence | np.ndarray):
        raise ValueError(
            f"hidden must be a list of hidden-layer widths such as [50] or [64, 64], got "
            f"{hidden!r}; wrap a single width in a list"
        )
    return [check_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]


class RegressionPosterior:
    """A posterior over functions ``x -> R^n_outputs`` (rewards, Q-values, costs).

    The core models are classifiers; this wrapper reuses their weight posteriors through
    ``model.draw`` / ``model.forward_draw`` and trains them with a Gaussian likelihood
    ``y ~ N(f(x)[a], sigma^2)`` on the output ``a`` that was actually observed (the action
    taken). The loss per data point is the negative ELBO
    ``E_q[-log N(y | f(x)[a] * output_scale, sigma^2)] + KL(q || p) / n_data``
    (BHN: a Monte Carlo KL of the scales; factorial VI: the closed-form KL; MC dropout and
    MAP: their weight-decay penalty, as in the core). Factorial VI trains on explicit weight
    draws and MC dropout on one fresh mask per step (both via ``draw``), so every method
    trains the same function that ``sample_function`` later returns.

    Args:
        method: ``"bhn"``, ``"mc_dropout"``, ``"factorial_vi"`` or ``"map"``.
        in_dim: length of one input vector (observation or context).
        n_outputs: number of outputs (actions).
        hidden: MLP hidden units.
        noise_std: likelihood noise std, in units of ``output_scale``.
        learn_noise: learn one noise std per output (starting at ``noise_std``).
        heteroscedastic: the network also predicts a log noise std per output and input,
            added to the per-output one, so the likelihood can be tight where rewards are
            predictable and loose where they are not (Nix & Weigend 1994). The extra outputs
            are drawn from the posterior with the rest and used only for training.
        min_noise_std: floor of the heteroscedastic noise std (same units as ``noise_std``).
        output_scale: the network predicts ``y / output_scale`` (keeps targets O(1)).
        lr: Adam learning rate.
        train_samples: posterior draws per gradient step (BHN / factorial VI only).
        kl_weight: multiplies the KL term (1 = the ELBO; smaller tempers the prior; BHN /
            factorial VI only).
        seed: seed of the initial weights and, through a stream of its own
            (:func:`safety_bhn.core.noise.stream_seed`), of the training draws (a non-negative
            int), or None for fresh randomness (the agents, which are reproducible, take an
            int only).
        device: where the network lives and trains (default ``"cpu"``).
        **options: passed to :func:`safety_bhn.build_model` (e.g. ``coupling_layers=4``,
            ``p_hidden=0.1``, ``prior_std=0.1``).

    Example (the plug-in API inside a plain loop):
        >>> post = RegressionPosterior("bhn", in_dim=4, n_outputs=2, hidden=[16],
        ...                            coupling_layers=2, seed=0)
        >>> f = post.sample_function(torch.Generator().manual_seed(0))
        >>> f(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
        >>> x, a, y = torch.randn(8, 4), torch.randint(0, 2, (8,)), torch.randn(8)
        >>> loss = post.update((x, a, y), steps=5)
    """

    def __init__(
        self,
        method: str | Method,
        in_dim: int,
        n_outputs: int,
        hidden: Sequence[int] = (50,),
        *,
        noise_std: float = 0.1,
        learn_noise: bool = False,
        heteroscedastic: bool = False,
        min_noise_std: float = 1e-3,
        output_scale: float = 1.0,
        lr: float = 1e-3,
        train_samples: int = 1,
        kl_weight: float = 1.0,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        self.method = parse_choice(method, Method, "method")
        in_dim, n_outputs = check_int("in_dim", in_dim), check_int("n_outputs", n_outputs)
        for name, value in (
            ("noise_std", noise_std),
            ("min_noise_std", min_noise_std),
            ("output_scale", output_scale),
            ("lr", lr),
        ):
            check_real(name, value, 0.0, low_open=True)
        train_samples = check_int("train_samples", train_samples)
        hidden = check_hidden(hidden)
        if seed is not None:
            seed = check_seed("seed", seed)
        unused = sorted(set(options) & TRAINING_ONLY_OPTIONS)
        if unused:
            raise ValueError(
                f"{', '.join(unused)}: options of the classifier's training by safety_bhn.fit "
                "(prob_clip clips its predicted probabilities, local_draws draws the BHN's "
                "scales per training image); a RegressionPosterior trains a Gaussian "
                "likelihood by update() and would ignore them; drop them"
            )
        learn_noise = check_flag("learn_noise", learn_noise)
        self.in_dim, self.n_outputs = in_dim, n_outputs
        self.output_scale = float(output_scale)
        self.train_samples = train_samples
        self.kl_weight = check_real("kl_weight", kl_weight, 0.0)
        if self.method in NO_KL_METHODS and (train_samples, kl_weight) != (1, 1):
            one = "dropout mask" if self.method is Method.MC_DROPOUT else "network"
            raise ValueError(
                f"train_samples and kl_weight shape the ELBO of 'bhn' and 'factorial_vi'; "
                f"{self.method.value!r} trains on one {one} per step with its weight-decay "
                "penalty and would ignore them; leave them at 1"
            )
        self.heteroscedastic = check_flag("heteroscedastic", heteroscedastic)
        self.min_log_noise = math.log(min_noise_std)
        self.model: UncertaintyModel = build_model(
            self.method,
            "mlp",
            in_shape=(in_dim,),
            n_classes=max(n_outputs * (2 if self.heteroscedastic else 1), 2),
            hidden=hidden,
            seed=seed,
            device=device,
            **options,
        )
        if getattr(self.model, "prior_mean", None) is PriorMean.INIT:
            raise ValueError(
                "prior_mean='init' centres the BHN's prior on the data-dependent initial scales "
                "that safety_bhn.fit sets from the training data; a RegressionPosterior trains "
                "by update() without that initialisation, so its prior would stay centred at 0 "
                "(prior_mean='zero', the default); leave prior_mean out"
            )
        self.generator = torch.Generator(device=self.model.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(stream_seed(seed, "posterior training"))
        self.log_noise = torch.full((n_outputs,), math.log(noise_std), device=self.model.device)
        self.log_noise.requires_grad_(learn_noise)
        params = list(self.model.parameters()) + ([self.log_noise] if learn_noise else [])
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.steps_done = 0

    # -- prediction ---------------------------------------------------------------------
    def check_x(self, x: Tensor) -> Tensor:
        """Validate a batch of inputs ``(batch, in_dim)`` (a single vector is accepted too)."""
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            except (TypeError, ValueError):
                raise ValueError(
                    f"input must be numbers of shape (batch, {self.in_dim}), got {x!r:.80}"
                ) from None
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; expected (batch, {self.in_dim}) "
                f"(observations of length {self.in_dim})"
            )
        return self.model.check_input(x.float())

    def forward_draw(self, x: Tensor, draw: Any) -> Tensor:
        """Outputs ``(n_samples, batch, n_outputs)`` under a ``model.draw``, in target units."""
        out = self.model.forward_draw(self.check_x(x), draw)[..., : self.n_outputs]
        return out * self.output_scale

    @torch.no_grad()
    def sample(self, x: Tensor, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``n_samples`` posterior draws of the outputs: ``(n_samples, batch, n_outputs)``."""
        n_samples = self.model.check_samples(n_samples)
        return self.forward_draw(x, self.model.draw(n_samples, generator))

    def sample_function(
        self, generator: torch.Generator | None = None
    ) -> Callable[[Tensor], Tensor]:
        """A network fixed at one posterior draw: ``f(x) -> (batch, n_outputs)`` (no grad).

        Thompson sampling holds one such function per decision (bandit) or per episode (DQN).
        The draw is taken now: the BHN's scales, MC dropout's masks, factorial VI's weights.
        What the draw does not hold is read at each call (the BHN's directions, MC dropout's
        and MAP's weights), so an :meth:`update` between two calls moves their outputs, as a
        bootstrapped DQN's held head keeps training; factorial VI's draw holds every weight,
        so its function stays as drawn.
        """
        return self.sample_functions(1, generator)

    def sample_functions(
        self, n_samples: int, generator: torch.Generator | None = None
    ) -> Callable[[Tensor], Tensor]:
        """``n_samples`` fixed draws: ``f(x) -> (batch, n_outputs)`` for one draw, else
        ``(n_samples, batch, n_outputs)``."""
        n_samples = self.model.check_samples(n_samples)
        with torch.no_grad():
            draw = self.model.draw(n_samples, generator)

        @torch.no_grad()
        def f(x: Tensor) -> Tensor:
            out = self.forward_draw(x, draw)
            return out[0] if n_samples == 1 else out

        return f

    def _log_noise(self, out: Tensor) -> Tensor:
        """Log noise std per output, ``out.shape[:-1] + (n_outputs,)``, from raw outputs."""
        n = self.n_outputs
        log_sigma = self.log_noise.expand(out[..., :n].shape)
        if self.heteroscedastic:
            log_sigma = (log_sigma + out[..., n : 2 * n]).clamp(min=self.min_log_noise)
        return log_sigma

    @torch.no_grad()
    def noise_std(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """The likelihood's noise std under ``n_samples`` posterior draws, in target units:
        ``(n_samples, batch, n_outputs)`` (the same for every input unless heteroscedastic)."""
        n_samples = self.model.check_samples(n_samples)
        out = self.model.forward_draw(self.check_x(x), self.model.draw(n_samples, generator))
        return self._log_noise(out).exp() * self.output_scale

    # -- training -----------------------------------------------------------------------
    def _check_batch(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise TypeError("batch must be (x, actions, targets) or (x, targets[batch, n_outputs])")
        x = self.check_x(batch[0])
        n = x.shape[0]
        if len(batch) == 2:
            y = self._targets(batch[1], x.device)
            if y.shape != (n, self.n_outputs):
                raise ValueError(
                    f"targets have shape {tuple(y.shape)}; expected ({n}, {self.n_outputs})"
                )
            a = None
        else:
            a = torch.as_tensor(batch[1], device=x.device)
            y = self._targets(batch[2], x.device)
            bad = a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool
            if bad or a.shape != (n,):
                raise ValueError(
                    f"actions must be integers of shape ({n},), got {a.dtype} {tuple(a.shape)}"
                )
            if a.numel() and (a.min() < 0 or a.max() >= self.n_outputs):
                raise ValueError(f"actions must lie in 0..{self.n_outputs - 1}")
            a = a.long()  # uint8 / int16 actions (NumPy buffers) index like any other
            if y.shape != (n,):
                raise ValueError(f"targets have shape {tuple(y.shape)}; expected ({n},)")
        if not torch.isfinite(y).all():
            raise ValueError("targets contain NaN or infinite values")
        return x, a, y

    @staticmethod
    def _targets(y: Any, device: torch.device) -> Tensor:
        """Real targets as float32; complex ones are refused (their imaginary part was
        dropped with only a warning)."""
        y = torch.as_tensor(y, device=device)
        if y.dtype.is_complex:
            raise ValueError(f"targets must be real numbers, got {y.dtype}")
        return y.float()

    def _kl_and_outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        model = self.model
        g = self.generator
        if self.method is Method.BHN:
            draw = model.draw(self.train_samples, g)
            return model.forward_draw(x, draw), model.kl_estimate(draw)
        if self.method is Method.FACTORIAL_VI:
            return model.forward_draw(x, model.draw(self.train_samples, g)), model.kl()
        return model.forward_draw(x, model.draw(1, g)), None

    def loss(self, batch: Batch, n_data: int | None = None) -> Tensor:
        """Negative ELBO per data point on ``batch`` (``n_data``: the data-set size)."""
        x, a, y = self._check_batch(batch)
        n_data = x.shape[0] if n_data is None else check_int("n_data", n_data)
        out, kl = self._kl_and_outputs(x)
        log_sigma = self._log_noise(out)
        out = out[..., : self.n_outputs]
        target = (y / self.output_scale).unsqueeze(0)
        if a is not None:
            index = a.view(1, -1, 1).expand(out.shape[0], -1, 1)
            out = out.gather(-1, index).squeeze(-1)
            log_sigma = log_sigma.gather(-1, index).squeeze(-1)
        nll = 0.5 * ((target - out) / log_sigma.exp()).pow(2) + log_sigma
        loss = nll.mean() * (self.n_outputs if a is None else 1)
        if kl is not None:
            return loss + self.kl_weight * kl / n_data
        return loss + self.model.weight_penalty()

    def update(
        self, batch: Batch, steps: int = 1, n_data: int | None = None, grad_clip: float = 10.0
    ) -> float:
        """Take ``steps`` Adam steps on ``batch``; returns the last loss.

        ``batch`` is ``(x, actions, targets)`` (the target of the taken action only) or
        ``(x, targets)`` with a target for every output. ``n_data`` scales the KL (the size
        of the data set ``batch`` was drawn from; default ``len(x)``).
        """
        steps = check_int("steps", steps)
        real = isinstance(grad_clip, numbers.Real) and not isinstance(grad_clip, bool | np.bool_)
        if not (real and 0 < grad_clip <= math.inf):  # NumPy numbers too; NaN fails
            raise ValueError(f"grad_clip must be a positive number (inf: no clipping), got "
                             f"{grad_clip!r}")  # fmt: skip
        self.model.train()
        value = 0.0
        for _ in range(steps):
            loss = self.loss(batch, n_data)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(grad_clip))
            self.optimizer.step()
            value = loss.item()
        self.steps_done += steps
        return value

    def state_dict(self) -> dict[str, Any]:
        """What changes while the posterior learns (weights, optimizer, noise, generator), as
        tensors and plain values that ``torch.load(..., weights_only=True)`` reads back."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "log_noise": self.log_noise.detach().cpu().clone(),
            "generator": self.generator.get_state(),
            "output_scale": self.output_scale,
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a posterior built with the same settings."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.log_noise.copy_(state["log_noise"])
        self.generator.set_state(state["generator"])
        self.output_scale = float(state["output_scale"])
        self.steps_done = int(state["steps_done"])

    def copy_weights_from(self, other: RegressionPosterior) -> None:
        """Copy another posterior's weights (used for DQN target networks)."""
        self.model.load_state_dict(other.model.state_dict())
        with torch.no_grad():
            self.log_noise.copy_(other.log_noise)
