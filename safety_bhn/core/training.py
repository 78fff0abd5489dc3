"""`fit`: minibatch training with KL annealing, gradient clipping and early stopping."""

from __future__ import annotations

import copy
import enum
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .._checks import check_flag, check_int, check_real, check_seed
from .._choices import parse_choice
from .._io import fingerprint, load_state, save_state
from .base import UncertaintyModel
from .build import NO_KL_METHODS
from .metrics import evaluate

Data = tuple[Tensor, Tensor] | Dataset


class LRSchedule(str, enum.Enum):
    """How the learning rate changes over the steps of :func:`fit`."""

    CONSTANT = "constant"
    """``lr`` throughout"""
    COSINE = "cosine"
    """from ``lr`` down to 0 along half a cosine over all ``epochs`` (per step)"""


class Selection(str, enum.Enum):
    """Which validation metric picks the weights that :func:`fit` keeps."""

    NLL = "nll"
    """the epoch with the lowest validation NLL (default)"""
    ACCURACY = "accuracy"
    """the first epoch with the highest validation accuracy (the BHN authors' protocol)"""
    LAST = "last"
    """the final epoch (validation is still recorded in the history, but picks nothing)"""


def check_validation_use(select: Selection, patience: int | None, missing: str | None) -> None:
    """Refuse ``patience`` with ``select="last"``, and ``patience`` or ``select="accuracy"``
    when there is no validation data to choose weights on; ``missing`` says why there is none
    (None: there is some)."""
    if select is Selection.LAST and patience is not None:
        raise ValueError(
            f"patience={patience!r} stops on a validation metric, but select='last' keeps the "
            "final epoch whatever validation says; pass patience=None, or select='nll'"
        )
    if missing is not None and (patience is not None or select is Selection.ACCURACY):
        what = f"patience={patience!r}" if patience is not None else "select='accuracy'"
        raise ValueError(f"{what} chooses weights on validation data, but {missing}")


def schedule_factor(schedule: LRSchedule, step: int, total: int, warmup: int = 0) -> float:
    """The multiplier of ``lr`` for optimiser step ``step`` (from 0) of ``total``.

    The first ``warmup`` steps rise linearly, ``(step + 1) / warmup``, to the schedule's value.
    """
    factor = 1.0
    if schedule is LRSchedule.COSINE:
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if step < warmup:
        factor *= (step + 1) / warmup
    return factor


def check_lr_recipe(lr_schedule: str | LRSchedule, lr_warmup: float) -> tuple[LRSchedule, float]:
    """Check a learning-rate schedule name and warmup fraction; return both, the fraction as
    a plain ``float`` (a NumPy scalar could not be saved in a checkpoint or in JSON)."""
    schedule = parse_choice(lr_schedule, LRSchedule, "lr_schedule")
    try:
        return schedule, check_real("lr_warmup", lr_warmup, 0.0, 1.0)
    except ValueError:
        raise ValueError(f"lr_warmup must lie in [0, 1], got {lr_warmup!r}") from None


def check_kl_anneal(kl_anneal: float, method: str) -> float:
    """Check a KL-annealing fraction; refuse a positive one for a method without a KL term."""
    kl_anneal = check_real("kl_anneal", kl_anneal, 0.0, 1.0)
    if kl_anneal > 0 and method in NO_KL_METHODS:
        raise ValueError(
            f"kl_anneal={kl_anneal!r} ramps up the KL term of 'bhn' and 'factorial_vi', but "
            f"{method!r} has no KL term and would ignore it; leave kl_anneal at 0"
        )
    return kl_anneal


#: An epoch diverged when its mean training loss is not finite or exceeds the previous
#: epoch's by more than this many times max(1, |previous|): fit then restores the state of the
#: epoch's start and trains it again, with the random draws that follow (see ``fit``).
DIVERGENCE_FACTOR = 10.0
#: how many times one diverged epoch is trained again before ``fit`` gives up
MAX_RETRIES = 3


def _diverged(loss: float, previous: float | None) -> bool:
    """Whether an epoch's mean training loss says the run diverged (see DIVERGENCE_FACTOR)."""
    if not math.isfinite(loss):
        return True
    return previous is not None and loss > previous + DIVERGENCE_FACTOR * max(1.0, abs(previous))


@dataclass
class History:
    """What happened during :func:`fit` (one entry per epoch; validation where evaluated)."""

    train_loss: list[float] = field(default_factory=list)
    val_epochs: list[int] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    #: the epoch whose weights fit kept (the last one without validation or with "last")
    best_epoch: int = -1
    epochs_run: int = 0
    seconds: float = 0.0
    #: epochs that diverged and were trained again from their start (once per retry)
    retried_epochs: list[int] = field(default_factory=list)
    #: the epoch that still diverged after every retry, where training stopped (else None)
    diverged_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_checkpoint(
    path: str | os.PathLike, settings: dict[str, Any], replace_other: bool = False
) -> dict[str, Any] | None:
    """The training state saved at ``path`` by :func:`fit` (None: no file yet); one saved
    with other settings, data or initial weights is refused, naming what differs (with
    ``replace_other``: None, so training starts afresh and replaces it)."""
    path = Path(path)
    if not path.is_file():
        return None
    saved = load_state(path, "settings", "delete it to train from the start")
    had = saved["settings"]
    # fingerprints of the data (saved since 2026-12-06) and of the initial weights (since
    # 2026-12-07) are not checked where an older checkpoint lacks them
    differ = [f"{k}: saved {had.get(k)!r}, now {v!r}" for k, v in settings.items()
              if had.get(k) != v and not (k in ("data", "init") and k not in had)]  # fmt: skip
    if differ and replace_other:
        return None
    if differ:
        raise ValueError(f"{path} was saved by another training run ({'; '.join(differ)}); "
                         "delete it, or pass the same settings to resume")  # fmt: skip
    return saved


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused: one kernel updates every parameter. A BHN has ~3M flow parameters in
    dozens of tensors, and the unfused update made its CPU training step about 2x slower."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def as_tensors(data: Data, name: str = "data") -> tuple[Tensor, Tensor]:
    """Accept ``(x, y)`` tensors or a ``Dataset`` of ``(x, y)`` pairs; return stacked tensors."""
    pair = isinstance(data, tuple | list) and len(data) == 2
    if pair and all(isinstance(t, Tensor) for t in data):
        x, y = data
    elif isinstance(data, Dataset):
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        try:  # labels stacked as given: a float or one-hot label fails the label checks
            pairs = [data[i] for i in range(len(data))]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        except (TypeError, ValueError, IndexError, RuntimeError) as err:
            raise TypeError(
                f"{name}: a Dataset must yield (x, y) pairs of equal-shaped inputs and integer "
                f"labels: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
    else:
        raise TypeError(f"{name} must be a pair of tensors (x, y) or a Dataset of (x, y) pairs")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return x, y


def _warn_if_classes_differ(y_train: Tensor, y_val: Tensor) -> None:
    """Warn when the validation labels hold classes the training labels lack: a split of
    data sorted by class (say the first 90% for training) validates on digits never seen."""
    seen, val = set(torch.unique(y_train).tolist()), set(torch.unique(y_val).tolist())
    unseen = sorted(val - seen)
    if unseen:
        warnings.warn(
            f"the validation labels include classes {unseen} that the training labels lack, "
            "so validation cannot pick good weights; is the data sorted by class? Shuffle "
            "before splitting (e.g. safety_bhn.runs.mnist_splits)",
            stacklevel=3,
        )


def fit(
    model: UncertaintyModel,
    train: Data,
    val: Data | None = None,
    *,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 100,
    seed: int = 0,
    patience: int | None = None,
    kl_anneal: float = 0.0,
    grad_clip: float | None = 100.0,
    lr_schedule: str | LRSchedule = LRSchedule.CONSTANT,
    lr_warmup: float = 0.0,
    val_samples: int = 10,
    eval_every: int = 1,
    select: str | Selection = Selection.NLL,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_seconds: float = 60.0,
    keep_checkpoint: bool = False,
    replace_other_checkpoint: bool = False,
) -> History:
    """Train ``model`` by minimising ``model.loss`` with Adam; returns a :class:`History`.

    An epoch that diverges (its mean training loss not finite, or above the previous epoch's
    by more than ``DIVERGENCE_FACTOR`` times max(1, |previous|)) is rolled back to its start
    (weights, optimiser and schedule) and trained again with the random draws that follow,
    with a ``RuntimeWarning``; ``History.retried_epochs`` lists them. If it diverges again
    after ``MAX_RETRIES`` retries, training stops there (``History.diverged_epoch``, another
    warning) and keeps what it would have kept had ``epochs`` ended before that epoch (the
    best validated one, or the last one); in the first epoch, with nothing to keep, ``fit``
    raises ``FloatingPointError``. A run that never diverges is exactly the same as without
    this.

    Args:
        train: ``(x, y)`` tensors or a ``Dataset`` of pairs.
        val: optional validation data; the weights of the epoch that ``select`` picks are kept
            (without ``val``, the final epoch's).
        epochs: maximum passes over ``train``.
        lr: Adam learning rate.
        batch_size: examples per step.
        seed: seeds shuffling, data-dependent initialisation and the model's noise.
        patience: stop after this many validations without improvement (None: never).
        kl_anneal: fraction of all steps over which the KL weight rises linearly from 0 to 1
            (BHN and factorial VI: MAP and MC dropout have no KL term and refuse it).
        grad_clip: maximum gradient norm (None: no clipping).
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 by the last epoch). Cosine
            lets the weights settle at the end of a short run; the active-learning loop uses
            it (see :class:`safety_bhn.active.ActiveConfig`).
        lr_warmup: fraction of all steps over which the rate first rises linearly to ``lr``.
            Adam's first steps move every parameter by about ``lr`` in the direction of its
            gradient's sign. In a BHN coupling's output layer (zero at init, fed by 200
            non-negative hidden units) those moves add up, so one full-rate first step can
            shift every scale at once and throw a short training run off course; a short
            warmup avoids it (measured by ``benchmarks/al_recipe.py``).
        val_samples: posterior samples for the validation predictive (unused without ``val``).
        eval_every: validate every this many epochs (unused without ``val``).
        select: ``"nll"`` keeps the epoch with the lowest validation NLL; ``"accuracy"`` the
            first with the highest validation accuracy; ``"last"`` the final epoch. NLL also
            penalises overconfidence, so with a weak regulariser it can stop long before
            accuracy peaks. On a small validation set either metric is noisy enough to pick an
            early, undertrained epoch; with a cosine schedule, whose rate decays to 0, the final
            weights have settled and ``"last"`` avoids that. Patience counts validations
            without improvement of the same metric (and cannot be combined with ``"last"``).
        progress: show a tqdm progress bar.
        checkpoint: a file to save the training state to at the end of an epoch, at most
            every ``checkpoint_seconds``, and to resume from: if it exists, ``fit`` continues
            from its last saved epoch exactly as the uninterrupted call would (same data,
            settings and model, which it checks), and it deletes the file when training ends.
        checkpoint_seconds: the least time between two saves of ``checkpoint`` (0: every epoch).
        keep_checkpoint: when training ends, save the finished state to ``checkpoint`` instead
            of deleting it, for a caller that deletes it once it has saved what it does with
            the trained model (a rerun of ``fit`` then returns the same model and history at
            once, without training).
        replace_other_checkpoint: a ``checkpoint`` saved by another training run (other
            settings, data or initial weights) is replaced, training from the start, instead
            of refused (``safety-bhn train --overwrite``: an interrupted overwrite continues,
            an old run's state gives way).

    Example:
        >>> import safety_bhn
        >>> model = safety_bhn.build_model("map", hidden=[8], in_shape=(4,), n_classes=2)
        >>> x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
        >>> fit(model, (x, y), epochs=2, progress=False).epochs_run
        2
    """
    epochs, batch_size = check_int("epochs", epochs), check_int("batch_size", batch_size)
    eval_every, val_samples = (
        check_int("eval_every", eval_every),
        check_int("val_samples", val_samples),
    )
    seed = check_seed("seed", seed)
    if patience is not None:
        patience = check_int("patience", patience)
    lr = check_real("lr", lr, 0.0, low_open=True)
    if grad_clip is not None:  # a plain float, which a checkpoint can hold
        try:
            grad_clip = check_real("grad_clip", grad_clip, 0.0, low_open=True)
        except ValueError:
            raise ValueError(
                f"grad_clip must be positive (None: no clipping), got {grad_clip!r}"
            ) from None
    kl_anneal = check_kl_anneal(kl_anneal, model.method)
    schedule, lr_warmup = check_lr_recipe(lr_schedule, lr_warmup)
    if val is not None and eval_every > epochs:
        raise ValueError(
            f"eval_every={eval_every} is more than epochs={epochs}, so validation would never "
            "run and no epoch could be selected; pass eval_every <= epochs"
        )
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ValueError(
            f"checkpoint {str(checkpoint)!r} is a folder; pass a file in it, e.g. "
            f"{str(Path(checkpoint) / 'fit-checkpoint.pt')!r}"
        )
    select = parse_choice(select, Selection, "select")
    no_val = ("val is None; pass val=(x, y), or leave it out (without val, fit keeps the final "
              "epoch)")  # fmt: skip
    check_validation_use(select, patience, no_val if val is None else None)
    x, y = as_tensors(train, "train")
    x = model.check_input(x)
    y = model.check_targets(y, x.shape[0])
    n = x.shape[0]
    if val is not None:
        xv, yv = as_tensors(val, "val")
        xv = model.check_input(xv)
        try:  # checked now, not after the first epoch's training
            model.check_targets(yv, xv.shape[0])
        except (TypeError, ValueError) as err:
            raise type(err)(f"val: {err}") from None
        _warn_if_classes_differ(y, yv)

    checkpoint_seconds = check_real("checkpoint_seconds", checkpoint_seconds, 0.0)
    keep_checkpoint = check_flag("keep_checkpoint", keep_checkpoint)
    if keep_checkpoint and checkpoint is None:
        raise ValueError("keep_checkpoint=True keeps the file checkpoint names; pass checkpoint")
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                "patience": patience, "kl_anneal": kl_anneal, "grad_clip": grad_clip,
                "lr_schedule": schedule.value, "lr_warmup": lr_warmup, "val_samples": val_samples,
                "eval_every": eval_every, "select": select.value, "n_train": n,
                "n_val": None if val is None else xv.shape[0], "model": model.config}  # fmt: skip
    replace_other_checkpoint = check_flag("replace_other_checkpoint", replace_other_checkpoint)
    if checkpoint is not None:  # resuming on other data, or another model of the same
        # architecture (another seed), is refused too
        settings["data"] = fingerprint(x, y, *(() if val is None else (xv, yv)))
        settings["init"] = fingerprint(*model.state_dict().values())
    saved = (_read_checkpoint(checkpoint, settings, replace_other_checkpoint)
             if checkpoint is not None else None)  # fmt: skip
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    val_gen_seed = seed + 1
    if hasattr(model, "init_from_data") and not bool(model.initialized):
        model.init_from_data(x[torch.randperm(n, generator=gen)[:1000].to(x.device)])

    opt = make_optimizer(model, lr)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    anneal_steps = kl_anneal * epochs * steps_per_epoch
    total_steps = epochs * steps_per_epoch
    warmup = math.ceil(lr_warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: schedule_factor(schedule, t, total_steps, warmup)
    )
    history = History()
    best_state, best_score, since_best = None, float("inf"), 0
    start, step, first = time.perf_counter(), 0, 0
    if saved is not None:  # everything the epochs so far changed, as it was after the last
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["gen"])
        torch.set_rng_state(saved["torch_rng"])
        if x.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], x.device)
        was = saved.get("device")  # absent in checkpoints before 2026-12-07
        if was is not None and was != x.device.type:
            warnings.warn(
                f"{checkpoint} was saved training on {was} and resumes on {x.device.type}: "
                "the random draws of the rest go on from another generator, so the run will "
                "not repeat one trained without a break; resume on the same device for that",
                stacklevel=2,
            )
        history = History(**saved["history"])
        best_state, best_score = saved["best_state"], saved["best_score"]
        since_best, step, first = saved["since_best"], saved["step"], history.epochs_run
        start -= history.seconds
        print(f"resuming the training saved in {checkpoint}: {first} of {epochs} epochs done",
              file=sys.stderr)  # fmt: skip

    def state() -> dict[str, Any]:
        """Everything the epochs so far changed, for ``checkpoint``."""
        now = {"settings": settings, "model": model.state_dict(),
               "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
               "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
               "history": history.to_dict(), "best_state": best_state,
               "best_score": best_score, "since_best": since_best, "step": step,
               "device": x.device.type}  # fmt: skip
        if x.device.type == "cuda":
            now["cuda_rng"] = torch.cuda.get_rng_state(x.device)
        return now

    last_save = time.perf_counter()
    finished = saved is not None and saved.get("finished", False)  # kept by keep_checkpoint
    bar = tqdm(range(first, first if finished else epochs), desc=f"fit {model.method}",
               disable=not progress, leave=False, initial=first, total=epochs)  # fmt: skip

    def train_epoch() -> float:
        """One pass over ``train``; returns the mean training loss."""
        nonlocal step
        model.train()
        # summed on the device and read once per epoch: no GPU sync per step
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for idx in torch.randperm(n, generator=gen).to(x.device).split(batch_size):
            kl_weight = min(1.0, step / anneal_steps) if anneal_steps > 0 else 1.0
            loss = model.loss(x[idx], y[idx], n, kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            scheduler.step()
            total += loss.detach().double() * len(idx)
            step += 1
        return total.item() / n

    for epoch in bar:
        # The epoch's start, to come back to if it diverges: a BHN's couplings can chain
        # their scales into a blow-up from which the saturated tanh clamp never recovers
        # (MNIST-5000, 1200 units, seed 3: loss 0.15 -> 5141 in one step of epoch 37, and
        # stuck there for the remaining 963 epochs). Taking the copy draws no random
        # numbers, so a run that never diverges is the same as without it.
        start_state = copy.deepcopy((model.state_dict(), opt.state_dict(),
                                     scheduler.state_dict(), step))  # fmt: skip
        previous = history.train_loss[-1] if history.train_loss else None
        for attempt in range(MAX_RETRIES + 1):
            mean_loss = train_epoch()
            if not _diverged(mean_loss, previous):
                break
            told = f"training loss became {mean_loss:.4g} in epoch {epoch} (previous epoch: "
            if attempt == MAX_RETRIES and previous is None:  # no epoch to fall back on
                raise FloatingPointError(
                    f"{told}none), {MAX_RETRIES + 1} times from the start; try a smaller lr"
                )
            model_state, opt_state, scheduler_state, step = copy.deepcopy(start_state)
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
            scheduler.load_state_dict(scheduler_state)
            if attempt == MAX_RETRIES:
                history.diverged_epoch = epoch
                warnings.warn(
                    f"{told}{previous:.4g}), {MAX_RETRIES + 1} times from the epoch's start: "
                    f"training stops after {epoch} epochs and keeps "
                    + ("the best validated epoch" if val is not None else "the last one")
                    + "; try a smaller lr",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            warnings.warn(
                f"{told}{previous}); training the epoch again from its start with new random "
                f"draws (retry {attempt + 1} of {MAX_RETRIES})",
                RuntimeWarning,
                stacklevel=2,
            )
            history.retried_epochs.append(epoch)
        if history.diverged_epoch is not None:
            break
        history.train_loss.append(mean_loss)
        history.epochs_run = epoch + 1
        postfix = {"loss": f"{mean_loss:.4f}"}
        if val is not None and (epoch + 1) % eval_every == 0:
            gen_val = torch.Generator(device=x.device).manual_seed(val_gen_seed)
            metrics = evaluate(model, xv, yv, val_samples, generator=gen_val)
            history.val_epochs.append(epoch)
            history.val_nll.append(metrics["nll"])
            history.val_accuracy.append(metrics["accuracy"])
            postfix.update(val_nll=f"{metrics['nll']:.4f}", val_acc=f"{metrics['accuracy']:.4f}")
            if select is not Selection.LAST:  # "last" records validation, picks nothing
                # lower is better for both scores
                score = metrics["nll"] if select is Selection.NLL else -metrics["accuracy"]
                if score < best_score:
                    best_score, since_best, history.best_epoch = score, 0, epoch
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                    if patience is not None and since_best >= patience:
                        bar.set_postfix(postfix)
                        break
        bar.set_postfix(postfix)
        due = time.perf_counter() - last_save >= checkpoint_seconds
        if checkpoint is not None and due and epoch < epochs - 1:
            history.seconds = time.perf_counter() - start
            save_state(checkpoint, state())
            last_save = time.perf_counter()
    if checkpoint is not None and keep_checkpoint and not finished:
        history.seconds = time.perf_counter() - start
        save_state(checkpoint, {**state(), "finished": True})
    elif checkpoint is not None and not keep_checkpoint:
        Path(checkpoint).unlink(missing_ok=True)  # trained: nothing left to resume
    if best_state is not None:
        model.load_state_dict(best_state)
    if select is Selection.LAST or val is None:  # the final epoch is the one kept
        history.best_epoch = history.epochs_run - 1
    history.seconds = time.perf_counter() - start
    return history
