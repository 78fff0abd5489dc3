"""Bayesian hypernetwork (Krueger, Huang et al. 2017): a flow generates the weight-norm scales."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_flag, check_int, check_real
from .._choices import parse_choice
from .base import UncertaintyModel
from .flows import NormalizingFlow
from .map import make_module
from .primary import WeightLayer, apply_after, shared_layer


class PriorMean(str, enum.Enum):
    """Where the Gaussian prior on the BHN scales is centred."""

    ZERO = "zero"
    """``N(0, prior_std^2)``, as in the authors' code"""
    INIT = "init"
    """``N(g0, prior_std^2)`` around the data-dependent initial scales ``g0``"""


class BHN(UncertaintyModel):
    """Primary net with weight-normalised layers ``w = g * v / ||v||``; ``q(g)`` is a flow.

    The hypernetwork ``h`` maps noise ``eps ~ N(0, I)`` to the vector ``g`` of all scales (one
    per output unit of every layer) through an elementwise affine layer followed by
    ``coupling_layers`` RealNVP affine couplings (``coupling_layers=0``: a diagonal Gaussian
    over ``g``; see :class:`NormalizingFlow`).
    Directions ``v`` and biases are point estimates. Because a scale multiplies a whole output
    unit, the first layer's product ``x @ (v / ||v||)^T`` is computed once and shared by every
    sample; only the cheap per-unit scaling differs.

    The loss is the negative ELBO per data point,
    ``E_q[-log p(y|x, g)] + kl_weight * E_q[log q(g) - log p(g)] / n_data``,
    with ``train_samples`` draws of ``g`` per step, each shared by the minibatch.

    Choices (and why):

    * Prior ``g ~ N(0, prior_std^2)`` with ``prior_std = 1`` (``lambda = 1``), as in the
      authors' code. Against data-dependent scales of about 3, this prior is what makes the
      posterior noisy: keeping a hidden unit costs a few nats of KL, so the ELBO prunes most
      units to scales that are mostly noise (``python benchmarks/bhn_prior.py``, MNIST-5000
      MLP 784-800-10, 12 couplings, 100 epochs: 64 of 800 hidden units keep
      ``|E[g]| / std[g] > 2``). Broader priors keep more units but overfit within a few
      epochs: tuning-set accuracy 94.64% at ``prior_std = 1``, 93.78% at 1.5 (220 active
      units) and 91.88% at 3 (761), 94.48% at 0.7. So 1 stays the default.
    * ``prior_mean="init"`` centres the prior at the data-dependent initial scales ``g0``
      instead (an empirical-Bayes prior: ``g0`` depends only on the inputs of the first batch,
      never on labels), so keeping a unit costs no KL. Use it with few labels. With ``N(0, 1)``
      and tens of labels, the KL term (``/ n_data``) pulls the scales of the CNN, whose ``g0``
      are about 1.7, to the prior, where they flip sign at random: in the active-learning
      benchmark (CNN, seed 0, BALD and random acquisition) the net fell to chance (9-14% test
      accuracy) at 20, 60 and 180 labels, and at 300 with random acquisition
      (``benchmarks/results/active_learning_bhn_zero_prior/``); with ``init`` no run of
      three seeds fell to chance (lowest 36%, at 20 labels, in the same constant-rate setup:
      ``benchmarks/results/active_learning_constant_lr/``).
      On MNIST-5000 it keeps all 800 hidden units but overfits sooner (one seed, tuning set:
      94.28%, best epoch 12, and 94.38% with ``prior_std=0.5``, vs 94.64% with ``zero``;
      ``benchmarks/results/bhn_prior_init/``), so ``zero`` stays the default.
    * ``q`` starts narrow but not a point mass: initial std ``init_scale = 0.2`` around
      scales that are O(1) to O(10). The authors started at 1e-3; with Adam the log-scales
      then move about ``lr`` per step, so ``q`` was still far narrower than the ELBO wants
      after 100 epochs, and test accuracy on MNIST-5000 was lower (measured here, one seed,
      40-100 epochs: 93.96-94.17% at 1e-3, 94.76-94.84% at 0.2, 94.75% at 1.0, 94.22% at 2.0).
    * Data-dependent initialisation (Salimans & Kingma 2016), done by :func:`safety_bhn.fit`
      on a first batch: scales and biases are set so each unit's pre-activation has zero mean
      and unit variance, which makes training with Adam fast and stable.

    Args:
        coupling_layers: number of affine coupling layers (0, 8, 12, ...).
        coupling_hidden: hidden units of each coupling's conditioner (200 in the paper).
        coupling_max_log_scale: bound ``m`` on each coupling's log-scale, soft-clamped to
            ``(-m, m)`` (:class:`safety_bhn.core.flows.AffineCoupling`). With the default 3,
            twelve couplings could still chain their scales: one 1000-epoch MNIST run (1200
            units, seed 3) diverged at epoch 37 and kept diverging (:func:`safety_bhn.fit`
            now retries such epochs).
        train_samples: posterior samples per training step for the ELBO estimate.
        prior_std: standard deviation of the Gaussian prior on every scale.
        init_scale: initial standard deviation of ``q`` around its mean.
        local_draws: in training, draw ``g`` independently for every input (see :meth:`loss`).
            The default, False, shares one draw by the minibatch, as the authors' code did.
            With Gal et al.'s CNN, local draws trained longer before validation NLL rose and
            detected OOD inputs better (3 seeds, ``benchmarks/results/ood-cnn/``: AUROC vs
            Fashion-MNIST 0.985 vs 0.977, MNIST accuracy 97.45% vs 97.13%); on the 784-800-10
            MLP they made no difference (tuning set 94.76% vs 95.00%, one seed, within
            noise; ``benchmarks/results/bhn_recipe/``), where training took 659 s against 556 s
            (the flow runs once per image).
        prior_mean: ``"zero"`` (default) or ``"init"``, the centre of the prior (see above).
        prob_clip: clip the true class's probability in the likelihood term, as the authors'
            code did with 0.001 (0: off, the default; see :meth:`UncertaintyModel.nll`). On
            the MNIST-5000 tuning set 0.001 did not help (BHN-12 94.60% vs 95.00%, MC dropout
            95.44% vs 95.40%; ``benchmarks/results/bhn_recipe/``), so it stays off.
    """

    method = "bhn"
    default_samples = 100
    chunk_elements = 2**21  # activations per chunk of inputs in forward_draw (8 MB float32)

    def __init__(
        self,
        layers: Sequence[WeightLayer],
        config: dict[str, Any],
        coupling_layers: int = 12,
        coupling_hidden: int = 200,
        coupling_max_log_scale: float = 3.0,
        train_samples: int = 1,
        prior_std: float = 1.0,
        init_scale: float = 0.2,
        local_draws: bool = False,
        prior_mean: str | PriorMean = PriorMean.ZERO,
        prob_clip: float = 0.0,
    ) -> None:
        self.prior_mean = parse_choice(prior_mean, PriorMean, "prior_mean")
        if "prior_mean" in config.get("options", {}):  # checkpoints store plain strings
            config["options"]["prior_mean"] = self.prior_mean.value
        super().__init__(layers, config, prob_clip)
        train_samples = check_int("train_samples", train_samples)
        prior_std = check_real("prior_std", prior_std, 1e-6)  # 1e-200: log(0) in the KL
        init_scale = check_real("init_scale", init_scale, 0.0, low_open=True)
        coupling_max_log_scale = check_real(
            "coupling_max_log_scale", coupling_max_log_scale, 0.0, low_open=True
        )
        self.train_samples = train_samples
        self.local_draws = check_flag("local_draws", local_draws)
        self.prior_std = prior_std
        directions = [make_module(layer) for layer in self.layers]
        self.v = nn.ParameterList(m.weight for m in directions)
        self.bias = nn.ParameterList(m.bias for m in directions)
        self.sizes = [layer.out_features for layer in self.layers]
        self.flow = NormalizingFlow(
            sum(self.sizes),
            coupling_layers,
            hidden=coupling_hidden,
            init_scale=init_scale,
            max_log_scale=coupling_max_log_scale,
        )
        with torch.no_grad():
            self.flow.affine.loc.fill_(1.0)
        self.register_buffer("initialized", torch.tensor(False))
        if self.prior_mean is PriorMean.INIT:  # set by init_from_data
            self.register_buffer("prior_loc", torch.zeros(sum(self.sizes)))

    def _direction(self, i: int) -> Tensor:
        """The unit-norm directions ``v / ||v||`` of layer ``i`` (one row per output unit)."""
        return self.v[i] / self._norm(i).view(-1, *([1] * (self.v[i].dim() - 1)))

    def _norm(self, i: int) -> Tensor:
        return self.v[i].flatten(1).norm(dim=1).clamp_min(1e-12)

    def _scaled(self, i: int, layer: WeightLayer, h: Tensor, g: Tensor) -> Tensor:
        """Layer ``i`` under scales ``g[S, units]`` (one per sample) or ``g[S, B, units]``."""
        return self._apply_scale(i, shared_layer(layer, h, self.v[i], None), g / self._norm(i))

    def _apply_scale(self, i: int, u: Tensor, scale: Tensor) -> Tensor:
        """``scale * u + bias`` for the product ``u = h @ v^T`` and ``scale = g / ||v||``.

        ``g * (h @ (v / ||v||)^T) = (g / ||v||) * (h @ v^T)``: dividing the per-unit scales
        rather than the weight matrix saves a pass over ``v`` (and its backward) per call.
        """
        spatial = (1,) * (u.dim() - 3)
        batch = 1 if scale.dim() == 2 else scale.shape[1]
        scale = scale.reshape(scale.shape[0], batch, -1, *spatial)
        # One fused op: the (samples, batch, units) result is the largest tensor of prediction.
        return torch.addcmul(self.bias[i].view(1, 1, -1, *spatial), u, scale)

    def draw(
        self, n_samples: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(g[n_samples, n_scales], log_q[n_samples])``."""
        return self.flow.sample(n_samples, generator)

    def forward_draw(self, x: Tensor, draw: tuple[Tensor, Tensor]) -> Tensor:
        """Logits ``(S, B, classes)``: the first layer's product is computed once for all
        samples, then the per-sample part runs over chunks of inputs.

        The chunks keep the ``(S, chunk, units)`` activations within a few MB, so they stay in
        the CPU cache between the scaling, the ReLU and the next layer's product, instead of
        one ``(100, 1000, 800)`` tensor for 100 samples of the 784-800-10 MLP on 1000 images
        (with this, 100-sample prediction takes 0.067x MC dropout's, against 0.24x before:
        ``python benchmarks/speed.py``). Every chunk still evaluates all samples in one
        batched pass.
        """
        g = draw[0]
        scales = [gi / self._norm(i) for i, gi in enumerate(g.split(self.sizes, dim=-1))]
        h = x.unsqueeze(0)
        if self.layers[0].kind == "linear":
            h = h.flatten(2)
        first = shared_layer(self.layers[0], h, self.v[0], None)
        chunk = first.shape[1]
        if g.dim() == 2:  # one draw per sample, shared by the batch: inputs may be chunked
            chunk = max(1, self.chunk_elements // (g.shape[0] * first[0, 0].numel()))
        parts = [self._rest(u, scales) for u in first.split(chunk, dim=1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _rest(self, first: Tensor, scales: list[Tensor]) -> Tensor:
        """Run every layer from the first layer's (unscaled) product ``first[1, B, ...]``."""
        h = first
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = shared_layer(layer, h, self.v[i], None)
            h = apply_after(layer, self._apply_scale(i, h, scales[i]))
        return h

    def log_prior(self, g: Tensor) -> Tensor:
        """``log p(g)`` under the factorised Gaussian prior, one value per sample."""
        var = self.prior_std**2
        if self.prior_mean is PriorMean.INIT:
            g = g - self.prior_loc
        return -0.5 * (g.pow(2) / var + math.log(2 * math.pi * var)).sum(-1)

    def kl_estimate(self, draw: tuple[Tensor, Tensor]) -> Tensor:
        """Monte Carlo estimate of ``KL(q || p) = E_q[log q(g) - log p(g)]``."""
        g, log_q = draw
        return (log_q - self.log_prior(g)).mean()

    def loss(self, x: Tensor, y: Tensor, n_data: int, kl_weight: float = 1.0) -> Tensor:
        """Negative ELBO per data point, estimated with ``train_samples`` draws per input.

        With ``local_draws`` every input gets its own draws of ``g`` (cheap: ``g`` only scales
        units, so the first layer's product is still shared). Each log-likelihood term
        ``E_q[log p(y_i | x_i, g)]`` keeps an unbiased estimate, so the objective is the same
        ELBO as with one draw per minibatch, at a lower gradient variance (as the local
        reparameterisation trick does for factorial VI).
        """
        s, b = self.train_samples, x.shape[0]
        g, log_q = self.draw(s * b if self.local_draws else s)
        if self.local_draws:
            g = g.view(s, b, -1)
        logits = self.forward_draw(x, (g, log_q))
        nll = self.nll(logits.flatten(0, 1), y.repeat(s))
        kl = (log_q - self.log_prior(g.reshape(log_q.shape[0], -1))).mean()
        return nll + kl_weight * kl / n_data

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Data-dependent init: each unit's pre-activation gets zero mean and unit variance.

        Sets the flow's location (the mean of ``g``) and the biases, layer by layer, on the
        batch ``x``. Only the output layer is left at unit scale, so initial logits are O(1).
        """
        x = self.check_input(x)
        loc = self.flow.affine.loc
        h = x.unsqueeze(0)
        if self.layers[0].kind == "linear":
            h = h.flatten(2)
        offset = 0
        for i, layer in enumerate(self.layers):
            u = shared_layer(layer, h, self._direction(i), None)
            dims = [d for d in range(u.dim()) if d != 2]
            mean = u.mean(dims)
            if u.numel() // u.shape[2] < 2:  # one example through an MLP: no spread to measure
                std = torch.ones_like(mean)
            else:
                # A unit that barely varies on this batch (sparse or one-hot inputs, repeated
                # observations) would get a huge scale: floor its std.
                std = u.std(dims)
                std = std.clamp_min(max(0.1 * std.median().item(), 1e-2))
            last = i == len(self.layers) - 1
            scale = 1.0 / std if not last else torch.ones_like(std)
            loc[offset : offset + layer.out_features] = scale
            self.bias[i].copy_(-mean * scale)
            offset += layer.out_features
            g = loc[offset - layer.out_features : offset].unsqueeze(0)
            h = apply_after(layer, self._scaled(i, layer, h, g))
        if self.prior_mean is PriorMean.INIT:
            self.prior_loc.copy_(loc)
        self.initialized.fill_(True)
