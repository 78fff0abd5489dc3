"""Known answers for the shared argument checks (safety_bhn._checks)."""

import math

import numpy as np
import pytest
import torch

from safety_bhn._checks import check_flag, check_generator, check_int, check_real


def test_check_int_accepts_integers_and_refuses_the_rest():
    assert check_int("k", 3) == 3 and type(check_int("k", np.int64(3))) is int
    assert check_int("k", 0, minimum=0) == 0
    for bad in (0, -1, 2.5, "3", True, np.bool_(True), None, math.nan):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            check_int("k", bad)
    with pytest.raises(ValueError, match="an integer >= 2"):
        check_int("n_classes", 1, minimum=2)


def test_check_real_refuses_nan_infinities_strings_and_out_of_range():
    assert check_real("lr", np.float32(0.5), 0.0, low_open=True) == 0.5
    assert check_real("p", 1, 0.0, 1.0) == 1.0
    for bad in (math.nan, math.inf, "0.1", True, 0.0, -1.0):
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
