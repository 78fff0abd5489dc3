"""`build_model` and `load`: one entry point for every method and architecture."""

from __future__ import annotations

import enum
import inspect
import numbers
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import check_int, check_positive_ints, check_real, check_seed, plain_value
from .._choices import parse_choice
from .base import FORMAT_VERSION, UncertaintyModel
from .bhn import BHN
from .dropout import MCDropoutNet
from .factorial import FactorialVI
from .map import MAPNet
from .primary import cnn_layers, mlp_layers


class Method(str, enum.Enum):
    """Posterior methods."""

    BHN = "bhn"
    MC_DROPOUT = "mc_dropout"
    FACTORIAL_VI = "factorial_vi"
    MAP = "map"


class Arch(str, enum.Enum):
    """Primary-network architectures."""

    MLP = "mlp"
    CNN = "cnn"


MODEL_CLASSES: dict[Method, type[UncertaintyModel]] = {
    Method.BHN: BHN,
    Method.MC_DROPOUT: MCDropoutNet,
    Method.FACTORIAL_VI: FactorialVI,
    Method.MAP: MAPNet,
}
ARCH_OPTIONS = {
    Arch.MLP: ("hidden", "p_input", "p_hidden"),
    Arch.CNN: ("channels", "kernel_size", "dense", "p_conv", "p_hidden"),
}
#: The architecture options that only MC dropout uses.
DROPOUT_RATES = {"p_input", "p_hidden", "p_conv"}
#: The methods whose loss has no KL term (MAP: weight decay; MC dropout: its own penalty), so
#: KL weights, their annealing and ELBO samples do nothing for them.
NO_KL_METHODS = (Method.MAP, Method.MC_DROPOUT)


def without_ignored_rates(method: str | Method, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less the dropout rates that methods other than MC dropout took, and
    ignored, before 2026-12-07 (``build_model`` refuses them now), so that models and
    active-learning states saved then still load and resume."""
    try:
        method = parse_choice(method, Method, "method")
    except ValueError:  # build_model names the bad method when the options are used
        return dict(options)
    if method is Method.MC_DROPOUT:
        return dict(options)
    return {k: v for k, v in options.items() if k not in DROPOUT_RATES}


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`default_device`), checked early.

    Raises ValueError naming the problem for a string torch does not know (``"gpu"``), for a
    device type other than CPU and CUDA (``"mps"``, ``"meta"``: untested here, and ``"meta"``
    holds no values), and for a CUDA device on a machine without one, instead of torch's
    error on first use.
    """
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'"
            + (" (did you mean 'cuda'?)" if str(device).lower() == "gpu" else "")
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device {str(device)!r}: the toolkit runs on 'cpu' or 'cuda' (CUDA devices "
            "'cuda:N'); use one of them"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} asked for, but this torch build or machine has no "
                "CUDA device; use device 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def build_model(
    method: str | Method,
    arch: str | Arch = "mlp",
    in_shape: Sequence[int] = (1, 28, 28),
    n_classes: int = 10,
    *,
    seed: int | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> UncertaintyModel:
    """Build an uncertainty model.

    Args:
        method: ``"bhn"``, ``"mc_dropout"``, ``"factorial_vi"`` or ``"map"``.
        arch: ``"mlp"`` (options ``hidden=[800]``, ``p_input``, ``p_hidden``) or ``"cnn"``
            (options ``channels``, ``kernel_size``, ``dense``, ``p_conv``, ``p_hidden``); the
            dropout rates ``p_*`` for ``"mc_dropout"`` only.
        in_shape: shape of one input, e.g. ``(1, 28, 28)`` or ``(784,)`` (MLP only).
        n_classes: number of classes (outputs).
        seed: seed for the initial weights, which leaves the global RNG as it was (None: draw
            them from the global RNG, so that two calls give different weights).
        device: where the model lives (default: CUDA when available).
        **options: architecture options above, and the method's own options, e.g.
            ``coupling_layers=12`` for BHN (see each class's docstring).

    Example:
        >>> import safety_bhn
        >>> model = safety_bhn.build_model("bhn", hidden=[50], coupling_layers=2, seed=0)
        >>> model.sample_logits(torch.rand(4, 1, 28, 28), n_samples=7).shape
        torch.Size([7, 4, 10])
    """
    method = parse_choice(method, Method, "method")
    arch = parse_choice(arch, Arch, "architecture")
    target = resolve_device(device)
    in_shape = tuple(check_positive_ints("in_shape", plain_value("in_shape", in_shape)))
    n_classes = plain_value("n_classes", n_classes)
    options = {k: plain_value(k, v) for k, v in options.items()}
    n_classes = check_int("n_classes", n_classes, minimum=2)
    if seed is not None:
        seed = check_seed("seed", seed)
    cls = MODEL_CLASSES[method]
    method_keys = set(inspect.signature(cls.__init__).parameters) - {"self", "layers", "config"}
    arch_keys = set(ARCH_OPTIONS[arch])
    if method is not Method.MC_DROPOUT:  # only MC dropout's layers drop units
        rates = sorted(set(options) & DROPOUT_RATES)
        if rates:
            raise ValueError(
                f"{', '.join(rates)} set MC dropout's rates, and method {method.value!r} has no "
                "dropout (it would ignore them); drop them, or use method 'mc_dropout'"
            )
        arch_keys -= DROPOUT_RATES
    unknown = set(options) - method_keys - arch_keys
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method.value!r} with arch "
            f"{arch.value!r}; valid options: {sorted(method_keys | arch_keys)}"
        )
    arch_opts = {k: v for k, v in options.items() if k in arch_keys}
    for key in ("p_input", "p_hidden", "p_conv"):
        if key in arch_opts and check_real(key, arch_opts[key], 0.0, 1.0) == 1.0:
            raise ValueError(f"{key} must lie in [0, 1), got {arch_opts[key]!r}")
    if arch is Arch.MLP:
        arch_opts["hidden"] = check_positive_ints("hidden", arch_opts.get("hidden", [800]))
        layers = mlp_layers(in_shape, n_classes=n_classes, **arch_opts)
    else:
        if len(in_shape) != 3:
            raise ValueError(f"the CNN needs in_shape (channels, height, width), got {in_shape}")
        for key in ("channels", "kernel_size", "dense"):
            if key in arch_opts:
                check_positive_ints(key, [arch_opts[key]])
        layers = cnn_layers(in_shape, n_classes, **arch_opts)
    method_opts = {k: v for k, v in options.items() if k in method_keys}
    for key, value in method_opts.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            check_real(key, value, 0.0)  # NaN and infinities too; each method checks more
    config = {
        "method": method.value,
        "arch": arch.value,
        "in_shape": list(in_shape),
        "n_classes": n_classes,
        "options": dict(options),
    }
    if seed is None:  # drawn from (and advancing) the global RNG: two calls differ
        model = cls(layers, config, **method_opts)
    else:
        with torch.random.fork_rng(devices=[]):  # the global RNG is left as it was
            torch.manual_seed(seed)
            model = cls(layers, config, **method_opts)
    return model.to(target)


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> UncertaintyModel:
    """Load a model written by :meth:`UncertaintyModel.save` (``weights_only=True``).

    A damaged, truncated or foreign file raises ValueError naming the file and what is wrong.
    """
    target = resolve_device(device)
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a safety_bhn checkpoint")
    if not zipfile.is_zipfile(path):  # torch.load's reasons for these read as noise
        with open(path, "rb") as f:
            json_like = f.read(1) in (b"{", b"[")
        looks = " (it looks like JSON, such as a run's metrics.json)" if json_like else ""
        raise ValueError(
            f"{path} is not a safety_bhn checkpoint, or a truncated one: model.save writes a zip "
            f"archive, and this file is no complete zip{looks}; pass a run folder or its "
            "model.pt (a truncated one: retrain, or copy it again)"
        )
    try:  # torch.save writes a zip whose CRCs torch.load does not check: flipped bits load
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError):
        damaged = None  # a zip that cannot be read: torch.load below says what it is
    if damaged is not None:
        raise ValueError(
            f"{path} is damaged: its part {damaged} fails its checksum (the file changed on "
            "disk or in transfer); retrain, or copy it again from where it was saved"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's message may suggest weights_only=False: never do that
        reason = _first_line(err)
        if "weights only" in reason.lower().replace("_", " "):
            reason = "it holds Python objects that a safe load (weights_only=True) refuses"
        raise ValueError(
            f"{path} is not a readable safety_bhn checkpoint (damaged, truncated or not "
            f"written by model.save): {reason}"
        ) from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved in checkpoint format {version} by a newer safety_bhn; this "
            f"version reads format {FORMAT_VERSION}: upgrade safety_bhn"
        )
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} is not a safety_bhn checkpoint (format {FORMAT_VERSION})")
    try:
        config = payload["config"]
        options = without_ignored_rates(config["method"], config["options"])
        with torch.random.fork_rng(devices=[]):  # its weights are replaced: draw none
            model = build_model(
                config["method"],
                config["arch"],
                config["in_shape"],
                config["n_classes"],
                device="cpu",
                **options,
            )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"{path} is a damaged safety_bhn checkpoint (its configuration or weights do not "
            f"match a model): {type(err).__name__}: {_first_line(err)}"
        ) from None
    return model.to(target)
