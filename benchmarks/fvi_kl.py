"""Is factorial VI's slow start in active learning its KL term? Retrain with the KL down-weighted.

Takes the labels that a factorial-VI active-learning run had at chosen steps, retrains the
model exactly as the loop does (same seed, settings and recipe) with the ELBO's KL term
multiplied by each of ``--kl-weights`` (1 is the loop's own loss), and reports test accuracy
and, for the trained posterior, the KL term per labelled point against the training NLL. If
the KL term dominates the ELBO with so few labels, a smaller weight should fit far better.

    python benchmarks/fvi_kl.py     # labels of factorial VI's random run, seed 2
"""

from __future__ import annotations

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
    fail,
    markdown_table,
    parse_args,
    write_csv,
)

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.active import ActiveLearner, mnist_pool, saved_config  # noqa: E402
from safety_bhn.core.factorial import FactorialVI  # noqa: E402
from safety_bhn.core.metrics import auto_batch_size, classification_metrics  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402


@dataclass
class Args:
    """Test accuracy of factorial VI retrained on an active-learning run's labels, per KL weight."""

    runs_dir: str = "runs/al-full"
    """folder holding the run folders"""
    run: str = "factorial_vi-random-seed2"
    """a factorial-VI run folder inside runs_dir, whose labels are used"""
    steps: list[int] = field(default_factory=lambda: [4, 10, 20])
    """steps whose labels are used (step k has initial + acquire * k labels)"""
    kl_weights: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01])
    """multipliers of the ELBO's KL term (1: the loop's loss)"""
    threads: int = 1
    """torch CPU threads"""
    out_dir: str = str(RESULTS / "fvi_kl")
    """where fvi_kl.{md,csv} go"""


def with_kl_weight(model: FactorialVI, weight: float) -> FactorialVI:
    """Make ``model.loss`` multiply its KL term by ``weight`` (on this instance only)."""
    loss = model.loss  # the class's bound method

    def weighted(x: torch.Tensor, y: torch.Tensor, n_data: int, kl_weight: float = 1.0):
        return loss(x, y, n_data, kl_weight * weight)

    model.loss = weighted  # type: ignore[method-assign]
    return model


def measure(args: Args, data: tuple, step: int, weight: float) -> dict:
    """Retrain on the run's labels at ``step`` with KL weight ``weight``; test accuracy etc."""
    folder = Path(args.runs_dir) / args.run
    cfg = replace(saved_config(folder), device="cpu")
    if cfg.method != "factorial_vi":
        raise ValueError(f"{args.run} is a {cfg.method} run; pass a factorial_vi run")
    learner = ActiveLearner(cfg, data[0], test=data[1], out=folder, resume=True)
    model = learner.model_at(step, prepare=lambda m: with_kl_weight(m, weight))
    n_labels, test = learner.history[step]["n_labels"], data[1]
    idx = torch.as_tensor(learner.labelled[:n_labels])
    train = (learner.x[idx], torch.as_tensor(learner.labels[:n_labels]))
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 7)  # as the loop's test evaluation
    with torch.no_grad():
        probs = F.softmax(
            model.sample_logits(test[0], cfg.eval_samples, gen,
                                auto_batch_size(model, cfg.eval_samples)), dim=-1,
        ).mean(0)  # fmt: skip
        train_probs = F.softmax(model.sample_logits(train[0], cfg.eval_samples, gen), -1).mean(0)
        train_nll = F.nll_loss(train_probs.clamp_min(1e-12).log(), train[1])
        kl_per_label = model.kl() / n_labels
    recorded = learner.history[step].get("test_acc")
    return {
        "run": args.run, "step": step, "n_labels": n_labels, "kl_weight": weight,
        "test_acc": classification_metrics(probs, test[1])["accuracy"],
        "recorded_test_acc": recorded, "train_nll": float(train_nll),
        "kl_per_label": float(kl_per_label),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    command = command_line("fvi_kl.py", argv)
    check_flags("fvi_kl.py", args, positive=["threads"], nonnegative=["kl_weights"],
                distinct=["steps", "kl_weights"])  # fmt: skip
    config = check_al_steps("fvi_kl.py", args.runs_dir, [args.run], args.steps)[args.run]
    if config["method"] != "factorial_vi":
        fail("fvi_kl.py", f"--run {args.run} is a {config['method']} run; pass a factorial_vi run")
    torch.set_num_threads(args.threads)
    start = time.time()
    jobs = [(s, w) for s in args.steps for w in args.kl_weights]
    data = mnist_pool()  # (pool, test), read once
    rows = [measure(args, data, *job) for job in tqdm(jobs, desc="retrains")]
    out = Path(args.out_dir)
    write_csv(rows, out / "fvi_kl.csv")
    env = environment()
    table = [
        [r["n_labels"], r["kl_weight"], f"{r['test_acc']:.4f}",
         "-" if r["recorded_test_acc"] is None else f"{r['recorded_test_acc']:.4f}",
         f"{r['train_nll']:.3f}", f"{r['kl_per_label']:.3f}"]
        for r in rows
    ]  # fmt: skip
    lines = [
        "# Factorial VI in active learning: test accuracy per KL weight",
        "",
        f"`{command}`",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"{(time.time() - start) / 60:.1f} min",
        f"- settings: {asdict(args)}",
        "- each model is retrained on the run's first labels as the loop's retrain of that step, "
        "with the KL term of the loss times the weight; 'recorded' is the run's own test "
        "accuracy at that step (weight 1; it repeats exactly only on the device the step ran "
        "on); KL per label is the trained posterior's KL divergence from its prior divided by "
        "the labels, the term that weight 1 adds to the training NLL per point",
        "",
        markdown_table(
            ["labels", "KL weight", "test acc", "recorded", "train NLL", "KL / labels"], table
        ),
    ]
    atomic_write_text(out / "fvi_kl.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
