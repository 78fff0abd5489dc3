"""Per-class view of active-learning runs: labels, test accuracy and BALD score per digit.

Rebuilds the model of chosen steps of finished MNIST runs with ``ActiveLearner.model_at``
(same labels, seed and settings; the loop keeps no models), checks that it scores the test
accuracy the run recorded, and reports, per digit, how many labels the step had, the test
accuracy and the mean mutual information (BALD score) on that digit's test images.

    python benchmarks/al_class_accuracy.py   # BALD runs of seeds 0 and 1 in runs/al-full
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    check_al_steps,
    check_flags,
    command_line,
    flag_errors,
    markdown_table,
    parse_args,
    write_csv,
)

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.active import ActiveLearner, bald, mnist_pool, saved_config  # noqa: E402
from safety_bhn.active.loop import saved_state  # noqa: E402
from safety_bhn.core.build import resolve_device  # noqa: E402
from safety_bhn.core.metrics import auto_batch_size, classification_metrics  # noqa: E402
from safety_bhn.runs import device_words, environment  # noqa: E402


@dataclass
class Args:
    """Per-class labels, accuracy and BALD score of rebuilt active-learning steps."""

    runs_dir: str = "runs/al-full"
    """folder holding the run folders (as benchmarks/active_learning.py --runs-dir)"""
    runs: list[str] = field(
        default_factory=lambda: [
            "bhn-bald-seed0",
            "mc_dropout-bald-seed0",
            "bhn-bald-seed1",
            "mc_dropout-bald-seed1",
        ]
    )
    """run folders inside runs_dir"""
    steps: list[int] = field(default_factory=lambda: [10, 20])
    """steps to rebuild (step k of the benchmark has 20 + 10 k labels)"""
    threads: int = 1
    """torch CPU threads (the benchmark's runs used 1; other counts change the last digits)"""
    device: str = "cpu"
    """where to retrain (cpu or cuda)"""
    out_dir: str = str(RESULTS / "al_class_accuracy")
    """where al_class_accuracy.{md,csv,png} go"""


def per_class(
    probs: torch.Tensor, y: torch.Tensor, labels: list[int], n_classes: int
) -> list[dict]:
    """One row per class from posterior samples ``probs[n_samples, batch, classes]``:
    labels of the class, test images, accuracy of the predictive and mean BALD score."""
    pred = probs.mean(0).argmax(-1)
    mi = bald(probs)
    rows = []
    for c in range(n_classes):
        mask = y == c
        rows.append({
            "digit": c,
            "labels": labels.count(c),
            "test_images": int(mask.sum()),
            "class_acc": float((pred[mask] == c).double().mean()) if mask.any() else float("nan"),
            "mean_bald": float(mi[mask].mean()) if mask.any() else float("nan"),
        })  # fmt: skip
    return rows


@functools.cache
def _pool(data_dir: str | None, extra: bool) -> tuple:
    """The runs' pool and test set, read once for all rebuilt steps."""
    return mnist_pool(data_dir, extra=extra)


def rebuild(args: Args, run: str, step: int) -> tuple[list[dict], dict]:
    """Per-class rows of one step of one run, and a summary (recorded vs rebuilt accuracy)."""
    folder = Path(args.runs_dir) / run
    state = saved_state(folder)
    source = state.get("pool_source", {})
    pool, test = _pool(source.get("data_dir"), source.get("extra", False))
    config = replace(saved_config(folder), device=args.device)
    learner = ActiveLearner(config, pool, test=test, out=folder, resume=True)
    model = learner.model_at(step)
    record = learner.history[step]
    gen = torch.Generator(device=model.device).manual_seed(config.seed + 7)  # as the loop
    model.eval()
    with torch.no_grad():
        logits = model.sample_logits(
            test[0], config.eval_samples, gen, auto_batch_size(model, config.eval_samples)
        )
    probs = F.softmax(logits, dim=-1).cpu()
    metrics = classification_metrics(probs.mean(0), test[1])
    n = record["n_labels"]
    base = {"run": run, "method": config.method, "acquisition": config.acquisition,
            "seed": config.seed, "step": step, "n_labels": n}  # fmt: skip
    rows = [{**base, **r} for r in per_class(probs.double(), test[1], state["labels"][:n], 10)]
    summary = {**base, "recorded_acc": record.get("test_acc"), "rebuilt_acc": metrics["accuracy"],
               "recorded_device": record.get("device") or "not recorded"}  # fmt: skip
    return rows, summary


def plot(rows: list[dict], path: Path) -> None:
    """Per-digit test accuracy, one panel per step, a bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    import seaborn as sns

    grid = sns.catplot(pd.DataFrame(rows), x="digit", y="class_acc", hue="run", col="n_labels",
                       kind="bar", height=3.2, aspect=1.6)  # fmt: skip
    grid.set_axis_labels("digit", "test accuracy on the digit")
    grid.figure.savefig(path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    command = command_line("al_class_accuracy.py", argv)
    check_flags("al_class_accuracy.py", args, positive=["threads"], distinct=["runs", "steps"])
    with flag_errors("al_class_accuracy.py", "--device: "):
        resolve_device(args.device)
    check_al_steps("al_class_accuracy.py", args.runs_dir, args.runs, args.steps)
    torch.set_num_threads(args.threads)
    start = time.time()
    rows, summaries = [], []
    jobs = [(run, step) for run in args.runs for step in args.steps]
    for run, step in tqdm(jobs, desc="rebuilt steps"):
        r, s = rebuild(args, run, step)
        rows += r
        summaries.append(s)
    out = Path(args.out_dir)
    write_csv(rows, out / "al_class_accuracy.csv")
    plot(rows, out / "al_class_accuracy.png")
    env = environment()
    check = [[s["run"], s["n_labels"], f"{s['recorded_acc']:.4f}", f"{s['rebuilt_acc']:.4f}",
              "yes" if s["recorded_acc"] == s["rebuilt_acc"] else "no", s["recorded_device"]]
             for s in summaries]  # fmt: skip
    lines = [
        "# Active learning per digit: labels, test accuracy, BALD score",
        "",
        f"`{command}`",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}; date {env['date']}; rebuilt on "
        f"{device_words(torch.device(args.device))}; {(time.time() - start) / 60:.1f} min",
        f"- settings: {asdict(args)}",
        "- each step's model is retrained with `ActiveLearner.model_at` (same labels, seed and "
        "settings); it repeats the recorded accuracy exactly only on the device and thread "
        "count the step ran with",
        "",
        "## Rebuilt vs recorded test accuracy",
        "",
        markdown_table(["run", "labels", "recorded", "rebuilt", "exact", "recorded on"], check),
        "",
        "## Per digit (labels / test accuracy / mean BALD score on the digit's test images)",
        "",
    ]
    header = ["run", "labels"] + [str(d) for d in range(10)]
    table = []
    for s in summaries:
        mine = [r for r in rows if (r["run"], r["step"]) == (s["run"], s["step"])]
        table.append([s["run"], s["n_labels"]] + [
            f"{r['labels']} / {r['class_acc']:.3f} / {r['mean_bald']:.3f}" for r in mine
        ])  # fmt: skip
    lines += [markdown_table(header, table), "", "Plot: al_class_accuracy.png"]
    atomic_write_text(out / "al_class_accuracy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
