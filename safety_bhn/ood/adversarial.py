"""Adversarial examples (FGSM, Goodfellow et al. 2015): accuracy, and how scores detect them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_int
from ..core.base import UncertaintyModel
from ..core.metrics import accuracy, auto_batch_size, nll
from .metrics import detection_metrics
from .scores import Score, compute_scores, parse_scores, sample_probs
from .suite import check_in_range

EPSILONS = (0.0, 0.05, 0.1, 0.2, 0.3)


def fgsm(
    model: UncertaintyModel,
    x: Tensor,
    y: Tensor,
    eps: float,
    n_samples: int | None = 10,
    generator: torch.Generator | None = None,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
) -> Tensor:
    """Fast gradient sign attack on the posterior predictive.

    ``x + eps * sign(grad_x -log p(y | x))`` clipped to ``pixel_range``, where
    ``p(y | x) = mean_s softmax(logits_s)`` over ``n_samples`` posterior draws (one draw shared
    by the batch). Only the input gets gradients; the model's parameters are left untouched.
    The result lies on the device of ``x``, whatever the model's, and has the dtype of ``x``
    (the gradient is taken in the model's dtype; the step is added to ``x`` as given).

    Example:
        >>> import safety_bhn
        >>> model = safety_bhn.build_model("map", hidden=[8], seed=0)
        >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
        >>> ((fgsm(model, x, y, 0.1) - x).abs().max() <= 0.1 + 1e-6).item()
        True
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0.0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    given = x
    x = model.check_input(x)
    y = model.check_targets(y, x.shape[0])
    check_in_range(x, pixel_range)
    if eps == 0:
        return given.detach().clone()
    n = model.default_samples if n_samples is None else n_samples
    draw = model.draw(model.check_samples(n), generator)
    batch_size = (
        auto_batch_size(model, n) if batch_size is None else check_int("batch_size", batch_size)
    )
    was_training = model.training
    model.eval()
    signs = []
    try:
        for xc, yc in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xc = xc.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                log_probs = F.log_softmax(model.forward_draw(xc, draw), dim=-1)
                log_pred = torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(float(n)))
                loss = F.nll_loss(log_pred, yc, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xc)
            signs.append(grad.sign())
    finally:
        model.train(was_training)
    step = eps * torch.cat(signs).to(device=given.device, dtype=given.dtype)
    return (given.detach() + step).clamp(*pixel_range)  # on the input's device, as given


def adversarial_curve(
    model: UncertaintyModel,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float] = EPSILONS,
    n_samples: int | None = None,
    attack_samples: int | None = 10,
    generator: torch.Generator | None = None,
    scores: str | Sequence[str | Score] = "all",
    *,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Accuracy and NLL on FGSM examples at each ``eps``, and each score's AUROC (clean vs
    adversarial, OOD = adversarial) as in Krueger et al. (2017). One row per (eps, score).

    The attack uses ``attack_samples`` draws; evaluation uses ``n_samples`` other draws,
    the same for the clean and the adversarial inputs. At ``eps = 0`` the AUROC is not
    defined (the sets coincide) and is reported as NaN.
    """
    y_cpu = model.check_targets(y, model.check_input(x).shape[0]).cpu()
    if isinstance(epsilons, numbers.Real):
        epsilons = [epsilons]
    if len(epsilons) == 0:
        raise ValueError("epsilons is empty: pass the attack strengths, e.g. [0.05, 0.1]")
    chosen = parse_scores(scores)
    n = model.default_samples if n_samples is None else n_samples
    draw = model.draw(model.check_samples(n), generator)
    batch_size = auto_batch_size(model, n)
    clean_probs = sample_probs(model, x, n, batch_size=batch_size, draw=draw)
    clean = compute_scores(clean_probs, chosen)
    rows = []
    for eps in tqdm(epsilons, desc="FGSM", disable=not progress, leave=False):
        x_adv = fgsm(model, x, y, eps, attack_samples, generator, pixel_range)
        probs = sample_probs(model, x_adv, n, batch_size=batch_size, draw=draw)
        adv = compute_scores(probs, chosen)
        predictive = probs.mean(0)
        acc, loss = accuracy(predictive, y_cpu), nll(predictive, y_cpu)
        for score in chosen:
            auroc = float("nan")
            if eps > 0:
                auroc = detection_metrics(clean[score], adv[score])["auroc"]
            rows.append({"eps": float(eps), "score": score.value, "accuracy": acc, "nll": loss,
                         "auroc": auroc, "mean_score": adv[score].mean().item()})  # fmt: skip
    return rows
