"""safety_bhn: calibrated uncertainty with Bayesian hypernetworks, MC dropout and factorial VI."""

from .core.base import SampledNetwork, UncertaintyModel
from .core.build import Arch, Method, build_model, load
from .core.metrics import evaluate
from .core.training import History, fit

__all__ = [
    "Arch",
    "History",
    "Method",
    "SampledNetwork",
    "UncertaintyModel",
    "build_model",
    "evaluate",
    "fit",
    "load",
]
__version__ = "0.1.0"
