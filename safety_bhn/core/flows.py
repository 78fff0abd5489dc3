"""Invertible flows (elementwise affine, RealNVP affine coupling) with exact log-densities."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_int, check_real
from . import noise


class ElementwiseAffine(nn.Module):
    """``y = loc + exp(log_scale) * z``, elementwise; log|det| = sum(log_scale).

    Args:
        dim: dimension of ``z``.
        init_scale: initial value of ``exp(log_scale)``. A tiny value (1e-3, as in the BHN
            authors' code) starts ``q`` close to a point estimate at ``loc``.
    """

    def __init__(self, dim: int, init_scale: float = 1e-3) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.full((dim,), math.log(init_scale)))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, log|det dy/dz|)``; ``z`` is ``(n, dim)``, the log-det ``(n,)``."""
        logdet = self.log_scale.sum().expand(z.shape[0])
        return self.loc + self.log_scale.exp() * z, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.loc) * torch.exp(-self.log_scale)


class AffineCoupling(nn.Module):
    """RealNVP affine coupling (Dinh et al. 2017) on a fixed random split of the entries.

    The input is permuted and split in halves ``(a, b)``; ``a`` passes unchanged and
    ``b' = b * scale(a) + shift(a)`` with ``scale = exp(s) + min_scale`` from a one-hidden-layer
    ReLU net; the result is permuted back, so every entry keeps its place. The net's output
    layer starts at zero with a bias that makes ``scale`` exactly 1, so every coupling starts
    as the identity (until 2026-12-07 the output stayed permuted, so each coupling started as a
    shuffle of the entries: a BHN's data-dependent initial scales, and the prior centred on
    them, went to other units; models saved before then load with that behaviour, which the
    ``unpermute`` buffer records, and predict as they did). The log-scale ``s`` is soft-clamped to
    ``(-max_log_scale, max_log_scale)`` with a tanh: with a raw ``exp(s)`` (the authors' choice),
    one rare noise draw could chain large scales through several couplings and overflow
    to inf mid-training (seen here with 12 couplings on MNIST).

    Args:
        dim: dimension (at least 2).
        hidden: hidden units of the conditioner net (200 in the BHN paper).
        seed: seed of the fixed random permutation (stored as a buffer, so saved with the model).
        min_scale: lower bound on the scale, for stability (0.001 in the BHN authors' code).
        max_log_scale: bound on ``|s|``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 200,
        seed: int = 0,
        min_scale: float = 1e-3,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling layer needs dim >= 2, got {dim}")
        self.split = dim // 2
        self.min_scale = min_scale
        self.max_log_scale = max_log_scale
        perm = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self.register_buffer("unpermute", torch.tensor(True))
        self._unpermute = True  # the buffer's value, read once (no GPU sync per call)
        self.register_load_state_dict_pre_hook(_read_unpermute)
        self.hidden = nn.Linear(self.split, hidden)
        self.out = nn.Linear(hidden, 2 * (dim - self.split))
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            unit = math.atanh(math.log(1.0 - min_scale) / max_log_scale) * max_log_scale
            self.out.bias[: dim - self.split] = unit

    def _scale_shift(self, a: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.out(F.relu(self.hidden(a))).chunk(2, dim=-1)
        s = self.max_log_scale * torch.tanh(s / self.max_log_scale)
        return s.exp() + self.min_scale, t

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, log|det dy/dz|)``."""
        z = z[..., self.perm]
        a, b = z[..., : self.split], z[..., self.split :]
        scale, shift = self._scale_shift(a)
        y = torch.cat([a, b * scale + shift], dim=-1)
        return (y[..., self.inv_perm] if self._unpermute else y), scale.log().sum(-1)

    def inverse(self, y: Tensor) -> Tensor:
        if self._unpermute:
            y = y[..., self.perm]
        a, b = y[..., : self.split], y[..., self.split :]
        scale, shift = self._scale_shift(a)
        return torch.cat([a, (b - shift) / scale], dim=-1)[..., self.inv_perm]


def _read_unpermute(module: AffineCoupling, state_dict: dict, prefix: str, *args: object) -> None:
    """Load-state-dict pre-hook: a coupling saved before the ``unpermute`` buffer existed
    (2026-12-07) left its output permuted; load it so, so that the model predicts as saved.

    Such a checkpoint holds the coupling's ``perm`` buffer but not ``unpermute``. A state dict
    without ``perm`` either (a partial one, loaded with ``strict=False``) is not an old
    coupling, so the coupling keeps its current behaviour.
    """
    key = prefix + "unpermute"
    if key not in state_dict:
        if prefix + "perm" not in state_dict:
            return
        state_dict[key] = torch.tensor(False)
    module._unpermute = bool(state_dict[key])


class NormalizingFlow(nn.Module):
    """``theta = h(eps)``, ``eps ~ N(0, I)``: an elementwise affine layer, then couplings.

    ``log q(theta) = log N(eps) - log|det dh/deps|`` is exact. With ``coupling_layers=0``
    the flow is a learnable diagonal Gaussian.

    As in the BHN authors' code, the elementwise affine layer comes first and starts with a
    tiny scale, so ``q`` begins close to a point estimate at ``loc`` (the couplings start as
    the identity). Putting it first matters: every coupling then acts directly on ``theta``'s
    scale, where the likelihood resists any spread it adds. (With the tiny layer last, the
    entropy term, rescaled by Adam, inflated the couplings' scales unopposed until they
    overflowed.)

    Example:
        >>> flow = NormalizingFlow(dim=3, coupling_layers=2)
        >>> theta, log_q = flow.sample(5)
        >>> theta.shape, log_q.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """

    def __init__(
        self,
        dim: int,
        coupling_layers: int = 8,
        hidden: int = 200,
        init_scale: float = 1e-3,
        min_scale: float = 1e-3,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        dim = check_int("flow dimension", dim)
        coupling_layers = check_int("coupling_layers", coupling_layers, minimum=0)
        hidden = check_int("coupling_hidden", hidden)
        if coupling_layers > 0 and dim < 2:
            raise ValueError(f"coupling layers need dim >= 2, got dim={dim}")
        init_scale = check_real("init_scale", init_scale, 0.0, low_open=True)
        min_scale = check_real("min_scale", min_scale)
        if not 0 <= min_scale < 1:  # a scale exp(s) + min_scale must be able to equal 1
            raise ValueError(f"min_scale must lie in [0, 1), got {min_scale!r}")
        # a log-scale bound must let exp(s) + min_scale reach 1 (each coupling starts there)
        max_log_scale = check_real("max_log_scale", max_log_scale, 0.0, low_open=True)
        if max_log_scale <= -math.log(1.0 - min_scale):
            raise ValueError(
                f"max_log_scale must exceed -log(1 - min_scale) = {-math.log(1.0 - min_scale):.3g}"
                f" so that a coupling can start as the identity, got {max_log_scale!r}"
            )
        self.dim = dim
        self.couplings = nn.ModuleList(
            AffineCoupling(dim, hidden, seed=k, min_scale=min_scale, max_log_scale=max_log_scale)
            for k in range(coupling_layers)
        )
        self.affine = ElementwiseAffine(dim, init_scale)

    def _check(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must have shape (n, {self.dim}), got {shape}; one sample is "
                f"x.view(1, {self.dim})"
            )
        return x

    def forward(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Map noise ``eps[n, dim]`` to ``(theta[n, dim], log|det dtheta/deps|[n])``."""
        z, logdet = self.affine(self._check(eps, "eps"))
        for layer in self.couplings:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, theta: Tensor) -> Tensor:
        """Map ``theta[n, dim]`` back to the noise ``eps[n, dim]`` that generates it."""
        z = self._check(theta, "theta")
        for layer in reversed(self.couplings):
            z = layer.inverse(z)
        return self.affine.inverse(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples: returns ``(theta[n, dim], log_q[n])``."""
        n = check_int("n", n)
        eps = noise.randn((n, self.dim), generator, self.affine.loc.device)
        theta, logdet = self(eps)
        return theta, standard_normal_log_prob(eps) - logdet

    def log_prob(self, theta: Tensor) -> Tensor:
        """Exact ``log q(theta)[n]`` of ``theta[n, dim]``, by inverting the flow."""
        eps = self.inverse(theta)
        _, logdet = self(eps)
        return standard_normal_log_prob(eps) - logdet


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``sum_i log N(x_i; 0, 1)`` over the last dimension."""
    return -0.5 * (x.pow(2) + math.log(2 * math.pi)).sum(-1)


def fit_elbo(
    flow: NormalizingFlow,
    log_joint: Callable[[Tensor], Tensor],
    steps: int = 2000,
    n_samples: int = 128,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Fit ``flow`` as ``q(theta)`` to an unnormalised posterior by maximising the ELBO.

    ``log_joint(theta[n, dim]) -> [n]`` is ``log p(data | theta) + log p(theta)``. Returns the
    ELBO estimate of every step. This is the hypernetwork idea on a small parameter vector
    (the toy posterior of notebooks/01_bhn_posterior.ipynb).

    Example:
        >>> flow = NormalizingFlow(dim=2, coupling_layers=0, init_scale=1.0)
        >>> elbo = fit_elbo(flow, lambda t: -0.5 * (t - 3).pow(2).sum(-1), steps=300, lr=0.05)
        >>> bool(abs(flow.affine.loc - 3).max() < 0.1)
        True
    """
    steps, n_samples = check_int("steps", steps), check_int("n_samples", n_samples)
    lr = check_real("lr", lr, 0.0, low_open=True)  # n_samples=0 gave a history of NaN
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(steps), desc="fit_elbo", disable=not progress, leave=False):
        theta, log_q = flow.sample(n_samples, generator)
        loss = (log_q - log_joint(theta)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(-loss.item())
    return history
