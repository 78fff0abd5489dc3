"""core.scores: entropies and mutual information against direct float64 NumPy computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from safety_bhn.core.scores import (
    check_probs,
    expected_entropy,
    mutual_information,
    predictive_entropy,
)


def _np_entropy(p):
    """Entropy over the last axis in float64, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def _naive_mutual_information(probs):
    """``H[E p] - E H[p]`` computed in the input's own dtype."""
    mean = probs.mean(0)
    h_mean = -torch.special.xlogy(mean, mean).sum(-1)
    return h_mean + torch.special.xlogy(probs, probs).sum(-1).mean(0)


def _dirichlet(n_samples, batch, alpha, seed):
    """``(n_samples, batch, classes)`` probabilities, sample s of point b ~ Dirichlet(alpha[b])."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.dirichlet(a, size=n_samples) for a in alpha], axis=1)


def test_identical_float32_samples_have_exactly_zero_mutual_information():
    logits = torch.randn(1, 6, 1000, generator=torch.Generator().manual_seed(0))
    probs = F.softmax(logits, dim=-1).expand(100, 6, 1000)  # 100 samples x 1000 classes
    naive = _naive_mutual_information(probs)
    assert (naive != 0).any()  # float32 cancellation: the failure this guards against
    mi = mutual_information(probs)
    assert mi.dtype == torch.float32 and mi.shape == (6,)
    assert torch.equal(mi, torch.zeros(6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("concentration", [0.5, 5000.0])  # samples disagree / nearly agree
def test_scores_match_numpy_float64_on_dirichlet_samples(dtype, concentration):
    rng = np.random.default_rng(1)
    base = rng.dirichlet(np.ones(20), size=30)  # one mean per point, 20 classes
    p = _dirichlet(200, 30, concentration * 20 * base, seed=2)
    probs = torch.from_numpy(p).to(dtype)
    exact = probs.double().numpy()  # the values the function sees, without further rounding
    h_mean, mean_h = _np_entropy(exact.mean(0)), _np_entropy(exact).mean(0)
    direct = h_mean - mean_h
    assert (direct > 0).all()
    mi = mutual_information(probs)
    assert mi.dtype == dtype
    rtol = 1e-6 if dtype == torch.float32 else 1e-9  # float32: only the final rounding
    np.testing.assert_allclose(mi.double().numpy(), direct, rtol=rtol, atol=0)
    np.testing.assert_allclose(predictive_entropy(probs).double().numpy(), h_mean, rtol=rtol)
    np.testing.assert_allclose(expected_entropy(probs).double().numpy(), mean_h, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_genuine_mutual_information_is_kept(dtype):
    d = 2.0**-10  # two samples (1/2 + d, 1/2 - d) and (1/2 - d, 1/2 + d), exact in float32
    probs = torch.tensor([[[0.5 + d, 0.5 - d]], [[0.5 - d, 0.5 + d]]], dtype=dtype)
    # log 2 - H_b(1/2 + d), written without cancellation: about 2 d^2 = 1.9e-6 nats
    exact = (0.5 + d) * np.log1p(2 * d) + (0.5 - d) * np.log1p(-2 * d)
    assert mutual_information(probs).item() == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n_classes", [2, 10, 1000])
def test_low_precision_probabilities_are_accepted_but_unnormalised_ones_are_not(dtype, n_classes):
    # bfloat16 softmax rows are off by up to eps / 2 = 0.0039: "do not sum to one" before
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(5, 200, n_classes, generator=g)).to(dtype).softmax(-1)
    assert check_probs(probs) is probs
    assert mutual_information(probs).shape == (200,)
    halved = torch.rand(5, 200, n_classes, generator=g)
    halved = (0.5 * halved / halved.sum(-1, keepdim=True)).to(dtype)  # rows sum to 1/2
    with pytest.raises(ValueError, match=rf"sum to one .*{dtype} rounding allows"):
        check_probs(halved)


def test_bald_selection_takes_bfloat16_probabilities():
    from safety_bhn.active import select

    probs = (3 * torch.randn(5, 200, 10, generator=torch.Generator().manual_seed(0))).bfloat16()
    chosen = select("bald", probs.softmax(-1), 3)
    assert len(chosen.indices) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_keep_their_sum_tolerance(dtype):
    probs = torch.full((1, 1, 4), 0.25, dtype=dtype)
    check_probs(probs * (1 + 9e-4))  # sums to 1.0009: accepted, as before
    with pytest.raises(ValueError, match="max error 0.0011"):
        check_probs(probs * (1 + 1.1e-3))
