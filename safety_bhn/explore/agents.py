"""Thompson-sampling agents (neural bandit, DQN, safe DQN) and epsilon-greedy/random baselines."""

from __future__ import annotations

import enum
import inspect
import json
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import MAX_SEED, check_flag, check_int, check_seed
from .._choices import parse_choice
from ..core.build import Method
from ..core.noise import stream_seed
from .posterior import RegressionPosterior, check_hidden


class Exploration(str, enum.Enum):
    """How an agent picks actions."""

    THOMPSON = "thompson"
    EPSILON_GREEDY = "epsilon_greedy"
    RANDOM = "random"


#: Per-method model options used by the agents: small nets that train fast on 2 CPU cores.
#: BHN and factorial VI start with a visibly wide posterior (the core's defaults start almost
#: at a point mass, which suits long supervised training but not a few thousand RL steps);
#: MC dropout keeps every input and drops 10% of hidden units.
DEFAULT_OPTIONS: dict[Method, dict[str, Any]] = {
    Method.BHN: {"coupling_layers": 4, "coupling_hidden": 32, "init_scale": 0.05},
    Method.FACTORIAL_VI: {"init_std": 0.02},
    Method.MC_DROPOUT: {"p_input": 0.0, "p_hidden": 0.1},
    Method.MAP: {},
}


def _check_probability(name: str, value: float, open_low: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    ok = ok and math.isfinite(value)  # NumPy floats too
    if not ok or not (0.0 < value <= 1.0 if open_low else 0.0 <= value <= 1.0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


def _as_observation(obs: Any, dim: int) -> Tensor:
    """One observation as a float32 tensor of shape ``(dim,)``; wrong shapes and NaN or
    infinite entries are refused here, before they reach the data every retraining uses."""
    try:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    except (TypeError, ValueError):
        raise ValueError(f"observation must be {dim} numbers, got {obs!r:.80}") from None
    if x.shape != (dim,):
        raise ValueError(f"observation has shape {tuple(x.shape)}; expected ({dim},)")
    if not torch.isfinite(x).all():
        raise ValueError(f"observation contains NaN or infinite values: {obs!r:.80}")
    return x


def _check_action(action: Any, n_actions: int) -> int:
    """An observed action as an int in ``0..n_actions-1``, refused here rather than at the
    next retraining."""
    try:
        a = operator.index(action)  # ints, integer NumPy scalars and 0-d integer arrays
    except TypeError:
        a = -1
    if isinstance(action, bool) or not 0 <= a < n_actions:
        raise ValueError(f"action must be an integer in 0..{n_actions - 1}, got {action!r}")
    return a


#: The safe variant's settings when not given (see :class:`DQNAgent`).
SAFE_DEFAULTS: dict[str, Any] = {"threshold": 0.2, "quantile": 0.9, "cost_samples": 10,
                                 "cost_gamma": 0.9, "violation_replay": 0}  # fmt: skip


def check_exploration(method: Method, exploration: Exploration) -> None:
    """Refuse Thompson sampling from ``map``, which has no posterior to sample."""
    if exploration is Exploration.THOMPSON and method is Method.MAP:
        raise ValueError(
            "Thompson sampling draws from a posterior, and 'map' has none; use exploration "
            "'epsilon_greedy' (--agent epsilon_greedy) for the MAP baseline, or a Bayesian "
            "method (bhn, mc_dropout, factorial_vi)"
        )


def _learning_agent(
    method: str | Method, exploration: str | Exploration
) -> tuple[Method, Exploration]:
    """``(method, exploration)`` parsed for an agent that learns: random is RandomAgent's."""
    method = parse_choice(method, Method, "method")
    exploration = parse_choice(exploration, Exploration, "exploration")
    if exploration is Exploration.RANDOM:
        raise ValueError("use RandomAgent for uniformly random actions")
    check_exploration(method, exploration)
    return method, exploration


def _rng_state(rng: np.random.Generator) -> str:
    """A NumPy generator's state as JSON text (its integers exceed 64 bits)."""
    return json.dumps(rng.bit_generator.state)


def _set_rng_state(rng: np.random.Generator, text: str) -> None:
    rng.bit_generator.state = json.loads(text)


def check_outcome(reward: float, cost: float) -> tuple[float, float]:
    """A step's reward and cost as floats; NaN or infinite ones (or strings, arrays, None) are
    refused here, before they reach the data every later retraining uses."""
    values = []
    for name, value in (("reward", reward), ("cost", cost)):
        number = (
            value.item() if isinstance(value, np.ndarray | Tensor) and value.ndim == 0 else value
        )
        if not (isinstance(number, numbers.Real | np.bool_) and math.isfinite(number)):
            raise ValueError(f"a step's {name} must be a finite number, got {value!r:.80}")
        values.append(float(number))
    return values[0], values[1]


def _posterior(
    method: Method, in_dim: int, n_outputs: int, hidden: Sequence[int], seed: int, **kw: Any
) -> RegressionPosterior:
    given = kw.pop("model_options", None)
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ValueError(
            f"model_options must be a dict of build_model options, e.g. "
            f"{{'coupling_layers': 4}}, got {given!r:.80}"
        )
    own = sorted(set(given) & set(inspect.signature(RegressionPosterior).parameters))
    if own:
        raise ValueError(
            f"model_options holds {', '.join(own)}, the agent's own setting(s), not options "
            "of build_model; pass them to the agent itself (e.g. hidden=[64]), or drop them "
            "where the agent sets them (output_scale, seed)"
        )
    options = {**DEFAULT_OPTIONS[method], **given}
    return RegressionPosterior(method, in_dim, n_outputs, hidden, seed=seed, **kw, **options)


class RandomAgent:
    """Uniformly random actions (the baseline that normalises bandit regret).

    Example:
        >>> agent = RandomAgent(n_actions=3, seed=0)
        >>> agent.act(np.zeros(2)) in (0, 1, 2)
        True
    """

    exploration = Exploration.RANDOM
    safe = False

    def __init__(self, n_actions: int, seed: int = 0) -> None:
        self.n_actions = check_int("n_actions", n_actions)
        self.rng = np.random.default_rng(check_seed("seed", seed))
        self.fallbacks = 0

    def begin_episode(self) -> None:
        return None

    def act(self, obs: np.ndarray) -> int:
        return int(self.rng.integers(self.n_actions))

    def state_dict(self) -> dict[str, Any]:
        """The agent's changing state, for a checkpoint (see :meth:`DQNAgent.state_dict`)."""
        return {"rng": _rng_state(self.rng), "fallbacks": self.fallbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])
        self.fallbacks = int(state["fallbacks"])

    def observe(
        self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool, cost: float
    ) -> None:
        return None


class NeuralBandit:
    """Contextual bandit with a neural reward model ``r(context)[action]``.

    ``exploration="thompson"``: each decision draws one posterior sample of the reward model
    and acts greedily under it. ``"epsilon_greedy"``: greedy under one sample (use
    ``method="map"``), uniformly random with probability ``epsilon`` (default 0.05; Thompson
    sampling refuses it, as it never acts at random). The first
    ``initial_pulls`` rounds play every action in turn; then the model is retrained with
    ``train_steps`` minibatch steps on all data every ``train_every`` decisions.
    Rewards are divided by the largest absolute reward seen so far (by 1 while that is less
    than 1) before fitting, and the reward model's Gaussian noise std (``noise_std``, in
    those units) is learned per action
    unless ``learn_noise=False`` holds it fixed; ``heteroscedastic=True`` lets the reward
    model predict its noise per context as well (see :class:`RegressionPosterior`).

    Example:
        >>> agent = NeuralBandit(5, 2, method="map", exploration="epsilon_greedy", hidden=[8])
        >>> agent.act(np.zeros(2, dtype=np.float32))
        0
    """

    safe = False

    def __init__(
        self,
        n_actions: int,
        context_dim: int,
        method: str | Method = "bhn",
        exploration: str | Exploration = "thompson",
        *,
        epsilon: float | None = None,
        hidden: Sequence[int] = (50,),
        train_every: int = 50,
        train_steps: int = 100,
        batch_size: int = 64,
        initial_pulls: int = 2,
        lr: float = 1e-3,
        noise_std: float = 0.1,
        learn_noise: bool = True,
        heteroscedastic: bool = False,
        seed: int = 0,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        self.method, self.exploration = _learning_agent(method, exploration)
        self.n_actions = check_int("n_actions", n_actions)
        self.context_dim = check_int("context_dim", context_dim)
        if epsilon is not None and self.exploration is not Exploration.EPSILON_GREEDY:
            raise ValueError(
                f"epsilon={epsilon!r} is the random-action probability of epsilon-greedy, and "
                f"exploration {self.exploration.value!r} never acts at random; drop it, or pass "
                "exploration='epsilon_greedy'"
            )
        self.epsilon = _check_probability("epsilon", 0.05 if epsilon is None else epsilon)
        self.train_every = check_int("train_every", train_every)
        self.train_steps = check_int("train_steps", train_steps)
        self.batch_size = check_int("batch_size", batch_size)
        self.initial_pulls = check_int("initial_pulls", initial_pulls, minimum=0)
        seed, hidden = check_seed("seed", seed), check_hidden(hidden)
        self.posterior = _posterior(
            self.method, context_dim, n_actions, hidden, seed, lr=lr, noise_std=noise_std,
            learn_noise=check_flag("learn_noise", learn_noise),
            heteroscedastic=check_flag("heteroscedastic", heteroscedastic),
            model_options=model_options,
        )  # fmt: skip
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "agent decisions"))
        self.contexts: list[np.ndarray] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.fallbacks = 0

    def begin_episode(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """The agent's changing state, for a checkpoint (see :meth:`DQNAgent.state_dict`)."""
        contexts = np.stack(self.contexts) if self.contexts else np.zeros((0, self.context_dim))
        return {
            "rng": _rng_state(self.rng),
            "generator": self.generator.get_state(),
            "contexts": torch.as_tensor(contexts, dtype=torch.float32),
            "actions": list(self.actions),
            "rewards": list(self.rewards),
            "fallbacks": self.fallbacks,
            "posterior": self.posterior.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])
        self.generator.set_state(state["generator"])
        self.contexts = list(state["contexts"].numpy())
        self.actions, self.rewards = list(state["actions"]), list(state["rewards"])
        self.fallbacks = int(state["fallbacks"])
        self.posterior.load_state_dict(state["posterior"])

    def _context(self, obs: Any) -> Tensor:
        return _as_observation(obs, self.context_dim)

    def act(self, obs: Any) -> int:
        x = self._context(obs)
        t = len(self.actions)
        if t < self.initial_pulls * self.n_actions:
            return t % self.n_actions
        if self.exploration is Exploration.EPSILON_GREEDY and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n_actions))
        f = self.posterior.sample_function(self.generator)
        return int(f(x.unsqueeze(0))[0].argmax())

    def observe(
        self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool, cost: float
    ) -> None:
        reward, _ = check_outcome(reward, cost)
        action = _check_action(action, self.n_actions)
        self.contexts.append(np.asarray(self._context(obs)))
        self.actions.append(action)
        self.rewards.append(reward)
        if len(self.actions) % self.train_every == 0:
            self.train()

    def train(self) -> None:
        """Retrain the reward model on every observation so far."""
        if not self.actions:
            raise ValueError("nothing to train on yet: observe() some steps first")
        x = torch.as_tensor(np.stack(self.contexts))
        a = torch.as_tensor(self.actions)
        r = torch.as_tensor(self.rewards, dtype=torch.float32)
        self.posterior.output_scale = max(1.0, float(r.abs().max()))
        n = len(r)
        for _ in range(self.train_steps):
            idx = torch.randint(n, (min(self.batch_size, n),), generator=self.generator)
            self.posterior.update((x[idx], a[idx], r[idx]), n_data=n)


class ReplayBuffer:
    """A fixed-size ring buffer of transitions ``(obs, action, reward, cost, next_obs, done)``.

    :meth:`add` checks the shapes and kinds of what it stores (cheaply: it runs every step);
    :meth:`sample` refuses an empty buffer.

    Example:
        >>> buf = ReplayBuffer(obs_dim=2, capacity=10)
        >>> buf.add(np.zeros(2), 1, 0.5, 0.0, np.ones(2), False)
        >>> buf.sample(4, np.random.default_rng(0))["action"]
        tensor([1])
    """

    FIELDS = ("obs", "action", "reward", "cost", "next_obs", "done")

    def __init__(self, obs_dim: int, capacity: int) -> None:
        self.obs_dim = check_int("obs_dim", obs_dim)
        self.capacity = check_int("buffer_size", capacity)
        self.obs = np.zeros((self.capacity, self.obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((self.capacity, self.obs_dim), dtype=np.float32)
        self.action = np.zeros(self.capacity, dtype=np.int64)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.cost = np.zeros(self.capacity, dtype=np.float32)
        self.done = np.zeros(self.capacity, dtype=np.float32)
        self.size = 0
        self.pos = 0

    def add(
        self, obs: Any, action: int, reward: float, cost: float, next_obs: Any, done: bool
    ) -> None:
        shape = (self.obs_dim,)
        if np.shape(obs) != shape or np.shape(next_obs) != shape:  # 0.5 was broadcast
            raise ValueError(
                f"obs and next_obs must have shape {shape}, got {np.shape(obs)} and "
                f"{np.shape(next_obs)}"
            )
        try:
            a = operator.index(action)  # ints, integer NumPy scalars
            if np.ndim(reward) or np.ndim(cost):
                raise TypeError
            reward, cost = float(reward), float(cost)
        except (TypeError, ValueError):
            raise ValueError(
                f"action must be an integer and reward and cost single numbers, got "
                f"action={action!r}, reward={reward!r:.40}, cost={cost!r:.40}"
            ) from None
        if isinstance(action, bool | np.bool_):
            raise ValueError(f"action must be an integer, got {action!r}")
        done = check_flag("done", done)
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, a, reward
        self.cost[i], self.next_obs[i], self.done[i] = cost, next_obs, float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions and the ring's position, as tensors and ints."""
        arrays = {k: torch.as_tensor(getattr(self, k)) for k in self.FIELDS}
        return {**arrays, "size": self.size, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            getattr(self, k)[...] = state[k].numpy()
        self.size, self.pos = int(state["size"]), int(state["pos"])

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """``batch_size`` transitions drawn with replacement (fewer while the buffer holds
        fewer), as tensors keyed by field."""
        batch_size = check_int("batch_size", batch_size)
        if self.size == 0:
            raise ValueError("the replay buffer is empty; add() transitions before sampling")
        return self.take(rng.integers(self.size, size=min(batch_size, self.size)))

    def take(self, idx: np.ndarray) -> dict[str, Tensor]:
        """The transitions at indices ``idx`` (each below :attr:`size`), keyed by field."""
        return {k: torch.as_tensor(getattr(self, k)[idx]) for k in self.FIELDS}


class DQNAgent:
    """Thompson-sampling DQN, optionally safe; epsilon-greedy DQN with ``exploration``.

    Thompson: one posterior sample of the Q-network is held for a whole episode (Osband et
    al.'s deep exploration), or for ``resample_every`` steps when given, and the agent acts
    greedily under it. With ``resample_on_revisit``, a new sample is also drawn whenever the
    agent sees an observation again within the episode: in a deterministic environment a
    fixed greedy policy that revisits a state is caught in a cycle for the rest of the
    episode, so holding that sample can only waste steps. Epsilon-greedy holds and redraws
    its sample the same way (with ``"map"``, which has one function only, both resampling
    settings are refused). The Q-posterior is trained
    on TD targets ``r + gamma * (1 - terminated) * max_a' Q_target(s', a')``, where the target
    network (a periodic copy) averages ``target_samples`` posterior draws.

    Safe variant (``safe=True``): a second posterior models the discounted future cost
    ``C(s, a) = c + cost_gamma * (1 - terminated) * min_a' C_target(s', a')``, i.e. the chance
    of an unavoidable violation ahead (costs are 0/1 and end the episode). An action is
    *masked* when the ``quantile``-th quantile of ``C(s, a)`` over ``cost_samples`` posterior
    draws exceeds ``threshold``: pessimistic about safety, Thompson about reward. If every
    action is masked the agent takes the one with the smallest upper quantile and counts it
    in ``fallbacks``. ``last_mask`` holds the most recent mask (True = allowed).

    Violations are rare, and the cost model trains mostly on safe transitions, so it may forget
    where the costs were (on the lava gridworld the BHN's and factorial VI's did; see
    benchmarks/results/README.md). The safe agent keeps every transition with a cost in
    ``violations`` (as large as the buffer), and with ``violation_replay=k`` adds ``k`` of
    them, drawn at random with replacement, to each of the cost model's batches (0, the
    default, trains on the buffer alone; replayed violations also keep masking a move after
    it has become safe, as on the shifted gridworld). The safe settings
    default to :data:`SAFE_DEFAULTS`; an agent without ``safe=True`` refuses them, as it has
    no cost model to apply them to.

    Both explorations start with random actions (among allowed ones) with a probability
    ``epsilon`` annealed linearly from ``epsilon_start`` to ``epsilon_end`` over
    ``epsilon_decay_steps`` steps: down to 0.05 for epsilon-greedy, and to 0 for Thompson,
    which is then pure Thompson sampling. The first ``learning_starts`` steps are always
    random.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        method: str | Method = "bhn",
        exploration: str | Exploration = "thompson",
        *,
        safe: bool = False,
        threshold: float | None = None,
        quantile: float | None = None,
        cost_samples: int | None = None,
        cost_gamma: float | None = None,
        violation_replay: int | None = None,
        gamma: float = 0.99,
        hidden: Sequence[int] = (64,),
        lr: float = 1e-3,
        batch_size: int = 64,
        buffer_size: int = 20_000,
        learning_starts: int = 200,
        train_every: int = 1,
        target_every: int = 100,
        target_samples: int = 4,
        epsilon_start: float = 1.0,
        epsilon_end: float | None = None,
        epsilon_decay_steps: int = 2_000,
        resample_every: int | None = None,
        resample_on_revisit: bool = False,
        q_scale: float = 1.0,
        noise_std: float = 0.1,
        kl_weight: float = 1.0,
        seed: int = 0,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        self.method, self.exploration = _learning_agent(method, exploration)
        self.obs_dim = check_int("obs_dim", obs_dim)
        self.n_actions = check_int("n_actions", n_actions)
        self.safe = check_flag("safe", safe)
        given = {"threshold": threshold, "quantile": quantile, "cost_samples": cost_samples,
                 "cost_gamma": cost_gamma, "violation_replay": violation_replay}  # fmt: skip
        given = {k: v for k, v in given.items() if v is not None}
        if given and not self.safe:
            raise ValueError(
                f"{', '.join(f'{k}={v!r}' for k, v in given.items())}: the cost model's "
                "settings apply to the safe variant only, and this agent has no cost model "
                "(safe=False); pass safe=True, or drop them"
            )
        safe_settings = {**SAFE_DEFAULTS, **given}
        self.threshold = _check_probability("threshold", safe_settings["threshold"])
        self.quantile = _check_probability("quantile", safe_settings["quantile"])
        self.cost_gamma = _check_probability("cost_gamma", safe_settings["cost_gamma"])
        self.gamma = _check_probability("gamma", gamma)
        self.epsilon_start = _check_probability("epsilon_start", epsilon_start)
        if epsilon_end is None:
            epsilon_end = 0.05 if self.exploration is Exploration.EPSILON_GREEDY else 0.0
        self.epsilon_end = _check_probability("epsilon_end", epsilon_end)
        self.cost_samples = check_int("cost_samples", safe_settings["cost_samples"])
        self.violation_replay = check_int(
            "violation_replay", safe_settings["violation_replay"], minimum=0
        )
        self.batch_size = check_int("batch_size", batch_size)
        self.train_every = check_int("train_every", train_every)
        self.target_every = check_int("target_every", target_every)
        self.target_samples = check_int("target_samples", target_samples)
        self.epsilon_decay_steps = check_int("epsilon_decay_steps", epsilon_decay_steps)
        self.learning_starts = check_int("learning_starts", learning_starts, minimum=0)
        seed, hidden = check_seed("seed", seed), check_hidden(hidden)
        if resample_every is not None:
            check_int("resample_every", resample_every)
        self.resample_every = resample_every
        self.resample_on_revisit = check_flag("resample_on_revisit", resample_on_revisit)
        if self.method is Method.MAP and (resample_every is not None or resample_on_revisit):
            settings = (("resample_every", resample_every),
                        ("resample_on_revisit", resample_on_revisit))  # fmt: skip
            given = [f"{k}={v!r}" for k, v in settings if v not in (None, False)]
            raise ValueError(
                f"{', '.join(given)}: the 'map' network is one function, with no posterior "
                "to draw a new sample from; drop them, or use a Bayesian method (bhn, "
                "mc_dropout, factorial_vi)"
            )
        self._visited: set[bytes] = set()
        self.resamples = 0
        options = model_options

        def make(scale: float, offset: int) -> RegressionPosterior:
            derived = (seed + offset) % (MAX_SEED + 1)  # the largest seed's + 1 wraps to 0
            return _posterior(
                self.method, obs_dim, n_actions, hidden, derived, lr=lr, output_scale=scale,
                noise_std=noise_std, kl_weight=kl_weight, model_options=options,
            )  # fmt: skip

        self.q, self.q_target = make(q_scale, 0), make(q_scale, 0)
        self.q_target.copy_weights_from(self.q)
        self.cost = self.cost_target = None
        if self.safe:
            self.cost, self.cost_target = make(1.0, 1), make(1.0, 1)
            self.cost_target.copy_weights_from(self.cost)
        self.buffer = ReplayBuffer(obs_dim, buffer_size)
        # every transition with a cost, kept apart from the buffer's window (safe agents)
        self.violations = ReplayBuffer(obs_dim, buffer_size) if self.safe else None
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "agent decisions"))
        self.steps = 0
        self.fallbacks = 0
        self.last_mask: np.ndarray | None = None
        self._q_fn = self._cost_fn = None

    # -- acting -------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        frac = min(1.0, self.steps / self.epsilon_decay_steps)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while the agent learns (networks, optimizers, replay
        buffer, random generators, counters), as tensors and plain values, so that a run can
        be checkpointed between episodes and resumed with ``torch.load(weights_only=True)``.
        The episode's held Q sample is not saved: :meth:`begin_episode` draws it anew from the
        restored generator, as the uninterrupted run would."""
        nets = {"q": self.q, "q_target": self.q_target}
        if self.safe:
            nets.update(cost=self.cost, cost_target=self.cost_target)
        violations = {"violations": self.violations.state_dict()} if self.safe else {}
        return {
            "rng": _rng_state(self.rng),
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "fallbacks": self.fallbacks,
            "resamples": self.resamples,
            "buffer": self.buffer.state_dict(),
            **violations,
            **{name: net.state_dict() for name, net in nets.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into an agent built with the same settings."""
        _set_rng_state(self.rng, state["rng"])
        self.generator.set_state(state["generator"])
        self.steps, self.fallbacks = int(state["steps"]), int(state["fallbacks"])
        self.resamples = int(state["resamples"])
        self.buffer.load_state_dict(state["buffer"])
        if self.safe and "violations" in state:  # checkpoints from before it was kept lack it
            self.violations.load_state_dict(state["violations"])
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        if self.safe:
            self.cost.load_state_dict(state["cost"])
            self.cost_target.load_state_dict(state["cost_target"])
        self._q_fn = self._cost_fn = None

    def begin_episode(self) -> None:
        """Draw this episode's Q-function (and the cost model's samples for masking)."""
        self._q_fn = self.q.sample_function(self.generator)
        self._visited.clear()
        if self.safe:
            self._cost_fn = self.cost.sample_functions(self.cost_samples, self.generator)

    def _obs(self, obs: Any) -> Tensor:
        return _as_observation(obs, self.obs_dim).unsqueeze(0)

    def allowed_actions(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, upper)``: allowed actions and each action's upper cost quantile."""
        if not self.safe:
            return np.ones(self.n_actions, dtype=bool), np.zeros(self.n_actions)
        if self._cost_fn is None:
            self.begin_episode()
        samples = self._cost_fn(self._obs(obs)).reshape(self.cost_samples, self.n_actions)
        upper = torch.quantile(samples, self.quantile, dim=0).numpy()
        return upper <= self.threshold, upper

    def act(self, obs: Any) -> int:
        if self._q_fn is None:
            self.begin_episode()
        elif self.resample_every and self.steps % self.resample_every == 0:
            self._q_fn = self.q.sample_function(self.generator)
        x = self._obs(obs)
        if self.resample_on_revisit:
            key = x.numpy().tobytes()
            if key in self._visited:
                self._q_fn = self.q.sample_function(self.generator)
                self.resamples += 1
            self._visited.add(key)
        mask, upper = self.allowed_actions(obs)
        self.last_mask = mask
        if not mask.any():
            self.fallbacks += 1
            return int(np.argmin(upper))
        allowed = np.flatnonzero(mask)
        explore = self.steps < self.learning_starts or self.rng.random() < self.epsilon
        if explore:
            return int(self.rng.choice(allowed))
        q = self._q_fn(x)[0].numpy()
        return int(allowed[np.argmax(q[allowed])])

    def q_uncertainty(self, obs: Any, n_samples: int = 20) -> np.ndarray:
        """Epistemic uncertainty of each observation: the std of Q over posterior draws,
        averaged over actions (``(batch,)``; 0 for MAP)."""
        n_samples = check_int("n_samples", n_samples)
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.obs_dim:
            raise ValueError(
                f"observations have shape {x.shape}; expected ({self.obs_dim},) or (batch, "
                f"{self.obs_dim}) for this agent's obs_dim={self.obs_dim}"
            )
        if not np.isfinite(x).all():
            raise ValueError("observations contain NaN or infinite values")
        x = torch.as_tensor(x.reshape(-1, self.obs_dim))
        q = self.q.sample(x, n_samples, self.generator)
        return q.std(0).mean(-1).numpy() if n_samples > 1 else np.zeros(len(x))

    # -- learning -----------------------------------------------------------------------
    def observe(
        self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool, cost: float
    ) -> None:
        obs = _as_observation(obs, self.obs_dim).numpy()
        next_obs = _as_observation(next_obs, self.obs_dim).numpy()
        reward, cost = check_outcome(reward, cost)
        action = _check_action(action, self.n_actions)
        terminated = check_flag("terminated", terminated)
        self.buffer.add(obs, action, reward, cost, next_obs, terminated)
        if self.safe and cost > 0:
            self.violations.add(obs, action, reward, cost, next_obs, terminated)
        self.steps += 1
        if self.steps >= max(self.learning_starts, 1) and self.steps % self.train_every == 0:
            self.train_step()
        if self.steps % self.target_every == 0:
            self.q_target.copy_weights_from(self.q)
            if self.safe:
                self.cost_target.copy_weights_from(self.cost)

    def train_step(self) -> None:
        """One gradient step of the Q-posterior (and the cost posterior) on a replay batch."""
        b = self.buffer.sample(self.batch_size, self.rng)
        n = self.buffer.size
        with torch.no_grad():
            q_next = self.q_target.sample(b["next_obs"], self.target_samples, self.generator)
            target = b["reward"] + self.gamma * (1 - b["done"]) * q_next.mean(0).max(-1).values
        self.q.update((b["obs"], b["action"], target), n_data=n)
        if self.safe:
            if self.violation_replay and self.violations.size:
                idx = self.rng.integers(self.violations.size, size=self.violation_replay)
                v = self.violations.take(idx)
                b = {k: torch.cat([b[k], v[k]]) for k in b}
            with torch.no_grad():
                c_next = self.cost_target.sample(b["next_obs"], self.target_samples, self.generator)
                c_next = c_next.mean(0).min(-1).values.clamp(0.0, 1.0)
                c_target = b["cost"] + self.cost_gamma * (1 - b["done"]) * c_next
            self.cost.update((b["obs"], b["action"], c_target), n_data=n)
