"""`safety-bhn quickstart`: BHN vs MC dropout on the embedded MNIST-5000, in a few minutes."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, read_json
from .runs import TrainConfig, check_run_name, mnist_splits, train_and_evaluate

# 123 s in all on 2 idle CPU cores (measured 2026-11-26);
# the same epochs as benchmarks/mnist5000.py.
DEFAULT_EPOCHS = 60
NEXT_STEPS = """\
What to try next:
  safety-bhn train --method bhn --epochs 200 --out runs/bhn    (the paper's 200: more accurate)
  safety-bhn evaluate runs/bhn                                  (accuracy, NLL, ECE, Brier)
  python benchmarks/mnist5000.py --quick                        (the paper's Table 2, small)
  In Python: model.sample_logits(x, n_samples) gives (samples, batch, classes) for your own
  uncertainty scores; model.sampled() freezes one posterior draw for Thompson sampling."""


def quickstart(
    out: str | os.PathLike = "runs/quickstart",
    epochs: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train BHN (12 couplings) and MC dropout, print a table, save a reliability diagram.

    Running it again replaces the models of the earlier quickstart in ``out``, and only
    those: ``out/quickstart.json`` records a digest of each run it wrote, and a run folder
    whose ``metrics.json`` it did not write (a model you trained there) is refused. After an
    interruption, the same command continues the run it stopped in (from the training state
    saved in ``out/<method>/fit-checkpoint.pt``) instead of starting over.
    """
    from .plots import reliability_diagram

    out = check_run_name(out)  # "" would fill the working folder
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"{out} is a file, not a folder for the quickstart's runs; choose another --out"
        )
    methods = ("bhn", "mc_dropout")
    record = out / "quickstart.json"
    written = _read_record(record)
    for method in methods:
        if (out / method).exists() and not (out / method).is_dir():  # not after training bhn
            raise ValueError(f"{out / method} is a file, not a folder for the quickstart's "
                             f"{method} run; choose another --out, or move that file")  # fmt: skip
        metrics = out / method / "metrics.json"
        if (out / method / "model.pt").exists() and not (
            metrics.is_file()
            and (
                written.get(method) == _digest(metrics)
                or (not record.is_file() and _is_quickstart_run(metrics, method))
            )
        ):
            raise ValueError(
                f"{out / method} holds a run the quickstart did not write; choose another "
                "--out for the quickstart, or move that run"
            )
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    start = time.perf_counter()
    results, predictions = {}, {}
    xt, yt = mnist_splits(None, val_size=0)["test"]
    for method in methods:
        print(f"training {method} on the embedded MNIST-5000 ({epochs} epochs) ...", flush=True)
        config = TrainConfig(method=method, epochs=epochs, device=device, eval_samples=100)
        # a finished run is replaced; an interrupted one (its fit-checkpoint.pt only) resumed
        finished = any((out / method / name).exists() for name in ("model.pt", "metrics.json"))
        run = train_and_evaluate(config, out / method, progress=progress, overwrite=finished)
        results[method] = run.metrics
        written[method] = _digest(out / method / "metrics.json")
        atomic_write_json(record, {"runs": written})
        predictions[method] = (run.test_probs, yt)
    plot = reliability_diagram(predictions, out / "reliability.png")
    print(
        f"\nMLP 784-800-10 on 4500 MNIST images (500 held out), tested on 10000; "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    print(f"{'method':<12}{'accuracy':>10}{'NLL':>8}{'ECE':>8}{'Brier':>8}{'train s':>9}")
    for method, m in results.items():
        t = m["test"]
        print(
            f"{method:<12}{t['accuracy']:>10.4f}{t['nll']:>8.4f}{t['ece']:>8.4f}"
            f"{t['brier']:>8.4f}{m['train_seconds']:>9.1f}"
        )
    print(f"\nsaved {out}/<method>/model.pt, metrics.json and the reliability diagram {plot}\n")
    print(NEXT_STEPS)
    return results


def _read_record(record: Path) -> dict[str, str]:
    """The digests in ``quickstart.json`` (``{}`` when there is none); a damaged file raises
    a ValueError naming it."""
    if not record.is_file():
        return {}
    saved = read_json(record)
    runs = saved.get("runs", {}) if isinstance(saved, dict) else None
    if not (isinstance(runs, dict) and all(isinstance(v, str) for v in runs.values())):
        raise ValueError(
            f"{record} is damaged: it should hold {{'runs': {{method: digest}}}}; delete it "
            "(the quickstart then replaces only runs that have exactly its settings)"
        )
    return runs


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes: which run the quickstart wrote in a folder."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_quickstart_run(metrics: Path, method: str) -> bool:
    """Whether a run written before quickstart.json existed (2026-12-06) has exactly the
    settings a quickstart gives ``method`` (any epochs and device)."""
    saved = read_json(metrics)
    config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(config, dict):  # damaged: not provably the quickstart's
        return False
    expected = TrainConfig(method=method, epochs=config.get("epochs"), device=config.get("device"),
                           eval_samples=100)  # fmt: skip
    return config == asdict(expected)
