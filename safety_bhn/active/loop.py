"""The pool-based active-learning loop (Gal, Islam & Ghahramani 2017), with a resumable state file.

Example:
    >>> from safety_bhn.active import ActiveConfig, run_active_learning, mnist_pool
    >>> pool, test = mnist_pool()  # doctest: +SKIP
    >>> config = ActiveConfig(method="bhn", acquisition="bald", steps=5)  # doctest: +SKIP
    >>> state = run_active_learning(config, pool, test=test, out="runs/al-bhn")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import copy
import csv
import functools
import io
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .._checks import (
    MAX_SEED,
    check_flag,
    check_int,
    check_positive_ints,
    check_real,
    check_seed,
    plain_value,
)
from .._choices import parse_choice
from .._io import atomic_write, atomic_write_json, fingerprint, folder_lock, read_json
from ..core.base import UncertaintyModel
from ..core.bhn import PriorMean
from ..core.build import (
    Arch,
    Method,
    build_model,
    default_device,
    load,
    resolve_device,
    without_ignored_rates,
)
from ..core.metrics import auto_batch_size, evaluate
from ..core.training import (
    History,
    Selection,
    as_tensors,
    check_lr_recipe,
    check_validation_use,
    fit,
)
from ..data import embedded_mnist, load_dataset
from ..runs import MODEL_VERSION, device_words, environment
from .acquisition import Acquisition, select

STATE_FILE = "state.json"
CURVE_FILE = "curve.csv"
MODEL_FILE = "model.pt"
STATE_VERSION = 1
RESUMABLE = ("steps", "device")
"""ActiveConfig fields that may differ from the saved ones when a run is resumed."""
Oracle = Callable[[Tensor], Any]


#: acquisitions scored from the disagreement between posterior samples (all 0 for MAP).
#: Not variation ratios, ``1 - max_c E_s p_s(c)``: for one network, its least confidence.
NEEDS_SAMPLES = frozenset({
    Acquisition.BALD, Acquisition.BATCH_BALD, Acquisition.POWER_BALD, Acquisition.MEAN_STD,
})  # fmt: skip


@dataclass
class ActiveConfig:
    """Settings of one active-learning run (the CLI's ``active-learn`` flags)."""

    method: str = "bhn"
    """posterior method: bhn, mc_dropout, factorial_vi or map"""
    acquisition: str = "bald"
    """bald, max_entropy, variation_ratios, mean_std, random, batch_bald or power_bald"""
    arch: str = "mlp"
    """primary network: mlp or cnn"""
    hidden: list[int] = field(default_factory=lambda: [800])
    """hidden units of the MLP"""
    options: dict[str, Any] = field(default_factory=dict)
    """further build_model options, e.g. {"coupling_layers": 4}"""
    initial: int = 20
    """labels before the first acquisition (class-balanced when the pool's labels are known)"""
    val_size: int = 100
    """labelled validation points held out of the pool (with select nll or accuracy, they pick
    the weights each retrain keeps); 0 for none"""
    acquire: int = 10
    """points acquired per step"""
    steps: int = 50
    """acquisition steps (the curve has steps + 1 points)"""
    pool_subset: int = 2000
    """random pool points scored per step (0: the whole pool)"""
    acq_samples: int = 20
    """posterior samples for the acquisition scores"""
    eval_samples: int = 20
    """posterior samples for test and validation metrics"""
    train_steps: int = 500
    """gradient steps per retrain (epochs = train_steps / batches per epoch, at least 1)"""
    batch_size: int = 64
    """minibatch size"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_schedule: str = "cosine"
    """constant or cosine (lr decays to 0 over each retrain, so the weights settle)"""
    lr_warmup: float = 0.05
    """fraction of each retrain's steps over which lr first rises linearly (see fit)"""
    select: str = "nll"
    """which weights each retrain keeps: nll (lowest validation NLL), accuracy or last (the
    final weights; with the cosine rate they have settled, and a 100-image validation set
    cannot stop a retrain early); see fit's ``select``"""
    warm_start: bool = False
    """keep training the previous model instead of retraining from scratch"""
    num_configs: int = 2000
    """batch_bald only: label configurations sampled for the joint entropy"""
    seed: int = 0
    """seeds the initial set, the subsets, the models and training"""
    device: str | None = None
    """cpu or cuda (None: cuda when available)"""

    def validate(self) -> ActiveConfig:
        """Check every field; raises a ValueError naming the first bad one."""
        method = parse_choice(self.method, Method, "method")
        acquisition = parse_choice(self.acquisition, Acquisition, "acquisition")
        self.method, self.acquisition = method.value, acquisition.value  # saved as canonical
        if method is Method.MAP and acquisition in NEEDS_SAMPLES:
            raise ValueError(
                f"acquisition {acquisition.value!r} measures how posterior samples disagree, "
                "but method 'map' is a single network, so every score would be 0 and the "
                "choice arbitrary; with map use max_entropy or random, or pick a Bayesian "
                "method (bhn, mc_dropout, factorial_vi)"
            )
        self.arch = parse_choice(self.arch, Arch, "architecture").value
        schedule, self.lr_warmup = check_lr_recipe(self.lr_schedule, self.lr_warmup)
        self.lr_schedule = schedule.value
        self.select = parse_choice(self.select, Selection, "select").value
        if not isinstance(self.options, dict):
            raise ValueError(
                f"options must be a dict of model options, e.g. {{'coupling_layers': 4}}, got "
                f"{self.options!r}"
            )
        # plain values (NumPy scalars cannot be saved in state.json), names as canonical
        self.options = {k: plain_value(k, v) for k, v in self.options.items()}
        if "prior_mean" in self.options:
            prior_mean = parse_choice(self.options["prior_mean"], PriorMean, "prior_mean")
            self.options["prior_mean"] = prior_mean.value
        self.hidden = check_positive_ints("hidden", self.hidden)
        for name in ("initial", "acquire", "acq_samples", "eval_samples", "train_steps",
                     "batch_size", "num_configs"):  # fmt: skip
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        for name in ("val_size", "steps", "pool_subset"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=0))
        self.seed = check_seed("seed", self.seed, MAX_RUN_SEED)
        self.lr = check_real("lr", self.lr, 0.0, low_open=True)
        self.warm_start = check_flag("warm_start", self.warm_start)
        if self.device is not None:
            self.device = str(resolve_device(self.device))
        if acquisition in NEEDS_SAMPLES and self.acq_samples < 2:
            raise ValueError(
                f"acquisition {acquisition.value!r} measures how posterior samples disagree, "
                f"so acq_samples={self.acq_samples} would score every point 0; use "
                "acq_samples >= 2 (20 is usual)"
            )
        no_val = "val_size=0 holds none out; pass val_size > 0, or select='nll' or 'last'"
        check_validation_use(Selection(self.select), None, no_val if self.val_size == 0 else None)
        configs = self.num_configs
        if acquisition is not Acquisition.BATCH_BALD and configs != ActiveConfig.num_configs:
            raise ValueError(
                f"num_configs={configs} sets the label configurations of batch_bald only, so "
                f"acquisition {acquisition.value!r} would ignore it; drop num_configs, or use "
                "acquisition='batch_bald'"
            )
        if 0 < self.pool_subset < self.acquire:
            raise ValueError(
                f"pool_subset ({self.pool_subset}) must be at least acquire ({self.acquire})"
            )
        return self

    def model_options(self) -> dict[str, Any]:
        opts = dict(self.options)
        if self.arch == "mlp":
            opts.setdefault("hidden", list(self.hidden))
        return opts


#: step_seed's stride: steps of one run seed get seeds seed * STEP_STRIDE + 0, 1, ...
STEP_STRIDE = 100_003
#: The largest run seed, so that every step's seed (and fit's seed + 1) fits torch's 64 bits.
MAX_RUN_SEED = (MAX_SEED - 2 * STEP_STRIDE) // STEP_STRIDE


def step_seed(config: ActiveConfig, step: int) -> int:
    """Seed of step ``step``'s retrain and acquisition scores, distinct per run seed and step."""
    return config.seed * STEP_STRIDE + step


def retrain(
    model: UncertaintyModel,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    config: ActiveConfig,
    seed: int,
) -> History:
    """One retrain of the loop: ``config.train_steps`` Adam steps (whole epochs, at least
    one) with the config's rate recipe, validating about 20 times; ``config.select`` picks
    the weights kept."""
    batches = math.ceil(len(train[1]) / config.batch_size)
    epochs = max(1, math.ceil(config.train_steps / batches))
    return fit(
        model,
        train,
        val,
        epochs=epochs,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        lr_warmup=config.lr_warmup,
        batch_size=config.batch_size,
        seed=seed,
        val_samples=config.eval_samples,
        eval_every=max(1, epochs // 20),
        select=config.select,
        progress=False,
    )


def mnist_pool(
    data_dir: str | os.PathLike | None = None, extra: bool = False
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The MNIST pool (the embedded 5000-image training subset) and the 10000 test images.

    ``extra=True`` appends the 5000 images of ``<data_dir>/mnist-extra5k`` to the pool.
    """
    pool, test = embedded_mnist("train"), embedded_mnist("test")
    if extra:
        xe, ye = load_dataset("mnist", "extra", data_dir)
        pool = (torch.cat([pool[0], xe]), torch.cat([pool[1], ye]))
    return pool, test


def _pool_inputs(pool: Tensor | tuple | Dataset) -> tuple[Tensor, Tensor | None]:
    """Inputs of the pool and, when given, its labels."""
    if isinstance(pool, Tensor):
        x, y = pool, None
    elif isinstance(pool, tuple | list) and len(pool) == 2:
        x, y = as_tensors(tuple(pool), "pool")
    elif isinstance(pool, Dataset):
        if len(pool) == 0:
            raise ValueError("pool is empty")
        first = pool[0]
        if isinstance(first, tuple | list) and len(first) == 2:
            x, y = as_tensors(pool, "pool")
        elif isinstance(first, tuple | list) and len(first) == 1:  # e.g. TensorDataset(x)
            x, y = torch.stack([torch.as_tensor(pool[i][0]) for i in range(len(pool))]), None
        elif isinstance(first, tuple | list):
            raise ValueError(f"pool items must be inputs or (x, y) pairs, got {len(first)}-tuples")
        else:
            x, y = torch.stack([torch.as_tensor(pool[i]) for i in range(len(pool))]), None
    else:
        raise TypeError(
            "pool must be a tensor of inputs, a pair (x, y) of tensors, or a torch Dataset "
            f"(of inputs or (x, y) pairs); got {type(pool).__name__}"
        )
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"pool inputs must have shape (n, ...) with n > 0, got {tuple(x.shape)}")
    problem = None if y is None else _label_problem(y, x.shape[0])
    if problem:
        raise ValueError(f"pool {problem}")
    return x, y


def _label_problem(y: Tensor, n: int) -> str | None:
    """What is wrong with ``y`` as class labels of ``n`` inputs (None: nothing)."""
    if y.dim() != 1 or y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
        return (f"labels must be integer class labels of shape ({n},), got {y.dtype} of shape "
                f"{tuple(y.shape)} (one-hot labels: y.argmax(1))")  # fmt: skip
    if (y < 0).any():
        return f"labels must be class indices >= 0, got {int(y.min())}"
    return None


def _encode_rng(gen: torch.Generator) -> str:
    return base64.b64encode(gen.get_state().numpy().tobytes()).decode()


def _decode_rng(text: str) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))
    return gen


def labels_to_reach(
    n_labels: Sequence[int], accuracy: Sequence[float], target: float
) -> int | None:
    """The first label count whose test accuracy is at least ``target`` (None: never reached).

    Accuracies are compared in float32: runs saved before 2026-12-06 stored them at that
    precision, where 9500 of 10000 is 0.94999999, and must still count as reaching 0.95.

    >>> labels_to_reach([20, 30, 40], [0.8, 0.949999988079071, 0.96], 0.95)
    30
    """
    if len(n_labels) != len(accuracy):
        raise ValueError(f"{len(n_labels)} label counts but {len(accuracy)} accuracies")
    goal = np.float32(target)
    for n, acc in zip(n_labels, accuracy, strict=True):
        if np.float32(acc) >= goal:
            return int(n)
    return None


def rarest_class_counts(
    labels: Sequence[int], n_labels: Sequence[int], n_classes: int
) -> list[int]:
    """For each ``n`` in ``n_labels``, the count of the least-labelled class in ``labels[:n]``.

    ``labels`` are in acquisition order (initial set first). A class never labelled counts 0,
    so a run whose acquisitions skip a class shows it here.

    >>> rarest_class_counts([0, 1, 1, 1, 2], [2, 5], n_classes=3)
    [0, 1]
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if any(n > len(labels) or n < 0 for n in n_labels):
        raise ValueError(f"n_labels must lie in 0..{len(labels)}, got {list(n_labels)}")
    counts = [Counter(labels[:n]) for n in n_labels]
    return [min(c[k] for k in range(n_classes)) for c in counts]


def curve_auc(n_labels: Sequence[int], accuracy: Sequence[float]) -> float:
    """Area under accuracy against labels, divided by the label range (a mean accuracy).

    ``n_labels`` must increase (as a loop's label counts do).

    >>> curve_auc([20, 30, 40], [0.5, 0.7, 0.7])
    0.65
    """
    if len(n_labels) != len(accuracy) or not n_labels:
        raise ValueError(f"need as many accuracies as label counts, got {len(accuracy)} and "
                         f"{len(n_labels)}")  # fmt: skip
    if len(n_labels) < 2:
        return float(accuracy[0])
    if any(b <= a for a, b in zip(n_labels, n_labels[1:], strict=False)):
        raise ValueError(f"n_labels must increase, got {list(n_labels)}")
    area = sum((n_labels[i + 1] - n_labels[i]) * (accuracy[i + 1] + accuracy[i]) / 2
               for i in range(len(n_labels) - 1))  # fmt: skip
    return float(area / (n_labels[-1] - n_labels[0]))


class ActiveLearner:
    """One active-learning run over a pool; :meth:`run` does the steps and saves after each.

    Args:
        config: the run's settings.
        pool: the unlabelled inputs: a tensor, ``(x, y)`` tensors (``y`` answers the oracle and
            balances the initial set), or a ``Dataset`` of inputs or ``(x, y)`` pairs.
        oracle: ``oracle(indices) -> labels`` for a LongTensor of pool indices; needed when the
            pool has no labels. The initial set is then drawn at random (not balanced).
        test: optional ``(x, y)`` or Dataset for the test metrics of each step.
        out: folder for ``state.json``, ``curve.csv`` (and, with warm start, the model,
            ``model-step<N>.pt``).
        resume: continue from ``out/state.json``; ``config`` must equal the saved settings
            except ``steps`` and ``device`` (:func:`saved_config` reads them).
        n_classes: number of classes (default: from the pool's labels when it has them, else
            inferred from the labels seen so far; pass it when an oracle may later return a
            class not yet seen, e.g. with warm start).
        pool_source: how the pool was built (JSON-serialisable), saved in ``state.json`` so a
            resume can build the same pool; e.g. the CLI saves ``{"extra": ..., "data_dir":
            ...}``. On resume, None keeps the saved one.
    """

    def __init__(
        self,
        config: ActiveConfig,
        pool: Tensor | tuple | Dataset,
        oracle: Oracle | None = None,
        test: tuple[Tensor, Tensor] | Dataset | None = None,
        out: str | os.PathLike | None = None,
        resume: bool = False,
        n_classes: int | None = None,
        pool_source: dict[str, Any] | None = None,
    ) -> None:
        self.config = config.validate()
        self.pool_source = dict(pool_source or {})
        self.x, self.y = _pool_inputs(pool)
        if oracle is None and self.y is None:
            raise ValueError("the pool has no labels: pass oracle(indices) -> labels")
        if oracle is not None and not callable(oracle):
            raise TypeError(f"oracle must be callable, got {type(oracle).__name__}")
        self.oracle = oracle
        self.test = as_tensors(test, "test") if test is not None else None
        self.out = Path(out) if out is not None else None
        self.device = torch.device(config.device) if config.device else default_device()
        given_n_classes = n_classes
        if n_classes is not None:
            n_classes = check_int("n_classes", n_classes, minimum=2)
            if self.y is not None and (top := int(self.y.max())) >= n_classes:
                raise ValueError(
                    f"the pool's labels go up to {top}, outside 0..{n_classes - 1} for the "
                    f"n_classes={n_classes} given; pass the right n_classes (or leave it out: "
                    "the pool's labels set it) or fix the pool's labels"
                )
        elif self.y is not None:
            n_classes = int(self.y.max()) + 1
        self.n_classes = n_classes
        self.model: UncertaintyModel | None = None
        self._model_files: dict[str, str] = {}  # warm-start files the saved state names
        self._check_model_settings()
        if self.test is not None and n_classes is not None:
            top = int(self.test[1].max())
            if top >= n_classes:
                whence = (f"for the n_classes={n_classes} given" if given_n_classes is not None
                          else "the classes of the pool's labels")  # fmt: skip
                raise ValueError(
                    f"test labels go up to {top}, outside 0..{n_classes - 1}, {whence}; fix "
                    "the test labels (1-based labels: y - 1) or pass the right n_classes"
                )
        state_path = self.out / STATE_FILE if self.out is not None else None
        self.model_version: int | None = MODEL_VERSION  # a resumed run keeps the one it began with
        if resume:
            if state_path is None or not state_path.is_file():
                raise FileNotFoundError(f"cannot resume: no state file at {state_path}")
            self._load_state(state_path, pool_source is None, given_n_classes)
        else:
            if state_path is not None and state_path.exists():
                raise ValueError(
                    f"{state_path} exists: resume it (--resume / resume=True) or choose "
                    "another output folder"
                )
            others = [] if self.out is None else [
                name for name in (MODEL_FILE, "metrics.json", "summary.json")
                if (self.out / name).exists()
            ]  # fmt: skip
            if others:
                raise ValueError(
                    f"{self.out} holds another run ({', '.join(others)}); choose another output "
                    "folder for this active-learning run"
                )
            self._initialise()

    # -- set-up ---------------------------------------------------------------------------
    def _check_model_settings(self) -> None:
        """Build one model now, so that an option the method does not take fails before any
        label is asked for or any state is written (not at the first retrain)."""
        cfg = self.config
        try:
            probe = build_model(cfg.method, cfg.arch, tuple(self.x.shape[1:]),
                                max(2, self.n_classes or 2), seed=0, device="cpu",
                                **cfg.model_options())  # fmt: skip
        except ValueError as err:
            raise ValueError(f"the model settings do not build a model: {err}") from None
        checks = [("pool", self.x)] + ([] if self.test is None else [("test", self.test[0])])
        for name, x in checks:  # dtype, shape and NaN, before the oracle is asked anything
            try:
                probe.check_input(x)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{name}: {err}") from None
        if self.test is not None and (problem := _label_problem(self.test[1], len(self.test[0]))):
            raise ValueError(f"test: {problem}")

    def _query(self, indices: Tensor) -> list[int]:
        if self.oracle is None:
            labels = self.y[indices]
        else:
            answer = self.oracle(indices.clone())
            try:
                labels = torch.as_tensor(answer)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(
                    f"oracle must return {len(indices)} integer labels, got {answer!r:.80}"
                ) from None
        if (
            labels.shape != (len(indices),)
            or labels.is_floating_point()
            or labels.dtype == torch.bool
        ):
            raise ValueError(
                f"oracle must return {len(indices)} integer labels for {len(indices)} indices, "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        if (labels < 0).any():
            raise ValueError("oracle returned negative labels")
        if self.n_classes is not None and (labels >= self.n_classes).any():
            raise ValueError(f"oracle returned labels outside 0..{self.n_classes - 1}")
        return [int(v) for v in labels]

    def _initialise(self) -> None:
        cfg = self.config
        n = self.x.shape[0]
        needed = cfg.initial + cfg.val_size + cfg.acquire * cfg.steps
        if needed > n:
            raise ValueError(
                f"the pool has {n} points but initial ({cfg.initial}) + val_size "
                f"({cfg.val_size}) + acquire*steps ({cfg.acquire}*{cfg.steps}) = {needed}"
            )
        self.gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(n, generator=self.gen)
        val = perm[: cfg.val_size]
        rest = perm[cfg.val_size :]
        if self.y is not None:
            initial = _balanced(rest, self.y, cfg.initial)
        else:
            initial = rest[: cfg.initial]
        self.val = [int(i) for i in val]
        self.val_labels = self._query(val) if len(val) else []
        self.labelled = [int(i) for i in initial]
        self.labels = self._query(initial)
        self.history: list[dict[str, Any]] = []
        self.done = False

    def _load_state(self, path: Path, keep_pool_source: bool, given_n_classes: int | None) -> None:
        state = _read_state(path)
        _check_resume(path, state, self.config)
        if state["pool_size"] != self.x.shape[0]:
            raise ValueError(
                f"cannot resume {path}: it was run on a pool of {state['pool_size']} points, "
                f"this pool has {self.x.shape[0]}"
            )
        saved_pool = state.get("pool_fingerprint")  # absent in states before 2026-12-06
        if saved_pool is not None and saved_pool != self.pool_fingerprint:
            raise ValueError(
                f"cannot resume {path}: this pool holds other data (or another order or labels) "
                f"than the {state['pool_size']} points the run was started on, so its saved "
                "indices would point at other images; pass the same pool"
            )
        cfg = self.config
        needed = cfg.initial + cfg.val_size + cfg.acquire * cfg.steps
        if needed > self.x.shape[0]:
            raise ValueError(
                f"cannot resume {path} with steps={cfg.steps}: it would need {needed} points "
                f"(initial + val_size + acquire*steps), and the pool has {self.x.shape[0]}"
            )
        saved_classes = state.get("declared_n_classes")  # absent in states before 2026-12
        if saved_classes is not None:
            if given_n_classes is not None and given_n_classes != saved_classes:
                raise ValueError(
                    f"cannot resume {path}: it was run with n_classes={saved_classes}, given "
                    f"n_classes={given_n_classes}; pass {saved_classes} or leave it out"
                )
            self.n_classes = saved_classes
        self.val, self.val_labels = state["val"], state["val_labels"]
        self.labelled, self.labels = state["labelled"], state["labels"]
        self.history = state["history"]
        self.gen = _decode_rng(state["rng_state"])
        if keep_pool_source:
            self.pool_source = dict(state.get("pool_source", {}))
        self.done = len(self.history) == self.config.steps + 1
        self.model = self._saved_model(state)
        self.model_version = state.get("model_version")  # absent: begun before 2026-12-07
        if self.model_version != MODEL_VERSION and not self.done:
            warnings.warn(
                f"{path} was begun by older code (model version {self.model_version or 1}, "
                f"this code's {MODEL_VERSION}: see safety_bhn.runs.MODEL_VERSION), whose "
                "models compute otherwise, so its curve will mix two versions; start a new run "
                "for a curve from this code alone",
                stacklevel=3,
            )

    def _saved_model(
        self, state: dict[str, Any], key: str = "model_file"
    ) -> UncertaintyModel | None:
        """The warm-start model written with ``state`` (None: no warm start, or none saved
        yet); ``key="model_file_before"``: the model a finished run's last step started from.

        Also records which model files that state names, the only ones :meth:`save` may
        later delete. A file the state names but the folder lacks is an error.
        """
        if not self.config.warm_start or self.out is None:
            return None
        self._model_files = {k: state[k] for k in ("model_file", "model_file_before") if k in state}
        if "model_file" not in state and state["history"]:  # states before 2026-11 wrote model.pt
            self._model_files["model_file"] = MODEL_FILE
        name = self._model_files.get(key)
        if name is None:
            return None
        if not (self.out / name).is_file():
            raise FileNotFoundError(
                f"cannot resume {self.out}: its state names the warm-start model {name}, which "
                "is missing; restore it, or start the run again in a new folder"
            )
        return load(self.out / name, device=self.device)

    # -- views ----------------------------------------------------------------------------
    @functools.cached_property
    def pool_fingerprint(self) -> str:
        """Which pool the saved indices point into (a resume on another pool is refused);
        computed once, when a state is first saved or resumed."""
        return fingerprint(self.x, *(() if self.y is None else (self.y,)))

    @property
    def pool_indices(self) -> Tensor:
        """Indices neither labelled nor in the validation set, ascending."""
        taken = torch.zeros(self.x.shape[0], dtype=torch.bool)
        taken[torch.as_tensor(self.labelled + self.val, dtype=torch.long)] = True
        return torch.nonzero(~taken).flatten()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue the run (what ``state.json`` holds)."""
        return {
            "format_version": STATE_VERSION,
            "config": asdict(self.config),
            "pool_size": int(self.x.shape[0]),
            "pool_fingerprint": self.pool_fingerprint,
            "val": self.val,
            "val_labels": self.val_labels,
            "labelled": self.labelled,
            "labels": self.labels,
            "n_classes": self._n_classes(),
            "declared_n_classes": self.n_classes,  # given, or the pool's labels' max + 1
            "history": self.history,
            "rng_state": _encode_rng(self.gen),
            "pool_source": self.pool_source,
            "environment": environment(),
            "model_version": self.model_version,
        }

    # -- the loop -------------------------------------------------------------------------
    def _n_classes(self, n_labels: int | None = None) -> int:
        """Classes the model of a step with ``n_labels`` labels (default: all so far) had."""
        known = max(self.labels[:n_labels] + self.val_labels) + 1
        if self.test is not None:
            known = max(known, int(self.test[1].max()) + 1)
        return max(2, self.n_classes or 0, known)

    def _fit_step(
        self,
        step: int,
        n_labels: int,
        model: UncertaintyModel | None,
        config: ActiveConfig | None = None,
        prepare: Callable[[UncertaintyModel], UncertaintyModel] | None = None,
    ) -> tuple[UncertaintyModel, History]:
        """Train ``model`` (a fresh one if None) as step ``step`` does, on the first
        ``n_labels`` labels; returns the model and the retrain's History. ``config`` and
        ``prepare``: see :meth:`model_at`."""
        cfg = config or self.config
        seed = step_seed(cfg, step)
        if model is None:
            model = build_model(
                cfg.method,
                cfg.arch,
                tuple(self.x.shape[1:]),
                self._n_classes(n_labels),
                seed=seed,
                device=self.device,
                **cfg.model_options(),
            )
        if prepare is not None:
            model = prepare(model)
        idx = torch.as_tensor(self.labelled[:n_labels], dtype=torch.long)
        train = (self.x[idx], torch.as_tensor(self.labels[:n_labels]))
        val = None
        if self.val:
            val = (self.x[torch.as_tensor(self.val)], torch.as_tensor(self.val_labels))
        return model, retrain(model, train, val, cfg, seed)

    def _train(self, step: int) -> tuple[UncertaintyModel, History]:
        keep = self.model if self.config.warm_start else None
        self.model, history = self._fit_step(step, len(self.labelled), keep)
        return self.model, history

    def model_at(
        self,
        step: int,
        config: ActiveConfig | None = None,
        prepare: Callable[[UncertaintyModel], UncertaintyModel] | None = None,
    ) -> UncertaintyModel:
        """Retrain the model of a finished step, to inspect it (the loop keeps no models).

        It sees the same labels, seed and settings as that step did, so on the same device
        and thread count it predicts as that step's model did (its test accuracy equals the
        step's ``test_acc``). Not for warm-start runs, whose models build on each other.
        For diagnostics, ``config`` retrains with other settings on the same labels (another
        method, say), and ``prepare`` is applied to the fresh model before it trains (to
        change its loss, say).

        Example::

            learner = ActiveLearner(saved_config(out), pool, test=test, out=out, resume=True)
            model = learner.model_at(10)  # the model trained on the first 120 labels
        """
        if self.config.warm_start:
            raise ValueError(
                "model_at cannot rebuild a step of a warm-start run (each retrain continues "
                "the previous model); rerun the loop instead"
            )
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if not 0 <= step < len(self.history):
            done = f"0..{len(self.history) - 1}" if self.history else "none yet"
            raise ValueError(f"step {step} has not finished (finished steps: {done})")
        return self._fit_step(step, self.history[step]["n_labels"], None, config, prepare)[0]

    def _acquire(self, model: UncertaintyModel, step: int) -> tuple[list[int], list[float | None]]:
        cfg = self.config
        pool = self.pool_indices
        if cfg.acquire > len(pool):
            raise ValueError(f"cannot acquire {cfg.acquire} points from a pool of {len(pool)}")
        acquisition = parse_choice(cfg.acquisition, Acquisition, "acquisition")
        if acquisition is Acquisition.RANDOM:
            chosen = pool[torch.randperm(len(pool), generator=self.gen)[: cfg.acquire]]
            return [int(i) for i in chosen], [None] * cfg.acquire
        subset = pool
        if 0 < cfg.pool_subset < len(pool):
            subset = pool[torch.randperm(len(pool), generator=self.gen)[: cfg.pool_subset]]
        model_gen = torch.Generator(device=model.device).manual_seed(step_seed(cfg, step))
        chunk = auto_batch_size(model, cfg.acq_samples)  # activations of a few hundred MB
        with torch.no_grad():
            logits = model.sample_logits(self.x[subset], cfg.acq_samples, model_gen, chunk)
        probs = F.softmax(logits.double(), dim=-1).cpu()
        configs = cfg.num_configs if acquisition is Acquisition.BATCH_BALD else None
        picked = select(acquisition, probs, cfg.acquire, self.gen, configs)
        return [int(subset[i]) for i in picked.indices], [float(s) for s in picked.scores]

    def _evaluate(self, model: UncertaintyModel, step: int) -> dict[str, float]:
        if self.test is None:
            return {}
        gen = torch.Generator(device=model.device).manual_seed(self.config.seed + 7)
        with torch.no_grad():
            m = evaluate(model, *self.test, self.config.eval_samples, gen)  # auto_batch_size
        return {"test_acc": m["accuracy"], "test_nll": m["nll"]}

    def run(self, progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
        """Run the remaining steps (at most ``max_steps`` of them); returns :meth:`state`.

        Each step trains on the labelled set, evaluates, acquires ``acquire`` points (except
        after the last step) and saves the state atomically, so an interruption loses at most
        the step in progress. While it runs, the run folder is locked: a second process
        running the same folder gets a RuntimeError instead of overwriting its state.
        """
        if max_steps is not None:  # -1 ran nothing, silently
            max_steps = check_int("max_steps", max_steps, 0)
        with folder_lock(self.out):
            return self._run(progress, max_steps)

    def _run(self, progress: bool, max_steps: int | None) -> dict[str, Any]:
        cfg = self.config
        last = self.history[-1] if self.history else None
        if last is not None and not last["acquired"] and last["step"] < cfg.steps:
            # A finished run resumed with more steps: its last step acquired nothing (it was
            # the last); redo it, now acquiring, as a run with more steps would have, from the
            # model that step started from (warm start).
            self.history.pop()
            if cfg.warm_start and self.out is not None:
                if "model_file_before" in self._model_files:
                    self.model = self._saved_model(saved_state(self.out), "model_file_before")
                else:
                    warnings.warn(
                        f"{self.out} was finished before 2026-12-06 and kept only its last "
                        "model, so its last step retrains from that model and the extended run "
                        "will not match one run with these steps from the start",
                        stacklevel=3,
                    )
        start = len(self.history)
        if start == 0:  # keep the initial and validation labels before training anything
            self.save()
        end = cfg.steps + 1 if max_steps is None else min(cfg.steps + 1, start + max_steps)
        bar = tqdm(range(start, end), desc=f"active {cfg.method}/{cfg.acquisition}",
                   initial=start, total=cfg.steps + 1, disable=not progress)  # fmt: skip
        for step in bar:
            # warm start without a folder: the model to go back to lives only in memory
            kept = copy.deepcopy(self.model) if cfg.warm_start and self.out is None else None
            before = (self.gen.get_state(), len(self.labelled), len(self.history), kept)
            try:
                record = self._step(step)
            except BaseException:  # an oracle error, Ctrl-C: calling run() again redoes the
                self._undo_step(*before)  # step exactly as a resume from disk would
                raise
            if "test_acc" in record:
                bar.set_postfix(labels=record["n_labels"], test_acc=f"{record['test_acc']:.4f}")
        self.done = len(self.history) == cfg.steps + 1
        return self.state()

    def _step(self, step: int) -> dict[str, Any]:
        """Train, evaluate, acquire and label (except after the last step), then save."""
        t0 = time.perf_counter()
        model, history = self._train(step)
        metrics = self._evaluate(model, step)
        t1 = time.perf_counter()
        acquired: list[int] = []
        scores: list[float | None] = []
        if step < self.config.steps:
            acquired, scores = self._acquire(model, step)
        t2 = time.perf_counter()
        record = {
            "step": step,
            "n_labels": len(self.labelled),
            **metrics,
            "train_seconds": history.seconds,
            # a retrain's divergences (safety_bhn.fit), so a curve's dips can be traced
            "best_epoch": history.best_epoch,
            "retried_epochs": len(history.retried_epochs),
            "diverged_epoch": history.diverged_epoch,
            "acquire_seconds": t2 - t1,
            "step_seconds": t2 - t0,
            "device": device_words(self.device),
            "acquired": acquired,
            "scores": scores,
        }
        if acquired:
            new_labels = self._query(torch.as_tensor(acquired))
            self.labelled += acquired
            self.labels += new_labels
        self.history.append(record)
        self.save()
        return record

    def _undo_step(
        self, gen_state: Tensor, n_labelled: int, n_history: int, kept: UncertaintyModel | None
    ) -> None:
        """Forget a step that did not finish: its random draws, labels and record, and (warm
        start) the model it was training, which is reloaded from the last saved state, or,
        with no output folder, set back to ``kept``, the copy taken before the step."""
        self.gen.set_state(gen_state)
        del self.labelled[n_labelled:], self.labels[n_labelled:], self.history[n_history:]
        if self.config.warm_start:
            if self.out is None:
                self.model = kept
            else:
                saved = (self.out / STATE_FILE).is_file()
                self.model = self._saved_model(saved_state(self.out)) if saved else None

    def curve(self) -> list[dict[str, Any]]:
        """One row per completed step: the tidy learning curve."""
        keys = ("step", "n_labels", "test_acc", "test_nll", "train_seconds", "acquire_seconds",
                "step_seconds", "device", "best_epoch", "retried_epochs",
                "diverged_epoch")  # fmt: skip
        base = {"method": self.config.method, "acquisition": self.config.acquisition,
                "seed": self.config.seed}  # fmt: skip
        rarest = rarest_class_counts(
            self.labels, [r["n_labels"] for r in self.history], self._n_classes()
        )
        return [{**base, **{k: r.get(k) for k in keys}, "rarest_class": c}
                for r, c in zip(self.history, rarest, strict=True)]  # fmt: skip

    def save(self) -> None:
        """Write state.json and curve.csv atomically (and, with warm start, the model).

        The warm-start model goes to a file named for its step, which state.json names and
        is written after: a crash in between leaves the previous state with its own model,
        never a new model beside an old state. Older model files are removed afterwards.
        """
        if self.out is None:
            return
        state = self.state()
        owned = set(self._model_files.values())
        if self.config.warm_start and self.model is not None:
            name = f"model-step{len(self.history)}.pt"
            if name in owned:  # a finished run's last step, redone: never overwrite a named file
                name = f"model-step{len(self.history)}-{len(self.labelled)}.pt"
            last = self.history[-1] if self.history else None
            if last is not None and not last["acquired"] and "model_file" in self._model_files:
                # the last step: keep the model it started from, so that a resume with more
                # steps can redo this step exactly
                state["model_file_before"] = self._model_files["model_file"]
            state["model_file"] = name
            self.model.save(self.out / name)
        rows = self.curve()
        if rows:  # none yet when the initial labels are saved, before step 0
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write(self.out / CURVE_FILE, lambda f: f.write(buf.getvalue().encode()))
        atomic_write_json(self.out / STATE_FILE, state)
        named = {k: state[k] for k in ("model_file", "model_file_before") if k in state}
        for old in owned - set(named.values()):  # only files an earlier state of this run named
            (self.out / old).unlink(missing_ok=True)
        self._model_files = named


def _balanced(candidates: Tensor, y: Tensor, size: int) -> Tensor:
    """``size`` candidates, as equal a count per class as possible, in candidate order."""
    classes = torch.unique(y[candidates])
    per, extra = divmod(size, len(classes))
    picked = []
    for i, c in enumerate(classes):
        members = candidates[y[candidates] == c]
        want = per + (1 if i < extra else 0)
        if len(members) < want:
            raise ValueError(
                f"class {int(c)} has only {len(members)} pool points; a balanced initial set of "
                f"{size} needs {want}"
            )
        picked.append(members[:want])
    return candidates[torch.isin(candidates, torch.cat(picked))]


def run_active_learning(
    config: ActiveConfig,
    pool: Tensor | tuple | Dataset,
    oracle: Oracle | None = None,
    test: tuple[Tensor, Tensor] | Dataset | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> ActiveLearner:
    """Build an :class:`ActiveLearner`, run all its steps, and return it."""
    learner = ActiveLearner(config, pool, oracle=oracle, test=test, out=out, resume=resume)
    learner.run(progress=progress)
    return learner


def _state_path(run: str | os.PathLike) -> Path:
    """``run/state.json`` for a run folder; a path to a state file as it is."""
    path = Path(run)
    return path if path.is_file() else path / STATE_FILE


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no active-learning state file at {path}")
    state = read_json(path)
    if not isinstance(state, dict) or state.get("format_version") != STATE_VERSION:
        raise ValueError(f"{path} is not an active-learning state file")
    _check_state(path, state)
    # Runs saved before these settings existed were trained at a constant rate, no warmup.
    state["config"].setdefault("lr_schedule", "constant")
    state["config"].setdefault("lr_warmup", 0.0)
    state["config"].setdefault("select", "nll")  # and kept the best-validation-NLL weights
    # saved as typed before 2026-12-06 ("Init"); ActiveConfig now keeps the canonical name
    options = state["config"].get("options")
    if isinstance(options, dict) and isinstance(options.get("prior_mean"), str):
        try:
            prior_mean = parse_choice(options["prior_mean"], PriorMean, "prior_mean")
            options["prior_mean"] = prior_mean.value
        except ValueError:
            pass  # validate names the bad value when the config is used
    # before 2026-12-07 any acquisition took (and all but batch_bald ignored) num_configs,
    # and every method took (and all but mc_dropout ignored) dropout rates
    config = state["config"]
    if isinstance(options, dict):
        config["options"] = without_ignored_rates(config.get("method"), options)
    try:
        acquisition = parse_choice(config.get("acquisition"), Acquisition, "acquisition")
    except ValueError:
        acquisition = Acquisition.BATCH_BALD  # kept: validate names the bad name when used
    if acquisition is not Acquisition.BATCH_BALD and "num_configs" in config:
        config["num_configs"] = ActiveConfig.num_configs
    return state


def _check_state(path: Path, state: dict[str, Any]) -> None:
    """Refuse a damaged state file with one error naming what is wrong, not a KeyError or an
    IndexError halfway through a resume."""

    def bad(what: str) -> ValueError:
        return ValueError(f"{path} is a damaged active-learning state file: {what}")

    kinds = {"config": dict, "pool_size": int, "val": list, "val_labels": list,
             "labelled": list, "labels": list, "history": list, "rng_state": str}  # fmt: skip
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind):
            raise bad(f"{key!r} is missing or not a {kind.__name__}")
    n = state["pool_size"]
    for idx, lab in (("val", "val_labels"), ("labelled", "labels")):
        if len(state[idx]) != len(state[lab]):
            raise bad(f"{len(state[idx])} {idx} indices but {len(state[lab])} {lab}")
        if not all(isinstance(i, int) and 0 <= i < n for i in state[idx]):
            raise bad(f"{idx} holds indices outside the pool of {n}")
    if len(set(state["val"] + state["labelled"])) != len(state["val"]) + len(state["labelled"]):
        raise bad("an index is labelled twice, or both labelled and held out for validation")
    classes = state.get("n_classes")
    top = classes - 1 if isinstance(classes, int) and not isinstance(classes, bool) else None
    for key in ("val_labels", "labels"):
        if not all(type(v) is int and 0 <= v and (top is None or v <= top) for v in state[key]):
            limit = "" if top is None else f" up to {top}"
            raise bad(f"{key} holds something other than class numbers 0{limit}")
    for i, record in enumerate(state["history"]):
        if not isinstance(record, dict) or not {"step", "n_labels", "acquired"} <= set(record):
            raise bad(f"history entry {i} lacks step, n_labels or acquired")
        if not (isinstance(record["n_labels"], int) and isinstance(record["acquired"], list)):
            raise bad(f"history entry {i} has a bad n_labels or acquired")
    # each step was evaluated on the labels before it, then acquired some: the counts chain
    counts = [r["n_labels"] for r in state["history"]]
    for i in range(1, len(counts)):
        if counts[i] != counts[i - 1] + len(state["history"][i - 1]["acquired"]):
            raise bad(f"history entry {i} counts {counts[i]} labels, which the entry before "
                      "and its acquisitions do not add up to")  # fmt: skip
    if counts and counts[-1] + len(state["history"][-1]["acquired"]) != len(state["labelled"]):
        raise bad(f"the history accounts for {counts[-1] + len(state['history'][-1]['acquired'])} "
                  f"labels, but {len(state['labelled'])} are saved")  # fmt: skip
    try:
        _decode_rng(state["rng_state"])
    except (ValueError, RuntimeError, TypeError):
        raise bad("rng_state is not a saved random-generator state") from None


def saved_state(run: str | os.PathLike) -> dict[str, Any]:
    """The saved state of a run folder (or of a ``state.json`` path): what :meth:`state` wrote."""
    return _read_state(_state_path(run))


def check_resume(run: str | os.PathLike, config: ActiveConfig) -> None:
    """Raise the ValueError that resuming the run saved in ``run`` (a folder or its
    ``state.json``) with ``config`` would raise for its settings: settings other than the
    saved ones (only :data:`RESUMABLE` may change), or fewer steps than it has run. Needs no
    pool, so a benchmark can check every run it will continue before any of them trains."""
    path = _state_path(run)
    _check_resume(path, _read_state(path), config)


def _check_resume(path: Path, state: dict[str, Any], config: ActiveConfig) -> None:
    """:func:`check_resume` on a state already read."""
    saved = dict(state["config"])
    now = asdict(config)
    diff = [
        f"{k}: saved {saved.get(k)!r}, given {now[k]!r}"
        for k in now
        if k not in RESUMABLE and saved.get(k) != now[k]
    ]
    if diff:
        raise ValueError(
            f"cannot resume {path}: settings differ from the saved run ({'; '.join(diff)}); "
            f"only {list(RESUMABLE)} may change (saved_config(out) reads the saved settings)"
        )
    done = len(state["history"])
    if done > config.steps + 1:
        raise ValueError(
            f"cannot resume {path} with steps={config.steps}: it has run {done - 1} steps "
            f"already; pass steps >= {done - 1}"
        )


def saved_config(run: str | os.PathLike) -> ActiveConfig:
    """The settings saved by a run folder (or in a ``state.json`` path).

    Resume a run without repeating its settings::

        learner = ActiveLearner(saved_config(out), pool, test=test, out=out, resume=True)
    """
    return ActiveConfig(**saved_state(run)["config"])


def read_curve(run: str | os.PathLike) -> list[dict[str, Any]]:
    """The learning curve of a run folder (from its state file), one dict per step."""
    path = _state_path(run)
    state = _read_state(path)
    cfg = state["config"]
    base = {"run": path.parent.name, "method": cfg["method"], "acquisition": cfg["acquisition"],
            "seed": cfg["seed"]}  # fmt: skip
    history = state["history"]
    # saved since 2026-11-28; older states: the classes their labels show
    n_classes = state.get("n_classes") or max(2, max(state["labels"] + state["val_labels"]) + 1)
    rarest = rarest_class_counts(state["labels"], [r["n_labels"] for r in history], n_classes)
    return [{**base, "n_labels": r["n_labels"], "test_acc": r.get("test_acc"),
             "test_nll": r.get("test_nll"), "step_seconds": r.get("step_seconds"),
             "device": r.get("device"), "rarest_class": c}
            for r, c in zip(history, rarest, strict=True)]  # fmt: skip
