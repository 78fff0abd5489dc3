"""Known answers for the shared argument checks (safety_bhn._checks)."""

import math

import numpy as np
import pytest
import torch

import safety_bhn
from safety_bhn._checks import MAX_SEED, check_flag, check_generator, check_int, check_real
from safety_bhn.explore import DQNAgent, RandomAgent
from safety_bhn.ood import build_suite


def test_check_int_accepts_integers_and_refuses_the_rest():
    assert check_int("k", 3) == 3 and type(check_int("k", np.int64(3))) is int
    assert check_int("k", 0, minimum=0) == 0
    for bad in (0, -1, 2.5, "3", True, np.bool_(True), None, math.nan):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            check_int("k", bad)
    with pytest.raises(ValueError, match="an integer >= 2"):
        check_int("n_classes", 1, minimum=2)


@pytest.mark.parametrize("make", [
    lambda seed: safety_bhn.build_model("map", hidden=[4], seed=seed),
    lambda seed: build_suite(torch.rand(4, 1, 28, 28), sets="inverted", seed=seed),
    lambda seed: DQNAgent(3, 2, "mc_dropout", hidden=[4], seed=seed),
    lambda seed: RandomAgent(2, seed=seed),
])  # fmt: skip
def test_seeds_beyond_torchs_64_bits_are_refused_by_name(make):
    """2**64 failed deep in torch ('Overflow when unpacking long long'), naming no argument."""
    with pytest.raises(ValueError, match=r"seed must be at most 9223372036854775807 \(torch"):
        make(2**64)
    assert make(MAX_SEED) is not None


def test_check_real_refuses_nan_infinities_strings_and_out_of_range():
    assert check_real("lr", np.float32(0.5), 0.0, low_open=True) == 0.5
    assert check_real("p", 1, 0.0, 1.0) == 1.0
    for bad in (math.nan, math.inf, "0.1", True, 0.0, -1.0, 10**400):  # 10**400: OverflowError
        with pytest.raises(ValueError, match="lr must be a positive number"):
            check_real("lr", bad, 0.0, low_open=True)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]"):
        check_real("p", 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="a finite number"):
        check_real("degrees", math.inf)


def test_check_flag_and_generator():
    assert check_flag("safe", np.bool_(True)) is True
    for bad in ("false", "no", 1, None):
        with pytest.raises(ValueError, match="safe must be True or False"):
            check_flag("safe", bad)
    gen = torch.Generator()
    assert check_generator(gen) is gen and check_generator(None) is None
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        check_generator(0)
