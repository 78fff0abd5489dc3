"""Training: loss goes down, accuracy well above chance, seeded runs reproduce, early stopping."""

import math
import warnings

import numpy as np
import pytest
import torch

import safety_bhn
from safety_bhn.core.metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    nll,
    predictive,
)
from safety_bhn.data import embedded_mnist


@pytest.fixture(scope="module")
def mnist_small():
    x, y = embedded_mnist("train")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = perm[:1000], perm[1000:1300]
    return (x[train], y[train]), (x[val], y[val])


def _model(method):
    opts = {"coupling_layers": 2} if method == "bhn" else {}
    return safety_bhn.build_model(method, hidden=[64], seed=0, device="cpu", **opts)


@pytest.mark.parametrize("method", ["bhn", "mc_dropout", "factorial_vi", "map"])
def test_short_training_lowers_the_loss_and_beats_chance(method, mnist_small):
    train, val = mnist_small
    model = _model(method)
    history = safety_bhn.fit(model, train, val, epochs=3, lr=3e-3, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    metrics = safety_bhn.evaluate(model, *val, n_samples=10)
    assert metrics["accuracy"] > 0.7  # chance is 0.1


@pytest.mark.parametrize("method", ["bhn", "mc_dropout", "factorial_vi", "map"])
def test_fit_resumes_from_its_checkpoint_exactly(method, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    xv, yv = torch.rand(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)

    def build():
        opts = {"coupling_layers": 2} if method == "bhn" else {}
        return safety_bhn.build_model(method, hidden=[8], in_shape=(6,), n_classes=3, seed=0,
                                      device="cpu", **opts)  # fmt: skip

    # NumPy settings once made a checkpoint that weights_only loading called damaged
    kw = dict(epochs=6, batch_size=32, lr_schedule="cosine", lr_warmup=np.float64(0.1),
              grad_clip=np.float32(50.0), progress=False)  # fmt: skip
    whole = build()
    history = safety_bhn.fit(whole, (x, y), (xv, yv), **kw)
    path, model, calls = tmp_path / "fit.pt", build(), []
    loss = type(model).loss

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 13:  # in epoch 4 of 6 (4 steps an epoch)
            raise KeyboardInterrupt
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        safety_bhn.fit(model, (x, y), (xv, yv), checkpoint=path, checkpoint_seconds=0, **kw)
    monkeypatch.setattr(type(model), "loss", loss)
    assert path.is_file()
    with pytest.raises(ValueError, match="epochs: saved 6, now 7"):
        safety_bhn.fit(build(), (x, y), (xv, yv), checkpoint=path, **{**kw, "epochs": 7})
    with pytest.raises(ValueError, match="data: saved"):  # other data of the same size
        safety_bhn.fit(build(), (x.flip(0), y), (xv, yv), checkpoint=path, **kw)
    saved = torch.load(path, weights_only=True)  # a checkpoint from before 2026-12-06 ...
    del saved["settings"]["data"]  # ... has no data fingerprint: it still resumes
    torch.save(saved, path)
    resumed = build()  # a fresh process: a new model, the same call
    again = safety_bhn.fit(resumed, (x, y), (xv, yv), checkpoint=path, **kw)
    assert again.train_loss == history.train_loss and again.best_epoch == history.best_epoch
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not path.exists()


def test_fit_keeps_a_finished_checkpoint_when_asked_and_returns_it_without_training(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 6, generator=g), torch.randint(0, 3, (60,), generator=g)
    xv, yv = x[:20], y[:20]

    def build():
        return safety_bhn.build_model("map", hidden=[8], in_shape=(6,), n_classes=3, seed=0,
                                      device="cpu")  # fmt: skip

    kw = dict(epochs=5, patience=1, select="accuracy", progress=False)  # may stop early
    path, first = tmp_path / "fit.pt", build()
    history = safety_bhn.fit(first, (x, y), (xv, yv), checkpoint=path, keep_checkpoint=True, **kw)
    saved = torch.load(path, weights_only=True)
    assert saved["finished"] is True and saved["device"] == "cpu"
    saved["device"] = "cuda"  # as if saved on a GPU: its random states are not the CPU's
    torch.save(saved, path)
    again_model = build()
    with pytest.warns(UserWarning, match="saved training on cuda and resumes on cpu"):
        again = safety_bhn.fit(again_model, (x, y), (xv, yv), checkpoint=path, **kw)
    assert again.train_loss == history.train_loss and again.epochs_run == history.epochs_run
    for a, b in zip(first.state_dict().values(), again_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not path.exists()  # kept only when asked
    with pytest.raises(ValueError, match="keep_checkpoint=True keeps the file checkpoint names"):
        safety_bhn.fit(build(), (x, y), keep_checkpoint=True, epochs=1, progress=False)


def test_fit_without_validation_names_the_final_epoch_as_the_one_kept():
    x, y = torch.rand(40, 6), torch.randint(0, 3, (40,))
    model = safety_bhn.build_model("map", hidden=[8], in_shape=(6,), n_classes=3, device="cpu")
    assert safety_bhn.fit(model, (x, y), epochs=3, progress=False).best_epoch == 2  # was -1


def test_fit_warns_when_validation_holds_classes_training_lacks():
    x, y = embedded_mnist("train")  # grouped by class: the tail is all nines
    model = _model("map")
    with pytest.warns(UserWarning, match=r"classes \[9\] that the training labels lack"):
        safety_bhn.fit(model, (x[:200], y[:200]), (x[-50:], y[-50:]), epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a shuffled split is silent
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        safety_bhn.fit(model, (x[perm[:200]], y[perm[:200]]), (x[perm[200:300]], y[perm[200:300]]),
                       epochs=1, progress=False)  # fmt: skip


def test_fit_is_reproducible_with_a_seed(mnist_small):
    train, _ = mnist_small
    a, b = _model("bhn"), _model("bhn")
    safety_bhn.fit(a, train, epochs=1, seed=3, progress=False)
    safety_bhn.fit(b, train, epochs=1, seed=3, progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=name)


def test_early_stopping_keeps_the_best_validation_weights(mnist_small):
    train, val = mnist_small
    model = _model("map")
    history = safety_bhn.fit(model, train, val, epochs=30, lr=3e-2, patience=2, progress=False)
    assert history.epochs_run < 30
    assert history.best_epoch == history.val_epochs[history.val_nll.index(min(history.val_nll))]
    final = safety_bhn.evaluate(model, *val, n_samples=1)["nll"]
    assert final == pytest.approx(min(history.val_nll), rel=1e-5)


def test_select_accuracy_keeps_the_first_most_accurate_epoch(mnist_small):
    """With select="accuracy" the kept weights are those of the first epoch with the highest
    validation accuracy, which here differs from the lowest-NLL epoch: a high rate makes the
    net overconfident (NLL rises) while accuracy still moves."""
    train, val = mnist_small
    model = _model("map")
    history = safety_bhn.fit(model, train, val, epochs=8, lr=3e-2, select="accuracy",
                             progress=False)  # fmt: skip
    acc = history.val_accuracy
    assert history.best_epoch == history.val_epochs[acc.index(max(acc))]
    assert history.best_epoch != history.val_epochs[history.val_nll.index(min(history.val_nll))]
    kept = safety_bhn.evaluate(model, *val, n_samples=1)
    assert kept["accuracy"] == pytest.approx(max(acc))
    assert kept["nll"] == pytest.approx(history.val_nll[acc.index(max(acc))], rel=1e-5)


def test_select_last_keeps_the_final_weights(mnist_small):
    """With select="last" the kept weights are the final epoch's: the same as a run with no
    validation set at all, although validation NLL was lowest at an earlier epoch."""
    train, val = mnist_small
    kept, plain = _model("map"), _model("map")
    history = safety_bhn.fit(kept, train, val, epochs=8, lr=3e-2, select="last", progress=False)
    safety_bhn.fit(plain, train, epochs=8, lr=3e-2, progress=False)
    assert history.best_epoch == 7 and history.val_epochs == list(range(8))
    assert min(history.val_nll) < history.val_nll[-1]  # NLL selection would have kept another
    for (name, pa), pb in zip(kept.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=name)
    final = safety_bhn.evaluate(kept, *val, n_samples=1)["nll"]
    assert final == pytest.approx(history.val_nll[-1], rel=1e-5)


def test_select_last_refuses_patience(mnist_small):
    train, val = mnist_small
    with pytest.raises(ValueError, match="patience=2 .* select='last'"):
        safety_bhn.fit(_model("map"), train, val, epochs=1, select="last", patience=2)


def test_validation_settings_without_validation_data_are_refused(mnist_small):
    train, _ = mnist_small  # they were silently ignored before
    with pytest.raises(ValueError, match="patience=2 chooses weights on validation data"):
        safety_bhn.fit(_model("map"), train, epochs=1, patience=2)
    with pytest.raises(ValueError, match="select='accuracy' chooses weights on validation"):
        safety_bhn.fit(_model("map"), train, epochs=1, select="accuracy")


def test_metrics_refuse_nan_predictions():
    probs = torch.full((3, 2), float("nan"))  # a bincount error from deep inside before
    with pytest.raises(ValueError, match="NaN weights"):
        expected_calibration_error(probs, torch.tensor([0, 1, 0]))


def test_train_loss_is_the_mean_of_the_step_losses_and_a_non_finite_one_stops_fit(
    mnist_small, monkeypatch
):
    (x, y), _ = mnist_small
    model = _model("map")
    seen = []
    loss = model.loss

    def recorded(xb, yb, n, kl_weight=1.0):
        out = loss(xb, yb, n, kl_weight)
        seen.append(out.item() * len(xb))  # Python floats, the reference sum
        return out

    monkeypatch.setattr(model, "loss", recorded)
    history = safety_bhn.fit(model, (x[:250], y[:250]), epochs=1, batch_size=64, progress=False)
    assert len(seen) == 4
    assert history.train_loss == [sum(seen) / 250]

    monkeypatch.setattr(
        model, "loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    )
    with (
        pytest.raises(FloatingPointError, match="training loss became nan in epoch 0"),
        pytest.warns(RuntimeWarning, match=r"retry \d of 3"),  # tried again first
    ):
        safety_bhn.fit(model, (x[:250], y[:250]), epochs=2, progress=False)


def test_a_diverged_epoch_is_rolled_back_to_its_start_and_trained_again(mnist_small, monkeypatch):
    (x, y), _ = mnist_small
    model = _model("bhn")
    loss, calls, starts = model.loss, [], {}
    steps = 4  # 250 examples in batches of 64

    def blows_up_once(xb, yb, n, kl_weight=1.0):
        calls.append(None)
        if len(calls) in (steps + 1, 2 * steps + 1):  # epoch 1's first step, then its retry's
            starts[len(calls)] = [p.detach().clone() for p in model.parameters()]
        out = loss(xb, yb, n, kl_weight)
        # the bad attempt: its updates are applied, then rolled back
        return out * 1e6 if steps < len(calls) <= 2 * steps else out

    monkeypatch.setattr(model, "loss", blows_up_once)
    with pytest.warns(RuntimeWarning, match="training the epoch again from its start"):
        history = safety_bhn.fit(model, (x[:250], y[:250]), epochs=3, batch_size=64, progress=False)
    assert history.retried_epochs == [1] and history.epochs_run == 3
    assert len(calls) == 4 * steps and len(history.train_loss) == 3
    assert max(history.train_loss) < 10  # the diverged attempt's mean is not recorded
    # the retry starts from the very weights the bad attempt started from
    for before, again in zip(starts[steps + 1], starts[2 * steps + 1], strict=True):
        torch.testing.assert_close(before, again, rtol=0, atol=0)


def test_an_epoch_that_keeps_diverging_stops_training_and_keeps_the_last_good_weights(
    mnist_small, monkeypatch
):
    (x, y), _ = mnist_small
    model = _model("map")
    loss, calls, start = model.loss, [], []
    steps = 4  # 250 examples in batches of 64

    def blows_up_from_epoch_2(xb, yb, n, kl_weight=1.0):
        calls.append(None)
        if len(calls) == 2 * steps + 1:  # epoch 2's first step
            start.extend(p.detach().clone() for p in model.parameters())
        out = loss(xb, yb, n, kl_weight)
        return out * 1e6 if len(calls) > 2 * steps else out

    monkeypatch.setattr(model, "loss", blows_up_from_epoch_2)
    with pytest.warns(RuntimeWarning) as warned:
        history = safety_bhn.fit(model, (x[:250], y[:250]), epochs=5, batch_size=64, progress=False)
    told = [str(w.message) for w in warned]
    assert [m.endswith(f"(retry {k} of 3)") for k, m in enumerate(told[:3], 1)] == [True] * 3
    assert "training stops after 2 epochs and keeps the last one" in told[3] and len(told) == 4
    assert history.diverged_epoch == 2 and history.retried_epochs == [2, 2, 2]
    assert history.epochs_run == 2 and history.best_epoch == 1 and len(history.train_loss) == 2
    assert len(calls) == (2 + 4) * steps  # two good epochs, then four tries of epoch 2
    for kept, before in zip(model.parameters(), start, strict=True):
        torch.testing.assert_close(kept.detach(), before, rtol=0, atol=0)


def test_fit_accepts_a_dataset(mnist_small):
    (x, y), _ = mnist_small
    ds = torch.utils.data.TensorDataset(x[:200], y[:200])
    assert safety_bhn.fit(_model("map"), ds, epochs=1, progress=False).epochs_run == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epochs": 0}, "epochs"), ({"batch_size": -1}, "batch_size"), ({"lr": 0}, "lr"),
     ({"kl_anneal": 2.0}, "kl_anneal"), ({"lr_schedule": "cosin"}, "Did you mean 'cosine'"),
     ({"lr_warmup": -0.1}, "lr_warmup"), ({"select": "acuracy"}, "Did you mean 'accuracy'"),
     ({"grad_clip": 0}, "grad_clip must be positive"), ({"grad_clip": -1.0}, "grad_clip"),
     ({"lr": float("inf")}, "lr must be a positive number"),  # gave NaN weights silently
     ({"lr": "1e-3"}, "lr must be a positive number"), ({"seed": 1.5}, "seed must be"),
     ({"patience": 0}, "patience must be a positive integer"),
     ({"grad_clip": True}, "grad_clip must be positive"),
     ({"lr_warmup": float("nan")}, "lr_warmup must lie in"),
     ({"eval_every": 2}, "eval_every=2 is more than epochs=1"),  # never validated before
     ({"patience": 2, "select": "last"}, "select='last' keeps the final epoch")],
)  # fmt: skip
def test_bad_hyper_parameters(kwargs, match, mnist_small):
    train, val = mnist_small
    with pytest.raises(ValueError, match=match):
        safety_bhn.fit(_model("map"), train, val, **{"epochs": 1, **kwargs})


def test_a_checkpoint_that_names_a_folder_is_refused_before_training(mnist_small, tmp_path):
    train, _ = mnist_small
    model = _model("map")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="is a folder; pass a file in it"):
        safety_bhn.fit(model, train, epochs=1, checkpoint=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("schedule", "warmup"),
    [("constant", 0.0), ("cosine", 0.0), ("cosine", 0.25), ("constant", 0.25)],
)
def test_lr_schedule_sets_the_rate_of_every_step(schedule, warmup, mnist_small, monkeypatch):
    """Step t of T sees lr * 0.5 * (1 + cos(pi t / T)) (cosine) or lr, times (t + 1) / W for
    the first W = ceil(warmup * T) steps."""
    (x, y), _ = mnist_small
    seen = []
    adam_step = torch.optim.Adam.step

    def spying_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spying_step)
    safety_bhn.fit(_model("map"), (x[:200], y[:200]), epochs=3, lr=0.01, batch_size=50,
                   lr_schedule=schedule, lr_warmup=warmup, progress=False)  # fmt: skip
    total, w = 3 * 4, math.ceil(warmup * 12)
    if schedule == "cosine":
        want = [0.01 * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    else:
        want = [0.01] * total
    want = [lr * min(1.0, (t + 1) / w) if w else lr for t, lr in enumerate(want)]
    assert seen == pytest.approx(want)


def test_validation_labels_are_checked_before_training(mnist_small, monkeypatch):
    (x, y), _ = mnist_small
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TypeError, match="val: y must hold integer class labels"):
        safety_bhn.fit(_model("map"), (x[:10], y[:10]), (x[:5], y[:5].float()), epochs=1)


def test_a_bhn_trained_on_one_example_stays_finite():
    model = safety_bhn.build_model("bhn", hidden=[8], in_shape=(4,), n_classes=3, seed=0)
    x, y = torch.rand(1, 4), torch.tensor([2])
    safety_bhn.fit(model, (x, y), epochs=3, progress=False)  # one example: no spread to init on
    assert torch.isfinite(model.predict_proba(torch.rand(5, 4), 4)).all()


def test_mismatched_or_bad_labels(mnist_small):
    (x, y), _ = mnist_small
    with pytest.raises(ValueError, match="examples"):
        safety_bhn.fit(_model("map"), (x[:10], y[:9]), epochs=1)
    with pytest.raises(ValueError, match="labels outside"):
        safety_bhn.fit(_model("map"), (x[:10], y[:10] + 10), epochs=1)


def test_metrics_known_answers():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    y = torch.tensor([0, 1, 1, 0])
    assert nll(probs, y) == pytest.approx(
        -torch.tensor([0.9, 0.8, 0.4, 0.5]).log().mean().item(), rel=1e-6
    )
    brier = ((0.1**2 * 2) + (0.2**2 * 2) + (0.6**2 * 2) + (0.5**2 * 2)) / 4
    assert brier_score(probs, y) == pytest.approx(brier, rel=1e-6)
    # 2 bins: [0, .5) is empty; [.5, 1] holds all: conf = mean(.9,.8,.6,.5) = .7, acc = 3/4
    # (argmax of [.5, .5] is class 0, which is right).
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(0.05, abs=1e-6)
    perfect = torch.eye(2)[y]
    assert expected_calibration_error(perfect, y) == pytest.approx(0.0)
    wrong = torch.tensor([[1.0, 0.0]])  # a zero probability: floored at 1e-12, 27.6 nats
    for dtype in (torch.float32, torch.bfloat16, torch.float16):  # float16 gave inf
        assert nll(wrong.to(dtype), torch.tensor([1])) == pytest.approx(-math.log(1e-12))


@pytest.mark.parametrize("metric", [accuracy, nll, brier_score, expected_calibration_error])
def test_metrics_refuse_logits_and_labels_outside_the_classes(metric):
    probs, y = torch.full((5, 3), 1 / 3), torch.tensor([0, 1, 2, 0, 1])
    bad = [((probs, torch.tensor([0, 1, 2, 0, 5])), ValueError, "labels from 0 to 5, outside 0..2"),
           ((probs, y.float()), TypeError, "integer class labels"),  # accuracy 0.6 silently
           ((torch.randn(5, 3), y), ValueError, "pass probabilities, not logits|sum to one"),
           ((5 * torch.rand(5, 3), y), ValueError, "do not sum to one"),  # Brier 104 silently
           ((probs, [0, 1, 2, 0, 1]), TypeError, "must be torch tensors")]  # fmt: skip
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            metric(*args)
    assert metric(probs, y.int()) == metric(probs, y)  # int32 labels are fine


def test_ece_names_a_bad_bin_count_and_predictive_keeps_the_mode_on_errors():
    probs, y = torch.eye(3)[[0, 1, 2]], torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        expected_calibration_error(probs, y, 0)
    model = _model("mc_dropout")
    model.train()
    with pytest.raises(ValueError):
        predictive(model, torch.rand(5, 7), 2)  # the wrong input shape
    assert model.training  # left in eval mode before


def test_accuracy_is_exact_and_empty_inputs_are_refused():
    # float32's mean made 9500 of 10000 0.94999999, which then missed a 95% target
    y = torch.zeros(10000, dtype=torch.long)
    probs = torch.eye(2)[(torch.arange(10000) >= 9500).long()]
    assert accuracy(probs, y) == 0.95
    assert accuracy(torch.eye(3)[[0, 1, 2]], torch.tensor([0, 1, 0])) == 2 / 3
    with pytest.raises(ValueError, match="no inputs"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize(
    "field, value, message",
    [("method", "bhnn", "Did you mean 'bhn'"), ("arch", "mpl", "Did you mean 'mlp'"),
     ("lr_schedule", "cosin", "Did you mean 'cosine'"), ("select", "acuracy", "Did you mean"),
     ("lr_warmup", -0.5, "lr_warmup must lie in"), ("seed", -1, "seed must be"),
     ("patience", 0, "patience must be"), ("kl_anneal", 2.0, "kl_anneal must be"),
     ("hidden", [0], "hidden must be"), ("hidden", "800", "hidden must be a non-empty list"),
     ("coupling_layers", 1.5, "coupling_layers must be")],
)  # fmt: skip
def test_train_config_validate_names_the_bad_field(field, value, message):
    from safety_bhn.runs import TrainConfig

    assert TrainConfig().validate() == TrainConfig()
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_train_config_turns_numpy_values_into_plain_ones():
    from safety_bhn.runs import TrainConfig

    # NumPy values passed validate, trained, then could not be written to metrics.json
    config = TrainConfig(patience=np.int64(5), seed=np.int64(1), hidden=[np.int64(8)],
                         lr_warmup=np.float32(0.25), kl_anneal=np.float64(0.1))  # fmt: skip
    config.validate()
    values = [config.patience, config.seed, *config.hidden, config.lr_warmup, config.kl_anneal]
    assert [type(v) for v in values] == [int, int, int, float, float]


def test_train_config_refuses_validation_settings_without_a_validation_set():
    from safety_bhn.runs import TrainConfig

    for bad in ({"patience": 3}, {"select": "accuracy"}):  # failed only at fit before
        with pytest.raises(ValueError, match="val_size=0 holds none out"):
            TrainConfig(val_size=0, **bad).validate()


@pytest.mark.parametrize("method", ["map", "mc_dropout"])
def test_kl_anneal_is_refused_for_methods_without_a_kl_term(method, mnist_small):
    """Their loss ignores the KL weight: fit(map_model, kl_anneal=0.5) trained exactly as
    without it, and TrainConfig(method="map", kl_anneal=0.5) recorded a ramp that never was."""
    from safety_bhn.runs import TrainConfig

    train, _ = mnist_small
    with pytest.raises(ValueError, match=f"'{method}' has no KL term and would ignore it"):
        safety_bhn.fit(_model(method), train, epochs=1, kl_anneal=0.5, progress=False)
    with pytest.raises(ValueError, match="ramps up the KL term of 'bhn' and 'factorial_vi'"):
        TrainConfig(method=method, kl_anneal=0.5).validate()
    assert TrainConfig(method="factorial_vi", kl_anneal=0.5).validate().kl_anneal == 0.5


def test_train_config_refuses_options_that_contradict_its_fields():
    """options={"coupling_layers": 8} overrode coupling_layers=4 (and the default 12) while
    metrics.json recorded the field's value."""
    from safety_bhn.runs import TrainConfig

    for bad in ({"coupling_layers": 4, "options": {"coupling_layers": 8}},
                {"hidden": [32], "options": {"hidden": [16]}}):  # fmt: skip
        with pytest.raises(ValueError, match=r"options\['\w+'\]=.* contradicts .* set \w+ inst"):
            TrainConfig(**bad).validate()
    same = TrainConfig(coupling_layers=4, options={"coupling_layers": np.int64(4)}).validate()
    assert same.model_options()["coupling_layers"] == 4


def test_results_name_the_cpu_and_the_kernels_torch_uses(tmp_path):
    """Models trained on CPUs with different vector units (AVX2, AVX-512) differ in the last
    bits, so every result file names both."""
    from safety_bhn.runs import cpu_words, environment

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")
    kernels = torch.backends.cpu.get_cpu_capability()
    assert cpu_words(info) == f"Test CPU 9000, torch kernels {kernels}"
    assert cpu_words(tmp_path / "missing").endswith(f", torch kernels {kernels}")
    assert f"torch kernels {kernels}" in environment()["machine"]


def test_device_words_name_the_cpu_and_its_thread_count_or_the_gpu():
    from safety_bhn.runs import cpu_words, device_words

    threads = torch.get_num_threads()
    assert device_words("cpu") == f"cpu: {cpu_words()}, {threads} threads"
    assert device_words(torch.device("meta")) == "meta"
    if torch.cuda.is_available():
        assert device_words("cuda") == f"cuda: {torch.cuda.get_device_name()}"


def test_mnist_splits_names_a_bad_size_or_seed_before_reading_data(tmp_path):
    from safety_bhn.runs import mnist_splits

    for kwargs, message in (({"val_size": 1.5}, "val_size must be a non-negative integer"),
                            ({"seed": -1}, "seed must be a non-negative integer")):  # fmt: skip
        with pytest.raises(ValueError, match=message):  # a bare slice TypeError before
            mnist_splits(tmp_path / "no-data-here", **kwargs)
