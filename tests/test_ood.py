"""OOD detection: metrics against brute-force references, scores, suites, shift, FGSM and CLI."""

import csv
import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import TensorDataset

import safety_bhn
import safety_bhn.ood.cli as ood_cli
from safety_bhn.cli import main
from safety_bhn.core import scores as core_scores
from safety_bhn.core.metrics import evaluate
from safety_bhn.data import embedded_mnist, load_dataset
from safety_bhn.ood import (
    OODSuite,
    Score,
    add_noise,
    adversarial_curve,
    aupr_in,
    aupr_out,
    auroc,
    available_sets,
    build_suite,
    compute_scores,
    detection_error,
    detection_metrics,
    evaluate_ood,
    fgsm,
    fpr_at_tpr,
    held_out_split,
    parse_scores,
    register_ood_set,
    rotate,
    sample_probs,
    shift_curve,
    unregister_ood_set,
)
from safety_bhn.ood.scores import SCORE_FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]


# -- brute-force references ------------------------------------------------------------------
def brute_auroc(s_in, s_out):
    """Mann-Whitney: P(out > in) + 0.5 P(out == in), over all pairs."""
    s_in, s_out = np.asarray(s_in)[:, None], np.asarray(s_out)[None, :]
    return float(((s_out > s_in) + 0.5 * (s_out == s_in)).mean())


def brute_fpr95(s_in, s_out):
    """Scan thresholds: accept s <= t; smallest t accepting >= 95% of in; fraction of out kept."""
    s_in, s_out = np.asarray(s_in), np.asarray(s_out)
    for t in np.unique(np.concatenate([s_in, s_out])):
        if (s_in <= t).mean() >= 0.95:
            return float((s_out <= t).mean())
    raise AssertionError("unreachable")


def brute_detection_error(s_in, s_out):
    s_in, s_out = np.asarray(s_in), np.asarray(s_out)
    errors = []
    for t in [*np.unique(np.concatenate([s_in, s_out])), np.inf]:
        tpr, fpr = (s_out >= t).mean(), (s_in >= t).mean()
        errors.append(0.5 * (1 - tpr) + 0.5 * fpr)
    return float(min(errors))


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_hand_computed_example():
    s_in, s_out = [0.1, 0.2, 0.5], [0.3, 0.9]
    # ranked high to low: out 0.9, in 0.5, out 0.3, in 0.2, in 0.1
    assert auroc(s_in, s_out) == pytest.approx(5 / 6)
    assert aupr_out(s_in, s_out) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert aupr_in(s_in, s_out) == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(0.5)  # accept all in: 0.3 slips through
    assert detection_error(s_in, s_out) == pytest.approx(1 / 6)


def test_perfect_separation_and_identical_scores():
    perfect = detection_metrics(torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.5, 0.7]))
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0,
                       "detection_error": 0.0}  # fmt: skip
    same = detection_metrics(np.full(50, 0.3), np.full(40, 0.3))
    assert same["auroc"] == 0.5
    assert same["fpr95"] == 1.0
    assert same["detection_error"] == 0.5
    assert auroc([0.5, 0.7], [0.0, 0.1]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0, 1, 300).round(1)  # rounding creates ties
    s_out = rng.normal(1, 1.5, 200).round(1)
    labels = np.r_[np.zeros(300), np.ones(200)]
    scores = np.r_[s_in, s_out]
    assert auroc(s_in, s_out) == pytest.approx(brute_auroc(s_in, s_out))
    assert auroc(s_in, s_out) == pytest.approx(roc_auc_score(labels, scores))
    assert aupr_out(s_in, s_out) == pytest.approx(average_precision_score(labels, scores))
    assert aupr_in(s_in, s_out) == pytest.approx(average_precision_score(1 - labels, -scores))
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(brute_fpr95(s_in, s_out))
    assert detection_error(s_in, s_out) == pytest.approx(brute_detection_error(s_in, s_out))


@pytest.mark.parametrize(
    "s_in, s_out, match",
    [([], [1.0], "scores_in is empty"), ([0.1], [], "scores_out is empty"),
     ([0.1, float("nan")], [1.0], "NaN"), ([[0.1, 0.2]], [1.0], "1-D")],
)  # fmt: skip
def test_metric_errors(s_in, s_out, match):
    with pytest.raises(ValueError, match=match):
        auroc(s_in, s_out)


# -- scores -----------------------------------------------------------------------------------
def test_scores_share_the_core_definitions():
    assert SCORE_FUNCTIONS[Score.ENTROPY] is core_scores.predictive_entropy
    assert SCORE_FUNCTIONS[Score.MUTUAL_INFORMATION] is core_scores.mutual_information
    assert SCORE_FUNCTIONS[Score.MAX_SOFTMAX] is core_scores.max_softmax
    assert SCORE_FUNCTIONS[Score.VARIATION_RATIO] is core_scores.variation_ratio
    assert SCORE_FUNCTIONS[Score.EXPECTED_ENTROPY] is core_scores.expected_entropy
    assert set(SCORE_FUNCTIONS) == set(Score)


def test_scores_on_hand_made_samples():
    agree = torch.tensor([[0.7, 0.2, 0.1]]).expand(5, 1, 3)
    uniform = torch.full((4, 1, 3), 1 / 3)
    disagree = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])  # two confident samples
    s = compute_scores(agree)
    assert s[Score.MUTUAL_INFORMATION].item() == pytest.approx(0.0, abs=1e-6)
    assert s[Score.MAX_SOFTMAX].item() == pytest.approx(0.3)
    assert s[Score.VOTE_RATIO].item() == 0.0
    u = compute_scores(uniform)
    assert u[Score.ENTROPY].item() == pytest.approx(math.log(3))
    assert u[Score.MUTUAL_INFORMATION].item() == pytest.approx(0.0, abs=1e-6)
    assert u[Score.MAX_SOFTMAX].item() == pytest.approx(2 / 3)
    d = compute_scores(disagree)
    assert d[Score.MUTUAL_INFORMATION].item() == pytest.approx(math.log(2))
    assert d[Score.ENTROPY].item() == pytest.approx(math.log(2))
    assert d[Score.VARIATION_RATIO].item() == pytest.approx(0.5)
    assert d[Score.VOTE_RATIO].item() == pytest.approx(0.5)
    assert d[Score.EXPECTED_ENTROPY].item() == 0.0  # each sample is certain: no aleatoric part
    for probs in (agree, uniform):  # agreeing samples: all of the entropy is aleatoric
        c = compute_scores(probs)
        assert c[Score.EXPECTED_ENTROPY].item() == pytest.approx(c[Score.ENTROPY].item())


def test_identical_samples_have_exactly_zero_mutual_information():
    # identical samples (a MAP net) must score exactly 0, not float32 cancellation noise of
    # order 1e-7, or a MAP net would "detect" something with MI through rounding alone
    probs = F.softmax(torch.randn(1, 500, 10, generator=torch.Generator().manual_seed(0)), -1)
    mi = compute_scores(probs.expand(50, 500, 10), "mutual_information")
    assert (mi[Score.MUTUAL_INFORMATION] == 0).all()
    assert auroc(mi[Score.MUTUAL_INFORMATION][:250], mi[Score.MUTUAL_INFORMATION][250:]) == 0.5


def test_parse_scores_and_errors():
    assert parse_scores("all") == list(Score)
    assert parse_scores("entropy, mutual-information") == [Score.ENTROPY,
                                                           Score.MUTUAL_INFORMATION]  # fmt: skip
    with pytest.raises(ValueError, match="Did you mean 'entropy'"):
        parse_scores("entrpy")
    with pytest.raises(ValueError, match="no scores"):
        parse_scores([])
    with pytest.raises(ValueError, match="sum to one"):
        compute_scores(torch.rand(2, 3, 4))  # not normalised over classes


def test_sample_probs_shape_and_shared_draw():
    model = safety_bhn.build_model("mc_dropout", hidden=[16], in_shape=(5,), n_classes=3, seed=0)
    x = torch.rand(7, 5)
    probs = sample_probs(model, x, 4, torch.Generator().manual_seed(0), batch_size=3)
    assert probs.shape == (4, 7, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 7))
    whole = sample_probs(model, x, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(probs, whole)  # chunking does not change the draw


def test_sample_probs_refuses_arguments_a_given_draw_overrides():
    model = safety_bhn.build_model("mc_dropout", hidden=[16], in_shape=(5,), n_classes=3, seed=0)
    x, draw = torch.rand(7, 5), model.draw(4, torch.Generator().manual_seed(0))
    assert sample_probs(model, x, 4, draw=draw).shape == (4, 7, 3)
    # both were ignored, silently, before: the draw fixes the samples and their number
    with pytest.raises(ValueError, match="generator is not used when draw is given"):
        sample_probs(model, x, 4, torch.Generator().manual_seed(1), draw=draw)
    with pytest.raises(ValueError, match="n_samples=7 but the draw given holds 4 samples"):
        sample_probs(model, x, 7, draw=draw)


# -- suites -----------------------------------------------------------------------------------
def fake_mnist(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


@pytest.mark.parametrize("name", ["uniform_noise", "gaussian_noise", "inverted"])
def test_generated_sets_match_in_distribution(name):
    x, y = fake_mnist()
    suite = build_suite(x, y, name, seed=1)
    ood = suite[name]
    assert ood.shape == x.shape and ood.dtype == x.dtype
    assert ood.min() >= 0.0 and ood.max() <= 1.0
    assert not torch.equal(ood, x)


def test_set_contents():
    x, y = fake_mnist(400)
    suite = build_suite(x, y, "gaussian_noise,inverted,uniform_noise", seed=0)
    torch.testing.assert_close(suite["inverted"], 1 - x)
    g = suite["gaussian_noise"]
    # N(0.5, 1) clipped: P(pixel = 0) = P(pixel = 1) = Phi(-0.5) = 0.3085
    assert (g == 0).float().mean().item() == pytest.approx(0.3085, abs=0.01)
    assert (g == 1).float().mean().item() == pytest.approx(0.3085, abs=0.01)
    assert suite["uniform_noise"].mean().item() == pytest.approx(0.5, abs=0.01)


def test_fashion_mnist_set(shared_data_dir):
    x, y = fake_mnist(30)
    suite = build_suite(x, y, "mnist", data_dir=shared_data_dir)
    assert suite.names == ["fashion_mnist", "uniform_noise", "gaussian_noise", "inverted"]
    fashion = suite["fashion_mnist"]
    assert fashion.shape == x.shape and fashion.dtype == torch.float32
    assert 0.0 <= fashion.min() and fashion.max() <= 1.0
    flat = build_suite(x.flatten(1), None, "fashion_mnist", data_dir=shared_data_dir)
    assert flat["fashion_mnist"].shape == (30, 784)  # reshaped to the in-distribution layout


def test_held_out_classes_split():
    x, y = fake_mnist(100)
    suite = build_suite(x, y, "held_out_classes")
    assert suite.y_in.max().item() <= 4 and suite.x_in.shape[0] == 50
    novel = suite["held_out_classes"]
    assert novel.shape[0] == 50
    expected = x[y >= 5]
    # every novel input is one of the test inputs of digits 5-9
    assert all(any(torch.equal(v, e) for e in expected) for v in novel)
    xk, yk, xn = held_out_split(x, y, known_classes=[7, 2])
    assert yk.unique().tolist() == [0, 1] and xn.shape[0] == 80
    torch.testing.assert_close(xk[yk == 0], x[y == 7])
    with pytest.raises(ValueError, match="need the labels"):
        build_suite(x, None, "held_out_classes")


def test_user_registered_sets_run_through_the_suite():
    x, y = fake_mnist(40)
    blank = torch.zeros(25, 1, 28, 28)
    register_ood_set("test_blank", blank)
    register_ood_set("test_dataset", TensorDataset(torch.full((10, 1, 28, 28), 0.5),
                                                   torch.zeros(10)))  # fmt: skip
    register_ood_set("test_ctx", lambda ctx: ctx.x_in[: ctx.n].flip(-1))
    register_ood_set("test_noargs", lambda: torch.ones(8, 1, 28, 28))
    try:
        assert {"test_blank", "test_ctx"} <= set(available_sets())
        with pytest.raises(ValueError, match="already registered"):
            register_ood_set("test_blank", blank)
        suite = build_suite(x, y, ["test_blank", "test_dataset", "test_ctx", "test_noargs"],
                            n=20)  # fmt: skip
        assert suite["test_blank"].shape == (20, 1, 28, 28)  # subsampled to n
        assert suite["test_dataset"].shape == (10, 1, 28, 28)
        torch.testing.assert_close(suite["test_ctx"], suite.x_in.flip(-1))
        model = safety_bhn.build_model("mc_dropout", hidden=[16], seed=0)
        report = evaluate_ood(model, suite, ["entropy", "mutual_information"], 3,
                              torch.Generator().manual_seed(0), progress=False)  # fmt: skip
        assert {(r["ood_set"], r["score"]) for r in report.rows()} == {
            (s, c) for s in suite.names for c in ("entropy", "mutual_information")
        }
        with pytest.raises(ValueError, match="unknown metric 'aurocc'.*Did you mean 'auroc'"):
            report.best("aurocc")  # a bare KeyError before
    finally:
        for name in ("test_blank", "test_dataset", "test_ctx", "test_noargs"):
            unregister_ood_set(name)
    assert "test_blank" not in available_sets()
    for reserved in ("mnist", "all", "a,b"):  # would shadow a suite or split in two
        with pytest.raises(ValueError, match="cannot be used"):
            register_ood_set(reserved, x)


def test_suite_errors():
    x, y = fake_mnist(10)
    suite = OODSuite(x, y)
    with pytest.raises(ValueError, match=r"shape \(784,\).*\(1, 28, 28\)"):
        suite.add("flat", torch.rand(5, 784))
    with pytest.raises(ValueError, match="outside the in-distribution pixel range"):
        suite.add("bytes", torch.rand(5, 1, 28, 28) * 255)
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        suite.add("raw", torch.zeros(5, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'nothing' is empty"):
        suite.add("nothing", torch.zeros(0, 1, 28, 28))
    with pytest.raises(ValueError, match="NaN"):
        suite.add("nan", torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="Did you mean 'inverted'"):
        build_suite(x, y, ["inverterd"])
    with pytest.raises(ValueError, match="unknown OOD suite.*Did you mean 'mnist'"):
        build_suite(x, y, "mnsit")
    with pytest.raises(ValueError, match="sets .*fashion_mnist.*Did you mean 'fashion_mnist'"):
        build_suite(x, y, "fashion")  # a set where a suite was expected is named too
    with pytest.raises(ValueError, match="non-empty batch"):
        OODSuite(torch.zeros(0, 1, 28, 28))
    with pytest.raises(ValueError, match="built-in"):
        unregister_ood_set("inverted")
    # replaced, a built-in could not be restored, and reports named the stand-in 'inverted'
    with pytest.raises(ValueError, match="'inverted' is a built-in OOD set and cannot be repl"):
        register_ood_set("inverted", torch.zeros(8, 1, 28, 28), overwrite=True)
    assert torch.equal(build_suite(x, y, "inverted")["inverted"], 1 - x)
    with pytest.raises(ValueError, match="no OOD sets"):
        evaluate_ood(safety_bhn.build_model("map", hidden=[4], seed=0), suite, progress=False)


def test_all_sets_include_held_out_classes_only_with_known_classes(shared_data_dir):
    x, y = fake_mnist(40)
    register_ood_set("test_big", TensorDataset(torch.rand(300, 1, 28, 28)))
    try:
        suite = build_suite(x, y, "all", n=20, data_dir=shared_data_dir)
        assert "held_out_classes" not in suite.names and "test_big" in suite.names
        assert suite["test_big"].shape[0] == 20  # a Dataset is cut to n as a tensor is
        split = build_suite(x, y, "all", known_classes=range(5), data_dir=shared_data_dir)
        assert "held_out_classes" in split.names and int(split.y_in.max()) == 4
    finally:
        unregister_ood_set("test_big")


def test_a_model_with_fewer_classes_than_the_suite_is_refused():
    x, y = fake_mnist(20)
    five = safety_bhn.build_model("map", hidden=[4], n_classes=5, seed=0)
    with pytest.raises(ValueError, match="labels go up to 9, but the model has 5 classes"):
        evaluate_ood(five, build_suite(x, y, "uniform_noise"), progress=False)
    held_out = build_suite(x, y, "held_out_classes", known_classes=range(5))
    assert evaluate_ood(five, held_out, "entropy", 2, progress=False).accuracy is not None


def test_a_suite_records_its_known_classes_and_refuses_a_model_of_others():
    """A ten-class model scored on a held-out suite ran without a word: its outputs 0-4 were
    read as the relabelled digits 5-9 (in-distribution accuracy 0.11)."""
    x, y = fake_mnist(40)
    ten = safety_bhn.build_model("map", hidden=[4], seed=0)
    for known in ([5, 6, 7, 8, 9], None):  # None: mnist_held_out's default split, 0-4
        suite = build_suite(x, y, "held_out_classes,inverted", known_classes=known)
        assert suite.known_classes == tuple(known or range(5))
        with pytest.raises(ValueError, match=r"model of the 5 classes .* has 10 classes"):
            evaluate_ood(ten, suite, "entropy", 2, progress=False)


def test_known_classes_that_cover_every_label_relabel_without_a_held_out_set(shared_data_dir):
    """known_classes naming all ten digits failed in every suite ('must split the labels'),
    so a run trained with --classes 0 1 ... 9 could not be scored at all."""
    x, y = fake_mnist(40)
    reverse = list(range(9, -1, -1))  # the model's output i stands for digit 9 - i
    for sets in ("inverted", "all"):
        suite = build_suite(x, y, sets, known_classes=reverse, n=20, data_dir=shared_data_dir)
        plain = build_suite(x, y, sets, n=20, data_dir=shared_data_dir)
        assert "held_out_classes" not in suite.names and suite.known_classes == tuple(reverse)
        assert suite.names == plain.names and torch.equal(suite.x_in, plain.x_in)
        assert torch.equal(suite.y_in, 9 - plain.y_in)
    with pytest.raises(ValueError, match="must split the labels into known and novel"):
        build_suite(x, y, "held_out_classes", known_classes=reverse)  # asked for by name


def test_bad_arguments_are_named_rather_than_failing_inside(tmp_path):
    """Each failed inside Python or torch ('NoneType' object is not iterable, randn()
    received an invalid combination of arguments, '<' not supported, FileExistsError)."""
    x, y = fake_mnist(10)
    probs = torch.rand(3, 4, 10).softmax(-1)
    for call, message in [
        (lambda: compute_scores(probs, None), "scores must be 'all', a score name"),
        (lambda: build_suite(x, y, None), "sets must be a suite name"),
        (lambda: add_noise(x, 0.1, 5), "generator must be a torch.Generator or None, got int"),
        (lambda: fpr_at_tpr([0.1], [0.2], "0.5"), r"tpr must be a number in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    report = evaluate_ood(safety_bhn.build_model("map", hidden=[4], seed=0),
                          build_suite(x, y, "inverted"), "entropy", progress=False)  # fmt: skip
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="afile is a file, not a report folder"):
        report.save(tmp_path / "afile", plots=False)


def test_suite_warns_about_a_set_on_another_scale_only():
    x, y = fake_mnist(10)
    suite = OODSuite(x, y)
    with pytest.warns(UserWarning, match="'twice' spans only .* another scale"):
        suite.add("twice", torch.rand(5, 1, 28, 28) / 255)  # divided by 255 twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suite.add("blank", torch.zeros(5, 1, 28, 28))  # constant: a legitimate OOD set
        suite.add("noise", torch.rand(5, 1, 28, 28))
        build_suite(x, y, "uniform_noise,gaussian_noise,inverted")
    with pytest.warns(UserWarning, match="another scale"):  # [0, 1] against 0-255 pixels
        OODSuite(x * 255, y, pixel_range=(0, 255)).add("unit", torch.rand(5, 1, 28, 28))


# -- reports ----------------------------------------------------------------------------------
def test_report_metrics_and_files(tmp_path):
    x, y = fake_mnist(30)
    suite = build_suite(x, y, "uniform_noise,inverted")
    model = safety_bhn.build_model("map", hidden=[16], seed=0)
    report = evaluate_ood(model, suite, "all", progress=False)
    rows = report.rows()
    assert len(rows) == 2 * len(Score)
    for r in rows:
        expected = detection_metrics(report.scores_in[r["score"]],
                                     report.scores_out[r["ood_set"]][r["score"]])  # fmt: skip
        assert {k: r[k] for k in expected} == expected
        if r["score"] == "mutual_information":  # one deterministic net: no epistemic signal
            assert r["auroc"] == 0.5
    probs = F.softmax(model.sample_logits(x, 1), -1).mean(0).cpu()
    assert report.accuracy == pytest.approx((probs.argmax(1) == y).float().mean().item())
    paths = report.save(tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"ood_set", "score", "auroc", "aupr_in", "aupr_out", "fpr95"} <= set(table[0])


def test_report_refuses_a_zero_batch_size():
    suite = build_suite(*fake_mnist(10), "inverted")
    model = safety_bhn.build_model("map", hidden=[4], seed=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_ood(model, suite, batch_size=0, progress=False)  # the automatic size before


# -- dataset shift ----------------------------------------------------------------------------
def test_rotate_matches_rot90_and_identity():
    x, _ = fake_mnist(3)
    torch.testing.assert_close(rotate(x, 0), x)
    torch.testing.assert_close(rotate(x, 90), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, 180), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="images"):
        rotate(torch.rand(3, 784), 10)


def test_shift_curve_level_zero_matches_evaluate():
    x, y = fake_mnist(40)
    model = safety_bhn.build_model("map", hidden=[16], seed=0)
    rows = shift_curve(model, x, y, "rotation", [0, 45, 90], progress=False)
    assert [r["level"] for r in rows] == [0.0, 45.0, 90.0]
    ref = evaluate(model, x, y)
    assert rows[0]["accuracy"] == pytest.approx(ref["accuracy"])
    assert rows[0]["nll"] == pytest.approx(ref["nll"], rel=1e-5)
    noise = shift_curve(model, x, y, "noise", [0.0, 0.5], progress=False)
    assert noise[0]["nll"] == pytest.approx(ref["nll"], rel=1e-5)
    assert noise[1]["nll"] != pytest.approx(ref["nll"], rel=1e-5)
    with pytest.raises(ValueError, match="unknown shift kind"):
        shift_curve(model, x, y, "blur")


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a GPU (CI has none)"))],
)  # fmt: skip
def test_noise_shift_curve_repeats_from_the_generator_seed(device):
    # a GPU generator used to leave the pixel noise to the global RNG
    x, y = fake_mnist(40)
    model = safety_bhn.build_model("map", hidden=[16], seed=0)

    def curve(seed: int) -> list[dict]:
        gen = torch.Generator(device).manual_seed(seed)
        return shift_curve(model, x, y, "noise", [0.5], generator=gen, progress=False)

    torch.manual_seed(1)
    first = curve(3)
    torch.manual_seed(2)  # the global RNG must not matter
    assert curve(3) == first
    assert curve(4) != first


# -- adversarial ------------------------------------------------------------------------------
def test_fgsm_matches_plain_autograd_for_a_map_net():
    x, y = fake_mnist(16)
    model = safety_bhn.build_model("map", hidden=[16], seed=0)
    x_adv = fgsm(model, x, y, 0.1, n_samples=1).cpu()  # the model may live on a GPU
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model.sample_logits(xr, 1)[0].cpu(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xr)
    torch.testing.assert_close(x_adv, (x + 0.1 * grad.sign()).clamp(0, 1))
    assert all(p.grad is None for p in model.parameters())
    assert evaluate(model, x_adv, y)["nll"] > evaluate(model, x, y)["nll"]


def test_fgsm_bounds_and_curve():
    x, y = fake_mnist(20)
    model = safety_bhn.build_model("mc_dropout", hidden=[16], seed=0)
    gen = torch.Generator().manual_seed(0)
    x_adv = fgsm(model, x, y, 0.05, n_samples=3, generator=gen)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    rows = adversarial_curve(model, x, y, [0.0, 0.2], 4, 2, gen, "entropy", progress=False)
    assert [(r["eps"], r["score"]) for r in rows] == [(0.0, "entropy"), (0.2, "entropy")]
    assert math.isnan(rows[0]["auroc"]) and 0.0 <= rows[1]["auroc"] <= 1.0
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, -0.1)


@pytest.mark.slow
def test_trained_dropout_net_detects_noise_with_mutual_information():
    from safety_bhn.data import embedded_mnist

    x, y = embedded_mnist("train")
    xt, yt = embedded_mnist("test")
    model = safety_bhn.build_model("mc_dropout", hidden=[64], seed=0, device="cpu")
    safety_bhn.fit(model, (x[::5], y[::5]), epochs=3, seed=0, progress=False)
    suite = build_suite(xt, yt, "uniform_noise,inverted", n=300)
    report = evaluate_ood(model, suite, "mutual_information", 30,
                          torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    assert report.accuracy > 0.7  # chance is 0.1
    for row in report.rows():
        assert row["auroc"] > 0.8, row


# -- CLI --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for method in ("mc_dropout", "bhn"):
        model = safety_bhn.build_model(method, hidden=[16], coupling_layers=1, seed=0,
                                       device="cpu") if method == "bhn" else \
            safety_bhn.build_model(method, hidden=[16], seed=0, device="cpu")  # fmt: skip
        model.save(root / method / "model.pt")
    return root


def test_cli_single_run(tiny_runs, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["ood", str(tiny_runs / "mc_dropout"), "--suite", "uniform_noise,inverted",
               "--n", "40", "--samples", "3", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    assert {"ood.csv", "ood.md", "roc.png", "histograms.png"} <= {p.name for p in out.iterdir()}
    with open(out / "ood.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * len(Score)
    assert "| uniform_noise | mutual_information |" in capsys.readouterr().out
    # a second report into the same folder: refused, or (--overwrite) replacing the old one
    # whole; the old plots stayed beside the new tables before
    again = ["ood", str(tiny_runs / "bhn"), "--suite", "inverted", "--n", "40", "--samples", "2",
             "--out", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert main(again) == 2
    assert "holds a report already" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"ood.csv", "ood.md"}
    assert "bhn" in (out / "ood.md").read_text()


def test_cli_compare(tiny_runs, tmp_path):
    out = tmp_path / "cmp"
    rc = main(["ood", "--compare", str(tiny_runs / "mc_dropout"), str(tiny_runs / "bhn"),
               "--suite", "inverted", "--scores", "entropy", "--n", "20", "--samples", "2",
               "--out", str(out), "--no-progress", "--no-plots"])  # fmt: skip
    assert rc == 0
    with open(out / "compare.csv") as f:
        assert sorted(r["model"] for r in csv.DictReader(f)) == ["bhn", "mc_dropout"]
    assert "| inverted | entropy |" in (out / "compare.md").read_text()
    # a bad later run is found before the first is scored (its report was written before)
    bad = tmp_path / "bad"
    safety_bhn.build_model("map", in_shape=(5,), hidden=[4], device="cpu").save(bad / "model.pt")
    rc = main(["ood", "--compare", str(tiny_runs / "mc_dropout"), str(bad), "--suite", "inverted",
               "--n", "20", "--samples", "2", "--out", str(tmp_path / "c2"), "--no-progress",
               "--no-plots"])  # fmt: skip
    assert rc == 2 and not (tmp_path / "c2" / "mc_dropout").exists()


def test_cli_with_fashion_mnist(tiny_runs, tmp_path, shared_data_dir):
    rc = main(["ood", str(tiny_runs / "bhn"), "--data-dir", str(shared_data_dir), "--n", "30",
               "--samples", "2", "--scores", "max_softmax", "--out", str(tmp_path),
               "--no-progress", "--no-plots"])  # fmt: skip
    assert rc == 0
    assert "fashion_mnist" in (tmp_path / "ood.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [(["--scores", "entrpy"], "Did you mean 'entropy'"),
     (["--suite", "mnsit"], "unknown OOD suite"),
     (["--suite", "mnist_held_out"], "has 10 classes, so it was trained on them"),
     (["SECOND"], "pass --compare"),
     (["--suite", "inverted", "--data-dir", "TMP"], "is not read: it has no mnist/ folder")],
)  # fmt: skip
def test_cli_errors(tiny_runs, tmp_path, capsys, extra, message):
    run = str(tiny_runs / "mc_dropout")
    extra = [{"SECOND": run, "TMP": str(tmp_path)}.get(e, e) for e in extra]
    assert main(["ood", run, *extra, "--out", str(tmp_path), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_cli_reads_a_data_dir_under_home(tiny_runs, tmp_path, monkeypatch, shared_data_dir):
    """'~/data' was checked for mnist/ without expanding '~', so the test images came from the
    embedded copy (and with --suite inverted, the folder was refused as unread)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(shared_data_dir / "mnist")
    calls = []
    monkeypatch.setattr(ood_cli, "load_dataset", lambda *a: calls.append(a) or load_dataset(*a))
    rc = main(["ood", str(tiny_runs / "mc_dropout"), "--suite", "inverted", "--data-dir",
               "~/data", "--n", "20", "--samples", "2", "--out", str(tmp_path / "r"),
               "--no-progress", "--no-plots"])  # fmt: skip
    assert rc == 0 and calls == [("mnist", "test", str(tmp_path / "data"))]


def test_cli_suite_all_scores_a_ten_class_run_without_the_held_out_set(
    tiny_runs, tmp_path, shared_data_dir
):
    """--suite all was refused for every ten-class run, as if it named held_out_classes."""
    rc = main(["ood", str(tiny_runs / "mc_dropout"), "--suite", "all", "--data-dir",
               str(shared_data_dir), "--n", "20", "--samples", "2", "--scores", "entropy",
               "--out", str(tmp_path), "--no-progress", "--no-plots"])  # fmt: skip
    assert rc == 0
    with open(tmp_path / "ood.csv") as f:
        sets = {r["ood_set"] for r in csv.DictReader(f)}
    assert sets == {"fashion_mnist", "uniform_noise", "gaussian_noise", "inverted"}


def _run_with_classes(root, model, classes):
    model.save(root / "model.pt")
    (root / "metrics.json").write_text(json.dumps({"config": {"classes": classes}}))
    return str(root)


def test_cli_scores_a_run_trained_on_all_ten_digits_named(tmp_path, capsys):
    """A run of 'safety-bhn train --classes 0 1 ... 9' failed on every suite."""
    model = safety_bhn.build_model("map", hidden=[8], seed=0, device="cpu")
    argv = ["--n", "50", "--samples", "1", "--scores", "entropy", "--no-progress", "--no-plots"]
    accuracy = {}
    for name, classes in (("plain", None), ("named", list(range(10))),
                          ("reversed", list(range(9, -1, -1)))):  # fmt: skip
        run = _run_with_classes(tmp_path / name, model, classes)
        assert main(["ood", run, "--suite", "inverted", "--out", str(tmp_path / f"r{name}"),
                     *argv]) == 0  # fmt: skip
        accuracy[name] = capsys.readouterr().out.split("accuracy ")[1].split()[0]
    assert accuracy["named"] == accuracy["plain"]
    x, y = embedded_mnist("test")  # reversed: output i is digit 9 - i, as trained
    keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:50]
    with torch.no_grad():
        pred = model.predict_proba(x[keep].reshape(50, 1, 28, 28), 1).argmax(-1)
    assert accuracy["reversed"] == f"{(pred == 9 - y[keep]).double().mean().item():.4f}"
    run = str(tmp_path / "named")
    assert main(["ood", run, "--suite", "mnist_held_out", "--out", str(tmp_path / "x")]) == 2
    assert "trained on all ten (--classes 0 1 2 3 4 5 6 7 8 9)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_run_of_unknown_digits_before_making_the_report_folder(tmp_path, capsys):
    """A five-class model.pt without its metrics.json failed only after the report folder was
    made, with advice for Python (build_suite(..., known_classes=...))."""
    five = safety_bhn.build_model("map", hidden=[8], n_classes=5, seed=0, device="cpu")
    five.save(tmp_path / "run" / "model.pt")
    out = tmp_path / "report"
    assert main(["ood", str(tmp_path / "run"), "--suite", "inverted", "--out", str(out)]) == 2
    assert "no metrics.json beside it names the digits it learned" in capsys.readouterr().err
    assert not out.exists()
    rc = main(["ood", str(tmp_path / "run"), "--suite", "held_out_classes", "--n", "20",
               "--samples", "1", "--out", str(out), "--no-progress", "--no-plots"])  # fmt: skip
    assert rc == 0  # held-out classes: taken for digits 0-4, the split's default


def test_cli_missing_run(tmp_path, capsys):
    assert main(["ood", str(tmp_path / "nope")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["ood", str(tmp_path / "runs" / "*")]) == 2  # suggested 'train --out runs/*'
    assert "no run folder matches the pattern" in capsys.readouterr().err


QUICK_RECIPE = ["--threads", "1", "--lr-schedule", "cosine", "--lr-warmup", "0.1"]


def run_benchmark(script: str, *args: str) -> None:
    """Run ``benchmarks/SCRIPT --quick ARGS`` as a user would; it must succeed."""
    result = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def ood_quick(tmp_path_factory, shared_data_dir):
    """The folder of one ``benchmarks/ood.py --quick`` run, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("ood-quick")
    run_benchmark("ood.py", "--out", str(out), "--data-dir", str(shared_data_dir), *QUICK_RECIPE)
    return out


@pytest.mark.slow
def test_benchmark_quick_runs(ood_quick):
    tmp_path = ood_quick
    with open(tmp_path / "ood.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"method", "ood_set", "score", "seed", "auroc", "aupr_in", "aupr_out", "fpr95"} <= set(
        rows[0]
    )
    assert {r["ood_set"] for r in rows} == {"fashion_mnist", "uniform_noise", "gaussian_noise",
                                            "inverted", "held_out_classes"}  # fmt: skip
    assert len(rows) == 3 * 5 * 5  # methods x sets x the benchmark's scores (not expected_entropy)
    assert "expected_entropy" not in {r["score"] for r in rows}
    report = (tmp_path / "ood.md").read_text()
    assert "## Targets (issue 4)" in report
    assert "cosine rate, linear warmup over the first 10% of steps" in report
    assert {r["threads"] for r in rows} == {"1"}
    assert "3 runs trained with 1 torch thread," in report
    for plot in ("ood_auroc.png", "ood_shift_rotation.png", "ood_adversarial.png"):
        assert (tmp_path / plot).is_file()


@pytest.mark.slow
def test_noise_score_split_retrains_the_benchmarks_models(ood_quick, tmp_path, shared_data_dir):
    run_benchmark("ood_noise_scores.py", "--out", str(tmp_path), "--data-dir",
                  str(shared_data_dir), "--select", "nll", "--reference",
                  str(ood_quick / "ood.csv"), *QUICK_RECIPE)  # fmt: skip
    with open(tmp_path / "ood_noise_scores.csv") as f:
        rows = list(csv.DictReader(f))
    first = [r for r in rows if r["samples"] == "4"]
    # Same models and draws as the benchmark: its AUROCs come back exactly, for every score
    # that both report.
    shared = [r for r in first if r["score"] != "expected_entropy"]
    assert len(shared) == 2 * 4 * 3
    assert all(float(r["benchmark_auroc"]) == pytest.approx(float(r["auroc"]), abs=1e-9)
               for r in shared)  # fmt: skip
    report = (tmp_path / "ood_noise_scores.md").read_text()
    assert "models and draws." in report
    assert "runs trained with 1 torch thread (as the runs recorded" in report  # the rows' count
    # the BHN's active hidden units (at most its 16), counted only for BHN rows
    units = {r["method"]: r["active_units"] for r in rows}
    assert units["mc_dropout"] == "" and 0 <= int(units["bhn-2"]) <= 16
    assert re.search(rf"\| bhn-2 \| 0 \| {units['bhn-2']} \| 0\.\d{{4}} \|", report)
    assert (tmp_path / "ood_noise_scores.png").stat().st_size > 1000
    # Entropy splits into expected entropy and mutual information, on average too.
    for key in {(r["method"], r["samples"], r["ood_set"]) for r in rows}:
        means = {r["score"]: r for r in rows if (r["method"], r["samples"], r["ood_set"]) == key}
        for side in ("mean_in", "mean_out"):
            parts = float(means["expected_entropy"][side]) + float(
                means["mutual_information"][side]
            )
            assert float(means["entropy"][side]) == pytest.approx(parts, abs=1e-6)


@pytest.mark.slow
def test_noise_score_split_of_held_out_digits_retrains_the_benchmarks_models(
    ood_quick, tmp_path, shared_data_dir
):
    run_benchmark("ood_noise_scores.py", "--held-out", "--out", str(tmp_path), "--data-dir",
                  str(shared_data_dir), "--select", "nll", "--reference",
                  str(ood_quick / "ood.csv"), *QUICK_RECIPE)  # fmt: skip
    with open(tmp_path / "ood_noise_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["ood_set"] for r in rows} == {"held_out_classes"}
    shared = [r for r in rows if r["samples"] == "4" and r["score"] != "expected_entropy"]
    assert len(shared) == 2 * 3  # the digits-0-4 models ood.py trains second, the same draws
    assert all(float(r["benchmark_auroc"]) == pytest.approx(float(r["auroc"]), abs=1e-9)
               for r in shared)  # fmt: skip


def test_benchmark_reports_the_thread_counts_its_runs_used(benchmark_module):
    words = benchmark_module("ood").threads_words
    row = {"method": "map", "seed": 0}
    # two rows (two OOD sets) of one run count once
    assert (
        words([{**row, "threads": 1}, {**row, "threads": 1}]) == "1 run trained with 1 torch thread"
    )
    assert words([{**row, "threads": 2}, {**row, "seed": 1, "threads": 1}]) == (
        "1 run trained with 1 torch thread; 1 run trained with 2 torch threads"
    )
    assert words([{**row, "threads": 1}, {**row, "seed": 1}, {**row, "seed": 2}]) == (
        "1 run trained with 1 torch thread; 2 runs computed before the thread count was "
        "recorded (not known)"
    )


def test_write_csv_takes_rows_with_different_columns(benchmark_module, tmp_path):
    common = benchmark_module("common")
    path = common.write_csv([{"a": 1, "b": 2}, {"a": 3, "c": 4}], tmp_path / "t.csv")
    with open(path) as f:
        assert list(csv.DictReader(f)) == [
            {"a": "1", "b": "2", "c": ""},
            {"a": "3", "b": "", "c": "4"},
        ]


def test_benchmark_targets_skip_comparisons_with_an_unmeasured_side(benchmark_module):
    ood = benchmark_module("ood")
    rows = [{"method": "mc_dropout", "ood_set": "inverted", "score": "entropy", "auroc": 0.9}]
    lines = ood.targets(rows, ood.Args(rows=["bhn-12", "mc_dropout"]))
    assert not any("bhn-12 best AUROC" in line for line in lines)  # "nan vs 0.9000 — MISSED"


def test_benchmark_row_names_give_the_bhn_options(benchmark_module, monkeypatch):
    ood_benchmark = benchmark_module("ood")
    assert ood_benchmark.parse_row("bhn-12") == ("bhn", {"coupling_layers": 12})
    assert ood_benchmark.parse_row("bhn-0-init") == (
        "bhn",
        {"coupling_layers": 0, "prior_mean": "init"},
    )
    assert ood_benchmark.parse_row("bhn-12-init-local") == (
        "bhn",
        {"coupling_layers": 12, "prior_mean": "init", "local_draws": True},
    )
    assert ood_benchmark.parse_row("mc_dropout") == ("mc_dropout", {})
    with pytest.raises(ValueError, match="unknown flag 'locl'"):
        ood_benchmark.parse_row("bhn-12-locl")
    with pytest.raises(ValueError, match="coupling layers"):
        ood_benchmark.parse_row("bhn-init")
    with pytest.raises(ValueError, match="flags apply to BHN rows only"):
        ood_benchmark.parse_row("mc_dropout-local")  # ran plain MC dropout under that label
    with pytest.raises(ValueError, match="Did you mean 'mc_dropout'"):
        ood_benchmark.parse_row("mc-dropout")

    def trained(*args):
        raise AssertionError("a run started before the rows were checked")

    monkeypatch.setattr(ood_benchmark, "run_one", trained)
    with pytest.raises(SystemExit, match="locl"):  # the good first row must not run either
        ood_benchmark.main(["--rows", "bhn-12", "bhn-12-locl", "--out", "unused",
                            "--state", "unused-state"])  # fmt: skip


def test_benchmark_select_keeps_the_final_epoch_and_names_it_in_the_state_key(benchmark_module):
    ood_benchmark = benchmark_module("ood")
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    args = ood_benchmark.Args(arch="cnn", epochs=3, batch_size=10, select="last")
    _, history = ood_benchmark.train("mc_dropout", (x, y), (x[:10], y[:10]), 10, 0, args)
    assert history.best_epoch == 2
    cosine = ood_benchmark.Args(arch="cnn", lr_schedule="cosine", lr_warmup=0.02)
    # keys of runs from before --select existed (best-NLL epoch) keep their names
    assert ood_benchmark.state_key("bhn-12-local", 3, cosine) == (
        "bhn-12-local__cnn__e50__cosine-w0.02__seed3.json"
    )
    last = ood_benchmark.Args(arch="cnn", lr_schedule="cosine", lr_warmup=0.02, select="last")
    assert ood_benchmark.state_key("bhn-12-local", 3, last) == (
        "bhn-12-local__cnn__e50__cosine-w0.02__select-last__seed3.json"
    )
    with pytest.raises(SystemExit, match="ood.py: error: .*Did you mean 'last'"):
        ood_benchmark.main(["--select", "lst", "--out", "unused"])


def test_benchmark_scores_beyond_the_default_are_named_in_the_state_key(benchmark_module):
    ood_benchmark = benchmark_module("ood")
    default = ood_benchmark.Args()
    assert "expected_entropy" not in default.scores
    assert (
        ood_benchmark.state_key("mc_dropout", 0, default)
        == "mc_dropout__h256-256-256__e50__seed0.json"
    )
    more = ood_benchmark.Args(scores=[*default.scores, "expected_entropy"])
    assert ood_benchmark.state_key("mc_dropout", 0, more).endswith(
        "__scores-max_softmax-entropy-mutual_information-variation_ratio-vote_ratio-"
        "expected_entropy__seed0.json"
    )
    with pytest.raises(SystemExit, match="expected_entropy"):  # did you mean
        ood_benchmark.main(["--scores", "expected_entropi", "--out", "unused"])
    with pytest.raises(SystemExit, match="lacks mutual_information"):
        ood_benchmark.main(["--scores", "entropy", "expected_entropy", "--out", "unused"])


def test_benchmark_trains_the_chosen_architecture(benchmark_module):
    ood_benchmark = benchmark_module("ood")
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    args = ood_benchmark.Args(arch="cnn", epochs=1, batch_size=10)
    model, _ = ood_benchmark.train("bhn-1", (x, y), (x[:10], y[:10]), 10, 0, args)
    assert [layer.kind for layer in model.layers] == ["conv", "conv", "linear", "linear"]
    assert ood_benchmark.net_tag(args) == "cnn"
    assert ood_benchmark.net_tag(ood_benchmark.Args(hidden=[8, 4])) == "h8-4"  # old state keys
    with pytest.raises(SystemExit, match="ood.py: error: .*cnn"):
        ood_benchmark.main(["--arch", "cnnn", "--out", "unused"])


def test_attacks_and_shifts_refuse_inputs_on_another_scale():
    import numpy as np

    from safety_bhn.ood import fgsm, shift_curve

    model = safety_bhn.build_model("map", hidden=[8], seed=0, device="cpu")
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"outside pixel_range \[0, 1\]"):
        fgsm(model, 255 * x, y, 0.01)
    with pytest.raises(ValueError, match="outside pixel_range"):
        shift_curve(model, (x - 0.13) / 0.31, y, "noise", [0.0], progress=False)
    with pytest.raises(ValueError, match="low < high"):
        shift_curve(model, x, y, "noise", [0.0], pixel_range=(1, 0), progress=False)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        fgsm(model, x, y, float("inf"))
    with pytest.raises(ValueError, match="noise stds >= 0"):
        shift_curve(model, x, y, "noise", [-0.1], progress=False)
    z = (x - 0.13) / 0.31  # standardised images work once their range is given
    adv = fgsm(model, z, y, 0.01, pixel_range=(float(z.min()), float(z.max())))
    assert (adv - z).abs().max() <= 0.01 + 1e-6
    rows = shift_curve(model, x, y, "rotation", np.arange(0, 91, 45), progress=False)
    assert [r["level"] for r in rows] == [0.0, 45.0, 90.0]


def test_noise_rotation_and_attack_helpers_refuse_bad_values():
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="std must be a non-negative number"):
        add_noise(x, float("nan"))  # all-NaN images before
    with pytest.raises(ValueError, match="outside pixel_range"):
        add_noise(255 * x, 0.1)  # silently clipped to [0, 1] before
    with pytest.raises(ValueError, match="low < high"):
        add_noise(x, 0.1, pixel_range=(1, 0))
    with pytest.raises(ValueError, match="degrees must be a finite number"):
        rotate(x, float("nan"))
    model = safety_bhn.build_model("map", hidden=[8], in_shape=(1, 8, 8), seed=0, device="cpu")
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="epsilons is empty"):
        adversarial_curve(model, x, y, epsilons=[], progress=False)
    rows = adversarial_curve(model, x, y, epsilons=0.1, n_samples=2, progress=False)
    assert {r["eps"] for r in rows} == {0.1}


def test_suite_refuses_channels_last_sets_and_bad_in_distribution_labels():
    x = torch.rand(12, 3, 8, 8)
    register_ood_set("channels_last", x.permute(0, 2, 3, 1).contiguous(), overwrite=True)
    register_ood_set("channels_last_1", x[:, :1].permute(0, 2, 3, 1), overwrite=True)
    try:  # reshaped into pixel soup before
        with pytest.raises(ValueError, match="reshape it"):
            build_suite(x, sets="channels_last")
        squeezed = build_suite(x[:, :1], sets="channels_last_1")  # (N, 8, 8, 1) for (N, 1, 8, 8)
        assert torch.equal(squeezed["channels_last_1"], x[:, :1])
    finally:
        unregister_ood_set("channels_last")
        unregister_ood_set("channels_last_1")
    for bad in (torch.zeros(12) + 0.5, torch.zeros(12, dtype=torch.long) - 5):
        with pytest.raises(ValueError, match="y_in must"):
            OODSuite(x, bad)


def test_fashion_mnist_gets_the_digits_preprocessing(shared_data_dir):
    from safety_bhn.data import embedded_mnist

    x, y = embedded_mnist("test")
    z = (x[:200] - 0.1307) / 0.3081  # standardised digits
    plain = build_suite(x[:200], y[:200], "fashion_mnist", data_dir=shared_data_dir)
    scaled = build_suite(z, y[:200], "fashion_mnist", data_dir=shared_data_dir)
    torch.testing.assert_close(scaled["fashion_mnist"], (plain["fashion_mnist"] - 0.1307) / 0.3081)


# -- audit fixes ------------------------------------------------------------------------------
def test_inverted_set_of_large_pixel_values_passes_the_range_check():
    from safety_bhn.data import embedded_mnist

    # float32 lo + hi - x overshot the range by an ulp, more than the absolute 1e-6 tolerance
    x = embedded_mnist("test")[0][:200]
    for scale in (255, 40):
        for seed in range(5):
            jitter = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
            z = x * scale + jitter
            lo, hi = z.min().item(), z.max().item()
            suite = build_suite(z, sets="inverted,uniform_noise,gaussian_noise", seed=seed)
            for name, ood in suite:
                assert lo <= ood.min().item() and ood.max().item() <= hi, name
            exact = lo + hi - z.double()  # clipping moved values by rounding error only
            assert (suite["inverted"].double() - exact).abs().max() <= 2 * 2.0**-24 * hi
    # sets of [0, 1] images (the benchmarks') are what they were, bit for bit
    plain = build_suite(x, sets="inverted,uniform_noise", seed=3)
    assert torch.equal(plain["inverted"], 1 - x)
    assert torch.equal(plain["uniform_noise"],
                       torch.rand(x.shape, generator=torch.Generator().manual_seed(3)))  # fmt: skip


def test_range_tolerance_is_relative_to_the_pixel_range():
    x = torch.rand(10, 1, 4, 4) * 256
    suite = OODSuite(x, pixel_range=(0, 256))
    one_ulp_over = torch.full((2, 1, 4, 4), 256.0).nextafter(torch.tensor(512.0))
    suite.add("rounded", one_ulp_over)  # 3e-5 over: rounding, not another scale
    with pytest.raises(ValueError, match="outside the in-distribution pixel range"):
        suite.add("over", torch.full((2, 1, 4, 4), 256.1))
    unit = OODSuite(torch.rand(10, 1, 4, 4), pixel_range=(0, 1))
    with pytest.raises(ValueError, match="outside the in-distribution pixel range"):
        unit.add("over", torch.full((2, 1, 4, 4), 1 + 2e-6))  # 1e-6 as before near [0, 1]


def test_pixel_range_of_three_values_is_a_clear_error():
    x, y = fake_mnist(4)
    model = safety_bhn.build_model("map", hidden=[8], seed=0, device="cpu")
    for call in (lambda: build_suite(x, sets="inverted", pixel_range=(0, 1, 2)),
                 lambda: OODSuite(x, pixel_range=(0, 1, 2)),
                 lambda: shift_curve(model, x, y[:4], "noise", [0.1], pixel_range=(0, 1, 2),
                                     progress=False)):  # fmt: skip
        with pytest.raises(ValueError, match=r"two numbers \(low, high\), got \(0, 1, 2\)"):
            call()
    with pytest.raises(ValueError, match="finite .*low < high"):
        OODSuite(x, pixel_range=(0, float("inf")))


def test_shift_curve_checks_n_samples_before_sizing_batches():
    x, y = fake_mnist(4)
    model = safety_bhn.build_model("map", hidden=[8], seed=0, device="cpu")
    for n in (0, -2):  # a bare ZeroDivisionError (or a negative batch size) before
        with pytest.raises(ValueError, match=f"n_samples must be a positive integer.*got {n}"):
            shift_curve(model, x, y[:4], "noise", [0.1], n_samples=n, progress=False)


def test_set_names_ignore_case_as_suite_names_do():
    x, y = fake_mnist(20)
    assert build_suite(x, y, "Inverted").names == ["inverted"]
    assert build_suite(x, y, "INVERTED, Uniform-Noise").names == ["inverted", "uniform_noise"]
    assert build_suite(x, y, ["Inverted", "inverted"]).names == ["inverted"]
    with pytest.raises(ValueError, match="unknown OOD set 'INVERTERD'.*Did you mean 'inverted'"):
        build_suite(x, y, ["INVERTERD"])
    with pytest.raises(ValueError, match="unknown OOD suite or set 'Invertd'.*Did you mean"):
        build_suite(x, y, "Invertd")
    register_ood_set("Test_Mixed", torch.zeros(3, 1, 28, 28))
    try:
        assert build_suite(x, y, "test-mixed").names == ["Test_Mixed"]
        with pytest.raises(ValueError, match="differs from the registered set 'Test_Mixed'"):
            register_ood_set("TEST_MIXED", torch.ones(3, 1, 28, 28), overwrite=True)
        with pytest.raises(ValueError, match="built-in"):
            unregister_ood_set("INVERTED")
    finally:
        unregister_ood_set("test_mixed")
    assert "Test_Mixed" not in available_sets()
    with pytest.raises(ValueError, match="no OOD set named 'test_mixed'"):
        unregister_ood_set("test_mixed")


def test_score_histograms_name_the_reports_scores(tmp_path):
    from safety_bhn.ood.plots import score_histograms

    x, y = fake_mnist(20)
    model = safety_bhn.build_model("map", hidden=[8], seed=0)
    report = evaluate_ood(model, build_suite(x, y, "inverted"), "entropy,max_softmax",
                          progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"no score 'x'; it has entropy, max_softmax"):
        score_histograms(report, tmp_path / "h.png", scores=["x"])  # a bare KeyError before
    with pytest.raises(ValueError, match="Did you mean 'entropy'"):
        score_histograms(report, tmp_path / "h.png", scores=["entrpy"])
    assert score_histograms(report, tmp_path / "h.png", scores="Entropy").is_file()


def test_fgsm_keeps_the_input_dtype():
    x, y = fake_mnist(8)
    x = (0.2 + 0.6 * x).double()  # no pixel is clipped at eps 0.1
    model = safety_bhn.build_model("map", hidden=[16], seed=0)
    adv = fgsm(model, x, y[:8], 0.1, n_samples=1)
    assert adv.dtype == torch.float64 and adv.device == x.device
    step = (adv - x).abs()
    assert (((step - 0.1).abs() < 1e-12) | (step == 0)).all()  # float32 rounding before
    torch.testing.assert_close(adv.float(), fgsm(model, x.float(), y[:8], 0.1, n_samples=1))
    assert fgsm(model, x, y[:8], 0.0).dtype == torch.float64


def test_low_precision_probabilities_are_scored_in_float64():
    probs = (3 * torch.randn(5, 40, 10, generator=torch.Generator().manual_seed(0))).softmax(-1)
    for dtype in (torch.bfloat16, torch.float16):  # "do not sum to one" before
        low = probs.to(dtype)
        scores = compute_scores(low)
        exact = low.double() / low.double().sum(-1, keepdim=True)
        for score, values in compute_scores(exact).items():
            assert torch.equal(scores[score], values), score


def test_cli_writes_no_report_folder_for_bad_inputs(tiny_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = str(tiny_runs / "mc_dropout")
    assert main(["ood", "nope", "--suite", "inverted"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["ood", run, "--suite", "mnsit"]) == 2
    assert "unknown OOD suite" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()  # no fashion-mnist/ here
    assert main(["ood", run, "--data-dir", str(empty), "--n", "10", "--no-progress"]) == 2
    assert "fashion_mnist" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # empty reports/nope and reports/mc_dropout before
    (tmp_path / "taken").write_text("a file")
    assert main(["ood", run, "--suite", "inverted", "--out", "taken", "--no-progress"]) == 2
    assert "taken is a file" in capsys.readouterr().err
    rc = main(["ood", run, "--suite", "inverted", "--n", "10", "--samples", "2", "--no-plots",
               "--no-progress"])  # fmt: skip
    assert rc == 0 and (tmp_path / "reports" / "mc_dropout" / "ood.csv").is_file()
