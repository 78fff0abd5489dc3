"""Active learning: acquisition scores against direct formulas, BatchBALD, the loop and its CLI."""

import csv
import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import safety_bhn.active.loop
from safety_bhn.active import (
    ActiveConfig,
    ActiveLearner,
    bald,
    batch_bald,
    curve_auc,
    labels_to_reach,
    max_entropy,
    mean_std,
    power_bald,
    power_sample,
    random,
    rarest_class_counts,
    read_curve,
    saved_config,
    saved_state,
    select,
    variation_ratios,
)
from safety_bhn.cli import main
from safety_bhn.core.metrics import evaluate
from safety_bhn.runs import MODEL_VERSION, cpu_words

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train several times faster on one thread when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_probs(s, n, c, seed=0, power=3.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(s, n, c, generator=g, dtype=torch.float64).pow(power)
    return p / p.sum(-1, keepdim=True)


def _np_entropy(p):
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


# -- acquisition scores ------------------------------------------------------------------
def test_bald_zero_when_samples_agree():
    one = _random_probs(1, 7, 4)
    assert torch.allclose(bald(one.expand(9, -1, -1)), torch.zeros(7, dtype=one.dtype), atol=1e-12)


def test_bald_is_log_c_for_evenly_disagreeing_one_hot_samples():
    c = 5
    probs = torch.eye(c, dtype=torch.float64)[:, None, :]  # sample s puts all mass on class s
    assert bald(probs).item() == pytest.approx(math.log(c), abs=1e-12)
    assert not torch.isnan(bald(probs)).any()


def test_bald_matches_direct_computation_and_is_never_negative():
    probs = _random_probs(11, 50, 6)
    p = probs.numpy()
    direct = _np_entropy(p.mean(0)) - _np_entropy(p).mean(0)
    assert np.allclose(bald(probs).numpy(), direct, atol=1e-12)
    tiny = _random_probs(3, 200, 3, seed=1, power=0.01)  # nearly uniform: BALD close to 0
    assert (bald(tiny) >= 0).all()


def test_max_entropy_variation_ratios_mean_std_against_formulas():
    probs = _random_probs(8, 30, 4, seed=2)
    probs[:, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=probs.dtype)  # p = 0 and 1 entries
    p = probs.numpy()
    mean = p.mean(0)
    assert np.allclose(max_entropy(probs).numpy(), _np_entropy(mean), atol=1e-12)
    assert max_entropy(probs)[0].item() == 0.0
    assert np.allclose(variation_ratios(probs).numpy(), 1 - mean.max(-1), atol=1e-12)
    assert np.allclose(mean_std(probs).numpy(), p.std(0).mean(-1), atol=1e-12)
    for fn in (bald, max_entropy, variation_ratios, mean_std):
        assert torch.isfinite(fn(probs)).all()


def test_random_needs_a_generator_and_is_reproducible():
    probs = _random_probs(2, 40, 3)
    with pytest.raises(ValueError, match="Generator"):
        random(probs, None)
    a = random(probs, torch.Generator().manual_seed(3))
    b = random(probs, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (40,)
    picked = select("random", probs, 40, torch.Generator().manual_seed(0)).indices
    assert sorted(picked.tolist()) == list(range(40))


def test_select_takes_the_top_k_of_the_score():
    probs = _random_probs(6, 25, 3, seed=4)
    sel = select("max_entropy", probs, 5)
    expected = torch.topk(max_entropy(probs), 5).indices
    assert sel.indices.tolist() == expected.tolist()
    assert torch.equal(sel.scores, max_entropy(probs)[expected])


@pytest.mark.parametrize(
    ("probs", "k", "name", "match"),
    [
        (_random_probs(2, 5, 3), 6, "bald", "pool of 5"),
        (_random_probs(2, 5, 3), 0, "bald", "positive integer"),
        (torch.full((2, 5, 3), float("nan")), 1, "bald", "NaN"),
        (torch.full((2, 5, 3), 0.5), 1, "bald", "sum to one"),
        (_random_probs(2, 5, 3), 1, "bladd", "Did you mean 'bald'"),
        (_random_probs(2, 5, 3)[0], 1, "max_entropy", "shape"),
    ],
)
def test_select_rejects_bad_input(probs, k, name, match):
    with pytest.raises(ValueError, match=match):
        select(name, probs, k)


# -- BatchBALD ---------------------------------------------------------------------------
def _brute_force_joint_mi(probs, chosen):
    """I[y_chosen; theta] by enumerating every joint label configuration."""
    p = probs[:, chosen].numpy()  # (S, n, C)
    s, n, c = p.shape
    joint = np.zeros(c**n)
    for i, config in enumerate(itertools.product(range(c), repeat=n)):
        joint[i] = np.prod(p[:, np.arange(n), list(config)], axis=1).mean()
    return _np_entropy(joint) - _np_entropy(p).mean(0).sum()


def test_batch_bald_of_one_point_is_bald():
    probs = _random_probs(10, 40, 5, seed=5)
    sel = batch_bald(probs, 1)
    best = int(torch.argmax(bald(probs)))
    assert sel.indices.tolist() == [best]
    assert sel.scores[0].item() == pytest.approx(bald(probs)[best].item(), abs=1e-10)


def test_batch_bald_exact_joint_matches_enumeration():
    probs = _random_probs(7, 12, 3, seed=6)
    sel = batch_bald(probs, 3, num_configs=10_000)  # 3**3 configurations: exact
    for n in range(1, 4):
        brute = _brute_force_joint_mi(probs, sel.indices[:n].tolist())
        assert sel.scores[n - 1].item() == pytest.approx(brute, abs=1e-9)


def test_batch_bald_sampled_configurations_estimate_the_joint():
    probs = _random_probs(12, 15, 6, seed=7)
    sel = batch_bald(probs, 4, num_configs=1000, generator=torch.Generator().manual_seed(0))
    # The 4th choice uses 1000 sampled configurations instead of the 6**4 = 1296 exact ones.
    brute = _brute_force_joint_mi(probs, sel.indices.tolist())
    assert sel.scores[-1].item() == pytest.approx(brute, abs=0.05)


def test_a_run_saved_with_prior_mean_as_typed_resumes(tmp_path):
    x, y = _blobs()
    cfg = dict(method="bhn", options={"coupling_layers": 1, "prior_mean": "init"})
    ActiveLearner(_tiny(steps=1, **cfg), (x, y), out=tmp_path).run(progress=False, max_steps=1)
    state = json.loads((tmp_path / "state.json").read_text())
    state["config"]["options"]["prior_mean"] = "Init"  # as states before 2026-12-06 kept it
    (tmp_path / "state.json").write_text(json.dumps(state))
    learner = ActiveLearner(_tiny(steps=1, **cfg), (x, y), out=tmp_path, resume=True)
    assert len(learner.run(progress=False)["history"]) == 2  # refused as another setting before


def test_a_run_saved_with_ignored_settings_resumes(tmp_path):
    x, y = _blobs()
    cfg = dict(steps=1, method="map", acquisition="max_entropy")
    ActiveLearner(_tiny(**cfg), (x, y), out=tmp_path).run(progress=False, max_steps=1)
    state = json.loads((tmp_path / "state.json").read_text())
    state["config"]["num_configs"] = 500  # accepted (and unused) before 2026-12-07, as were
    state["config"]["options"]["p_hidden"] = 0.5  # dropout rates for map, bhn and fvi
    (tmp_path / "state.json").write_text(json.dumps(state))
    saved = saved_config(tmp_path).validate()
    assert saved.num_configs == ActiveConfig.num_configs and "p_hidden" not in saved.options
    learner = ActiveLearner(_tiny(**cfg), (x, y), out=tmp_path, resume=True)
    assert len(learner.run(progress=False)["history"]) == 2


def test_a_bfloat16_pool_runs():  # its fingerprint raised a TypeError
    x, y = _blobs()
    ActiveLearner(_tiny(steps=0), (x.bfloat16(), y)).run(progress=False)


def test_run_names_a_negative_max_steps():
    learner = ActiveLearner(_tiny(steps=1), _blobs())
    with pytest.raises(ValueError, match="max_steps must be a non-negative integer"):
        learner.run(progress=False, max_steps=-1)
    assert learner.run(progress=False, max_steps=0)["history"] == []


def test_sampling_acquisitions_need_a_real_generator():
    probs = _random_probs(12, 15, 6, seed=7)
    # sampled from the global RNG before: not reproducible
    with pytest.raises(ValueError, match=r"classes\*\*k \(6\*\*4\) exceeds num_configs"):
        select("batch_bald", probs, 4, num_configs=1000)
    assert len(select("batch_bald", probs, 3, num_configs=1000).indices) == 3  # exact: no RNG
    for name in ("power_bald", "batch_bald", "random"):  # an AttributeError for power_bald
        with pytest.raises(ValueError, match="generator must be a torch.Generator or None"):
            select(name, probs, 2, generator=0)


def test_num_configs_is_refused_for_acquisitions_other_than_batch_bald():
    probs = _random_probs(6, 15, 3, seed=7)
    for name in ("bald", "power_bald", "random"):  # ignored, silently, before
        with pytest.raises(ValueError, match=f"acquisition '{name}' would ignore it"):
            select(name, probs, 2, torch.Generator().manual_seed(0), num_configs=10)
    assert len(select("batch_bald", probs, 2, num_configs=10).indices) == 2  # 3**2: exact


def test_batch_bald_avoids_exact_duplicates_where_bald_does_not():
    s = 8
    a = torch.zeros(s, 4, dtype=torch.float64)
    a[torch.arange(s), torch.arange(s) % 2] = 1.0  # samples split between classes 0 and 1
    b = torch.full((s, 4), 0.02, dtype=torch.float64)
    b[torch.arange(s), 2 + (torch.arange(s) < s // 2).long()] = 0.94  # another split, noisier
    quiet = torch.full((s, 4), 0.25, dtype=torch.float64)
    probs = torch.stack([quiet, a, a.clone(), b, quiet], dim=1)  # points 1 and 2 are duplicates
    assert select("bald", probs, 2).indices.tolist() == [1, 2]
    picked = batch_bald(probs, 2).indices.tolist()
    assert picked[0] in (1, 2) and picked[1] == 3


@pytest.mark.parametrize(
    ("beta", "expected"), [(1.0, [1 / 8, 2 / 8, 5 / 8]), (2.0, [1 / 30, 4 / 30, 25 / 30]),
                           (0.0, [1 / 3, 1 / 3, 1 / 3])]
)  # fmt: skip
def test_power_sample_draws_in_proportion_to_the_powered_values(beta, expected):
    gen = torch.Generator().manual_seed(0)
    values = torch.tensor([1.0, 2.0, 5.0])
    draws = [power_sample(values, 1, beta, gen).item() for _ in range(4000)]
    freq = [draws.count(i) / len(draws) for i in range(3)]
    assert freq == pytest.approx(expected, abs=0.025)  # 3 standard errors at most


def test_power_sample_is_without_replacement_and_puts_zero_scores_last():
    gen = torch.Generator().manual_seed(1)
    values = torch.tensor([0.0, 1.0, 0.0, 3.0])
    for _ in range(50):
        assert sorted(power_sample(values, 2, 1.0, gen).tolist()) == [1, 3]
        three = power_sample(values, 3, 1.0, gen).tolist()
        assert sorted(three[:2]) == [1, 3] and three[2] in (0, 2)
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        power_sample(values, 1)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1"):
        power_sample(values, 1, -1.0, gen)
    with pytest.raises(ValueError, match="finite, non-negative"):
        power_sample(torch.tensor([1.0, float("nan")]), 1, 1.0, gen)
    with pytest.raises(ValueError, match="cannot acquire k=5"):
        power_sample(values, 5, 1.0, gen)


def test_power_bald_samples_bald_scores_and_tends_to_top_k():
    probs = torch.rand(6, 40, 3, generator=torch.Generator().manual_seed(2)).softmax(-1)
    sel = select("power_bald", probs, 5, torch.Generator().manual_seed(3))
    again = select("power_bald", probs, 5, torch.Generator().manual_seed(3))
    assert torch.equal(sel.indices, again.indices) and len(set(sel.indices.tolist())) == 5
    assert torch.equal(sel.scores, bald(probs)[sel.indices])
    greedy = power_bald(probs, 5, beta=1e4, generator=torch.Generator().manual_seed(4))
    assert greedy.indices.tolist() == select("bald", probs, 5).indices.tolist()


# -- the loop on a tiny problem ----------------------------------------------------------
def _blobs(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    x = centers[y] + 0.9 * torch.randn(n, 2, generator=g)
    return x, y


def _tiny(**kw):
    base = dict(method="mc_dropout", hidden=[16], initial=6, val_size=12, acquire=4, steps=3,
                pool_subset=60, acq_samples=5, eval_samples=3, train_steps=15, batch_size=32,
                seed=1, device="cpu")  # fmt: skip
    base.update(kw)
    return ActiveConfig(**base)


@pytest.mark.parametrize(
    ("method", "acquisition", "options"),
    [
        ("bhn", "bald", {"coupling_layers": 2}),
        ("mc_dropout", "max_entropy", {}),
        ("factorial_vi", "batch_bald", {}),
        ("mc_dropout", "power_bald", {}),
        ("map", "random", {}),
    ],
)
def test_loop_keeps_a_partition_and_never_acquires_twice(method, acquisition, options):
    x, y = _blobs()
    cfg = _tiny(method=method, acquisition=acquisition, options=options)
    learner = ActiveLearner(cfg, (x, y), test=_blobs(90, seed=1))
    assert sorted(y[learner.labelled].tolist()) == [0, 0, 1, 1, 2, 2]  # balanced initial set
    learner.run(progress=False)
    labelled, val, pool = learner.labelled, learner.val, learner.pool_indices.tolist()
    assert len(labelled) == len(set(labelled)) == 6 + 4 * 3
    assert sorted(labelled + val + pool) == list(range(len(x)))
    assert learner.labels == y[labelled].tolist()
    assert [r["n_labels"] for r in learner.history] == [6, 10, 14, 18]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in learner.history)
    acquired = [i for r in learner.history for i in r["acquired"]]
    assert acquired == labelled[6:]


def test_loop_runs_a_cnn_bhn_with_the_init_centred_prior():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.rand(120, 1, 12, 12, generator=g) * 0.3
    x[torch.arange(120), 0, 4 * y, :] += 1.0  # one bright row per class
    options = {"coupling_layers": 2, "channels": 4, "dense": 8, "prior_mean": "init"}
    cfg = _tiny(method="bhn", arch="cnn", options=options, steps=2)
    learner = ActiveLearner(cfg, (x, y), test=(x[:30], y[:30]))
    learner.run(progress=False)
    assert [r["n_labels"] for r in learner.history] == [6, 10, 14]
    assert len(set(learner.labelled)) == 14
    assert learner.model.prior_mean.value == "init"


def test_bald_acquires_points_with_higher_bald_than_the_pool_subset():
    x, y = _blobs()
    learner = ActiveLearner(_tiny(steps=1, pool_subset=0), (x, y))
    learner.run(progress=False)
    scores = learner.history[0]["scores"]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


@pytest.mark.parametrize("warm_start", [False, True])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, warm_start):
    x, y = _blobs()
    test = _blobs(60, seed=2)
    cfg = _tiny(acquisition="batch_bald", warm_start=warm_start, num_configs=20)
    whole = ActiveLearner(cfg, (x, y), test=test, out=tmp_path / "whole")
    whole.run(progress=False)
    first = ActiveLearner(cfg, (x, y), test=test, out=tmp_path / "cut")
    first.run(progress=False, max_steps=2)  # "interrupted" after two steps
    resumed = ActiveLearner(cfg, (x, y), test=test, out=tmp_path / "cut", resume=True)
    assert resumed.labelled == first.labelled
    resumed.run(progress=False)
    assert resumed.labelled == whole.labelled
    for a, b in zip(resumed.history, whole.history, strict=True):
        assert a["acquired"] == b["acquired"] and a["test_acc"] == b["test_acc"]
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["labelled"] == whole.labelled and len(state["history"]) == 4
    assert (tmp_path / "cut" / "curve.csv").read_text().count("\n") == 5
    assert state["model_version"] == MODEL_VERSION


def test_a_retrain_that_diverged_is_recorded_in_its_step_and_the_curve(tmp_path, monkeypatch):
    import safety_bhn.active.loop as loop

    real = loop.retrain

    def diverges_at_step_1(model, train, val, config, seed):  # fit's own behaviour is tested
        history = real(model, train, val, config, seed)  # in test_training; here, what the
        if seed == loop.step_seed(config, 1):  # loop records of it
            history.retried_epochs, history.diverged_epoch = [2, 2, 2], 2
        return history

    monkeypatch.setattr(loop, "retrain", diverges_at_step_1)
    x, y = _blobs()
    learner = ActiveLearner(_tiny(steps=2), (x, y), out=tmp_path)
    learner.run(progress=False)
    assert [r["retried_epochs"] for r in learner.history] == [0, 3, 0]
    assert [r["diverged_epoch"] for r in learner.history] == [None, 2, None]
    assert all(1 <= r["best_epoch"] for r in learner.history)
    with open(tmp_path / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["retried_epochs"], r["diverged_epoch"]) for r in rows] == [
        ("0", ""), ("3", "2"), ("0", "")
    ]  # fmt: skip


def test_a_run_begun_by_older_code_warns_on_resume_and_keeps_its_version(tmp_path):
    x, y = _blobs()
    cfg = _tiny()
    ActiveLearner(cfg, (x, y), out=tmp_path).run(progress=False, max_steps=1)
    state_file = tmp_path / "state.json"
    state = json.loads(state_file.read_text())
    del state["model_version"]  # as every state begun before 2026-12-07
    state_file.write_text(json.dumps(state))
    with pytest.warns(UserWarning, match=r"begun by older code \(model version 1, this code's 2"):
        resumed = ActiveLearner(cfg, (x, y), out=tmp_path, resume=True)
    resumed.run(progress=False, max_steps=1)
    assert json.loads(state_file.read_text())["model_version"] is None  # still marked as old


@pytest.mark.parametrize("method", ["bhn", "mc_dropout"])
def test_model_at_rebuilds_a_past_step_that_scores_as_the_loop_recorded(tmp_path, method):
    x, y = _blobs()
    test = _blobs(60, seed=2)
    options = {"coupling_layers": 2} if method == "bhn" else {}
    cfg = _tiny(method=method, options=options)
    ActiveLearner(cfg, (x, y), test=test, out=tmp_path).run(progress=False)
    learner = ActiveLearner(cfg, (x, y), test=test, out=tmp_path, resume=True)
    for step in (1, 2):  # after acquisitions: the model saw only the first n_labels labels
        model = learner.model_at(step)
        gen = torch.Generator().manual_seed(cfg.seed + 7)  # as the loop's evaluation
        metrics = evaluate(model, *test, cfg.eval_samples, gen)
        assert metrics["accuracy"] == learner.history[step]["test_acc"]
        assert metrics["nll"] == learner.history[step]["test_nll"]
    with pytest.raises(ValueError, match=r"step 4 has not finished \(finished steps: 0..3\)"):
        learner.model_at(4)
    fresh = ActiveLearner(cfg, (x, y), test=test)
    with pytest.raises(ValueError, match="finished steps: none yet"):
        fresh.model_at(0)
    warm = ActiveLearner(_tiny(warm_start=True), (x, y), test=test)
    warm.run(progress=False, max_steps=1)
    with pytest.raises(ValueError, match="warm-start"):
        warm.model_at(0)


def test_model_at_retrains_with_other_settings_or_a_prepared_model(tmp_path):
    x, y = _blobs()
    test = _blobs(60, seed=2)
    cfg = _tiny(method="mc_dropout")
    ActiveLearner(cfg, (x, y), test=test, out=tmp_path).run(progress=False)
    learner = ActiveLearner(cfg, (x, y), test=test, out=tmp_path, resume=True)
    gen = lambda: torch.Generator().manual_seed(cfg.seed + 7)  # noqa: E731
    recorded = learner.history[1]["test_acc"]
    seen = []
    model = learner.model_at(1, prepare=lambda m: seen.append(m) or m)
    assert seen == [model]  # the fresh model, handed over before training
    assert evaluate(model, *test, cfg.eval_samples, gen())["accuracy"] == recorded
    other = learner.model_at(1, config=dataclasses.replace(cfg, method="map"))
    assert other.method == "map"
    assert learner.config.method == "mc_dropout"  # the learner's own settings are untouched


def test_a_run_folder_in_use_is_refused_and_free_again_afterwards(tmp_path):
    """Two processes on one run folder would overwrite each other's state."""
    fcntl = pytest.importorskip("fcntl")
    x, y = _blobs()
    cfg = _tiny(steps=1)
    ActiveLearner(cfg, (x, y), out=tmp_path / "run").run(progress=False, max_steps=1)
    with open(tmp_path / "run" / ".lock", "a") as other:  # another process's lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = ActiveLearner(cfg, (x, y), out=tmp_path / "run", resume=True)
        with pytest.raises(RuntimeError, match="is in use by another run"):
            busy.run(progress=False)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert len(busy.history) == 1  # it took no step
    busy.run(progress=False)  # the lock is free again: the run finishes
    assert len(json.loads((tmp_path / "run" / "state.json").read_text())["history"]) == 2


def test_finished_run_extended_with_more_steps_equals_a_longer_run(tmp_path):
    x, y = _blobs()
    test = _blobs(60, seed=2)
    longer = ActiveLearner(_tiny(steps=3), (x, y), test=test)
    longer.run(progress=False)
    ActiveLearner(_tiny(steps=1), (x, y), test=test, out=tmp_path).run(progress=False)
    extended = ActiveLearner(_tiny(steps=3), (x, y), test=test, out=tmp_path, resume=True)
    extended.run(progress=False)
    assert [r["n_labels"] for r in extended.history] == [6, 10, 14, 18]
    assert extended.labelled == longer.labelled
    assert [r["test_acc"] for r in extended.history] == [r["test_acc"] for r in longer.history]


def test_resume_refuses_other_settings_and_fresh_run_refuses_to_overwrite(tmp_path):
    x, y = _blobs()
    ActiveLearner(_tiny(steps=1), (x, y), out=tmp_path).run(progress=False)
    shuffled = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for other in ((x[shuffled], y[shuffled]), _blobs(seed=1)):  # same size: resumed before
        with pytest.raises(ValueError, match="this pool holds other data"):
            ActiveLearner(_tiny(steps=1), other, out=tmp_path, resume=True)
    with pytest.raises(ValueError, match="exists"):
        ActiveLearner(_tiny(steps=1), (x, y), out=tmp_path)
    with pytest.raises(ValueError, match="acquisition: saved 'bald', given 'random'"):
        ActiveLearner(_tiny(steps=1, acquisition="random"), (x, y), out=tmp_path, resume=True)
    assert saved_config(tmp_path) == _tiny(steps=1)
    with pytest.raises(FileNotFoundError, match="no state file"):
        ActiveLearner(_tiny(), (x, y), out=tmp_path / "none", resume=True)
    longer = ActiveLearner(_tiny(steps=2), (x, y), out=tmp_path, resume=True)  # more steps: ok
    longer.run(progress=False)
    assert len(longer.history) == 3


def test_run_saved_before_lr_schedule_existed_resumes_at_a_constant_rate(tmp_path):
    x, y = _blobs()
    cfg = _tiny(steps=1, lr_schedule="constant", lr_warmup=0.0)
    ActiveLearner(cfg, (x, y), out=tmp_path).run(progress=False)
    path = tmp_path / "state.json"
    state = json.loads(path.read_text())
    del state["config"]["lr_schedule"], state["config"]["lr_warmup"]  # as earlier versions
    path.write_text(json.dumps(state))
    assert saved_config(tmp_path).lr_schedule == "constant"
    assert saved_config(tmp_path).lr_warmup == 0.0
    with pytest.raises(ValueError, match="lr_schedule: saved 'constant', given 'cosine'"):
        ActiveLearner(_tiny(steps=2), (x, y), out=tmp_path, resume=True)
    resumed = ActiveLearner(_tiny(steps=2, lr_schedule="constant", lr_warmup=0.0), (x, y),
                            out=tmp_path, resume=True)  # fmt: skip
    resumed.run(progress=False)
    assert len(resumed.history) == 3


def test_lr_schedule_is_checked_and_reaches_fit(monkeypatch):
    with pytest.raises(ValueError, match="unknown lr_schedule 'cos'"):
        _tiny(lr_schedule="cos").validate()
    with pytest.raises(ValueError, match="lr_warmup must lie in"):
        _tiny(lr_warmup=1.5).validate()
    seen = []
    real_fit = safety_bhn.active.loop.fit

    def spying_fit(*args, **kwargs):
        seen.append(kwargs["lr_schedule"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(safety_bhn.active.loop, "fit", spying_fit)
    x, y = _blobs()
    ActiveLearner(_tiny(steps=1), (x, y)).run(progress=False)
    ActiveLearner(_tiny(steps=1, lr_schedule="constant"), (x, y)).run(progress=False)
    assert seen == ["cosine", "cosine", "constant", "constant"]


def test_select_is_checked_and_picks_the_weights_each_retrain_keeps(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Did you mean 'last'"):
        _tiny(select="lst").validate()
    kept = []
    real_fit = safety_bhn.active.loop.fit

    def spying_fit(*args, **kwargs):
        history = real_fit(*args, **kwargs)
        kept.append((kwargs["select"], history.best_epoch, history.epochs_run))
        return history

    monkeypatch.setattr(safety_bhn.active.loop, "fit", spying_fit)
    x, y = _blobs()
    ActiveLearner(_tiny(steps=1, select="last"), (x, y), out=tmp_path).run(progress=False)
    assert [(s, best) for s, best, _ in kept] == [("last", n - 1) for _, _, n in kept]
    assert saved_config(tmp_path).select == "last"
    # a run saved before `select` existed kept the best-NLL weights, and resumes so
    path = tmp_path / "state.json"
    state = json.loads(path.read_text())
    del state["config"]["select"]
    path.write_text(json.dumps(state))
    assert saved_config(tmp_path).select == "nll"
    with pytest.raises(ValueError, match="select: saved 'nll', given 'last'"):
        ActiveLearner(_tiny(steps=2, select="last"), (x, y), out=tmp_path, resume=True)


class _InputsOnly(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_user_dataset_with_an_oracle_is_asked_only_for_what_it_labels():
    x, y = _blobs()
    asked = []

    def oracle(indices):
        asked.extend(indices.tolist())
        return y[indices]

    learner = ActiveLearner(_tiny(steps=2), _InputsOnly(x), oracle=oracle)
    learner.run(progress=False)
    assert sorted(asked) == sorted(learner.val + learner.labelled)
    assert len(asked) == len(set(asked))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(acquire=100, steps=3, pool_subset=0), "pool has 240 points"),
        (dict(initial=0), "initial must be a positive integer"),
        (dict(acquire=-1), "acquire must be a positive integer"),
        (dict(pool_subset=2), "pool_subset"),
        (dict(acquisition="entropy"), "unknown acquisition"),
        (dict(method="bnn"), "unknown method"),
        (dict(acquisition="bald", acq_samples=1), "acq_samples=1 would score every point 0"),
        (dict(acquisition="bald", num_configs=500), "num_configs=500 sets .* batch_bald only"),
        (dict(options={"hiden": [4]}), "do not build a model: unknown option.*'hiden'"),
    ],
)
def test_loop_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActiveLearner(_tiny(**kwargs), _blobs())


def test_a_model_option_the_method_lacks_fails_before_any_state_is_written(tmp_path):
    with pytest.raises(ValueError, match="do not build a model.*coupling_layers"):
        ActiveLearner(_tiny(options={"coupling_layers": 3}), _blobs(), out=tmp_path / "run")
    assert not (tmp_path / "run" / "state.json").exists()  # the same folder can be rerun


class _Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_a_dataset_with_float_or_one_hot_labels_is_refused_not_truncated():
    x, y = _blobs()
    with pytest.raises(ValueError, match="pool labels must be integer.*float32"):
        ActiveLearner(_tiny(), _Pairs(x, y.float() + 0.7))  # int(2.7) would have given 2
    with pytest.raises(ValueError, match=r"shape \(240, 3\).*argmax"):
        ActiveLearner(_tiny(), _Pairs(x, torch.nn.functional.one_hot(y)))


def test_resume_keeps_the_declared_number_of_classes(tmp_path):
    x, y = _blobs()  # three classes; the user declares five (more may come from the oracle)
    cfg = _tiny(steps=2)
    whole = ActiveLearner(cfg, x, oracle=lambda i: y[i], n_classes=5, out=tmp_path / "whole")
    whole.run(progress=False)
    cut = ActiveLearner(cfg, x, oracle=lambda i: y[i], n_classes=5, out=tmp_path / "cut")
    cut.run(progress=False, max_steps=1)
    resumed = ActiveLearner(cfg, x, oracle=lambda i: y[i], out=tmp_path / "cut", resume=True)
    assert resumed.n_classes == 5
    resumed.run(progress=False)
    assert resumed.model.n_classes == 5
    assert [r["acquired"] for r in resumed.history] == [r["acquired"] for r in whole.history]
    with pytest.raises(ValueError, match="run with n_classes=5, given n_classes=4"):
        ActiveLearner(cfg, x, oracle=lambda i: y[i], n_classes=4, out=tmp_path / "cut",
                      resume=True)  # fmt: skip


@pytest.mark.parametrize("to_disk", [True, False])
@pytest.mark.parametrize("warm_start", [False, True])
def test_run_called_again_after_an_oracle_error_redoes_the_step_exactly(
    tmp_path, warm_start, to_disk
):
    x, y = _blobs()
    cfg = _tiny(acquisition="batch_bald", num_configs=20, warm_start=warm_start)
    whole = ActiveLearner(cfg, x, oracle=lambda i: y[i])
    whole.run(progress=False)
    calls = []

    def flaky(indices):  # the initial and validation sets, step 0, then fails once
        calls.append(len(indices))
        if len(calls) == 4:
            raise ConnectionError("labelling service down")
        return y[indices]

    learner = ActiveLearner(cfg, x, oracle=flaky, out=tmp_path if to_disk else None)
    with pytest.raises(ConnectionError):
        learner.run(progress=False)
    assert len(learner.history) == 1 and len(learner.labelled) == 10
    learner.run(progress=False)
    assert learner.labelled == whole.labelled
    assert [r["scores"] for r in learner.history] == [r["scores"] for r in whole.history]


def test_batch_bald_refuses_a_bad_chunk():
    probs = torch.rand(8, 30, 4).softmax(-1)
    for bad in (-1, 0, 2.5):  # -1 returned scores from uninitialised memory
        with pytest.raises(ValueError, match="chunk must be a positive integer"):
            batch_bald(probs, 3, chunk=bad)


def test_loop_checks_pool_test_set_and_device_before_asking_the_oracle(tmp_path):
    x, y = _blobs()
    asked = []

    def oracle(idx):
        asked.append(idx)
        return y[idx]

    bad_pool = x.clone()
    bad_pool[5, 0] = float("nan")
    with pytest.raises(ValueError, match="pool: x contains NaN"):
        ActiveLearner(_tiny(), bad_pool, oracle=oracle, out=tmp_path / "a")
    with pytest.raises(TypeError, match="pool: x must be a floating-point"):
        ActiveLearner(_tiny(), (x * 10).to(torch.uint8), oracle=oracle, out=tmp_path / "b")
    with pytest.raises(ValueError, match="test: labels must be class indices >= 0"):
        ActiveLearner(_tiny(), x, oracle=oracle, test=(x, y - 1), out=tmp_path / "c")
    # declared classes: test labels beyond them were silently added as outputs before
    with pytest.raises(ValueError, match="test labels go up to 12, outside 0..2"):
        ActiveLearner(_tiny(), x, oracle=oracle, n_classes=3, test=(x, y + 10))
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        ActiveLearner(_tiny(device="gpu"), x, oracle=oracle, out=tmp_path / "d")
    with pytest.raises(ValueError, match="pool labels must be class indices >= 0"):
        ActiveLearner(_tiny(), (x, y - 1))
    assert not asked and not any((tmp_path / d).exists() for d in "abcd")


def test_loop_checks_labels_against_the_pools_classes(tmp_path):
    """1-based test labels were taken as an 11th class (test accuracy near 0), and a pool
    whose labels exceeded the n_classes given blamed an oracle that was never passed."""
    x, y = _blobs()
    with pytest.raises(ValueError, match=r"test labels go up to 3, outside 0..2, the classes of"):
        ActiveLearner(_tiny(), (x, y), test=(x, y + 1))
    with pytest.raises(ValueError, match=r"pool's labels go up to 2, outside 0..1 for the n_c"):
        ActiveLearner(_tiny(), (x, y), n_classes=2)
    assert ActiveLearner(_tiny(), (x, y), n_classes=4, test=(x, y + 1)).n_classes == 4


def test_config_bounds_the_seed_so_every_steps_seed_fits_torch():
    """seed 2e14 passed, then every step failed in torch ('Overflow when unpacking long
    long'), after state.json was written: the run could be neither resumed nor restarted."""
    from safety_bhn.active.loop import MAX_RUN_SEED, step_seed

    with pytest.raises(ValueError, match=r"seed must be at most \d+ \(torch seeds hold 64 bits"):
        _tiny(seed=MAX_RUN_SEED + 1).validate()
    cfg = _tiny(seed=MAX_RUN_SEED).validate()
    torch.Generator().manual_seed(step_seed(cfg, 60_000) + 1)  # fit's seed for the last step


def test_config_accepts_numpy_integers_and_saves_plain_ones(tmp_path):
    x, y = _blobs()
    cfg = _tiny(acquire=np.int64(4), steps=np.int32(1), seed=np.int64(1))
    ActiveLearner(cfg, (x, y), out=tmp_path).run(progress=False)
    saved = json.loads((tmp_path / "state.json").read_text())["config"]
    assert (saved["acquire"], saved["steps"], saved["seed"]) == (4, 1, 1)
    for field_, bad, message in [("lr", float("inf"), "lr must be a positive number"),
                                 ("warm_start", "no", "warm_start must be True or False"),
                                 ("options", [1], "options must be a dict"),
                                 ("val_size", 0, "val_size=0 holds none out")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            _tiny(
                **{field_: bad}, **({"select": "accuracy"} if field_ == "val_size" else {})
            ).validate()


def test_loop_rejects_bad_pools_and_oracles():
    x, y = _blobs()
    with pytest.raises(ValueError, match="oracle"):
        ActiveLearner(_tiny(), x)
    with pytest.raises(ValueError, match="integer labels"):
        ActiveLearner(_tiny(), x, oracle=lambda idx: torch.zeros(len(idx) + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..2"):
        ActiveLearner(_tiny(), x, oracle=lambda idx: y[idx] + 1, n_classes=3)
    with pytest.raises(TypeError, match="pool must be"):
        ActiveLearner(_tiny(), [1, 2, 3])


def test_curve_summaries():
    labels, acc = [20, 30, 40, 50], [0.5, 0.9, 0.8, 0.96]
    assert labels_to_reach(labels, acc, 0.9) == 30
    assert labels_to_reach(labels, acc, 0.95) == 50
    assert labels_to_reach(labels, acc, 0.99) is None
    # runs saved before 2026-12-06 hold float32 accuracies: 9500 of 10000 is 0.94999999
    assert labels_to_reach([20, 30], [0.9, 0.949999988079071], 0.95) == 30
    assert labels_to_reach([20, 30], [0.9, 0.9499], 0.95) is None
    with pytest.raises(ValueError, match="2 label counts but 3 accuracies"):
        labels_to_reach([20, 30], [0.96, 0.5, 0.6], 0.95)  # returned 20 before
    assert curve_auc(labels, acc) == pytest.approx((0.7 + 0.85 + 0.88) * 10 / 30)
    with pytest.raises(ValueError, match="n_labels must increase"):
        curve_auc([20, 20], [0.5, 0.6])  # divided by a zero label range before


def test_rarest_class_counts_known_answers():
    labels = [0, 1, 2, 0, 0, 2, 2, 1]
    assert rarest_class_counts(labels, [0, 2, 3, 8], n_classes=3) == [0, 0, 1, 2]
    assert rarest_class_counts(labels, [8], n_classes=4) == [0]  # class 3 never labelled
    with pytest.raises(ValueError, match="n_labels must lie in 0..8"):
        rarest_class_counts(labels, [9], n_classes=3)
    with pytest.raises(ValueError, match="n_classes must be at least 1"):
        rarest_class_counts(labels, [1], n_classes=0)


# -- CLI and benchmark -------------------------------------------------------------------
def test_cli_active_learn_and_compare(tmp_path, capsys):
    flags = ["--hidden", "16", "--steps", "2", "--acquire", "5", "--train-steps", "10",
             "--eval-samples", "2", "--no-progress", "--device", "cpu"]  # fmt: skip
    scoring = {"bald": ["--pool-subset", "100", "--acq-samples", "3"], "random": []}
    for acq in ("bald", "random"):
        out = tmp_path / f"al-{acq}"
        code = main(["active-learn", "--method", "mc_dropout", "--acquisition", acq,
                     "--out", str(out), *flags, *scoring[acq]])  # fmt: skip
        assert code == 0
        assert {"state.json", "curve.csv", "curve.png"} <= {p.name for p in out.iterdir()}
        curve = read_curve(out)
        assert [r["n_labels"] for r in curve] == [20, 25, 30]
        assert curve[0]["rarest_class"] == 2  # balanced initial set: 2 labels a class
        labels = json.loads((out / "state.json").read_text())["labels"]
        assert [r["rarest_class"] for r in curve] == [
            min(labels[:n].count(k) for k in range(10)) for n in (20, 25, 30)
        ]
    # random scores nothing: scoring flags were saved and ignored
    code = main(["active-learn", "--method", "mc_dropout", "--acquisition", "random",
                 "--out", str(tmp_path / "x"), *flags, *scoring["bald"]])  # fmt: skip
    assert code == 2 and not (tmp_path / "x").exists()
    assert "--pool-subset and --acq-samples set how the pool is scored" in capsys.readouterr().err
    runs = [str(tmp_path / "al-bald"), str(tmp_path / "al-random")]
    code = main(["active-learn", "--compare", *runs, "--out", str(tmp_path / "cmp")])
    assert code == 0
    assert (tmp_path / "cmp" / "compare.png").is_file()
    table = capsys.readouterr().out
    assert "al-bald" in table and "al-random" in table
    missing = str(tmp_path / "al-none")
    assert main(["active-learn", "--compare", *runs, missing, "--out", str(tmp_path / "c2")]) == 2
    streams = capsys.readouterr()
    assert streams.out == ""  # every run is read before the table starts
    assert f"no active-learning state file at {missing}" in streams.err
    assert main(["active-learn", "--acquisition", "bladd", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'bald'" in capsys.readouterr().err
    # folders of one name get distinct labels, unfinished runs are marked, a run given twice
    # is refused (two "run" folders were drawn as one line, silently, before)
    import shutil

    shutil.copytree(tmp_path / "al-bald", tmp_path / "A" / "run")
    shutil.copytree(tmp_path / "al-random", tmp_path / "B" / "run")
    state = json.loads((tmp_path / "B" / "run" / "state.json").read_text())
    state["config"]["steps"] = 5  # as if stopped after 3 of 6 steps
    (tmp_path / "B" / "run" / "state.json").write_text(json.dumps(state))
    pair = [str(tmp_path / "A" / "run"), str(tmp_path / "B" / "run")]
    assert main(["active-learn", "--compare", *pair, "--out", str(tmp_path / "c3")]) == 0
    table = capsys.readouterr().out
    assert "A/run " in table and "B/run*" in table and "unfinished (3 of 6 steps)" in table
    assert main(["active-learn", "--compare", runs[0], runs[0], "--out", str(tmp_path / "c4")]) == 2
    assert "name one folder more than once" in capsys.readouterr().err
    assert main(["active-learn", "--compare", *runs, "--method", "bhn"]) == 2  # ignored before
    assert "--compare reads finished run folders and takes only --out; drop --method" in (
        capsys.readouterr().err
    )
    assert (
        main(["active-learn", "--arch", "cnn", "--hidden", "8", "--out", str(tmp_path / "y")]) == 2
    )
    assert "--hidden sizes the MLP only" in capsys.readouterr().err
    assert main(["active-learn", "--data-dir", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "--data-dir is read only with --extra" in capsys.readouterr().err  # ignored before
    assert not (tmp_path / "d").exists()


def test_cli_compare_refuses_data_dir(tmp_path, capsys):
    # --compare reads the saved curves, never a pool: --data-dir was ignored, silently
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["active-learn", "--compare", *runs, "--data-dir", str(tmp_path)]) == 2
    assert "takes only --out; drop --data-dir" in capsys.readouterr().err


def test_cli_prior_mean_reaches_the_bhn_and_is_checked_early(tmp_path, capsys):
    out = tmp_path / "al-bhn"
    flags = ["--method", "bhn", "--coupling-layers", "1", "--prior-mean", "init", "--hidden", "8",
             "--steps", "0", "--train-steps", "2", "--eval-samples", "2", "--no-progress",
             "--device", "cpu", "--lr-schedule", "constant", "--out", str(out)]  # fmt: skip
    assert main(["active-learn", *flags]) == 0
    assert saved_config(out).options == {"coupling_layers": 1, "prior_mean": "init"}
    assert saved_config(out).lr_schedule == "constant"
    assert main(["active-learn", "--resume", "--out", str(out), "--prior-mean", "zero"]) == 2
    assert "prior_mean (--prior-mean): saved 'init', given 'zero'" in capsys.readouterr().err
    bad = ["active-learn", "--method", "bhn", "--prior-mean", "mean", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    assert "unknown prior_mean 'mean'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_saves_the_data_dir_absolute_so_resume_works_from_elsewhere(
    tmp_path, monkeypatch, shared_data_dir
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist-extra5k").symlink_to(shared_data_dir / "mnist-extra5k")
    flags = ["--method", "map", "--acquisition", "max_entropy", "--hidden", "8", "--steps", "0",
             "--train-steps", "2", "--eval-samples", "2", "--no-progress", "--device", "cpu",
             "--extra", "--data-dir", "data", "--out", "run"]  # fmt: skip
    assert main(["active-learn", *flags]) == 0
    source = saved_state(tmp_path / "run")["pool_source"]
    assert source["data_dir"] == str(tmp_path / "data")  # "data" before: relative to the cwd


def test_cli_local_draws_reach_the_bhn_and_cannot_change_on_resume(tmp_path, capsys):
    out = tmp_path / "al-bhn"
    flags = ["--method", "bhn", "--coupling-layers", "1", "--local-draws", "--hidden", "8",
             "--steps", "0", "--train-steps", "2", "--eval-samples", "2", "--no-progress",
             "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(["active-learn", *flags]) == 0
    assert saved_config(out).options["local_draws"] is True
    other = tmp_path / "al-shared"
    assert main(["active-learn", *flags[:4], *flags[5:-1], str(other)]) == 0
    assert "local_draws" not in saved_config(other).options
    assert main(["active-learn", "--resume", "--out", str(other), "--local-draws"]) == 2
    assert "local_draws (--local-draws): saved None, given True" in capsys.readouterr().err


CLI_FLAGS = ["--method", "mc_dropout", "--hidden", "16", "--steps", "2", "--pool-subset", "100",
             "--train-steps", "10", "--acq-samples", "3", "--eval-samples", "2", "--seed", "3",
             "--no-progress", "--device", "cpu"]  # fmt: skip


def _interrupted_cli_run(monkeypatch, out, after_steps=1):
    """Run ``active-learn`` with CLI_FLAGS and press Ctrl-C once ``after_steps`` are saved."""
    save = ActiveLearner.save

    def save_then_interrupt(self):
        save(self)
        if len(self.history) == after_steps:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ActiveLearner, "save", save_then_interrupt)
        assert main(["active-learn", *CLI_FLAGS, "--out", str(out)]) == 130
    assert len(read_curve(out)) == after_steps


def test_cli_resume_needs_only_out_and_equals_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["active-learn", *CLI_FLAGS, "--out", str(whole)]) == 0
    _interrupted_cli_run(monkeypatch, cut)
    capsys.readouterr()
    assert main(["active-learn", "--resume", "--out", str(cut)]) == 0
    assert f"resuming {cut}: mc_dropout / bald, 1 of 3 steps done" in capsys.readouterr().out
    a, b = saved_state(cut), saved_state(whole)
    assert a["config"] == b["config"] and a["labelled"] == b["labelled"]
    for r, w in zip(a["history"], b["history"], strict=True):
        assert r["acquired"] == w["acquired"] and r["test_acc"] == w["test_acc"]


def test_cli_resume_refuses_flags_that_contradict_the_saved_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_cli_run(monkeypatch, out)
    capsys.readouterr()
    resume = ["active-learn", "--resume", "--out", str(out), "--no-progress"]
    conflicting = ["--acquisition", "random", "--seed", "4", "--coupling-layers", "3",
                   "--warm-start", "--method", "mc_dropout", "--hidden", "16"]  # fmt: skip
    assert main([*resume, *conflicting]) == 2
    err = capsys.readouterr().err
    assert "acquisition (--acquisition): saved 'bald', given 'random'" in err
    assert "seed (--seed): saved 3, given 4" in err
    assert "coupling_layers (--coupling-layers): saved None, given 3" in err
    assert "warm_start (--warm-start): saved False, given True" in err
    assert "--method" not in err.split("Leave")[0] and "--hidden" not in err  # same as saved
    assert len(read_curve(out)) == 1  # nothing ran
    assert main(["active-learn", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "no active-learning state file" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    for flags in (["--out", str(afile)], ["--compare", str(out), "--out", str(afile)]):
        assert main(["active-learn", *flags]) == 2  # an [Errno 17] before
        assert "afile is a file, not a" in capsys.readouterr().err
    # names in another spelling are the same setting (they were refused as contradictions)
    same = ["--method", "MC-Dropout", "--acquisition", "BALD"]
    assert main([*resume, *same, "--steps", "1", "--device", "cpu"]) == 0  # these may change
    assert [r["n_labels"] for r in read_curve(out)] == [20, 30]
    assert saved_config(out).steps == 1


@pytest.mark.slow
def test_benchmark_quick_runs_in_parallel_as_in_sequence(tmp_path, benchmark_module):
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/active_learning.py",
            "--quick",
            "--workers",
            "2",
            "--out-dir",
            str(tmp_path),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "active_learning.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"method", "acquisition", "seed", "n_labels", "test_acc"} <= set(rows[0])
    assert len(rows) == 3 * 2 * 3  # methods x acquisitions x (steps + 1), one seed
    report = (tmp_path / "active_learning.md").read_text()
    assert "REDUCED RUN" in report and "## Step time by device" in report
    assert (tmp_path / "active_learning.png").is_file()
    # The worker processes give the same curves, in the same order, as runs in this process.
    al = benchmark_module("active_learning")
    args = al.quick_args(al.Args(runs_dir=str(tmp_path / "here")))
    assert {r["device"] for r in rows} == {f"cpu: {cpu_words()}, {args.threads} threads"}
    here = [
        r
        for method in args.methods
        for acq in args.acquisitions
        for r in al.run_one(args, 0, method, acq)
    ]
    keys = ("method", "acquisition", "seed", "n_labels", "test_acc", "test_nll")
    assert [[str(r[k]) for k in keys] for r in rows] == [[str(r[k]) for k in keys] for r in here]


def test_benchmark_report_is_rebuilt_from_an_earlier_csv(tmp_path, benchmark_module):
    al = benchmark_module("active_learning")
    quick = ["--quick", "--methods", "mc_dropout"]  # acquisitions bald and random, seed 0
    al.main([*quick, "--runs-dir", str(tmp_path / "a"), "--out-dir", str(tmp_path / "first")])
    earlier = tmp_path / "first" / "active_learning.csv"
    # a machine with none of the states: nothing runs, and the report is the same
    al.main([*quick, "--runs-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "again"),
             "--finished-csv", str(earlier), "--deadline-minutes", "1e-9"])  # fmt: skip
    assert (tmp_path / "again" / "active_learning.csv").read_text() == earlier.read_text()
    first, again = ((tmp_path / d / "active_learning.md").read_text() for d in ("first", "again"))
    assert "**INCOMPLETE**" not in again
    assert f"- 2 of the 2 finished runs were taken from {earlier}" in again
    assert again.split("## Targets")[1] == first.split("## Targets")[1]
    assert not any((tmp_path / "b").rglob("state.json"))
    # a run whose state is here is taken from its state, not from the CSV
    with open(earlier, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["test_acc"] = "0.5"
    edited = tmp_path / "edited" / "active_learning.csv"  # beside its report: the settings
    edited.parent.mkdir()
    edited.with_suffix(".md").write_text(earlier.with_suffix(".md").read_text())
    with open(edited, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    al.run_one(al.quick_args(al.Args(runs_dir=str(tmp_path / "b"))), 0, "mc_dropout", "random")
    al.main([*quick, "--runs-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "mixed"),
             "--finished-csv", str(edited), "--deadline-minutes", "1e-9"])  # fmt: skip
    with open(tmp_path / "mixed" / "active_learning.csv") as f:
        mixed = {(r["acquisition"], r["n_labels"]): r["test_acc"] for r in csv.DictReader(f)}
    with open(earlier) as f:
        for r in csv.DictReader(f):
            expected = r["test_acc"] if r["acquisition"] == "random" else "0.5"
            assert mixed[(r["acquisition"], r["n_labels"])] == expected
    with pytest.raises(ValueError, match="has 3 steps, but these settings make 4"):
        al.read_finished_csv(earlier, steps=3)
    with pytest.raises(ValueError, match=r"label counts \[20, 30, 40\]"):
        al.read_finished_csv(earlier, steps=2, initial=100, acquire=50)  # accepted before


def test_benchmark_deadline_stops_between_steps_and_a_rerun_continues(tmp_path, benchmark_module,
                                                                      monkeypatch):  # fmt: skip
    al = benchmark_module("active_learning")
    args = al.quick_args(al.Args(runs_dir=str(tmp_path / "whole")))
    whole = al.run_one(args, 0, "mc_dropout", "bald")
    assert [r["n_labels"] for r in whole] == [20, 30, 40]

    clock = iter([0.0, 0.0, 10.0])  # time.time() before each step: two steps, then too late
    monkeypatch.setattr(al, "time", SimpleNamespace(time=lambda: next(clock)))
    args.runs_dir = str(tmp_path / "cut" / "quick")  # where main(["--quick", ...]) looks
    assert al.run_one(args, 0, "mc_dropout", "bald", deadline=5.0) is None
    state = json.loads(
        (tmp_path / "cut" / "quick" / "mc_dropout-bald-seed0" / "state.json").read_text()
    )
    assert len(state["history"]) == 2  # the finished steps are saved
    monkeypatch.undo()
    # a report written after the deadline lists the cut run apart, with how far it came
    al.main(["--quick", "--methods", "mc_dropout", "--runs-dir",
             str(tmp_path / "cut"), "--out-dir", str(tmp_path / "report"),
             "--deadline-minutes", "1e-9"])  # fmt: skip
    report = (tmp_path / "report" / "active_learning.md").read_text()
    labels, acc = state["history"][-1]["n_labels"], state["history"][-1]["test_acc"]
    assert f"| mc_dropout | bald | 0 | 2 of 3 | {labels} | {acc:.4f} |" in report
    assert "**INCOMPLETE**: 0 of 2 runs finished so far." in report  # --quick: bald, random
    assert "| mc_dropout | random |" not in report  # never started: nothing to list
    assert (tmp_path / "report" / "active_learning.csv").read_text().strip() == ""
    resumed = al.run_one(args, 0, "mc_dropout", "bald")
    assert [(r["n_labels"], r["test_acc"]) for r in resumed] == [
        (r["n_labels"], r["test_acc"]) for r in whole
    ]
    # a finished run resumed after the deadline still reports its curve
    assert al.run_one(args, 0, "mc_dropout", "bald", deadline=0.0) == resumed
    with pytest.raises(SystemExit, match="workers must be at least 1, got 0"):
        al.main(["--quick", "--workers", "0"])
    with pytest.raises(SystemExit, match="unknown method 'mcdropout'.*Did you mean"):
        al.main(["--quick", "--methods", "map", "mcdropout", "--acquisitions", "random"])


def test_benchmark_target_verdicts_on_hand_made_inputs(benchmark_module):
    al = benchmark_module("active_learning")
    met, missed, undecided = al.Verdict.MET, al.Verdict.MISSED, al.Verdict.UNDECIDED

    def fewer(a, b, strict=True):
        return al.fewer_labels_verdict(a, b, censored=540, strict=strict)

    assert fewer([None, None], [None, None]) is undecided  # neither reached: was a vacuous MET
    assert fewer([None, None], [None, None], strict=False) is undecided
    assert fewer([100, 140], [300, 500]) is met
    assert fewer([300, 500], [100, 140]) is missed
    assert fewer([200, 200], [150, 250]) is missed  # equal means: not fewer...
    assert fewer([200, 200], [150, 250], strict=False) is met  # ...but no more
    assert fewer([500, 520], [None, None]) is met  # B needs at least 540 in every seed
    assert fewer([None, None], [500, 520]) is missed
    assert fewer([100, None], [None, None]) is undecided  # A's mean is only >= 320
    assert fewer([100, None], [400, 420]) is undecided  # >= 320 vs 410
    assert fewer([500, None], [100, 120]) is missed  # >= 520 vs 110
    with pytest.raises(ValueError, match="no seeds"):
        fewer([], [100])

    assert al.combine_verdicts([met, met]) is met
    assert al.combine_verdicts([met, undecided]) is undecided
    assert al.combine_verdicts([undecided, missed]) is missed

    line = al.target_check("X beats Y", {0.9: [100], 0.95: [None]}, {0.9: [300], 0.95: [None]},
                           censored=540, strict=True)  # fmt: skip
    assert line == (
        "UNDECIDED: X beats Y (90%: 100 vs 300; 95%: >= 540 (0/1 seeds reached) vs "
        ">= 540 (0/1 seeds reached))"
    )
    never = {0.9: [None], 0.95: [None]}
    below = ({0.8: [300], 0.85: [400]}, {0.8: [200], 0.85: [None]})
    line = al.target_check("X beats Y", never, never, censored=540, strict=True, below=below)
    assert line.startswith("UNDECIDED: X beats Y (90%: >= 540")  # the targets' verdict first
    assert line.endswith(
        "; below the targets (not a target): MISSED (80%: 300 vs 200; "
        "85%: 400 vs >= 540 (0/1 seeds reached))"
    )
    a, b = {0.9: [100], 0.95: [200]}, {0.9: [300], 0.95: [400]}
    decided = al.target_check("X beats Y", a, b, censored=540, strict=True, below=below)
    assert decided == "MET: X beats Y (90%: 100 vs 300; 95%: 200 vs 400)"


def test_benchmark_tells_the_issue_grid_from_the_network_choice(benchmark_module):
    al = benchmark_module("active_learning")
    full = al.Args()
    assert al.deviations(full) == [] and al.network_choice(full) == "CNN (the default)"
    # Another network runs the issue's whole grid: not a reduced run, but the report says so.
    mlp = al.Args(arch="mlp", hidden=[128])
    assert al.deviations(mlp) == []
    assert al.network_choice(mlp) == "MLP with hidden layers [128], not the default CNN"
    small = al.Args(seeds=[0], test_size=3000, max_labels=220)
    assert al.deviations(small) == [
        "test_size=3000 (full: 0)",
        "seeds=[0] (full: 3 seeds)",
        "max_labels=220 (full: >= 500)",
    ]


def test_benchmark_step_times_group_by_device_and_method(benchmark_module):
    al = benchmark_module("active_learning")
    rows = [
        {"method": "bhn", "device": "cuda: GPU", "step_seconds": s} for s in (1.0, 2.0, 6.0)
    ] + [
        {"method": "bhn", "device": "cpu: CPU", "step_seconds": 100.0},
        {"method": "mc_dropout", "device": None, "step_seconds": 4.0},
    ]
    table = al.step_times(rows).splitlines()
    assert table[2:] == [
        "| cpu: CPU | bhn | 1 | 100.0 | 100.0 |",
        "| cuda: GPU | bhn | 3 | 2.0 | 3.0 |",
        "| not recorded | mc_dropout | 1 | 4.0 | 4.0 |",
    ]


def test_benchmark_class_balance_table(benchmark_module):
    al = benchmark_module("active_learning")
    rows = [
        {"method": "bhn", "acquisition": "bald", "n_labels": 70, "rarest_class": c} for c in (0, 3)
    ] + [{"method": "bhn", "acquisition": "random", "n_labels": 120, "rarest_class": 7}]
    table = al.class_balance(rows, at=(70, 120)).splitlines()
    assert table[2:] == [
        "| bhn | bald | 1.5 (n=2) | – |",
        "| bhn | random | – | 7.0 (n=1) |",
    ]
    # by default, the 5th, 10th and 20th acquisition of the runs' own grid (--acquire 40)
    grid = [{"method": "bhn", "acquisition": "bald", "n_labels": 20 + 40 * k, "rarest_class": k}
            for k in range(12)]  # fmt: skip
    table = al.class_balance(grid).splitlines()
    assert table[0] == "| method | acquisition | at 220 labels | at 420 labels |"
    assert table[2] == "| bhn | bald | 5.0 (n=1) | 10.0 (n=1) |"


def test_benchmark_summary_says_undecided_when_no_run_reaches_the_targets(benchmark_module):
    al = benchmark_module("active_learning")
    args = al.Args(methods=["bhn", "mc_dropout"], acquisitions=["bald", "random"], seeds=[0],
                   initial=20, acquire=20, max_labels=60)  # fmt: skip
    rows = [
        {"method": m, "acquisition": a, "seed": 0, "n_labels": n, "test_acc": acc,
         "step_seconds": 1.0}
        for m in args.methods for a in args.acquisitions
        for n, acc in ((20, 0.5), (40, 0.7), (60, 0.8))
    ]  # fmt: skip
    _, checks, others = al.summarise(rows, args)
    assert [c.split(":")[0] for c in checks[:3]] == ["UNDECIDED"] * 3
    assert "at least 80" in checks[3]
    assert checks[0].endswith(  # every curve reaches 80% at 60 labels: BALD is not fewer
        "below the targets (not a target): MISSED (80%: 60 vs 60; "
        "85%: >= 80 (0/1 seeds reached) vs >= 80 (0/1 seeds reached))"
    )
    assert others == []  # only BALD and random: nothing beyond the targets


def test_benchmark_summary_checks_other_acquisitions_apart(benchmark_module):
    al = benchmark_module("active_learning")
    args = al.Args(methods=["bhn", "mc_dropout"], acquisitions=["bald", "random", "power_bald"],
                   seeds=[0], initial=20, acquire=20, max_labels=60)  # fmt: skip
    reach_at = {"bald": 60, "random": 40, "power_bald": 20}  # first step at >= 90%
    rows = [
        {"method": m, "acquisition": a, "seed": 0, "n_labels": n,
         "test_acc": 0.96 if n >= reach_at[a] else 0.5, "step_seconds": 1.0}
        for m in args.methods for a in args.acquisitions for n in (20, 40, 60)
    ]  # fmt: skip
    _, checks, others = al.summarise(rows, args)
    assert not any("power_bald" in c for c in checks)
    assert [c.split(" (")[0] for c in others] == [
        "MET: bhn power_bald needs fewer labels than random",
        "MET: BHN-power_bald needs no more labels than MC-dropout-BALD",
        "MET: mc_dropout power_bald needs fewer labels than random",
    ]
    assert "90%: 20 vs 40" in others[0] and "95%: 20 vs 60" in others[1]


def tiny_cli_run(tmp_path: Path, method: str, acquisition: str, *flags: str) -> Path:
    """A one-step CLI run of a tiny MLP in ``tmp_path/runs/al``, for the inspection scripts."""
    out = tmp_path / "runs" / "al"
    args = ["--method", method, "--acquisition", acquisition, "--out", str(out), "--hidden", "16",
            "--steps", "1", "--acquire", "5", "--train-steps", "10", "--eval-samples", "2",
            "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(["active-learn", *args, *flags]) == 0
    return out


def test_per_class_rows_on_hand_made_samples(benchmark_module):
    pc = benchmark_module("al_class_accuracy")
    agree = [0.9, 0.1]
    probs = torch.tensor(
        [
            [agree, agree, [1.0, 0.0]],  # sample 1: images 0, 1 (class 0), image 2 (class 1)
            [agree, agree, [0.0, 1.0]],  # sample 2 disagrees on image 2 only
        ],
        dtype=torch.float64,
    )
    rows = pc.per_class(probs, torch.tensor([0, 0, 1]), labels=[0, 0, 0, 1], n_classes=2)
    assert [(r["digit"], r["labels"], r["test_images"]) for r in rows] == [(0, 3, 2), (1, 1, 1)]
    assert rows[0]["class_acc"] == 1.0 and rows[0]["mean_bald"] == pytest.approx(0.0, abs=1e-12)
    # image 2: predictive [0.5, 0.5] (argmax: class 0, wrong), BALD log 2 - 0 = log 2
    assert rows[1]["class_acc"] == 0.0 and rows[1]["mean_bald"] == pytest.approx(math.log(2))


@pytest.mark.slow
def test_class_accuracy_script_rebuilds_a_cli_run_exactly(tmp_path):
    out = tiny_cli_run(tmp_path, "mc_dropout", "bald", "--pool-subset", "100", "--acq-samples", "3")
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/al_class_accuracy.py",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--runs",
            "al",
            "--steps",
            "1",
            "--threads",
            str(torch.get_num_threads()),
            "--out-dir",
            str(tmp_path / "out"),
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "al_class_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["digit"]) for r in rows] == list(range(10))
    labels = json.loads((out / "state.json").read_text())["labels"][:25]
    assert [int(r["labels"]) for r in rows] == [labels.count(d) for d in range(10)]
    report = (tmp_path / "out" / "al_class_accuracy.md").read_text()
    recorded = read_curve(out)[1]["test_acc"]
    assert f"| al | 25 | {recorded:.4f} | {recorded:.4f} | yes |" in report
    assert (tmp_path / "out" / "al_class_accuracy.png").is_file()


def test_score_noise_agreement_and_rank_correlation_known_answers(benchmark_module):
    sn = benchmark_module("al_score_noise")
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert sn.top_k_agreement(a, a, 3) == 1.0
    assert sn.top_k_agreement(a, -a, 2) == 0.0  # opposite orders share no top-2 point
    assert sn.top_k_agreement(a, torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0]), 2) == 0.5
    with pytest.raises(ValueError, match="k must lie in 1..5"):
        sn.top_k_agreement(a, a, 6)
    with pytest.raises(ValueError, match="one shape"):
        sn.top_k_agreement(a, a[:4], 2)
    assert sn.spearman(a, a) == pytest.approx(1.0)
    assert sn.spearman(a, -a) == pytest.approx(-1.0)
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, generator=g), torch.randn(200, generator=g)
    y = x + y  # correlated, so the value is not near zero by chance
    expected = stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert sn.spearman(x, y) == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_score_noise_script_on_a_cli_run(tmp_path):
    tiny_cli_run(tmp_path, "mc_dropout", "random")
    result = subprocess.run(
        [sys.executable, "benchmarks/al_score_noise.py", "--runs-dir", str(tmp_path / "runs"),
         "--runs", "al", "--steps", "0", "1", "--methods", "mc_dropout", "bhn", "--samples", "3",
         "--reference-samples", "6", "--subset", "60", "--top-k", "5",
         "--out-dir", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "al_score_noise.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["n_labels"]), r["method"]) for r in rows] == [
        (20, "mc_dropout"), (20, "bhn"), (25, "mc_dropout"), (25, "bhn")
    ]  # fmt: skip
    for r in rows:
        assert -1.0 <= float(r["spearman"]) <= 1.0
        assert float(r["top_k_two_draws"]) * 5 in (0, 1, 2, 3, 4, 5)
    assert "top-5 agreement" in (tmp_path / "out" / "al_score_noise.md").read_text()


def test_fvi_kl_weight_scales_only_the_kl_term(benchmark_module):
    fk = benchmark_module("fvi_kl")
    model = safety_bhn.build_model("factorial_vi", "mlp", hidden=[8], seed=0, device="cpu")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 3, 4])

    def loss(m, *args, **kw):
        torch.manual_seed(0)  # the same weight noise in every call
        return m.loss(x, y, 50, *args, **kw)

    full = loss(model)
    nll = full - model.kl() / 50
    fk.with_kl_weight(model, 0.1)
    torch.testing.assert_close(loss(model), nll + 0.1 * model.kl() / 50)
    torch.testing.assert_close(loss(model, kl_weight=0.5), nll + 0.05 * model.kl() / 50)
    other = safety_bhn.build_model("factorial_vi", "mlp", hidden=[8], seed=0, device="cpu")
    torch.testing.assert_close(loss(other), full)  # other instances keep the full KL term


@pytest.mark.slow
def test_fvi_kl_script_repeats_the_loop_at_weight_one(tmp_path):
    tiny_cli_run(tmp_path, "factorial_vi", "random")
    result = subprocess.run(
        [sys.executable, "benchmarks/fvi_kl.py", "--runs-dir", str(tmp_path / "runs"),
         "--run", "al", "--steps", "1", "--kl-weights", "1", "0.01",
         "--threads", str(torch.get_num_threads()), "--out-dir", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "fvi_kl.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["n_labels"]), float(r["kl_weight"])) for r in rows] == [(25, 1.0), (25, 0.01)]
    assert float(rows[0]["test_acc"]) == float(rows[0]["recorded_test_acc"])  # the loop's model
    assert float(rows[0]["kl_per_label"]) > 0


@pytest.mark.parametrize("acquisition", ["bald", "batch_bald", "power_bald", "mean_std"])
def test_map_is_refused_for_acquisitions_that_need_posterior_samples(acquisition):
    with pytest.raises(ValueError, match="method 'map' is a single network"):
        ActiveConfig(method="map", acquisition=acquisition).validate()
    with pytest.raises(ValueError, match="use acq_samples >= 2"):
        ActiveConfig(acquisition=acquisition, acq_samples=1).validate()
    for fine in ("max_entropy", "variation_ratios", "random"):  # these need no disagreement
        ActiveConfig(method="map", acquisition=fine).validate()
        ActiveConfig(acquisition=fine, acq_samples=1).validate()


def test_variation_ratios_of_a_single_network_is_its_least_confidence():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.9, 0.05, 0.05]]])  # (1 sample, 2 inputs, 3)
    torch.testing.assert_close(variation_ratios(probs), torch.tensor([0.4, 0.1]))


def test_names_are_saved_in_their_canonical_spelling():
    cfg = ActiveConfig(method="MC-Dropout", acquisition="BALD", arch="MLP").validate()
    assert (cfg.method, cfg.acquisition, cfg.arch) == ("mc_dropout", "bald", "mlp")
    cfg = ActiveConfig(options={"prior_mean": "INIT", "coupling_layers": np.int64(2)},
                       hidden=(np.int64(16),)).validate()  # fmt: skip
    # a tuple made resume refuse the same config; NumPy values failed the first state write
    assert cfg.options == {"prior_mean": "init", "coupling_layers": 2} and cfg.hidden == [16]
    assert type(cfg.options["coupling_layers"]) is int and type(cfg.hidden[0]) is int
    with pytest.raises(ValueError, match="hidden must be a non-empty list"):
        ActiveConfig(hidden="16").validate()


def test_initial_labels_are_saved_before_step_0_trains(tmp_path, monkeypatch):
    x, y = _blobs()
    asked = []

    def oracle(indices):
        asked.append(len(indices))
        return y[indices]

    learner = ActiveLearner(_tiny(), x, oracle=oracle, out=tmp_path / "run")

    def crash(step):
        raise KeyboardInterrupt  # killed while training step 0

    monkeypatch.setattr(learner, "_train", crash)
    with pytest.raises(KeyboardInterrupt):
        learner.run(progress=False)
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["history"] == [] and len(saved["labelled"]) == 6 and len(saved["val"]) == 12
    monkeypatch.undo()
    again = ActiveLearner(_tiny(), x, oracle=oracle, out=tmp_path / "run", resume=True)
    again.run(progress=False)
    assert asked[:2] == [12, 6] and sum(asked[2:]) == 4 * 3  # nothing was asked twice
    fresh = ActiveLearner(_tiny(), x, oracle=lambda i: y[i]).run(progress=False)
    assert again.state()["labelled"] == fresh["labelled"]  # as if never interrupted


def test_warm_start_model_file_is_named_by_the_state_it_belongs_to(tmp_path):
    x, y = _blobs()
    out = tmp_path / "run"
    learner = ActiveLearner(_tiny(warm_start=True), (x, y), out=out)
    learner.run(progress=False, max_steps=2)
    state = json.loads((out / "state.json").read_text())
    assert state["model_file"] == "model-step2.pt"
    assert sorted(p.name for p in out.glob("model*.pt")) == ["model-step2.pt"]
    resumed = ActiveLearner(_tiny(warm_start=True), (x, y), out=out, resume=True)
    assert resumed.model is not None


def test_warm_start_deletes_only_its_own_model_files_and_needs_the_one_its_state_names(tmp_path):
    x, y = _blobs()
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_bytes(b"a model the user trained")  # was deleted before
    with pytest.raises(ValueError, match="holds another run"):
        ActiveLearner(_tiny(warm_start=True), (x, y), out=out)
    (out / "model.pt").unlink()
    learner = ActiveLearner(_tiny(warm_start=True), (x, y), out=out)
    learner.run(progress=False, max_steps=1)
    (out / "model-step7.pt").write_bytes(b"not this run's")
    learner.run(progress=False, max_steps=1)
    assert (out / "model-step7.pt").read_bytes() == b"not this run's"
    assert not (out / "model-step1.pt").exists()  # its own older file is gone
    (out / "model-step2.pt").unlink()
    with pytest.raises(
        FileNotFoundError, match="warm-start model model-step2.pt, which is missing"
    ):
        ActiveLearner(_tiny(warm_start=True), (x, y), out=out, resume=True)  # started over before


def test_damaged_state_files_get_one_error_naming_the_damage(tmp_path):
    x, y = _blobs()
    out = tmp_path / "run"
    ActiveLearner(_tiny(steps=1), (x, y), out=out).run(progress=False)
    good = json.loads((out / "state.json").read_text())
    damage = {
        "history": (lambda st: st.pop("history"), "'history' is missing"),
        "rng": (lambda st: st.update(rng_state="AAAA"), "rng_state is not a saved"),
        "index": (lambda st: st["labelled"].__setitem__(0, 10**6), "indices outside the pool"),
        "lengths": (lambda st: st["labels"].pop(), "indices but"),
        "record": (lambda st: st["history"][0].pop("n_labels"), "history entry 0 lacks"),
        "twice": (lambda st: st["labelled"].__setitem__(1, st["labelled"][0]), "labelled twice"),
        # these two resumed silently: a 100-class model, or a run that forgot 4 labels
        "class": (lambda st: st["labels"].__setitem__(0, 99), "labels holds something other"),
        "text": (lambda st: st["val_labels"].__setitem__(0, "a"), "val_labels holds"),
        "cut": (lambda st: [st[k].pop() for k in ("labelled", "labels")], "the history accounts"),
        "chain": (lambda st: st["history"][1].update(n_labels=7), "history entry 1 counts 7"),
    }  # each was a KeyError, IndexError or RuntimeError from deep inside a resume before
    for change, message in damage.values():
        state = json.loads(json.dumps(good))
        change(state)
        (out / "state.json").write_text(json.dumps(state))
        with pytest.raises(ValueError, match=f"damaged active-learning state file: .*{message}"):
            ActiveLearner(_tiny(steps=1), (x, y), out=out, resume=True)


def test_extending_a_finished_warm_start_run_matches_one_long_run(tmp_path):
    x, y = _blobs()
    whole = ActiveLearner(_tiny(warm_start=True, steps=4), (x, y)).run(progress=False)
    short = tmp_path / "run"
    ActiveLearner(_tiny(warm_start=True, steps=2), (x, y), out=short).run(progress=False)
    longer = ActiveLearner(_tiny(warm_start=True, steps=4), (x, y), out=short, resume=True)
    extended = longer.run(progress=False)  # its step 2 was trained twice before
    assert extended["labelled"] == whole["labelled"]
    assert [r["scores"] for r in extended["history"]] == [r["scores"] for r in whole["history"]]


def test_pools_of_one_tuples_and_oracles_that_answer_nonsense():
    x, y = _blobs()
    learner = ActiveLearner(_tiny(steps=1), torch.utils.data.TensorDataset(x),
                            oracle=lambda i: y[i])  # fmt: skip
    assert learner.run(progress=False)["history"][-1]["n_labels"] == 10
    nothing = lambda i: None  # noqa: E731
    booleans = lambda i: torch.ones(len(i), dtype=torch.bool)  # noqa: E731
    for oracle, message in [(nothing, "integer labels, got None"), (booleans, "integer labels")]:
        with pytest.raises(ValueError, match=message):
            ActiveLearner(_tiny(), x, oracle=oracle)


def test_resume_names_step_counts_it_cannot_honour(tmp_path):
    x, y = _blobs()
    ActiveLearner(_tiny(steps=3), (x, y), out=tmp_path / "run").run(progress=False)
    with pytest.raises(ValueError, match="it has run 3 steps already; pass steps >= 3"):
        ActiveLearner(_tiny(steps=1), (x, y), out=tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="and the pool has 240"):
        ActiveLearner(_tiny(steps=100), (x, y), out=tmp_path / "run", resume=True)
