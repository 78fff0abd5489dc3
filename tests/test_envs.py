"""The safety_bhn gymnasium environments: checker, seeding, scripted rewards and costs."""

import warnings

import gymnasium
import numpy as np
import pytest
import safety_bhn_envs
from gymnasium.utils.env_checker import check_env
from safety_bhn_envs import LavaGridEnv, WheelBanditEnv

RIGHT, DOWN, UP, LEFT = 1, 2, 0, 3


@pytest.mark.parametrize("env_id", safety_bhn_envs.ENV_IDS)
def test_env_checker_passes(env_id):
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CartPole's unbounded Box is a known checker warning
        check_env(env.unwrapped, skip_render_check="CartPole" in env_id)


def test_register_envs_is_idempotent_and_entry_point_declared():
    safety_bhn_envs.register_envs()
    safety_bhn_envs.register_envs()
    assert all(i in gymnasium.envs.registry for i in safety_bhn_envs.ENV_IDS)
    from importlib.metadata import entry_points

    names = {e.name: e.value for e in entry_points(group="gymnasium.envs")}
    assert names.get("safety_bhn") == "safety_bhn_envs:register_envs"


@pytest.mark.parametrize("env_id", safety_bhn_envs.ENV_IDS)
def test_same_seed_same_trajectory(env_id):
    def rollout(seed):
        env = gymnasium.make(env_id)
        obs, _ = env.reset(seed=seed)
        actions = np.random.default_rng(0).integers(env.action_space.n, size=30)
        out = [obs]
        for a in actions:
            obs, r, term, trunc, info = env.step(int(a))
            out += [obs, np.array([r, term, trunc, info.get("cost", 0.0)])]
            if term or trunc:
                obs, _ = env.reset()
                out.append(obs)
        return np.concatenate([np.ravel(o) for o in out])

    np.testing.assert_array_equal(rollout(3), rollout(3))
    if "WheelBandit" in env_id or "CartPole" in env_id:  # stochastic contexts / initial state
        assert not np.array_equal(rollout(3), rollout(4))


def test_wheel_bandit_rewards_match_the_paper_definition():
    env = WheelBanditEnv(delta=0.5)
    inside, ring = np.array([0.1, 0.2]), np.array([0.6, -0.5])  # ring: x>0, y<0 -> action 2
    np.testing.assert_allclose(env.expected_rewards(inside), [1.2, 1, 1, 1, 1])
    np.testing.assert_allclose(env.expected_rewards(ring), [1.2, 1, 50, 1, 1])
    for ctx, best in [((0.7, 0.7), 1), ((-0.7, -0.7), 3), ((-0.7, 0.7), 4)]:
        assert np.argmax(env.expected_rewards(np.array(ctx))) == best


def test_wheel_bandit_oracle_has_zero_regret_and_others_positive():
    env = gymnasium.make("safety_bhn/WheelBandit-v0", delta=0.7, episode_length=50)
    obs, info = env.reset(seed=0)
    oracle_regret = []
    for _ in range(200):
        means = env.unwrapped.expected_rewards(obs)
        obs, reward, term, trunc, info = env.step(int(np.argmax(means)))
        oracle_regret.append(info["regret"])
        assert abs(reward - info["optimal_reward"]) < 1e-12
        assert abs(reward - info["optimal_expected_reward"]) < 0.1  # sigma = 0.01
        if trunc:
            obs, info = env.reset()
    assert sum(oracle_regret) == 0.0
    env.reset(seed=0)
    regrets = [env.step(0)[4]["regret"] for _ in range(50)]
    assert sum(regrets) > 0  # always action 0 misses the outer ring at delta = 0.7


def test_wheel_bandit_truncates_after_episode_length_and_checks_input():
    env = gymnasium.make("safety_bhn/WheelBandit-v0", episode_length=3)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(ValueError, match=r"delta must be a finite number in \[0.0, 1.0\]"):
        WheelBanditEnv(delta=1.5)
    obs, info = env.reset(seed=1)
    regret = 0.0
    for _ in range(20):  # an oracle: the next context's optimum comes with each step
        obs, _, _, _, info = env.step(info.get("next_optimal_action", info["optimal_action"]))
        regret += info["regret"]
    assert regret == 0.0
    with pytest.raises(ValueError, match="mu must be 3 finite mean rewards"):
        WheelBanditEnv(mu=(1.2, 1.0))  # an unpack error at reset before
    with pytest.raises(ValueError, match="action must be"):
        env.unwrapped.step(7)


def test_env_settings_are_named_when_the_env_is_made():
    """Each failed later, or inside NumPy or Python ('<' not supported, 'int' object is not
    iterable, negative dimensions), or was taken as it came (delta="0.9", cell=0: an empty
    image); NumPy integers were refused as episode lengths."""
    for kwargs, message in [
        ({"sigma": "0.1"}, "sigma must be a finite number >= 0.0, got '0.1'"),
        ({"mu": 50}, "mu must be 3 finite mean rewards"),
        ({"mu": (1.0, "a", 2.0)}, r"mu\[1\] must be a finite number, got 'a'"),
        ({"delta": "0.9"}, "delta must be a finite number"),
        ({"delta": True}, "delta must be a finite number"),
        ({"episode_length": 0}, "episode_length must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            gymnasium.make("safety_bhn/WheelBandit-v0", **kwargs)
    assert WheelBanditEnv(episode_length=np.int64(5), mu=np.array([1, 1, 5])).episode_length == 5
    for cell in (0, -2, 2.5):
        with pytest.raises(ValueError, match=f"cell must be an integer >= 1, got {cell}"):
            gymnasium.make("safety_bhn/LavaGrid-v0", render_mode="rgb_array", cell=cell)
    with pytest.raises(ValueError, match="goal_reward must be a finite number, got nan"):
        gymnasium.make("safety_bhn/LavaGrid-v0", goal_reward=float("nan"))


def _run(env, actions):
    env.reset(seed=0)
    return [env.step(a) for a in actions]


def test_gridworld_scripted_route_reaches_goal_without_cost():
    env = gymnasium.make("safety_bhn/LavaGrid-v0")
    steps = _run(env, [DOWN, RIGHT, RIGHT, RIGHT, RIGHT, UP])
    rewards = [s[1] for s in steps]
    assert rewards == pytest.approx([-0.01] * 5 + [1.0])
    assert steps[-1][2] is True and steps[-1][4]["goal"]
    assert sum(s[4]["cost"] for s in steps) == 0


def test_gridworld_lava_costs_one_and_ends_episode():
    env = gymnasium.make("safety_bhn/LavaGrid-v0")
    steps = _run(env, [RIGHT, RIGHT])
    assert [s[4]["cost"] for s in steps] == [0.0, 1.0]
    assert steps[-1][1] == -1.0 and steps[-1][2] is True


def test_gridworld_walls_block_and_time_limit_truncates():
    env = gymnasium.make("safety_bhn/LavaGrid-v0")
    steps = _run(env, [UP] * 50)
    assert all(s[4]["position"] == (1, 1) for s in steps)
    assert steps[-1][3] is True and not any(s[3] for s in steps[:-1])


def test_shifted_layout_puts_lava_on_the_learned_route():
    env = gymnasium.make("safety_bhn/LavaGridShifted-v0")
    steps = _run(env, [DOWN, RIGHT, RIGHT])  # the first moves of the training route
    assert steps[-1][4]["cost"] == 1.0
    assert _run(env, [RIGHT] * 4)[-1][4]["goal"]  # the top row is now free


def test_gridworld_observation_encodes_position_and_lava_neighbourhood():
    env = LavaGridEnv("train")
    obs = env.observation_at((1, 2))
    assert obs[1 * env.cols + 2] == 1 and obs[: env.rows * env.cols].sum() == 1
    lava = obs[env.rows * env.cols :].reshape(3, 3)
    expected = np.zeros((3, 3))
    expected[1, 2] = 1  # lava directly to the right
    np.testing.assert_array_equal(lava, expected)


def test_gridworld_renders_ansi_and_rgb():
    env = gymnasium.make("safety_bhn/LavaGrid-v0", render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.splitlines()[1] == "#A L G#"
    env = gymnasium.make("safety_bhn/LavaGrid-v0", render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (5 * 16, 7 * 16, 3) and img.dtype == np.uint8
    assert tuple(img[16 + 8, 16 + 8]) == (30, 90, 220)  # the agent's cell
    with pytest.raises(ValueError, match="render_mode"):
        LavaGridEnv(render_mode="human")


def test_cartpole_cost_marks_failure():
    env = gymnasium.make("safety_bhn/CartPoleCost-v0")
    env.reset(seed=0)
    costs, term = [], False
    while not term:
        _, _, term, trunc, info = env.step(0)  # always push left: falls within ~10 steps
        costs.append(info["cost"])
    assert costs[-1] == 1.0 and sum(costs) == 1.0


def test_cartpole_cost_renders_a_frame_or_names_the_missing_package():
    env = gymnasium.make("safety_bhn/CartPoleCost-v0", render_mode="rgb_array")
    env.reset(seed=0)
    try:
        import pygame  # noqa: F401
    except ImportError:
        with pytest.raises(gymnasium.error.DependencyNotInstalled, match="pip install"):
            env.render()
    else:
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape[2] == 3
    finally:
        env.close()


@pytest.mark.parametrize("action", [-1, 99, 1.0])
def test_cartpole_cost_refuses_invalid_actions_with_a_value_error(action):
    # gymnasium's bare assert, which python -O removes (then step(7) pushed left)
    env = gymnasium.make("safety_bhn/CartPoleCost-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0 .* or 1"):
        env.step(action)


@pytest.mark.parametrize("env_id", safety_bhn_envs.ENV_IDS)
def test_reset_reports_zero_cost_in_every_env(env_id):
    _, info = gymnasium.make(env_id).reset(seed=0)
    assert info["cost"] == 0.0  # CartPoleCost gave no cost on reset


@pytest.mark.parametrize("env_id", safety_bhn_envs.ENV_IDS)
@pytest.mark.parametrize("action", [True, False, np.bool_(True)])
def test_envs_refuse_bool_actions(env_id, action):
    env = gymnasium.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be"):  # True was action 1 before
        env.step(action)
    env.step(np.int64(1))  # an integer NumPy scalar is an action
