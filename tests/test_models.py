"""One contract for every method and architecture, plus known-answer tests per method."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import safety_bhn
from safety_bhn.core import primary
from safety_bhn.core.factorial import FactorialVI
from safety_bhn.core.primary import WeightLayer, batched_layer, max_pool_2x2

METHODS = ["bhn", "mc_dropout", "factorial_vi", "map"]
STOCHASTIC = ["bhn", "mc_dropout", "factorial_vi"]
SMALL = {
    "mlp": {"hidden": [16, 12]},
    "cnn": {"channels": 4, "dense": 8},
}


def small_model(method, arch="mlp", **extra):
    opts = dict(SMALL[arch])
    if method == "bhn":
        opts.update(coupling_layers=2, coupling_hidden=8, init_scale=0.3)
    if method == "factorial_vi":
        opts.update(init_std=0.05)
    opts.update(extra)
    return safety_bhn.build_model(method, arch, (1, 12, 12), n_classes=5, seed=0, device="cpu",
                                  **opts)  # fmt: skip


def data(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("method", METHODS)
class TestContract:
    def test_shapes(self, method, arch):
        model = small_model(method, arch)
        x, _ = data()
        assert model.sample_logits(x, 3, gen()).shape == (3, 6, 5)
        probs = model.predict_proba(x, 4, gen())
        assert probs.shape == (6, 5)
        torch.testing.assert_close(probs.sum(1), torch.ones(6))
        with model.sampled(gen()) as net:
            assert net(x).shape == (6, 5)

    def test_one_draw_per_sample_is_shared_by_the_batch(self, method, arch):
        model = small_model(method, arch)
        x = data(1)[0].expand(4, -1, -1, -1)
        logits = model.sample_logits(x, 5, gen())
        torch.testing.assert_close(logits, logits[:, :1].expand_as(logits))

    def test_chunked_inputs_use_the_same_draw(self, method, arch):
        model = small_model(method, arch)
        x, _ = data(7)
        whole = model.sample_logits(x, 3, gen(5))
        chunked = model.sample_logits(x, 3, gen(5), batch_size=2)
        torch.testing.assert_close(whole, chunked)

    def test_generator_makes_samples_reproducible(self, method, arch):
        model = small_model(method, arch)
        x, _ = data()
        torch.testing.assert_close(
            model.sample_logits(x, 3, gen(1)), model.sample_logits(x, 3, gen(1))
        )
        with model.sampled(gen(2)) as a, model.sampled(gen(2)) as b:
            torch.testing.assert_close(a(x), b(x))
            torch.testing.assert_close(a(x), a(x))

    def test_a_sampled_network_can_be_differentiated_again_and_again(self, method, arch):
        model = small_model(method, arch)
        x, y = data()
        with model.sampled(gen()) as net:
            grads = []
            for _ in range(2):  # a draw holding its graph failed the second backward
                xx = x.clone().requires_grad_()
                F.cross_entropy(net(xx), y).backward()
                grads.append(xx.grad)
        torch.testing.assert_close(grads[0], grads[1])
        assert grads[0].abs().sum() > 0  # FGSM's input gradient is there

    def test_gradients_reach_every_parameter(self, method, arch):
        model = small_model(method, arch)
        x, y = data(8)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(0)
        for _ in range(3):  # zero-initialised coupling outputs pass gradients on after a step
            opt.zero_grad()
            model.loss(x, y, n_data=100).backward()
            opt.step()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    def test_save_load_round_trip(self, method, arch, tmp_path):
        model = small_model(method, arch)
        x, _ = data()
        path = model.save(tmp_path / "sub" / "model.pt")
        loaded = safety_bhn.load(path, device="cpu")
        assert type(loaded) is type(model)
        torch.testing.assert_close(
            loaded.sample_logits(x, 4, gen(3)), model.sample_logits(x, 4, gen(3))
        )
        assert not list(tmp_path.glob("sub/.*tmp"))


@pytest.mark.parametrize("method", STOCHASTIC)
def test_stochastic_methods_draw_different_functions(method):
    logits = small_model(method).sample_logits(data()[0], 4, gen())
    assert (logits[0] - logits[1]).abs().max() > 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CI has none)")
@pytest.mark.parametrize("method", STOCHASTIC)
def test_a_cpu_generator_draws_the_same_samples_on_every_device(method):
    model = small_model(method)
    x = data()[0]
    expected = model.to("cpu").sample_logits(x, 3, gen())
    # the noise comes from the generator on its own device, whatever the model's device
    on_gpu = model.to("cuda").sample_logits(x, 3, gen())
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=1e-4, atol=1e-4)


def test_map_samples_are_identical():
    logits = small_model("map").sample_logits(data()[0], 4, gen())
    torch.testing.assert_close(logits, logits[:1].expand_as(logits))


def test_seed_none_draws_fresh_weights_from_the_global_rng_and_a_seed_leaves_it_alone(tmp_path):
    def weights(**kwargs):
        return safety_bhn.build_model("map", hidden=[8], in_shape=(4,), device="cpu", **kwargs)

    # seed=None restored the global RNG after drawing: every call built the same weights
    a, b = weights(), weights()
    assert not torch.equal(a.net[0].weight, b.net[0].weight)
    torch.manual_seed(3)
    first = weights().net[0].weight
    torch.manual_seed(3)
    assert torch.equal(weights().net[0].weight, first)  # reproducible with the global seed
    a.save(tmp_path / "a.pt")
    state = torch.get_rng_state()
    weights(seed=0)
    safety_bhn.load(tmp_path / "a.pt", device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # a seed or a load draws nothing global


@pytest.mark.parametrize("chunk_elements", [2**22, 1, 200])
def test_bhn_matches_explicit_weight_norm_network(chunk_elements):
    """Known answer: w = g * v / ||v|| per sample, run as a plain MLP one sample at a time.

    Small ``chunk_elements`` make ``forward_draw`` split the inputs into chunks (of 1 and of
    4 and 2 inputs), which must not change the result.
    """
    model = small_model("bhn")
    model.chunk_elements = chunk_elements
    x, _ = data()
    draw = model.draw(3, gen())
    logits = model.forward_draw(x, draw)
    g = draw[0].split(model.sizes, dim=1)
    for s in range(3):
        h = x.flatten(1)
        for i in range(len(model.layers)):
            v = model.v[i]
            w = g[i][s, :, None] * v / v.norm(dim=1, keepdim=True)
            h = F.linear(h, w, model.bias[i])
            if i < len(model.layers) - 1:
                h = F.relu(h)
        torch.testing.assert_close(logits[s], h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("chunk_elements", [2**23, 1, 2000])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_factorial_vi_matches_explicit_weights_run_one_sample_at_a_time(arch, chunk_elements, grad):
    """Known answer, also with the inputs split into chunks (of 1, and of 2 or more inputs)
    and without autograd (where pooling takes its fast path)."""
    model = small_model("factorial_vi", arch)
    model.chunk_elements = chunk_elements
    x, _ = data()
    draw = model.draw(2, gen())
    with torch.set_grad_enabled(grad):
        logits = model.forward_draw(x, draw)
    for s in range(2):
        h = x if arch == "cnn" else x.flatten(1)
        for i, layer in enumerate(model.layers):
            w, b = draw[i][0][s], draw[i][1][s]
            h = F.conv2d(h, w, b) if layer.kind == "conv" else F.linear(h, w, b)
            for op in layer.after:
                h = {"relu": F.relu, "pool": lambda t: F.max_pool2d(t, 2),
                     "flatten": lambda t: t.flatten(1)}[op](h)  # fmt: skip
        torch.testing.assert_close(logits[s], h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(6, 6), (7, 5), (22, 22)])
def test_max_pool_2x2_matches_f_max_pool2d_with_and_without_autograd(size):
    x = torch.randn(3, 4, 2, *size, generator=gen())
    expected = F.max_pool2d(x.flatten(0, 1), 2).unflatten(0, (3, 4))
    with torch.no_grad():
        torch.testing.assert_close(max_pool_2x2(x), expected, rtol=0, atol=0)
    leaf = x.clone().requires_grad_()
    out = max_pool_2x2(leaf)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.backward(torch.ones_like(out))
    assert leaf.grad.sum() == out.numel()  # each window passes its gradient to one input


@pytest.mark.parametrize("size", [(6, 6), (7, 5), (22, 22)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_2x2_gradient_is_bit_identical_to_f_max_pool2d(size, ties):
    # ReLU zeros, and small integers, put several equal maxima in many windows: the gradient
    # must reach the same input as F.max_pool2d's (the first in row-major order), with the
    # same sign of zero everywhere else, so that training is unchanged to the last bit.
    g = gen()
    x = torch.randn(3, 4, 2, *size, generator=g)
    x = (x * 2).round().relu() if ties else x
    up = torch.randn(3, 4, 2, size[0] // 2, size[1] // 2, generator=g)
    mine, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    max_pool_2x2(mine).backward(up)
    F.max_pool2d(ref.flatten(0, 1), 2).unflatten(0, (3, 4)).backward(up)
    assert torch.equal(mine.grad, ref.grad)
    assert torch.equal(torch.signbit(mine.grad), torch.signbit(ref.grad))
    crop = x[..., : size[0] // 2 * 2, : size[1] // 2 * 2]
    window_max = max_pool_2x2(x).repeat_interleave(2, -2).repeat_interleave(2, -1)
    n_maxima = int((crop == window_max).sum())
    assert (n_maxima > up.numel()) == ties  # some windows hold equal maxima, or none do


@pytest.mark.parametrize("method", METHODS)
def test_cnn_training_is_unchanged_by_the_max_pool_backward(method, monkeypatch):
    # Trained weights must equal, to the last bit, those trained with F.max_pool2d's backward.
    x, y = data(n=32)

    def trained():
        model = small_model(method, "cnn")
        safety_bhn.fit(model, (x, y), epochs=2, batch_size=8, lr=1e-2, progress=False)
        return model.state_dict()

    mine = trained()
    reference = lambda h: primary.per_sample(lambda t: F.max_pool2d(t, 2), h)  # noqa: E731
    monkeypatch.setattr(primary._MaxPool2x2, "apply", reference)
    ref = trained()
    assert mine.keys() == ref.keys()
    assert all(torch.equal(mine[k], ref[k]) for k in mine)
    assert not all(torch.equal(mine[k], small_model(method, "cnn").state_dict()[k]) for k in mine)


def test_mc_dropout_matches_manual_masks():
    model = small_model("mc_dropout")
    x, _ = data()
    n, masks = model.draw(2, gen())
    logits = model.forward_draw(x, (n, masks))
    for s in range(2):
        h = x.flatten(1)
        for i, m in enumerate(model.net):
            h = m(h * masks[i][s])
            if i < len(model.net) - 1:
                h = F.relu(h)
        torch.testing.assert_close(logits[s], h)
    assert 0.3 < (masks[1] == 0).float().mean() < 0.7  # p_hidden = 0.5


def test_factorial_vi_closed_form_kl_matches_monte_carlo():
    model = small_model("factorial_vi", init_std=0.2, prior_std=0.3)
    with torch.no_grad():
        for mu in model.w_mu:
            mu.mul_(3)
    torch.manual_seed(0)
    total = 0.0
    n = 4000
    for mu, rho in model._params():
        q = torch.distributions.Normal(mu, F.softplus(rho))
        w = q.sample((n,))
        p = torch.distributions.Normal(0.0, model.prior_std)
        total += (q.log_prob(w) - p.log_prob(w)).sum() / n
    closed = model.kl()
    assert abs(total - closed) / closed < 0.02
    assert isinstance(model, FactorialVI)


def test_bhn_kl_estimate_is_log_q_minus_log_prior():
    model = small_model("bhn")
    g, log_q = model.draw(3, gen())
    prior = torch.distributions.Normal(0.0, model.prior_std).log_prob(g).sum(-1)
    torch.testing.assert_close(model.kl_estimate((g, log_q)), (log_q - prior).mean())


def test_bhn_data_dependent_init_standardises_pre_activations():
    model = small_model("bhn", init_scale=1e-4)
    x = torch.rand(200, 1, 12, 12, generator=gen())
    model.init_from_data(x)
    assert bool(model.initialized)
    g = model.flow.affine.loc.detach()[None]
    first = F.linear(x.flatten(1), model._direction(0)) * g[:, :16] + model.bias[0]
    torch.testing.assert_close(first.mean(0), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(first.std(0), torch.ones(16), atol=1e-3, rtol=0)


@pytest.mark.parametrize("couplings", [0, 2])
def test_bhn_data_dependent_init_reaches_its_units_through_the_flow(couplings):
    """The scales the model draws, not only the flow's location: with couplings they went
    to other units before 2026-12-07 (each coupling started as a shuffle)."""
    model = small_model("bhn", coupling_layers=couplings, init_scale=1e-4)
    x = torch.rand(200, 1, 12, 12, generator=gen())
    model.init_from_data(x)
    g, _ = model.draw(1, gen())
    first = F.linear(x.flatten(1), model._direction(0)) * g[:, :16] + model.bias[0]
    torch.testing.assert_close(first.mean(0), torch.zeros(16), atol=1e-2, rtol=0)
    torch.testing.assert_close(first.std(0), torch.ones(16), atol=1e-2, rtol=0)
    assert torch.allclose(g[0, -5:], torch.ones(5), atol=1e-2)  # the output layer's scales


def test_bhn_with_zero_couplings_is_a_diagonal_gaussian():
    model = small_model("bhn", coupling_layers=0)
    assert len(model.flow.couplings) == 0
    g, log_q = model.draw(2, gen())
    q = torch.distributions.Normal(model.flow.affine.loc, model.flow.affine.log_scale.exp())
    torch.testing.assert_close(log_q, q.log_prob(g).sum(-1))


class TestBadInput:
    def test_unknown_method_suggests_the_fix(self):
        with pytest.raises(ValueError, match="Did you mean 'mc_dropout'"):
            safety_bhn.build_model("mc-dropot")

    def test_unknown_arch_and_option(self):
        with pytest.raises(ValueError, match="architecture"):
            safety_bhn.build_model("map", "resnet")
        with pytest.raises(ValueError, match="coupling_layers"):
            safety_bhn.build_model("map", coupling_layers=3)

    @pytest.mark.parametrize(("method", "arch"), [("bhn", "mlp"), ("factorial_vi", "cnn"),
                                                  ("map", "mlp")])  # fmt: skip
    def test_dropout_rates_only_for_mc_dropout(self, method, arch):
        """p_hidden and the other rates were accepted and ignored by the other methods (their
        layers never drop units: the same loss for p_hidden 0 and 0.9)."""
        with pytest.raises(ValueError, match=f"p_hidden set MC dropout's rates, and method "
                                             f"'{method}' has no dropout"):  # fmt: skip
            safety_bhn.build_model(method, arch, p_hidden=0.5)
        with pytest.raises(ValueError, match="unknown option") as err:
            safety_bhn.build_model(method, arch, bogus=1)
        assert "p_hidden" not in str(err.value)  # not listed among the valid options
        assert safety_bhn.build_model("mc_dropout", arch, p_hidden=0.5).config["options"] == {
            "p_hidden": 0.5
        }

    def test_models_saved_with_an_ignored_dropout_rate_still_load(self, tmp_path):
        model = safety_bhn.build_model("map", hidden=[8], seed=0)
        model.config["options"]["p_hidden"] = 0.5  # accepted (and ignored) before 2026-12-07
        model.save(tmp_path / "old.pt")
        loaded = safety_bhn.load(tmp_path / "old.pt", device="cpu")
        x = torch.rand(3, 1, 28, 28)
        assert torch.equal(loaded.predict_proba(x, 1), model.predict_proba(x, 1))

    @pytest.mark.parametrize("kwargs", [{"hidden": [0]}, {"hidden": [-5]}, {"coupling_layers": -1},
                                        {"p_hidden": 1.0}, {"n_classes": 1}])  # fmt: skip
    def test_bad_sizes(self, kwargs):
        with pytest.raises(ValueError):
            safety_bhn.build_model("bhn", **kwargs)

    @pytest.mark.parametrize(
        ("method", "options", "message"),
        [("factorial_vi", {"init_std": float("nan")}, "init_std must be a non-negative"),
         ("bhn", {"prior_std": float("nan")}, "prior_std must be a non-negative number"),
         ("map", {"weight_decay": float("inf")}, "weight_decay must be a non-negative number"),
         ("bhn", {"coupling_layers": 2.5}, "coupling_layers must be a non-negative integer"),
         ("bhn", {"coupling_hidden": 0}, "coupling_hidden must be a positive integer"),
         ("bhn", {"train_samples": 1.5}, "train_samples must be a positive integer"),
         ("bhn", {"local_draws": "false"}, "local_draws must be True or False"),
         ("mc_dropout", {"p_input": "0.3"}, "p_input must be a number in"),
         ("bhn", {"prob_clip": "0.1"}, "prob_clip must lie in"),
         ("map", {"seed": 1.5}, "seed must be a non-negative integer"),
         # an OverflowError and a "math domain error" in the first loss before
         ("factorial_vi", {"init_std": 1000.0}, r"init_std must be a number in \(0, 100\]"),
         ("bhn", {"prior_std": 1e-200}, "prior_std must be a finite number >= 1e-06"),
         ("bhn", {"coupling_max_log_scale": 0.0},
          "coupling_max_log_scale must be a positive number")],
    )  # fmt: skip
    def test_nan_strings_and_fractions_in_options_are_refused_at_build(
        self, method, options, message
    ):
        # NaN passed the old ``value < 0`` test and gave all-NaN predictions; "false" read as true
        with pytest.raises(ValueError, match=message):
            safety_bhn.build_model(method, hidden=[4], in_shape=(3,), n_classes=2, **options)

    def test_bad_batch_size_and_generator_are_named(self):
        model = safety_bhn.build_model("bhn", hidden=[4], in_shape=(3,), n_classes=2)
        x = torch.rand(5, 3)
        for bad in (0, -1, 2.5):  # ended in torch's split errors
            with pytest.raises(ValueError, match="batch_size must be a positive integer"):
                model.sample_logits(x, 2, batch_size=bad)
            with pytest.raises(ValueError, match="batch_size must be a positive integer"):
                safety_bhn.evaluate(model, x, torch.zeros(5, dtype=torch.long), batch_size=bad)
        with pytest.raises(ValueError, match="generator must be a torch.Generator"):
            model.predict_proba(x, 2, generator=0)  # an AttributeError from deep inside before

    def test_labels_of_any_integer_dtype_work_and_numpy_labels_are_named(self):
        model = safety_bhn.build_model("map", hidden=[4], in_shape=(3,), n_classes=2)
        y = torch.tensor([0, 1, 1, 0])
        assert torch.equal(model.check_targets(y.to(torch.int16), 4), y)  # as int64
        with pytest.raises(TypeError, match="torch.Tensor of class labels, got ndarray"):
            model.check_targets(y.numpy(), 4)
        with pytest.raises(TypeError, match=r"integer class labels .*got torch.float32"):
            model.check_targets(y.float(), 4)

    def test_bad_inputs_to_sample_logits(self):
        model = small_model("bhn")
        x, _ = data()
        with pytest.raises(ValueError, match="shape"):
            model.sample_logits(x[:, :, :5], 2)
        vector = safety_bhn.build_model("map", hidden=[4], in_shape=(5,), n_classes=2)
        with pytest.raises(ValueError, match=r"shape \(3, 4\); expected \(batch, 5\)$"):
            vector.sample_logits(torch.rand(3, 4), 1)  # not "(batch, 5) or (batch, 5)"
        with pytest.raises(TypeError, match="floating"):
            model.sample_logits((x * 255).to(torch.uint8), 2)
        with pytest.raises(ValueError, match="NaN"):
            model.sample_logits(torch.full_like(x, float("nan")), 2)
        with pytest.raises(ValueError, match="n_samples"):
            model.sample_logits(x, 0)

    @pytest.mark.parametrize("bad", [0, -3, True, 2.0, "5", None])
    def test_check_samples_accepts_only_positive_ints(self, bad):
        assert safety_bhn.UncertaintyModel.check_samples(7) == 7
        with pytest.raises(ValueError, match=f"n_samples must be a positive integer.*{bad!r}"):
            safety_bhn.UncertaintyModel.check_samples(bad)

    def test_flattened_inputs_are_accepted_by_mlps(self):
        model = small_model("map")
        x, _ = data()
        torch.testing.assert_close(model.sample_logits(x.flatten(1), 1), model.sample_logits(x, 1))

    def test_missing_or_foreign_checkpoint(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            safety_bhn.load(tmp_path / "nope.pt")
        torch.save({"something": 1}, tmp_path / "other.pt")
        with pytest.raises(ValueError, match="not a safety_bhn checkpoint"):
            safety_bhn.load(tmp_path / "other.pt")

    def test_damaged_checkpoints_get_one_clear_error(self, tmp_path):
        model = small_model("bhn")
        model.save(tmp_path / "good.pt")
        payload = torch.load(tmp_path / "good.pt", weights_only=True)
        (tmp_path / "empty.pt").write_bytes(b"")
        (tmp_path / "garbage.pt").write_text("garbage")
        broken = dict(payload, state_dict={k: v for k, v in payload["state_dict"].items()
                                           if k != "initialized"})  # fmt: skip
        torch.save(broken, tmp_path / "missing_key.pt")
        torch.save(dict(payload, config={}), tmp_path / "no_config.pt")
        torch.save(dict(payload, format_version=99), tmp_path / "newer.pt")
        flipped = bytearray((tmp_path / "good.pt").read_bytes())
        middle = len(flipped) // 2
        flipped[middle : middle + 50] = bytes(b ^ 0xFF for b in flipped[middle : middle + 50])
        (tmp_path / "flipped.pt").write_bytes(bytes(flipped))  # loaded with changed weights
        torch.save({"thing": Path("x")}, tmp_path / "pickle.pt")
        (tmp_path / "metrics.json").write_text('{"config": {}}')  # said: holds Python objects
        (tmp_path / "truncated.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:-100])
        unknown = dict(payload, config=dict(payload["config"], method="bhnn"))
        torch.save(unknown, tmp_path / "unknown_method.pt")  # the message did not name the file
        cases = {
            "empty.pt": "is empty",
            "garbage.pt": "not a safety_bhn checkpoint, or a truncated one: model.save writes",
            "missing_key.pt": "damaged safety_bhn checkpoint",
            "no_config.pt": "damaged safety_bhn checkpoint",
            "newer.pt": "by a newer safety_bhn",
            "unknown_method.pt": "damaged safety_bhn checkpoint.*unknown method 'bhnn'",
            "flipped.pt": "is damaged: its part .* fails its checksum",
            "pickle.pt": "holds Python objects that a safe load",
            "metrics.json": r"no complete zip \(it looks like JSON, such as a run's metrics",
            "truncated.pt": "or a truncated one",
        }
        for name, message in cases.items():
            with pytest.raises(ValueError, match=message) as err:
                safety_bhn.load(tmp_path / name)
            assert str(tmp_path / name) in str(err.value)
            assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)

    def test_float64_inputs_are_cast_and_zero_samples_refused_everywhere(self):
        model = small_model("mc_dropout")
        x, y = data()
        gen = torch.Generator().manual_seed(0)
        probs = model.predict_proba(x.double(), 3, gen)
        torch.testing.assert_close(
            probs, model.predict_proba(x, 3, torch.Generator().manual_seed(0))
        )
        with pytest.raises(ValueError, match="n_samples must be a positive integer"):
            safety_bhn.evaluate(model, x, y, n_samples=0)

    def test_unknown_or_absent_devices_are_named(self, tmp_path):
        with pytest.raises(ValueError, match="unknown device 'gpu'.*did you mean 'cuda'"):
            safety_bhn.build_model("map", hidden=[8], device="gpu")
        small_model("map").save(tmp_path / "m.pt")
        with pytest.raises(ValueError, match="unknown device 'tpu'"):
            safety_bhn.load(tmp_path / "m.pt", device="tpu")
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="no CUDA device; use device 'cpu'"):
                safety_bhn.build_model("map", hidden=[8], device="cuda")
        # torch tracebacks on first use before ('not linked with support for mps devices'),
        # and 'meta' was taken, predicting empty tensors
        for device in ("mps", "xpu", "meta"):
            with pytest.raises(ValueError, match=f"device '{device}': the toolkit runs on 'cpu'"):
                safety_bhn.build_model("map", hidden=[8], device=device)
            with pytest.raises(ValueError, match=f"device '{device}': the toolkit runs on 'cpu'"):
                safety_bhn.load(tmp_path / "m.pt", device=device)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_bhn_per_input_draws_match_running_each_input_alone(arch):
    """Training's local draws: input b under g[:, b] gives what x[b] alone gives under it."""
    model = small_model("bhn", arch)
    x, _ = data(4)
    g, log_q = model.draw(2 * 4, gen())
    per_input = model.forward_draw(x, (g.view(2, 4, -1), log_q))
    for b in range(4):
        alone = model.forward_draw(x[b : b + 1], (g.view(2, 4, -1)[:, b], log_q))
        torch.testing.assert_close(per_input[:, b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_bhn_loss_with_local_or_shared_draws_estimates_the_same_elbo():
    x, y = data(8)
    model = small_model("bhn")
    torch.manual_seed(0)
    values = {}
    with torch.no_grad():
        for local in (True, False):
            model.local_draws = local
            values[local] = torch.tensor([model.loss(x, y, 100).item() for _ in range(400)])
    se = ((values[True].var() + values[False].var()) / 400).sqrt()
    assert abs(values[True].mean() - values[False].mean()) < 4 * se


def test_bhn_data_dependent_init_keeps_scales_bounded_on_sparse_inputs():
    model = safety_bhn.build_model("bhn", in_shape=(20,), n_classes=3, hidden=[16],
                                   coupling_layers=0, seed=0, device="cpu")  # fmt: skip
    x = torch.zeros(8, 20)
    x[:, 3] = 1.0  # the same one-hot observation 8 times: no unit varies
    model.init_from_data(x)
    loc = model.flow.affine.loc.detach()
    assert torch.isfinite(loc).all() and loc.abs().max() <= 100


def test_bhn_prior_centred_at_init_scales():
    x, _ = data(20)
    model = small_model("bhn", "cnn", prior_mean="init")
    model.init_from_data(x)
    g0 = model.flow.affine.loc.detach()
    assert torch.equal(model.prior_loc, g0)
    g = torch.randn(3, g0.numel(), generator=gen())
    expected = torch.distributions.Normal(g0, model.prior_std).log_prob(g).sum(-1)
    torch.testing.assert_close(model.log_prior(g), expected)
    zero = small_model("bhn", "cnn")
    zero.init_from_data(x)
    torch.testing.assert_close(
        zero.log_prior(g), torch.distributions.Normal(0.0, 1.0).log_prob(g).sum(-1)
    )


def test_bhn_prior_mean_survives_save_and_load(tmp_path):
    x, _ = data(20)
    model = small_model("bhn", prior_mean="init")
    model.init_from_data(x)
    model.save(tmp_path / "m.pt")
    loaded = safety_bhn.load(tmp_path / "m.pt", device="cpu")
    assert loaded.prior_mean.value == "init"
    assert torch.equal(loaded.prior_loc, model.prior_loc)


def test_numpy_options_are_stored_as_plain_numbers_that_load_reads(tmp_path):
    model = safety_bhn.build_model("bhn", in_shape=(np.int64(4),), n_classes=np.int64(3),
                                   hidden=np.array([8]), prior_std=np.float64(0.5),
                                   local_draws=np.bool_(True), seed=0)  # fmt: skip
    assert model.config["options"] == {"hidden": [8], "prior_std": 0.5, "local_draws": True}
    assert type(model.config["options"]["prior_std"]) is float  # np.float64 is a float subclass
    path = model.save(tmp_path)  # a folder gets model.pt, which load finds there
    assert path == tmp_path / "model.pt"
    loaded = safety_bhn.load(tmp_path, device="cpu")
    x, gen = torch.rand(3, 4), lambda: torch.Generator().manual_seed(0)
    n = np.int64(5)  # integer NumPy scalars count as sample numbers
    torch.testing.assert_close(loaded.sample_logits(x, n, gen()), model.sample_logits(x, 5, gen()))
    with pytest.raises(ValueError, match="option prior_std=.*number, string or list"):
        safety_bhn.build_model("bhn", in_shape=(4,), n_classes=3, prior_std=object())


def test_bhn_coupling_log_scale_bound_reaches_every_coupling_and_survives_save_load(tmp_path):
    model = safety_bhn.build_model(
        "bhn", in_shape=(4,), n_classes=3, hidden=[8], coupling_layers=2,
        coupling_max_log_scale=0.5, seed=0,
    )  # fmt: skip
    assert [c.max_log_scale for c in model.flow.couplings] == [0.5, 0.5]
    loaded = safety_bhn.load(model.save(tmp_path), device="cpu")
    assert [c.max_log_scale for c in loaded.flow.couplings] == [0.5, 0.5]
    default = safety_bhn.build_model("bhn", in_shape=(4,), n_classes=3, hidden=[8], seed=0)
    assert {c.max_log_scale for c in default.flow.couplings} == {3.0}


def test_bhn_unknown_prior_mean_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="prior_mean 'inti'.*Did you mean 'init'"):
        small_model("bhn", prior_mean="inti")


def test_clipped_nll_known_answer_and_no_gradient_outside_the_clip():
    model = small_model("map", prob_clip=0.001)
    # p(true class): ~1 (clipped to 0.999), 0.5 (inside), ~0 (clipped to 0.001)
    logits = torch.tensor([[20.0, 0.0], [0.0, 0.0], [-20.0, 0.0]], requires_grad=True)
    y = torch.zeros(3, dtype=torch.long)
    loss = model.nll(logits, y)
    expected = -(torch.tensor([0.999, 0.5, 0.001]).log().mean())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[0].abs().max() == 0 and logits.grad[2].abs().max() == 0
    assert logits.grad[1].abs().max() > 0
    plain = small_model("map")
    torch.testing.assert_close(plain.nll(logits, y), F.cross_entropy(logits, y))


@pytest.mark.parametrize("method", METHODS)
def test_every_loss_uses_the_clipped_likelihood(method):
    x, y = data()
    extra = {"weight_decay": 0.0} if method in ("map", "mc_dropout") else {}
    free = small_model(method, **extra).loss(x, y, n_data=10**12)
    assert abs(free.item() - torch.log(torch.tensor(2.0)).item()) > 0.3  # p(y) near 1/5, not 1/2
    clipped = small_model(method, prob_clip=0.4999, **extra)
    loss = clipped.loss(x, y, n_data=10**12)  # KL / n_data vanishes
    assert -torch.log(torch.tensor(0.5001)) <= loss <= -torch.log(torch.tensor(0.4999)) + 1e-6


@pytest.mark.parametrize("bad", [-0.1, 0.5, 1.0, True])
def test_bad_prob_clip_is_refused(bad):
    with pytest.raises(ValueError, match="prob_clip"):
        small_model("bhn", prob_clip=bad)


def test_prob_clip_survives_save_and_load(tmp_path):
    model = small_model("mc_dropout", prob_clip=0.001)
    model.save(tmp_path / "m.pt")
    assert safety_bhn.load(tmp_path / "m.pt", device="cpu").prob_clip == 0.001


@pytest.mark.parametrize("shared_input", [True, False])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_batched_layer_applies_each_samples_weights_as_a_plain_layer_would(kind, shared_input):
    g = torch.Generator().manual_seed(0)
    n_samples, batch = 3, 5
    if kind == "conv":
        layer = WeightLayer("conv", 2, 4, 3, (2, 7, 7), 0.0, ())
        h = torch.randn(1 if shared_input else n_samples, batch, 2, 7, 7, generator=g)
        weight = torch.randn(n_samples, 4, 2, 3, 3, generator=g)
    else:
        layer = WeightLayer("linear", 6, 4, 0, (6,), 0.0, ())
        h = torch.randn(1 if shared_input else n_samples, batch, 6, generator=g)
        weight = torch.randn(n_samples, 4, 6, generator=g)
    bias = torch.randn(n_samples, 4, generator=g)
    plain = F.conv2d if kind == "conv" else F.linear
    expected = torch.stack(
        [plain(h[0 if shared_input else s], weight[s], bias[s]) for s in range(n_samples)]
    )
    torch.testing.assert_close(batched_layer(layer, h, weight, bias), expected)


def test_a_cnn_too_small_for_its_kernel_names_the_kernel_and_the_least_size():
    with pytest.raises(ValueError, match=r"kernel_size=5 \(needs at least 10x10\)"):
        safety_bhn.build_model("map", "cnn", (1, 9, 9), kernel_size=5)
    assert safety_bhn.build_model("map", "cnn", (1, 10, 10), kernel_size=5) is not None


def test_small_api_mistakes_are_named(tmp_path):
    """Each failed inside torch or Python, or did something else than asked: an int as
    MAP's generator was taken; save("new/") wrote a file named new; flow.sample(-1) and
    select_classes(x, y, "12") (read as [1, 2]) gave raw or misleading errors."""
    from safety_bhn.core.flows import NormalizingFlow
    from safety_bhn.data import select_classes

    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        small_model("map").sampled(0)
    path = small_model("map").save(f"{tmp_path / 'new'}/")
    assert path == tmp_path / "new" / "model.pt" and safety_bhn.load(tmp_path / "new")
    with pytest.raises(ValueError, match="n must be a positive integer, got -1"):
        NormalizingFlow(2, 1).sample(-1)
    with pytest.raises(ValueError, match="classes must be a list of integer labels .* got '12'"):
        select_classes(torch.rand(3, 2), torch.tensor([0, 1, 2]), "12")
