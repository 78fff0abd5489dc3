"""Safe exploration: the regression posterior, Thompson and safe agents, runner and CLI."""

import csv
import json
import math
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import safety_bhn_envs  # noqa: F401  (registers the environments)
import torch

from safety_bhn._checks import MAX_SEED
from safety_bhn.cli import main
from safety_bhn.core.noise import stream_seed
from safety_bhn.explore import (
    SAFE_DEFAULTS,
    DQNAgent,
    NeuralBandit,
    RandomAgent,
    RegressionPosterior,
    bandit_preset,
    make_agent,
    make_env,
    run_agent,
    shift_detection_auroc,
    summarize,
)


@pytest.fixture(autouse=True)
def one_thread():
    """The agents' networks are tiny: extra intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"bhn": {"coupling_layers": 2, "coupling_hidden": 8}}
METHODS = ["bhn", "mc_dropout", "factorial_vi", "map"]


def _posterior(method, **kw):
    return RegressionPosterior(method, 3, 2, hidden=[16], seed=0, **TINY.get(method, {}), **kw)


def test_map_loss_matches_gaussian_nll_by_hand():
    post = _posterior("map", noise_std=0.5)
    x, a, y = torch.randn(10, 3), torch.randint(0, 2, (10,)), torch.randn(10)
    f = post.model.forward_draw(x, 1)[0][:, :2]
    chosen = f[torch.arange(10), a]
    expected = (0.5 * ((y - chosen) / 0.5) ** 2 + math.log(0.5)).mean()
    expected = expected + post.model.weight_penalty()
    assert post.loss((x, a, y)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_heteroscedastic_loss_matches_gaussian_nll_by_hand():
    post = _posterior("map", noise_std=0.5, heteroscedastic=True, min_noise_std=0.45)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=gen), torch.randn(10, generator=gen)
    a = torch.randint(0, 2, (10,), generator=gen)
    raw = post.model.forward_draw(x, 1)[0]
    assert raw.shape == (10, 4)  # two means, then two log-std offsets
    rows = torch.arange(10)
    sigma = (0.5 * raw[rows, 2 + a].exp()).clamp(min=0.45)
    assert (sigma == 0.45).any() and (sigma > 0.45).any()  # both sides of the floor are tested
    expected = (0.5 * ((y - raw[rows, a]) / sigma) ** 2 + sigma.log()).mean()
    expected = expected + post.model.weight_penalty()
    assert post.loss((x, a, y)).item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(post.sample_function()(x), raw[:, :2])
    torch.testing.assert_close(post.noise_std(x)[0], (0.5 * raw[:, 2:].exp()).clamp(min=0.45))


@pytest.mark.parametrize("method", METHODS)
def test_heteroscedastic_posterior_learns_where_the_noise_is(method):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 3, generator=gen) * 2 - 1
    a = torch.randint(0, 2, (1024,), generator=gen)
    noisy = x[:, 0] > 0
    y = torch.where(noisy, torch.randn(1024, generator=gen), torch.zeros(1024))
    post = _posterior(method, lr=1e-2, noise_std=0.3, learn_noise=True, heteroscedastic=True)
    post.update((x, a, y), steps=400, n_data=1024)
    std = post.noise_std(x, 20, torch.Generator().manual_seed(1)).mean(0)
    taken = std[torch.arange(1024), a]
    quiet_std, noisy_std = taken[~noisy].median().item(), taken[noisy].median().item()
    assert noisy_std > 2.5 * quiet_std, f"{method}: noise std {noisy_std:.3f} vs {quiet_std:.3f}"
    assert 0.5 < noisy_std < 2.0


def test_output_scale_divides_targets_and_multiplies_outputs():
    post = _posterior("map", output_scale=10.0)
    x = torch.randn(4, 3)
    raw = post.model.forward_draw(x, 1)[0][:, :2]
    torch.testing.assert_close(post.sample_function()(x), 10 * raw)


@pytest.mark.parametrize("method", METHODS)
def test_posterior_fits_a_known_function(method):
    torch.manual_seed(0)
    x = torch.rand(128, 3) * 2 - 1
    a = torch.randint(0, 2, (128,))
    truth = torch.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], 1)
    y = truth[torch.arange(128), a]
    post = _posterior(method, lr=1e-2, noise_std=0.1)
    post.update((x, a, y), steps=300, n_data=128)
    pred = post.sample(x, 20).mean(0)
    mse = (pred - truth).pow(2).mean().item()
    assert mse < 0.05, f"{method}: mse {mse:.3f} against the true function (variance 0.2)"


@pytest.mark.parametrize("method", METHODS)
def test_sample_function_is_a_fixed_draw(method):
    post = _posterior(method)
    x = torch.randn(5, 3)
    f = post.sample_function(torch.Generator().manual_seed(1))
    torch.testing.assert_close(f(x), f(x))
    g = post.sample_function(torch.Generator().manual_seed(2))
    assert torch.equal(f(x), g(x)) == (method == "map")
    assert post.sample_functions(7)(x).shape == (7, 5, 2)


def test_full_target_batches_and_single_output():
    post = RegressionPosterior("factorial_vi", 3, 1, hidden=[8], seed=0)
    x = torch.randn(6, 3)
    loss = post.update((x, torch.zeros(6, 1)), steps=2)
    assert math.isfinite(loss) and post.sample_function()(x).shape == (6, 1)


def test_posterior_bad_input_messages():
    with pytest.raises(ValueError, match="n_data must be a positive integer"):  # truncated
        RegressionPosterior("map", 3, 2).update((torch.zeros(2, 3), torch.zeros(2, 2)), n_data=2.7)
    post = _posterior("map")
    with pytest.raises(ValueError, match=r"expected \(batch, 3\)"):
        post.sample_function()(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="actions must lie"):
        post.update((torch.zeros(2, 3), torch.tensor([0, 5]), torch.zeros(2)))
    with pytest.raises(ValueError, match="actions must be integers.*torch.bool"):
        post.update((torch.zeros(2, 3), torch.tensor([True, False]), torch.zeros(2)))
    x, y = torch.randn(4, 3), torch.randn(4)
    for dtype in (torch.uint8, torch.int16, torch.int32):  # as from NumPy replay buffers
        a = torch.tensor([0, 1, 1, 0], dtype=dtype)
        assert post.loss((x, a, y)) == post.loss((x, a.long(), y))
    with pytest.raises(ValueError, match="NaN"):
        post.update((torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([0.0, math.nan])))
    with pytest.raises(ValueError, match="targets have shape"):
        post.update((torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(3)))
    with pytest.raises(ValueError, match="unknown method"):
        RegressionPosterior("bhm", 3, 2)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        post.sample_functions(0)
    with pytest.raises(ValueError, match="grad_clip must be a positive number"):
        post.update((torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2)), grad_clip=-1)
    with pytest.raises(ValueError, match="kl_weight must be a non-negative number, got inf"):
        RegressionPosterior("map", 3, 2, kl_weight=math.inf)
    with pytest.raises(ValueError, match="min_noise_std must be a positive number"):
        RegressionPosterior("map", 3, 2, heteroscedastic=True, min_noise_std=0)


def test_bandit_thompson_acts_greedily_under_its_sample():
    agent = NeuralBandit(5, 2, "bhn", hidden=[8], initial_pulls=0, seed=0,
                         model_options={"coupling_layers": 2})  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(10):
        ctx = rng.uniform(-1, 1, 2).astype(np.float32)
        state = agent.generator.get_state()
        action = agent.act(ctx)
        replay = torch.Generator().manual_seed(0)
        replay.set_state(state)
        q = agent.posterior.sample_function(replay)(torch.as_tensor(ctx)[None])[0]
        assert action == int(q.argmax())


def test_bandit_initial_pulls_round_robin_then_training():
    agent = NeuralBandit(5, 2, "map", "epsilon_greedy", hidden=[8], train_every=5, train_steps=2)
    actions = []
    for _ in range(10):
        a = agent.act(np.zeros(2, np.float32))
        actions.append(a)
        agent.observe(np.zeros(2), a, float(a), None, False, 0.0)
    assert actions == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert agent.posterior.steps_done == 4 and agent.posterior.output_scale == 4.0


@pytest.mark.parametrize("learn_noise", [True, False])
def test_bandit_noise_std_is_learned_or_held(learn_noise):
    agent = NeuralBandit(2, 2, "map", "epsilon_greedy", hidden=[8], train_every=4, train_steps=5,
                         noise_std=0.05, learn_noise=learn_noise)  # fmt: skip
    start = agent.posterior.log_noise.detach().clone()
    assert torch.allclose(start.exp(), torch.full((2,), 0.05))
    for t in range(8):
        a = agent.act(np.zeros(2, np.float32))
        agent.observe(np.zeros(2), a, float(t % 3), None, False, 0.0)
    assert agent.posterior.steps_done == 10
    assert torch.equal(agent.posterior.log_noise, start) is not learn_noise


def _dqn(**kw):
    kw = {"hidden": [16], "learning_starts": 0, "epsilon_start": 0.0, "seed": 0, **kw}
    return DQNAgent(44, 4, kw.pop("method", "mc_dropout"), **kw)


def test_dqn_thompson_holds_one_sample_per_episode():
    agent = _dqn()
    agent.begin_episode()
    f = agent._q_fn
    for obs in LavaObs().obs:
        greedy = int(f(torch.as_tensor(obs)[None])[0].argmax())
        assert [agent.act(obs) for _ in range(3)] == [greedy] * 3  # fixed sample: deterministic
    agent.begin_episode()
    assert agent._q_fn is not f  # a new episode draws a new sample


def test_dqn_resample_on_revisit_draws_a_new_sample_only_on_a_repeated_observation():
    agent = _dqn(resample_on_revisit=True)
    agent.begin_episode()
    first, second = LavaObs().obs[:2]
    f = agent._q_fn
    agent.act(first)
    agent.act(second)
    assert agent._q_fn is f and agent.resamples == 0  # new observations keep the sample
    agent.act(first)  # a revisit: a fixed greedy policy would now cycle
    g = agent._q_fn
    assert g is not f and agent.resamples == 1
    action = agent.act(first)  # every further revisit draws again, and acts on the new draw
    h = agent._q_fn
    assert h is not g and agent.resamples == 2
    assert action == int(h(torch.as_tensor(first)[None])[0].argmax())
    agent.begin_episode()  # a new episode forgets what it saw
    agent.act(second)
    assert agent.resamples == 2


def test_epsilon_greedy_dqn_redraws_its_sample_on_revisits_too():
    """resample_on_revisit was dropped without a word for every epsilon-greedy agent, though
    one with a posterior holds a sample as a Thompson agent does; only "map" has none."""
    agent = _dqn(exploration="epsilon_greedy", resample_on_revisit=True)
    agent.begin_episode()
    f = agent._q_fn
    agent.act(LavaObs().obs[0])
    agent.act(LavaObs().obs[0])
    assert agent._q_fn is not f and agent.resamples == 1
    for kw in ({"resample_on_revisit": True}, {"resample_every": 5}):
        with pytest.raises(ValueError, match="the 'map' network is one function, with no post"):
            _dqn(method="map", exploration="epsilon_greedy", **kw)


def test_dqn_preset_leaves_the_resampling_out_for_map():
    from safety_bhn.explore import ENV_PRESETS, dqn_preset

    grid = "safety_bhn/LavaGrid-v0"
    assert dqn_preset(grid, "mc_dropout") == ENV_PRESETS[grid]
    assert dqn_preset(grid, "MAP") == {
        k: v for k, v in ENV_PRESETS[grid].items() if k != "resample_on_revisit"
    }
    assert dqn_preset("safety_bhn/WheelBandit-v0", "bhn") == {}
    dqn_preset(grid, "bhn")["gamma"] = 0.5  # a copy: the preset itself is left as it was
    assert ENV_PRESETS[grid]["gamma"] == 0.9
    env = make_env(grid)  # what the CLI builds from it
    assert make_agent(env, "epsilon_greedy", "map", **dqn_preset(grid, "map")).gamma == 0.9
    assert make_agent(env, "epsilon_greedy", "bhn", **dqn_preset(grid, "bhn")).resample_on_revisit


def test_dqn_holds_its_sample_on_revisits_by_default():
    agent = _dqn()
    agent.begin_episode()
    f = agent._q_fn
    for _ in range(3):
        agent.act(LavaObs().obs[0])
    assert agent._q_fn is f and agent.resamples == 0


class LavaObs:
    """Every observation of the training layout."""

    def __init__(self):
        grid = safety_bhn_envs.LavaGridEnv("train")
        self.obs = [grid.observation_at(p) for p in grid.safe_cells()]


def test_safe_agent_never_takes_a_masked_action_and_falls_back():
    agent = _dqn(safe=True, threshold=0.5, quantile=0.9, cost_samples=4)
    agent.begin_episode()
    obs = LavaObs().obs[0]
    q = agent._q_fn(torch.as_tensor(obs)[None])[0].numpy()
    rng = np.random.default_rng(0)
    fallbacks = 0
    for _ in range(60):
        costs = torch.as_tensor(rng.uniform(0, 1, (4, 1, 4)), dtype=torch.float32)
        agent._cost_fn = lambda x, c=costs: c
        upper = torch.quantile(costs[:, 0], 0.9, dim=0).numpy()
        action = agent.act(obs)
        allowed = np.flatnonzero(upper <= 0.5)
        np.testing.assert_array_equal(agent.last_mask, upper <= 0.5)
        if allowed.size:
            assert action == allowed[np.argmax(q[allowed])]  # Thompson among unmasked
        else:
            fallbacks += 1
            assert action == int(np.argmin(upper))  # least risky when all are masked
    assert fallbacks > 0 and agent.fallbacks == fallbacks


@pytest.mark.slow
def test_safe_agent_learns_to_mask_lava():
    env = make_env("safety_bhn/LavaGrid-v0")
    agent = make_agent(env, "epsilon_greedy", "map", safe=True, hidden=[32], seed=0, gamma=0.9)
    run_agent(env, agent, 800, seed=0, progress=False)
    grid = env.unwrapped
    mask, _ = agent.allowed_actions(grid.observation_at((1, 2)))
    assert not mask[1]  # stepping right from (1, 2) enters lava
    assert mask[3]  # stepping left is safe


def test_agents_reject_bad_input():
    grid = make_env("safety_bhn/LavaGrid-v0")
    with pytest.raises(ValueError, match="threshold must lie in"):
        make_agent(grid, "thompson", "bhn", safe=True, threshold=1.5)
    with pytest.raises(ValueError, match="quantile must lie in"):
        make_agent(grid, "thompson", "bhn", safe=True, quantile=-0.1)
    with pytest.raises(ValueError, match="discrete action space"):
        make_agent(gymnasium.make("MountainCarContinuous-v0"), "thompson", "bhn")
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent(grid, "thompsom", "bhn")
    with pytest.raises(ValueError, match="safe variant needs costs"):
        make_agent(make_env("safety_bhn/WheelBandit-v0"), "epsilon_greedy", "map", safe=True)
    agent = make_agent(grid, "epsilon_greedy", "map", hidden=[8])
    with pytest.raises(ValueError, match=r"observation has shape \(3,\); expected \(44,\)"):
        agent.act(np.zeros(3))
    bandit = make_agent(make_env("safety_bhn/WheelBandit-v0"), "epsilon_greedy", "map", hidden=[8])
    with pytest.raises(ValueError, match="observation has shape"):
        bandit.act(np.zeros(44))
    with pytest.raises(ValueError, match="cannot make environment"):
        make_env("safety_bhn/Nope-v0")


def test_agents_refuse_settings_their_exploration_never_uses():
    """A DQNAgent without safe=True took threshold, quantile, cost_samples and cost_gamma and
    ignored them (no cost model, so nothing was masked), and a Thompson NeuralBandit took
    epsilon and never acted at random: a user who set a safety threshold but forgot safe=True
    got an unsafe agent without a word."""
    for kw in ({"threshold": 0.1}, {"quantile": 0.5}, {"cost_samples": 3}, {"cost_gamma": 0.5}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))}=.* apply to the safe variant"):
            DQNAgent(2, 3, "mc_dropout", **kw)
    with pytest.raises(ValueError, match="apply to the safe variant only"):
        make_agent(make_env("safety_bhn/LavaGrid-v0"), "thompson", "bhn", threshold=0.2)
    safe = DQNAgent(2, 3, "mc_dropout", safe=True, quantile=0.5, cost_samples=3)
    assert (safe.threshold, safe.quantile, safe.cost_samples, safe.cost_gamma) == (
        SAFE_DEFAULTS["threshold"], 0.5, 3, SAFE_DEFAULTS["cost_gamma"])  # fmt: skip
    with pytest.raises(ValueError, match="epsilon=0.1 is the random-action probability"):
        NeuralBandit(3, 2, "mc_dropout", "thompson", epsilon=0.1)
    assert NeuralBandit(3, 2, "map", "epsilon_greedy", hidden=[4]).epsilon == 0.05
    assert NeuralBandit(3, 2, "map", "epsilon_greedy", hidden=[4], epsilon=0.2).epsilon == 0.2


@pytest.mark.parametrize("k", [0, 3])
def test_safe_agent_replays_violations_the_buffer_window_has_passed(k):
    """The cost model forgot lava once its few violations left the replay buffer's window;
    violation_replay=k adds k of every violation so far to each of its batches."""
    agent = DQNAgent(3, 2, "map", "epsilon_greedy", safe=True, hidden=[8], buffer_size=5,
                     batch_size=4, learning_starts=0, violation_replay=k, seed=0)  # fmt: skip
    batches = []
    update = agent.cost.update
    agent.cost.update = lambda batch, **kw: (batches.append(batch), update(batch, **kw))[1]
    obs = np.zeros(3, dtype=np.float32)
    agent.observe(obs, 1, -1.0, obs + 1, True, 1.0)  # the one violation
    for _ in range(6):
        agent.observe(obs, 0, 0.0, obs, False, 0.0)
    assert agent.buffer.cost[: agent.buffer.size].max() == 0  # the window has passed it
    assert agent.violations.size == 1 and agent.violations.action[0] == 1
    x, a, y = batches[-1]
    assert len(y) == 4 + k  # the buffer's batch, then k replayed violations
    assert a[4:].tolist() == [1] * k and y[4:].tolist() == [1.0] * k  # terminal: target = cost
    assert (y[:4] < 1).all()
    clone = DQNAgent(3, 2, "map", "epsilon_greedy", safe=True, hidden=[8], buffer_size=5,
                     batch_size=4, learning_starts=0, violation_replay=k, seed=1)  # fmt: skip
    clone.load_state_dict(agent.state_dict())  # kept in checkpoints, so a resume has them
    assert clone.violations.size == 1 and clone.violations.cost[0] == 1.0
    with pytest.raises(ValueError, match="violation_replay=2: the cost model's settings"):
        DQNAgent(3, 2, "map", "epsilon_greedy", violation_replay=2)
    with pytest.raises(ValueError, match="violation_replay must be"):
        DQNAgent(3, 2, "map", "epsilon_greedy", safe=True, violation_replay=-1)


def test_agents_refuse_bad_observations_flags_and_foreign_observations_before_storing_them():
    dqn = DQNAgent(2, 3, "mc_dropout", hidden=[8])
    for obs in (0.5, np.zeros(1), np.array([np.nan, 0.0])):  # 0.5 was broadcast into the buffer
        with pytest.raises(ValueError, match="observation"):
            dqn.observe(obs, 0, 1.0, np.zeros(2), False, 0.0)
    with pytest.raises(ValueError, match="terminated must be True or False"):
        dqn.observe(np.zeros(2), 0, 1.0, np.zeros(2), "False", 0.0)  # a string read as true
    assert dqn.buffer.size == 0
    with pytest.raises(ValueError, match=r"expected \(2,\) or \(batch, 2\)"):
        dqn.q_uncertainty(np.zeros(4))
    with pytest.raises(ValueError, match="safe must be True or False"):
        DQNAgent(2, 3, "mc_dropout", safe="no")
    assert DQNAgent(2, 3, "mc_dropout", safe=True, threshold=np.float32(0.25)).threshold == 0.25
    bandit = NeuralBandit(3, 2, method="mc_dropout", hidden=[8], train_every=4, initial_pulls=0)
    with pytest.raises(ValueError, match="NaN"):  # every later retrain failed on it before
        bandit.observe(np.array([np.nan, 0.0]), 0, 1.0, None, False, 0.0)
    assert not bandit.contexts
    cartpole = make_agent(make_env("CartPole-v1"), "thompson", "mc_dropout", hidden=[8])
    with pytest.raises(ValueError, match="scores LavaGrid observations"):
        shift_detection_auroc(cartpole)  # gave a number from reshaped grid observations


def test_run_agent_rows_add_up():
    env = make_env("safety_bhn/LavaGrid-v0")
    rows = run_agent(env, RandomAgent(4, seed=0), 300, seed=0, progress=False)
    assert sum(r["steps"] for r in rows) == 300
    assert rows[-1]["violations"] == sum(r["cost"] for r in rows) > 0
    assert all(math.isnan(r["regret"]) for r in rows)
    summary = summarize(rows)
    assert summary["violations"] == rows[-1]["violations"] and summary["steps"] == 300


def test_summary_leaves_a_cut_last_episode_out_of_return_and_goal_rate():
    env = make_env("safety_bhn/LavaGrid-v0")
    rows = run_agent(env, RandomAgent(4, seed=0), 300, seed=0, progress=False)
    assert [r["complete"] for r in rows] == [True] * (len(rows) - 1) + [rows[-1]["complete"]]
    rows[-1]["complete"] = False  # as when the budget cuts the last episode short
    rows[-1]["episode_return"], rows[-1]["reached_goal"] = 1000.0, True  # a fragment's values
    summary = summarize(rows)
    whole = rows[:-1]
    assert summary["mean_return"] == pytest.approx(np.mean([r["episode_return"] for r in whole]))
    assert summary["goal_rate"] == pytest.approx(np.mean([r["reached_goal"] for r in whole]))
    assert summary["episodes"] == len(rows) and summary["complete_episodes"] == len(whole)
    assert summary["steps"] == 300 and summary["violations"] == sum(r["cost"] for r in rows)


def test_fallbacks_are_counted_per_call_like_violations(monkeypatch):
    agent = _dqn(safe=True)
    every_action_masked = (np.zeros(4, dtype=bool), np.ones(4))
    monkeypatch.setattr(agent, "allowed_actions", lambda obs: every_action_masked)
    agent.fallbacks = 50  # decisions of an earlier phase
    rows = run_agent(make_env("safety_bhn/LavaGrid-v0"), agent, 20, seed=0, progress=False)
    assert rows[-1]["fallbacks"] == 20 and agent.fallbacks == 70


def test_bandit_oracle_baseline_and_uniform_regret():
    env = make_env("safety_bhn/WheelBandit-v0", delta=0.5, episode_length=50)
    rows = run_agent(env, RandomAgent(5, seed=0), 500, seed=0, progress=False)
    # Uniform play: expected regret per step is 0.16 inside radius 0.5 and 39.16 outside.
    expected = 0.25 * 0.16 + 0.75 * 39.16
    assert summarize(rows)["cumulative_regret"] / 500 == pytest.approx(expected, rel=0.15)


def test_shift_detection_auroc_is_chance_for_map():
    env = make_env("safety_bhn/LavaGrid-v0")
    assert shift_detection_auroc(make_agent(env, "epsilon_greedy", "map", hidden=[8])) == 0.5
    auroc = shift_detection_auroc(make_agent(env, "thompson", "mc_dropout", hidden=[8]))
    assert 0.0 <= auroc <= 1.0


@pytest.mark.slow
def test_short_thompson_run_reaches_goal_more_often_than_random():
    def goal_rate(agent):
        env = make_env("safety_bhn/LavaGrid-v0")
        rows = run_agent(env, agent, 1500, seed=0, progress=False)
        return summarize(rows[-20:])["goal_rate"], summarize(rows)["goal_rate"]

    env = make_env("safety_bhn/LavaGrid-v0")
    thompson = make_agent(env, "thompson", "mc_dropout", hidden=[32], seed=0, gamma=0.9,
                          epsilon_decay_steps=1000)  # fmt: skip
    last20, overall = goal_rate(thompson)
    _, random_rate = goal_rate(RandomAgent(4, seed=0))
    assert overall > random_rate and last20 >= 0.5


@pytest.mark.slow
def test_cli_explore_writes_csv_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "explore",
        "--env",
        "safety_bhn/WheelBandit-v0",
        "--agent",
        "thompson",
        "--method",
        "factorial_vi",
        "--steps",
        "120",
        "--hidden",
        "8",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0  # fmt: skip
    with open(out / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"episode_return", "cost", "regret"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["steps"] == 120
    assert (out / "training.png").stat().st_size > 0 and (out / "regret.png").exists()
    assert "cumulative regret" in capsys.readouterr().out


def test_bandit_presets_are_the_benchmarks_tuned_choices(benchmark_module):
    bandit = benchmark_module("bandit")
    args = bandit.Args()
    for name, (exploration, method) in bandit.AGENTS.items():
        preset = bandit_preset(exploration, method)
        options = bandit.model_options(args, method)
        assert preset.get("model_options", {}) == options, name
    assert bandit_preset("epsilon_greedy", "map")["epsilon"] == args.epsilon
    noise = benchmark_module("bandit_noise")  # its table chose fixed 0.01 for factorial VI only
    text = (Path(noise.Args().out) / "bandit_noise.md").read_text()
    assert (
        "bhn learned, mc_dropout learned, factorial_vi fixed 0.01, epsilon_greedy learned" in text
    )
    fvi = bandit_preset("thompson", "factorial_vi")
    assert fvi["noise_std"] == 0.01 and fvi["learn_noise"] is False
    assert all("noise_std" not in bandit_preset("thompson", m) for m in ("bhn", "mc_dropout"))
    assert bandit_preset("random", "bhn") == {}
    with pytest.raises(ValueError, match="unknown method"):
        bandit_preset("thompson", "bnh")


def test_cli_explore_gives_the_wheel_bandit_its_tuned_settings(tmp_path, monkeypatch):
    import safety_bhn.explore.run as run_module

    made = {}

    def spy(env, agent, method, **kw):
        made.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(run_module, "make_agent", spy)
    argv = ["explore", "--method", "factorial_vi", "--steps", "5", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        main(argv)
    assert made["noise_std"] == 0.01 and made["learn_noise"] is False
    assert made["model_options"] == {"init_std": 0.02}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--threshold", "5"], "threshold must lie in [0, 1], got 5.0"),
        (["--safe"], "--safe needs costs, and the wheel bandit has none"),
        (["--agent", "random", "--safe"], "the random agent has no cost model"),
        (["--agent", "random", "--method", "bhm"], "Did you mean 'bhn'"),
        (["--method", "map"], "(--agent epsilon_greedy) for the MAP baseline"),
    ],
)
def test_cli_explore_checks_every_flag_on_the_bandit_too(flags, message, tmp_path, capsys):
    argv = ["explore", "--steps", "5", "--out", str(tmp_path), "--no-progress", *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_cli_explore_records_the_settings_it_used(tmp_path):
    argv = ["explore", "--agent", "random", "--steps", "20", "--out", str(tmp_path),
            "--no-progress", "--delta", "0.7"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "summary.json").read_text())["config"]
    assert config["delta"] == 0.7 and config["settings"] == {}
    out = tmp_path / "default"
    assert main(["explore", "--agent", "random", "--steps", "20", "--out", str(out)]) == 0
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["delta"] == gymnasium.make("safety_bhn/WheelBandit-v0").unwrapped.delta


def test_cli_explore_reports_bad_threshold(tmp_path, capsys):
    argv = ["explore", "--env", "safety_bhn/LavaGrid-v0", "--safe", "--threshold", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    assert "threshold must lie in [0, 1]" in capsys.readouterr().err


def test_cli_explore_overwrite_leaves_no_file_of_the_replaced_run(tmp_path):
    out = str(tmp_path / "run")
    bandit = ["explore", "--env", "safety_bhn/WheelBandit-v0", "--agent", "random", "--steps",
              "20", "--no-progress", "--out", out]  # fmt: skip
    assert main(bandit) == 0 and (tmp_path / "run" / "regret.png").exists()
    grid = ["explore", "--env", "safety_bhn/LavaGrid-v0", "--agent", "random", "--steps", "20",
            "--no-progress", "--out", out, "--overwrite"]  # fmt: skip
    assert main(grid) == 0
    assert not (tmp_path / "run" / "regret.png").exists()  # the bandit's plot stayed before


@pytest.mark.parametrize(
    ("env", "agent", "extra"),
    [("safety_bhn/LavaGrid-v0", "DQNAgent", ["--method", "mc_dropout", "--safe", "--hidden", "8"]),
     ("safety_bhn/WheelBandit-v0", "NeuralBandit", ["--method", "bhn", "--hidden", "8"]),
     ("safety_bhn/CartPoleCost-v0", "RandomAgent", ["--agent", "random"])],
)  # fmt: skip
def test_cli_explore_resumes_an_interrupted_run_exactly(env, agent, extra, tmp_path, monkeypatch):
    import safety_bhn.explore.agents as agents
    import safety_bhn.explore.cli as explore_cli

    monkeypatch.setattr(explore_cli, "CHECKPOINT_SECONDS", 0.0)  # one after every episode
    flags = ["explore", "--env", env, *extra, "--steps", "260", "--seed", "3",
             "--no-progress"]  # fmt: skip
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0
    cls = getattr(agents, agent)
    act, calls = cls.act, []

    def interrupted(self, obs):
        calls.append(1)
        if len(calls) == 230:
            raise KeyboardInterrupt
        return act(self, obs)

    monkeypatch.setattr(cls, "act", interrupted)
    assert main([*flags, "--out", str(tmp_path / "cut")]) == 130  # Ctrl-C at step 230
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    assert main([*flags, "--out", str(tmp_path / "cut")]) == 2  # neither resumed nor replaced
    monkeypatch.setattr(cls, "act", act)
    assert main(["explore", "--resume", "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    whole, cut = ((tmp_path / d / "episodes.csv").read_text() for d in ("whole", "cut"))
    assert cut == whole and not (tmp_path / "cut" / "checkpoint.pt").exists()


def test_cli_explore_an_interrupted_overwrite_keeps_the_old_run_and_resumes(tmp_path, monkeypatch):
    """--overwrite deleted the finished run before the new one started: a Ctrl-C left a
    folder with neither (and --resume then found no run)."""
    import safety_bhn.explore.agents as agents
    import safety_bhn.explore.cli as explore_cli

    monkeypatch.setattr(explore_cli, "CHECKPOINT_SECONDS", 0.0)
    flags = ["explore", "--env", "safety_bhn/LavaGrid-v0", "--agent", "random", "--steps", "260",
             "--no-progress"]  # fmt: skip
    out = tmp_path / "run"
    assert main([*flags, "--seed", "1", "--out", str(out)]) == 0
    old = (out / "summary.json").read_text()
    assert main([*flags, "--seed", "3", "--out", str(tmp_path / "whole")]) == 0
    act, calls = agents.RandomAgent.act, []

    def interrupted(self, obs):
        calls.append(1)
        if len(calls) == 230:
            raise KeyboardInterrupt
        return act(self, obs)

    monkeypatch.setattr(agents.RandomAgent, "act", interrupted)
    assert main([*flags, "--seed", "3", "--out", str(out), "--overwrite"]) == 130
    assert (out / "summary.json").read_text() == old  # the finished run is still there
    monkeypatch.setattr(agents.RandomAgent, "act", act)
    assert main(["explore", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert (out / "episodes.csv").read_text() == (tmp_path / "whole" / "episodes.csv").read_text()
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == 3


def test_cli_explore_resume_refuses_contradicting_flags_and_missing_checkpoints(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["explore", "--resume", "--out", out]) == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    import torch

    config = {"env": "safety_bhn/LavaGrid-v0", "agent": "random", "method": "bhn", "safe": False,
              "threshold": 0.2, "quantile": 0.9, "steps": 50, "delta": None, "hidden": None,
              "seed": 0}  # fmt: skip
    torch.save({"config": config}, tmp_path / "run" / "checkpoint.pt")
    assert main(["explore", "--resume", "--out", out, "--steps", "60"]) == 2
    assert "--steps: saved 50, given 60" in capsys.readouterr().err


def test_cli_explore_refuses_delta_outside_the_bandit_before_making_the_folder(tmp_path, capsys):
    argv = ["explore", "--env", "safety_bhn/LavaGrid-v0", "--delta", "0.5",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    assert "--delta is the wheel bandit's exploration parameter" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_agents_refuse_non_finite_rewards_and_costs_before_storing_them():
    bandit = NeuralBandit(2, 2, "map", "epsilon_greedy", hidden=[8])
    with pytest.raises(ValueError, match="a step's reward must be a finite number, got nan"):
        bandit.observe(np.zeros(2), 0, float("nan"), None, False, 0.0)
    assert bandit.rewards == []  # nothing stored, so later retraining still works
    with pytest.raises(ValueError, match="nothing to train on yet"):
        bandit.train()  # NumPy's 'need at least one array to stack' before
    dqn = _dqn(exploration="epsilon_greedy", method="map", safe=True)
    obs = np.zeros(44, np.float32)
    with pytest.raises(ValueError, match="a step's cost must be a finite number, got inf"):
        dqn.observe(obs, 0, 0.0, obs, False, float("inf"))
    # float() errors, or taken as given ("1"), before
    for reward, cost in ((0.0, None), ("1", 0.0), (np.array([1.0]), 0.0)):
        with pytest.raises(ValueError, match="a step's (reward|cost) must be a finite number"):
            dqn.observe(obs, 0, reward, obs, False, cost)
    dqn.observe(obs, 0, np.float32(1.0), obs, False, np.array(True))  # NumPy scalars, 0-d
    assert dqn.buffer.size == 1


def test_agents_refuse_thompson_sampling_without_a_posterior_and_bad_actions():
    with pytest.raises(ValueError, match="'map' has none"):
        NeuralBandit(2, 2, "map", hidden=[8])
    with pytest.raises(ValueError, match="'map' has none"):
        make_agent(make_env("safety_bhn/LavaGrid-v0"), "thompson", "map")
    bandit = NeuralBandit(2, 2, "mc_dropout", hidden=[8])
    with pytest.raises(ValueError, match=r"action must be an integer in 0..1, got 2"):
        bandit.observe(np.zeros(2), 2, 1.0, None, False, 0.0)
    dqn = _dqn()
    obs = np.zeros(44, np.float32)
    with pytest.raises(ValueError, match=r"action must be an integer in 0..3, got 4"):
        dqn.observe(obs, 4, 0.0, obs, False, 0.0)
    assert bandit.actions == [] and dqn.buffer.size == 0  # nothing stored
    dqn.observe(obs, np.int64(3), 0.0, obs, False, 0.0)  # NumPy integers are actions too
    assert dqn.buffer.size == 1


def test_cli_explore_checks_out_before_running_and_keeps_an_earlier_run(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    argv = ["explore", "--agent", "random", "--steps", "20", "--no-progress", "--out"]
    assert main([*argv, str(tmp_path / "file" / "run")]) == 2  # refused at once, not after
    assert main([*argv, str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "run")]) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "run"), "--overwrite"]) == 0
    with pytest.raises(SystemExit) as exit_:
        main([*argv, str(tmp_path / "other"), "--seed", "-1"])
    assert exit_.value.code == 2 and "argument --seed: must be >= 0" in capsys.readouterr().err


def test_cli_explore_refuses_another_commands_run_folder(tmp_path, capsys):
    """explore wrote summary.json, episodes.csv and plots beside a training run's or an
    active-learning run's files (with --overwrite too), which those commands then refused."""
    argv = ["explore", "--agent", "random", "--steps", "5", "--no-progress", "--out"]
    for name, kind in [
        ("metrics.json", "a training run"),
        ("state.json", "an active-learning run"),
    ]:
        run = tmp_path / name[:-5]
        run.mkdir()
        (run / name).write_text("{}")
        for extra in ([], ["--overwrite"]):
            assert main([*argv, str(run), *extra]) == 2
            assert f"holds {kind} ({run / name}), not an exploration run" in capsys.readouterr().err
        assert [p.name for p in run.iterdir()] == [name]


def test_make_agent_refuses_actions_that_do_not_start_at_zero():
    env = gymnasium.make("CartPole-v1")
    env.action_space = gymnasium.spaces.Discrete(2, start=1)
    with pytest.raises(ValueError, match="actions start at 1"):
        make_agent(env, "thompson", "bhn")


def test_wheel_bandit_names_a_render_mode_it_cannot_draw():
    with pytest.warns(UserWarning, match="render_modes"):  # gymnasium's own warning first
        with pytest.raises(ValueError, match="nothing to draw"):
            make_env("safety_bhn/WheelBandit-v0", render_mode="rgb_array")


def test_run_agent_reports_no_violations_where_the_env_gives_no_cost():
    rows = run_agent(make_env("CartPole-v1"), RandomAgent(2, seed=0), 100, seed=0, progress=False)
    assert any(r["complete"] for r in rows)  # the pole fell: CartPole-v1 counts no cost for it
    assert all(math.isnan(r["cost"]) and math.isnan(r["violations"]) for r in rows)  # not 0
    assert math.isnan(summarize(rows)["violations"])
    plain = make_agent(make_env("CartPole-v1"), "epsilon_greedy", "map", hidden=[8])
    assert math.isnan(run_agent(make_env("CartPole-v1"), plain, 30, progress=False)[0]["cost"])
    costed = run_agent(make_env("safety_bhn/CartPoleCost-v0"), RandomAgent(2), 100, progress=False)
    assert summarize(costed)["violations"] == sum(r["complete"] for r in costed) > 0


class _SparseCost(gymnasium.Wrapper):
    """CartPole reporting a cost only on the step the pole falls (and, if asked, 0 on reset)."""

    def __init__(self, env, on_reset):
        super().__init__(env)
        self.on_reset = on_reset

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, ({"cost": 0.0} if self.on_reset else {})

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return obs, reward, terminated, truncated, ({"cost": 1.0} if terminated else {})


def test_an_env_that_reports_costs_only_when_they_occur_counts_the_rest_as_zero():
    # every episode was NaN before: a step without info["cost"] counted as unknown
    rows = run_agent(_SparseCost(make_env("CartPole-v1"), True), RandomAgent(2), 100,
                     progress=False)  # fmt: skip
    assert [r["cost"] for r in rows] == [float(r["complete"]) for r in rows]
    assert summarize(rows)["violations"] == sum(r["complete"] for r in rows) > 0
    # nothing on reset: unknown (NaN) until the first cost is seen, then counted
    rows = run_agent(_SparseCost(make_env("CartPole-v1"), False), RandomAgent(2), 100,
                     progress=False)  # fmt: skip
    assert math.isnan(rows[0]["cost"]) and [r["cost"] for r in rows[1:]] == [
        float(r["complete"]) for r in rows[1:]
    ]


def test_safe_agent_refuses_an_env_without_costs_at_its_first_step():
    env = make_env("CartPole-v1")
    agent = make_agent(env, "epsilon_greedy", "map", safe=True, hidden=[8])
    with pytest.raises(ValueError, match=r"CartPole-v1 gives no info\['cost'\].*a safe agent"):
        run_agent(env, agent, 300, progress=False)
    assert agent.steps == 0  # it learned nothing from made-up zero costs


def test_training_plot_says_when_an_env_reports_no_costs(tmp_path):
    from safety_bhn.explore.plots import plot_training

    rows = run_agent(make_env("CartPole-v1"), RandomAgent(2), 60, progress=False)
    fig = plot_training([{**r, "agent": "random"} for r in rows], tmp_path / "t.png")
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert (tmp_path / "t.png").stat().st_size > 0 and any("not reported" in t for t in texts)


def test_cli_explore_reports_violations_as_na_and_refuses_safe_without_costs(tmp_path, capsys):
    out = tmp_path / "plain"
    argv = ["explore", "--env", "CartPole-v1", "--steps", "60", "--no-progress"]
    assert main([*argv, "--agent", "random", "--out", str(out)]) == 0
    assert "violations n/a (the env gives no info['cost'])" in capsys.readouterr().out
    with open(out / "episodes.csv") as f:
        assert all(math.isnan(float(r["cost"])) for r in csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert math.isnan(summary["violations"])
    safe = [*argv, "--agent", "epsilon_greedy", "--method", "map", "--safe", "--hidden", "8"]
    assert main([*safe, "--out", str(tmp_path / "safe")]) == 2
    err = capsys.readouterr().err
    assert "CartPole-v1 gives no info['cost']" in err and "safe agent" in err
    assert not (tmp_path / "safe").exists()  # refused before the folder was made


def test_cli_explore_refuses_flags_it_would_ignore(tmp_path, capsys):
    """--threshold without --safe, and --method or --hidden for the random agent, were
    ignored silently (the run went on with other settings than the ones given)."""
    base = ["explore", "--env", "safety_bhn/LavaGrid-v0", "--steps", "10", "--no-progress"]
    for flags, message in [
        (["--threshold", "0.1"], "mask settings (--threshold) need --safe"),
        (["--quantile", "0.5", "--threshold", "0.1"], "(--threshold, --quantile) need --safe"),
        (["--agent", "random", "--hidden", "8"], "no network: --hidden does not apply"),
        (["--agent", "random", "--method", "map", "--threshold", "0.3"],
         "--method, --threshold do not apply"),
        (["--env", "safety_bhn/WheelBandit-v0", "--threshold", "0.3"],
         "need --safe; the wheel bandit has no costs, so drop them"),  # not "add --safe"
    ]:  # fmt: skip
        assert main([*base, *flags, "--out", str(tmp_path / "run")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
    assert main([*base, "--threshold", "0.1", "--safe", "--hidden", "8",
                 "--out", str(tmp_path / "run")]) == 0  # fmt: skip


def test_cli_explore_leaves_no_folder_when_the_agent_cannot_be_built(tmp_path, capsys):
    out = tmp_path / "pendulum"
    argv = ["explore", "--env", "Pendulum-v1", "--steps", "10", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    assert "discrete action space" in capsys.readouterr().err
    assert not out.exists()


LAVA_CONFIG = {"env": "safety_bhn/LavaGrid-v0", "agent": "random", "method": "bhn", "safe": False,
               "threshold": 0.2, "quantile": 0.9, "steps": 50, "delta": None, "hidden": None,
               "seed": 0}  # fmt: skip


def _resume(out, *flags):
    return main(["explore", "--resume", "--out", str(out), "--no-progress", *flags])


@pytest.mark.parametrize(
    ("state", "named"),
    [({}, "no loop, agent, torch_rng"),
     ({"loop": {"t": 1}, "agent": {}, "torch_rng": None}, "no loop['rows']"),
     ({"loop": dict.fromkeys(("t", "rows", "recent", "violations", "fallbacks_before",
                              "env_rng"), 0), "agent": {}, "torch_rng": torch.get_rng_state()},
      "KeyError"),
     ({"config": {k: v for k, v in LAVA_CONFIG.items() if k != "seed"}}, "config lacks seed")],
)  # fmt: skip
def test_cli_explore_resume_calls_a_checkpoint_missing_keys_damaged(state, named, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    torch.save({"config": dict(LAVA_CONFIG), **state}, tmp_path / "run" / "checkpoint.pt")
    assert _resume(tmp_path / "run") == 2  # a KeyError traceback before
    err = capsys.readouterr().err
    assert "is a damaged checkpoint" in err and named in err and "--overwrite" in err


def test_cli_explore_resume_refuses_a_flag_given_with_its_default(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    config = {**LAVA_CONFIG, "steps": 5000, "seed": 3, "agent": "Epsilon-Greedy",
              "method": "MC-Dropout"}  # fmt: skip
    torch.save({"config": config}, tmp_path / "run" / "checkpoint.pt")
    assert _resume(tmp_path / "run", "--steps", "2000", "--seed", "0") == 2  # both defaults
    err = capsys.readouterr().err
    assert "--steps: saved 5000, given 2000" in err and "--seed: saved 3, given 0" in err
    # the same names as the run normalised them are no contradiction (refused before)
    assert _resume(tmp_path / "run", "--method", "mc_dropout", "--agent", "epsilon_greedy") == 2
    err = capsys.readouterr().err
    assert "contradict" not in err and "damaged checkpoint" in err  # it got past the flags
    assert _resume(tmp_path / "run", "--method", "bhn") == 2
    assert "--method: saved 'MC-Dropout', given 'bhn'" in capsys.readouterr().err


def test_cli_explore_refuses_resume_with_overwrite(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    torch.save({"config": dict(LAVA_CONFIG)}, tmp_path / "run" / "checkpoint.pt")
    assert _resume(tmp_path / "run", "--overwrite") == 2
    assert "--resume continues the run saved in --out and --overwrite deletes it" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_make_agent_checks_the_random_agents_arguments_too():
    grid, bandit = make_env("safety_bhn/LavaGrid-v0"), make_env("safety_bhn/WheelBandit-v0")
    with pytest.raises(ValueError, match="Did you mean 'bhn'"):
        make_agent(grid, "random", "bnh")
    with pytest.raises(ValueError, match="random agent has no cost model"):
        make_agent(grid, "random", "bhn", safe=True)
    with pytest.raises(ValueError, match=r"unknown keyword argument\(s\) 'hiden'.*'hidden'"):
        make_agent(grid, "random", "bhn", hiden=[8], threshold=0.7)
    with pytest.raises(ValueError, match="'gamma' for the agents of this environment"):
        make_agent(bandit, "random", "bhn", gamma=0.9)  # a DQN setting; the bandit has none
    with pytest.raises(ValueError, match="safe must be True or False"):
        make_agent(grid, "random", "bhn", safe="no")
    # the keywords of the agent this env would get are accepted (and unused)
    assert isinstance(make_agent(grid, "random", "bhn", hidden=[8], gamma=0.9), RandomAgent)
    assert isinstance(make_agent(bandit, "random", "map", epsilon=0.1), RandomAgent)


def test_posterior_takes_numpy_numbers_and_refuses_string_flags():
    post = _posterior("factorial_vi", kl_weight=np.float32(0.5))
    assert post.kl_weight == 0.5
    batch = (torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))
    assert math.isfinite(post.update(batch, grad_clip=np.float32(1.0)))  # refused before
    assert math.isfinite(post.update(batch, grad_clip=math.inf))  # no clipping
    with pytest.raises(ValueError, match="grad_clip must be a positive number"):
        post.update(batch, grad_clip=True)
    with pytest.raises(ValueError, match="heteroscedastic must be True or False, got 'false'"):
        _posterior("map", heteroscedastic="false")  # silently True before
    with pytest.raises(ValueError, match="learn_noise must be True or False, got 'false'"):
        _posterior("map", learn_noise="false")  # a torch TypeError before
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        RegressionPosterior("map", 3, 2, seed=-1)
    assert RegressionPosterior("map", 3, 2, seed=None).generator is not None  # fresh randomness


@pytest.mark.parametrize("method", ["map", "mc_dropout"])
def test_posterior_refuses_elbo_settings_a_method_would_ignore(method):
    """kl_weight and train_samples were accepted and ignored for MAP and MC dropout (a
    DQNAgent(method="mc_dropout", kl_weight=0.1) trained as with 1)."""
    for kw in ({"kl_weight": 0.1}, {"train_samples": 4}):
        with pytest.raises(ValueError, match=f"'{method}' trains on one .* would ignore them"):
            _posterior(method, **kw)
    with pytest.raises(ValueError, match="shape the ELBO of 'bhn' and 'factorial_vi'"):
        DQNAgent(3, 2, method=method, exploration="epsilon_greedy", kl_weight=0.5)
    assert _posterior(method, kl_weight=1.0, train_samples=1).kl_weight == 1.0


def test_posterior_refuses_options_it_would_ignore_and_inputs_it_cannot_read():
    """local_draws and prob_clip were accepted and trained bit for bit as without them;
    model_options={"hidden": ...} failed with Python's 'multiple values' TypeError, and
    output_scale there was reset at the bandit's first retrain; complex targets lost their
    imaginary part with a warning; strings as inputs failed inside torch."""
    for options in ({"local_draws": True}, {"prob_clip": 0.4}):
        with pytest.raises(ValueError, match="a RegressionPosterior trains a Gaussian"):
            RegressionPosterior("bhn", 3, 2, [8], coupling_layers=1, seed=0, **options)
    for make in (lambda **kw: DQNAgent(4, 2, "mc_dropout", hidden=[4], **kw),
                 lambda **kw: NeuralBandit(2, 4, "mc_dropout", hidden=[4], **kw)):  # fmt: skip
        for bad in ({"hidden": [4]}, {"output_scale": 50.0}, {"lr": 0.1}):
            with pytest.raises(ValueError, match=f"model_options holds {next(iter(bad))}, the"):
                make(model_options=bad)
        with pytest.raises(ValueError, match="model_options must be a dict"):
            make(model_options=[1])
    post = RegressionPosterior("map", 3, 2, [8], seed=0)
    x, a = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="targets must be real numbers, got torch.complex64"):
        post.update((x, a, torch.tensor([1 + 5j, 2.0])))
    with pytest.raises(ValueError, match="input must be numbers of shape \\(batch, 3\\)"):
        post.sample(["ab", "cd"], 2)


def test_safe_agents_take_every_seed_the_cli_takes():
    """The cost model is seeded seed + 1, which the seed check refused for the largest seed
    (quoting a seed the user never gave)."""
    from safety_bhn._checks import MAX_SEED

    assert DQNAgent(4, 2, "mc_dropout", safe=True, hidden=[4], seed=MAX_SEED).safe


@pytest.mark.parametrize("method", ["bhn", "mc_dropout", "factorial_vi", "map"])
def test_a_held_function_keeps_its_draw_and_reads_the_rest_live(method):
    """What sample_function's docstring says: factorial VI's draw holds every weight; the
    others hold their scales or masks, and apply them to weights that update() trains."""
    options = {"coupling_layers": 1} if method == "bhn" else {}
    post = RegressionPosterior(method, 3, 2, [8], seed=0, **options)
    f = post.sample_function(torch.Generator().manual_seed(1))
    x = torch.randn(4, 3)
    before = f(x)
    post.update((x, torch.tensor([0, 1, 0, 1]), torch.full((4,), 5.0)), steps=5)
    assert torch.equal(f(x), before) == (method == "factorial_vi")


def test_posterior_refuses_a_prior_centre_it_never_sets():
    """prior_mean='init' needs fit's data-dependent init, which update() does not do: it
    trained with the prior at 0, as 'zero' does (the same losses), without a word."""
    with pytest.raises(ValueError, match="prior_mean='init' centres the BHN's prior"):
        RegressionPosterior("bhn", 3, 2, [8], coupling_layers=1, prior_mean="INIT", seed=0)
    post = RegressionPosterior("bhn", 3, 2, [8], coupling_layers=1, prior_mean="zero", seed=0)
    assert math.isfinite(post.update((torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))))


@pytest.mark.parametrize("make", [
    lambda **kw: NeuralBandit(3, 2, "map", "epsilon_greedy", **kw),
    lambda **kw: DQNAgent(2, 3, "map", "epsilon_greedy", **kw),
    lambda **kw: RegressionPosterior("map", 2, 3, **kw),
])  # fmt: skip
def test_agents_check_seed_and_hidden(make):
    if make(hidden=[4]).__class__ is not RegressionPosterior:  # the posterior takes None
        with pytest.raises(ValueError, match="seed must be a non-negative integer, got None"):
            make(seed=None)  # a torch RuntimeError before
    for hidden in (8, "50", b"50", None):  # 8 failed in the model; "50" became [5, 0]
        with pytest.raises(ValueError, match="hidden must be a list of hidden-layer widths"):
            make(hidden=hidden)
    with pytest.raises(ValueError, match=r"hidden\[1\] must be a positive integer, got 0"):
        make(hidden=[4, 0])
    assert make(hidden=(4, np.int64(3)), seed=np.int64(1)) is not None


def test_random_agent_checks_its_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        RandomAgent(2, seed=-1)  # NumPy's own error before
    assert RandomAgent(2, seed=np.int64(5)).act(None) == RandomAgent(2, seed=5).act(None)


def test_replay_buffer_checks_what_it_stores_and_samples():
    from safety_bhn.explore import ReplayBuffer

    with pytest.raises(ValueError, match="obs_dim must be a positive integer, got -1"):
        ReplayBuffer(-1, 5)  # "negative dimensions" before
    with pytest.raises(ValueError, match="buffer_size must be a positive integer, got 0"):
        ReplayBuffer(2, 0)
    buf = ReplayBuffer(2, 5)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="replay buffer is empty"):
        buf.sample(4, rng)  # empty tensors before
    obs = np.zeros(2, np.float32)
    bad = [
        ((0.5, 0, 0.0, 0.0, obs, False), r"obs and next_obs must have shape \(2,\), got \(\)"),
        ((obs, 0, 0.0, 0.0, np.zeros(3), False), r"got \(2,\) and \(3,\)"),
        ((obs, 1.5, 0.0, 0.0, obs, False), "action must be an integer"),
        ((obs, True, 0.0, 0.0, obs, False), "action must be an integer"),
        ((obs, 0, np.zeros(2), 0.0, obs, False), "reward and cost single numbers"),
        ((obs, 0, 0.0, "x", obs, False), "reward and cost single numbers"),
        ((obs, 0, 0.0, 0.0, obs, "False"), "done must be True or False"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            buf.add(*args)
    assert buf.size == 0 and not buf.obs.any()  # nothing stored, 0.5 was broadcast before
    buf.add([1.0, 2.0], np.int64(3), 0.5, 1.0, obs, True)
    batch = buf.sample(3, rng)
    assert batch["obs"].tolist() == [[1.0, 2.0]] and batch["action"].tolist() == [3]
    assert batch["done"].tolist() == [1.0] and batch["cost"].tolist() == [1.0]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        buf.sample(0, rng)


def test_stream_seed_gives_each_role_its_own_stream():
    assert stream_seed(0, "decisions") == stream_seed(0, "decisions")
    seeds = {stream_seed(s, name) for s in (0, 1, MAX_SEED) for name in ("a", "b", "c")}
    assert len(seeds) == 9 and all(0 <= s <= MAX_SEED for s in seeds)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        stream_seed(-1, "a")


@pytest.mark.parametrize("make", ["bandit", "dqn", "safe_dqn"])
def test_agent_decisions_and_posterior_training_draw_unrelated_noise(make):
    """An agent's generator (its Thompson draws, minibatches and targets), its posteriors'
    training generators and the initial weights (the global RNG seeded with the seed) all
    drew from one stream seeded with the agent's seed, so the first decision reused the
    first training step's noise (found 2026-12-07)."""
    if make == "bandit":
        agent = NeuralBandit(5, 2, "bhn", hidden=[8], seed=3, model_options={"coupling_layers": 2})
        posteriors = [agent.posterior]
    else:
        agent = DQNAgent(2, 3, "mc_dropout", safe=make == "safe_dqn", seed=3)
        posteriors = [agent.q] + ([agent.cost] if agent.safe else [])
    gens = [agent.generator] + [p.generator for p in posteriors]
    firsts = [torch.randn(4, generator=g) for g in gens]
    torch.manual_seed(3)  # the initial weights' stream (build_model seeds the global RNG)
    firsts.append(torch.randn(4))
    for i, a in enumerate(firsts):
        for b in firsts[i + 1 :]:
            assert not torch.equal(a, b)
