"""Training runs on MNIST: splits, train-and-evaluate, and run folders (checkpoint + metrics)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._checks import check_int, check_positive_ints, check_real, check_seed, plain_value
from ._choices import parse_choice
from ._io import atomic_write_json, folder_lock, read_json
from .core.base import UncertaintyModel
from .core.build import Arch, Method, build_model, load, resolve_device
from .core.metrics import classification_metrics, evaluate, predictive
from .core.training import (
    Selection,
    check_kl_anneal,
    check_lr_recipe,
    check_validation_use,
    fit,
)
from .data import DataError, class_list, embedded_mnist, load_dataset, select_classes

Split = tuple[Tensor, Tensor]


@dataclass
class TrainConfig:
    """One training run (the CLI's ``train`` flags and the benchmarks' rows)."""

    method: str = "bhn"
    """posterior method: bhn, mc_dropout, factorial_vi or map"""
    arch: str = "mlp"
    """primary network: mlp or cnn"""
    hidden: list[int] = field(default_factory=lambda: [800])
    """hidden units of the MLP"""
    coupling_layers: int = 12
    """BHN only: affine coupling layers of the hypernetwork"""
    epochs: int = 100
    """maximum training epochs"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_schedule: str = "constant"
    """constant or cosine (decays to 0 by the last epoch)"""
    lr_warmup: float = 0.0
    """fraction of all steps over which the learning rate first rises linearly"""
    batch_size: int = 100
    """minibatch size"""
    seed: int = 0
    """seeds the split, the initial weights and training"""
    val_size: int = 500
    """validation examples held out of the training set (for early stopping)"""
    patience: int | None = None
    """stop after this many epochs without a better validation score (None: train all epochs)"""
    kl_anneal: float = 0.0
    """fraction of training over which the KL weight rises linearly from 0 to 1 (bhn and
    factorial_vi only: map and mc_dropout have no KL term)"""
    select: str = "nll"
    """which epoch is kept: nll (lowest validation NLL), accuracy (first most accurate) or
    last (the final epoch)"""
    eval_samples: int = 100
    """posterior samples for test-set evaluation"""
    data_dir: str | None = None
    """folder with mnist/*.gz files (None: the copy embedded in the package)"""
    device: str | None = None
    """cpu or cuda (None: cuda when available)"""
    options: dict[str, Any] = field(default_factory=dict)
    """further method options, e.g. {"prior_std": 1.0}"""
    classes: list[int] | None = None
    """train and test on these digits only, relabelled 0..K-1 (None: all ten); e.g. [0, 1, 2,
    3, 4] leaves 5-9 unseen for the held-out-classes OOD set"""

    def validate(self) -> TrainConfig:
        """Check the names, sizes and fractions; raises a ValueError naming the first bad one
        (before any data is read). Model options are checked by ``build_model``.
        """
        # canonical names: model_options compares them ("BHN" trained 12 couplings whatever
        # coupling_layers said), and metrics.json is read back by other commands
        self.method = parse_choice(self.method, Method, "method").value
        self.arch = parse_choice(self.arch, Arch, "architecture").value
        schedule, self.lr_warmup = check_lr_recipe(self.lr_schedule, self.lr_warmup)
        self.lr_schedule = schedule.value
        select = parse_choice(self.select, Selection, "select")
        self.select = select.value
        if self.classes is not None:
            self.classes = _digits(self.classes)  # plain ints, which metrics.json can hold
        # plain Python numbers (not NumPy scalars), which metrics.json can hold
        for name, least in (("epochs", 1), ("batch_size", 1), ("eval_samples", 1), ("val_size", 0),
                            ("coupling_layers", 0)):  # fmt: skip
            setattr(self, name, check_int(name, getattr(self, name), least))
        self.seed = check_seed("seed", self.seed)
        if self.patience is not None:
            self.patience = check_int("patience", self.patience)
        self.hidden = check_positive_ints("hidden", self.hidden)
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a dict of model options, e.g. {{'prior_std': "
                             f"1.0}}, got {self.options!r}")  # fmt: skip
        self.options = {k: plain_value(k, v) for k, v in self.options.items()}
        fields = [k for k, used in (("hidden", self.arch == "mlp"),
                                    ("coupling_layers", self.method == "bhn")) if used]  # fmt: skip
        for key in fields:  # the options' value won, and metrics.json recorded the field's
            if key in self.options and self.options[key] != getattr(self, key):
                raise ValueError(
                    f"options[{key!r}]={self.options[key]!r} contradicts {key}="
                    f"{getattr(self, key)!r}, which it would override; set {key} instead and "
                    "drop it from options"
                )
        # plain strings, which metrics.json can hold (a Path or torch.device failed there,
        # after training, leaving model.pt without its metrics.json)
        if self.data_dir is not None:
            if not isinstance(self.data_dir, str | os.PathLike):
                raise ValueError(f"data_dir must be a folder path or None, got {self.data_dir!r}")
            self.data_dir = os.fspath(self.data_dir)
        if isinstance(self.device, torch.device):
            self.device = str(self.device)
        elif self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, got {self.device!r}")
        self.lr = check_real("lr", self.lr, 0.0, low_open=True)
        self.kl_anneal = check_kl_anneal(self.kl_anneal, self.method)
        no_val = "val_size=0 holds none out; pass val_size > 0"
        check_validation_use(select, self.patience, no_val if self.val_size == 0 else None)
        return self

    @property
    def n_classes(self) -> int:
        """Outputs of the model: the digits trained on."""
        return 10 if self.classes is None else len(self.classes)

    def model_options(self) -> dict[str, Any]:
        opts = dict(self.options)
        if self.arch == "mlp":
            opts.setdefault("hidden", list(self.hidden))
        if self.method == "bhn":
            opts.setdefault("coupling_layers", self.coupling_layers)
        return opts


def _digits(classes: Any) -> list[int]:
    """``classes`` as a list of at least 2 distinct digits 0-9, or a ValueError naming it."""
    try:
        digits = class_list(classes)
    except (TypeError, ValueError):
        digits = [-1]
    if not set(digits) <= set(range(10)):
        shown = list(classes) if isinstance(classes, list | tuple) else classes
        raise ValueError(f"classes must be at least 2 distinct digits 0-9, got {shown!r}")
    return digits


def mnist_test(
    data_dir: str | os.PathLike | None = None, classes: Sequence[int] | None = None
) -> Split:
    """The 10000 MNIST test images (``data_dir=None``: the embedded copy), only ``classes``
    (relabelled ``0..K-1``) if given."""
    xt, yt = embedded_mnist("test") if data_dir is None else load_dataset("mnist", "test", data_dir)
    return select_classes(xt, yt, classes) if classes is not None else (xt, yt)


def mnist_splits(
    data_dir: str | os.PathLike | None = None,
    val_size: int = 500,
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> dict[str, Split]:
    """MNIST train / val / test: ``val_size`` random training images held out for validation.

    ``data_dir=None`` uses the embedded MNIST-5000 copy (5000 train, 10000 test images).
    ``classes`` keeps those digits only, relabelled ``0..K-1`` (:func:`select_classes`).
    """
    val_size, seed = check_int("val_size", val_size, 0), check_seed("seed", seed)
    x, y = embedded_mnist("train") if data_dir is None else load_dataset("mnist", "train", data_dir)
    if classes is not None:
        x, y = select_classes(x, y, classes)
    xt, yt = mnist_test(data_dir, classes)
    if val_size >= x.shape[0]:
        raise ValueError(f"val_size must lie in [0, {x.shape[0]}), got {val_size}")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_size], perm[val_size:]
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (xt, yt)}


def cpu_words(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The host CPU's model and the vector instructions torch's kernels use (e.g. AVX2).

    Trained models are bit-for-bit reproducible on one kind of CPU with a fixed thread
    count, but not across kinds: AVX2 and AVX-512 kernels sum in different orders.
    """
    model = platform.processor() or platform.machine()
    try:
        with open(cpuinfo) as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, torch kernels {torch.backends.cpu.get_cpu_capability()}"


def device_words(device: torch.device | str) -> str:
    """What computed on ``device``: the GPU's name, or the CPU's model and torch's thread count.

    The active-learning loop stores it with every step, so that step times of a run resumed
    on another machine can be told apart.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu: {cpu_words()}, {torch.get_num_threads()} threads"
    return device.type


#: The version of what the models compute, recorded by runs that outlive one call (the
#: active-learning loop's state). A fix that changes a trained model's outputs bumps it.
#: 2: affine couplings un-permute their output (2026-12-07, commit 7be6f37); a state that
#: records none was begun before.
MODEL_VERSION = 2


def environment() -> dict[str, str]:
    """Where a result was measured: host CPU/GPU, versions and date."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus ({cpu_words()}), {device}",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


@dataclass
class RunResult:
    """A trained model, its metrics (as written to metrics.json) and its test predictive."""

    model: UncertaintyModel
    metrics: dict[str, Any]
    test_probs: Tensor


def run_names(runs: Sequence[str | os.PathLike]) -> list[str]:
    """Short distinct names for run folders, to label them in a comparison: each folder's
    name, or its last two path parts where names repeat; the same folder twice is an error.

    >>> run_names(["a/bhn", "b/mc_dropout"]), run_names(["a/run", "b/run"])
    (['bhn', 'mc_dropout'], ['a/run', 'b/run'])
    """
    paths = [Path(r).resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise ValueError(f"the runs {[str(r) for r in runs]} name one folder more than once")
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = ["/".join(p.parts[-2:]) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def check_run_name(out: str | os.PathLike) -> Path:
    """``out`` as a Path; an empty name is refused (``Path("")`` is the working folder, which a
    run would fill without a word)."""
    if not str(out).strip():
        raise ValueError("--out is empty; name a run folder (for the working folder, '.')")
    return Path(out)


def check_run_folder(
    out: str | os.PathLike, overwrite: bool = False, marker: str = "model.pt", create: bool = True
) -> Path:
    """Make sure ``out`` can take a new run before any training: create it (unless not
    ``create``), and refuse (with an error naming the fix) a path that is a file, or a folder
    holding a run already (its file ``marker``), unless ``overwrite``; an empty name too
    (``Path("")`` is the working folder, which a run would fill without a word)."""
    out = check_run_name(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; choose another --out")
    if (out / marker).exists() and not overwrite:
        raise ValueError(
            f"{out} holds a run already ({out / marker}); choose another --out, "
            "or pass --overwrite (overwrite=True) to replace it"
        )
    if create:  # an unwritable place fails here, not after training
        out.mkdir(parents=True, exist_ok=True)
    return out


#: The file that marks each command's run folder (an active-learning run with warm starts
#: keeps a model.pt too, so model.pt marks none).
RUN_MARKERS = {"metrics.json": "a training run", "state.json": "an active-learning run",
               "summary.json": "an exploration run"}  # fmt: skip


def refuse_other_runs(out: Path, own: str) -> None:
    """Refuse ``out`` if it holds another command's run than the one ``own`` (a key of
    :data:`RUN_MARKERS`) marks: even with ``overwrite``, a run would replace only some of its
    files and leave two kinds of run mixed in one folder."""
    for name, kind in RUN_MARKERS.items():
        if name != own and (out / name).is_file():
            raise ValueError(f"{out} holds {kind} ({out / name}), not {RUN_MARKERS[own]}; "
                             "choose another --out")  # fmt: skip


def _check_train_folder(out: Path, overwrite: bool, create: bool) -> Path:
    """:func:`check_run_folder` for :func:`train_and_evaluate`: a run's ``metrics.json`` alone
    counts as a saved run too, and another command's run folder is refused even with
    ``overwrite`` (:func:`refuse_other_runs`)."""
    refuse_other_runs(out, "metrics.json")
    check_run_folder(out, overwrite, "metrics.json", create=False)
    return check_run_folder(out, overwrite, create=create)


#: Where :func:`train_and_evaluate` saves training state while it trains (every minute at
#: most), so the same command, run again after an interruption, continues the run.
FIT_CHECKPOINT = "fit-checkpoint.pt"
CHECKPOINT_SECONDS = 60.0


def train_and_evaluate(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    checkpoint: str | os.PathLike | None = None,
    keep_checkpoint: bool = False,
) -> RunResult:
    """Train one model and evaluate it on the test set; write ``out/{model.pt,metrics.json}``.

    A folder that holds a run already is refused unless ``overwrite`` (see
    :func:`check_run_folder`); the check comes before training. The folder is locked while
    the run trains, so a second process writing to it fails at once instead of replacing this
    run, and an old ``metrics.json`` is removed before the new model is written, so a failed
    write never leaves a new model beside the old run's settings. Training state is saved to
    ``out/fit-checkpoint.pt`` at most every minute: after an interruption the same call (the
    same command) continues where it stopped, with the same result. Without ``out``, a
    ``checkpoint`` path does the same (a benchmark keeps its runs' checkpoints apart); with
    ``out``, a ``checkpoint`` is refused, as is ``overwrite`` without ``out``. With
    ``keep_checkpoint``, the finished state stays in ``checkpoint`` for a caller that deletes
    it once it has stored the result (a benchmark whose worker returns it to the parent).
    """
    config.validate()
    if keep_checkpoint and checkpoint is None:
        raise ValueError("keep_checkpoint=True keeps the file checkpoint names; pass checkpoint")
    if out is not None and checkpoint is not None:
        raise ValueError(
            f"checkpoint={str(checkpoint)!r} is for runs without out; with out, training state "
            f"is saved to {str(Path(out) / FIT_CHECKPOINT)!r}; drop checkpoint"
        )
    if out is None and overwrite:
        raise ValueError(
            "overwrite=True replaces a run saved in out, but out is None; pass out, or leave "
            "overwrite False"
        )
    device = resolve_device(config.device)
    model = build_model(  # checks the options, and seeds its own RNG: the order is free
        config.method,
        config.arch,
        n_classes=config.n_classes,
        seed=config.seed,
        device=device,
        **config.model_options(),
    )
    if out is not None:
        out = _check_train_folder(check_run_name(out), overwrite, create=False)
    # the data next (its own generator: the order is free), so that a missing data folder or
    # a val_size too large for it fails before the run folder is made
    splits = mnist_splits(config.data_dir, config.val_size, config.seed, config.classes)
    if out is None:
        return _train(config, model, device, splits, None, progress, checkpoint,
                      keep_checkpoint=keep_checkpoint)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)  # for the lock; checked again under it
    with folder_lock(out):
        _check_train_folder(out, overwrite, create=True)  # again: another process may have
        # finished one here. With overwrite, a checkpoint of these settings (an interrupted
        # overwrite) is continued and one of others replaced; the old run stays until saved
        return _train(config, model, device, splits, out, progress, out / FIT_CHECKPOINT,
                      replace_other=overwrite)  # fmt: skip


def _train(
    config: TrainConfig,
    model: UncertaintyModel,
    device: torch.device,
    splits: dict[str, Split],
    out: Path | None,
    progress: bool,
    checkpoint: str | os.PathLike | None,
    replace_other: bool = False,
    keep_checkpoint: bool = False,
) -> RunResult:
    history = fit(
        model,
        splits["train"],
        splits["val"] if config.val_size > 0 else None,
        epochs=config.epochs,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        lr_warmup=config.lr_warmup,
        batch_size=config.batch_size,
        seed=config.seed,
        patience=config.patience,
        kl_anneal=config.kl_anneal,
        select=config.select,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_seconds=CHECKPOINT_SECONDS,
        # kept until the run is saved: an interruption while the test set is scored (minutes,
        # for a CNN with 100 samples) would otherwise lose the whole training
        keep_checkpoint=checkpoint is not None,
        replace_other_checkpoint=replace_other,
    )
    gen = torch.Generator(device=device).manual_seed(config.seed)
    xt, yt = splits["test"]
    probs = predictive(model, xt, config.eval_samples, gen)
    metrics = {
        "config": asdict(config),
        "test": classification_metrics(probs, yt),
        "train_seconds": history.seconds,
        "history": history.to_dict(),
        "environment": environment(),
    }
    if out is not None:
        _save_run(out, model, metrics)
    if checkpoint is not None and not keep_checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return RunResult(model, metrics, probs)


def _save_run(out: Path, model: UncertaintyModel, metrics: dict[str, Any]) -> None:
    """Write ``out/model.pt`` and ``out/metrics.json``, replacing a saved run's only once both
    new files are written in full (under temp names): a failed write (metrics that JSON
    cannot hold, a full disk) leaves the old run as it was. The old ``metrics.json`` goes
    first, so that no new model ever sits beside the old run's settings."""
    new_metrics, new_model = out / ".metrics.json.new.tmp", out / ".model.pt.new.tmp"
    try:  # hidden *.tmp names: folder_lock clears any that a killed process left
        atomic_write_json(new_metrics, metrics)
        model.save(new_model)
        if (out / "model.pt").is_file():  # a rewritten file keeps its permissions
            os.chmod(new_model, (out / "model.pt").stat().st_mode & 0o777)
        (out / "metrics.json").unlink(missing_ok=True)
        os.replace(new_model, out / "model.pt")
        os.replace(new_metrics, out / "metrics.json")
    finally:
        new_model.unlink(missing_ok=True)
        new_metrics.unlink(missing_ok=True)


def load_run(
    run: str | os.PathLike, device: str | None = None
) -> tuple[UncertaintyModel, dict[str, Any]]:
    """The model of a run folder written by :func:`train_and_evaluate` (or its ``model.pt``
    path) and the training config in its ``metrics.json`` (``{}`` when there is none)."""
    path = Path(run)
    # a folder, or a name without a suffix that is not a file either (a checkpoint file may
    # have no suffix: it was taken for a folder and refused as missing)
    folder = path.is_dir() or not (path.suffix or path.is_file())
    checkpoint = path / "model.pt" if folder else path
    if not checkpoint.is_file():
        inside = sorted(str(p.parent) for p in path.glob("*/model.pt")) if path.is_dir() else []
        if inside:
            hint = f"it holds runs in {', '.join(inside)}"
        elif any(c in str(run) for c in "*?["):  # a shell pattern that matched no folder
            hint = f"no run folder matches the pattern {run}"
        else:
            hint = f"train one with 'safety-bhn train --out {run}'"
        raise FileNotFoundError(f"no checkpoint {checkpoint}; {hint}")
    metrics = checkpoint.parent / "metrics.json"
    saved = read_json(metrics) if metrics.is_file() else {}
    config = saved.get("config", {}) if isinstance(saved, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{metrics} is damaged: it should hold {{'config': {{...}}, ...}}")
    try:  # the values evaluate and ood use, each checked so that damage is named as such
        _check_saved_config(config)
    except ValueError as err:
        raise ValueError(
            f"{metrics} is damaged: its config's {err}; restore it, or retrain the run"
        ) from None
    return load(checkpoint, device=device), config


def _check_saved_config(config: dict[str, Any]) -> None:
    """Check (and make plain) the settings of a saved run's ``metrics.json`` that evaluation
    reads back; a bad one raises a ValueError naming it."""
    if "seed" in config:
        config["seed"] = check_int("seed", config["seed"], 0)
    if config.get("eval_samples") is not None:
        config["eval_samples"] = check_int("eval_samples", config["eval_samples"])
    if config.get("classes") is not None:
        config["classes"] = _digits(config["classes"])
    if config.get("data_dir") is not None and not isinstance(config["data_dir"], str):
        raise ValueError(f"data_dir must be a folder path or null, got {config['data_dir']!r}")


def evaluate_run(
    run_dir: str | os.PathLike,
    n_samples: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Test-set accuracy, NLL, ECE and Brier of the model saved in ``run_dir``.

    With the run's own seed and number of samples (from its ``metrics.json``) unless
    ``n_samples`` is given, so the figures repeat those training wrote on the same kind of
    device (a CUDA generator draws other numbers than a CPU one, so a GPU-trained run scored
    on the CPU differs by Monte Carlo noise).
    """
    model, config = load_run(run_dir, device)
    classes = config.get("classes")
    if classes is None and model.n_classes != 10:
        raise ValueError(
            f"{run_dir}: the model has {model.n_classes} classes, but no metrics.json beside "
            "its model.pt says which digits it learned; keep the run folder's metrics.json"
        )
    if classes is not None and len(classes) != model.n_classes:
        raise ValueError(
            f"{run_dir}: its metrics.json names {len(classes)} classes {list(classes)}, but "
            f"the model has {model.n_classes}; the two files come from different runs"
        )
    if data_dir is not None:
        xt, yt = mnist_test(data_dir, classes)  # the training files need not be there
    else:
        xt, yt = _saved_test_set(run_dir, config.get("data_dir"), classes)
    gen = torch.Generator(device=model.device).manual_seed(config.get("seed", 0))
    n_samples = n_samples if n_samples is not None else config.get("eval_samples")
    return evaluate(model, xt, yt, n_samples=n_samples, generator=gen)


def _saved_test_set(
    run_dir: str | os.PathLike, data_dir: str | None, classes: list[int] | None
) -> Split:
    """The test set of the data folder a run was trained from (its ``metrics.json`` names
    it); one that is gone (a run copied to another machine) is named as the run's, with the
    fix, rather than as a ``data_dir`` argument the user never passed."""
    try:
        return mnist_test(data_dir, classes)
    except DataError as err:
        if data_dir is None:
            raise
        reason = str(err).splitlines()[0].replace(" (from the data_dir argument)", "")
        reason = reason.rstrip(".")
        raise DataError(
            f"{run_dir} was trained on the MNIST files in data_dir {data_dir} (its "
            f"metrics.json says so), but {reason}; pass --data-dir (data_dir=) a folder "
            "holding mnist/t10k-images-idx3-ubyte.gz and mnist/t10k-labels-idx1-ubyte.gz"
        ) from None
