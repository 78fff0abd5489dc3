"""Shared pytest fixtures."""

import importlib
import os
import sys
from pathlib import Path

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The offline data folder: ``$SAFETY_BHN_DATA`` if set, else ``../shared/data`` from the
    project root (this project's layout)."""
    folder = Path(os.environ.get("SAFETY_BHN_DATA") or SHARED_DATA_DIR)
    if not (folder / "mnist").is_dir():
        pytest.skip(
            f"data folder not found at {folder} (set SAFETY_BHN_DATA, or put ../shared/data "
            "next to the project root, holding mnist/, mnist-extra5k/ and fashion-mnist/)"
        )
    return folder


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test models are tiny: one intra-op thread is faster and avoids oversubscribing CI's cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def benchmark_module():
    """``benchmark_module("ood")`` imports ``benchmarks/ood.py`` (a script, not a package)."""

    def load(name: str):
        sys.path.insert(0, BENCHMARKS)
        try:
            return importlib.import_module(name)
        finally:
            while BENCHMARKS in sys.path:  # the scripts add it too
                sys.path.remove(BENCHMARKS)

    return load
