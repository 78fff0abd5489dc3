"""How much of an acquisition step's top-k BALD choice is posterior-sampling noise, per method.

Takes the labels that an active-learning run had at chosen steps, trains each method on them
exactly as the loop does (same seed, settings and retrain recipe), scores a random subset of
the unlabelled pool with BALD from ``--samples`` posterior samples twice (independent draws)
and once from ``--reference-samples`` samples, and reports the rank correlation of the two
cheap estimates and how many of their top-k picks agree with each other and with the
reference's top k. A method whose top-k picks are mostly estimation noise acquires points
whose mutual information was overestimated by chance.

    python benchmarks/al_score_noise.py     # labels of two BatchBALD runs, at 120 and 220
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
    flag_errors,
    markdown_table,
    mean_std,
    parse_args,
    write_csv,
)

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.active import ActiveConfig, ActiveLearner, bald, mnist_pool, saved_config  # noqa: E402
from safety_bhn.active.loop import step_seed  # noqa: E402
from safety_bhn.core.metrics import auto_batch_size  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402


@dataclass
class Args:
    """Agreement of top-k BALD picks across independent posterior-sample draws, per method."""

    runs_dir: str = "runs/al-full"
    """folder holding the run folders whose labels are used"""
    runs: list[str] = field(
        default_factory=lambda: ["bhn-batch_bald-seed1", "mc_dropout-batch_bald-seed1"]
    )
    """run folders inside runs_dir; every method is trained on each run's labels"""
    steps: list[int] = field(default_factory=lambda: [10, 20])
    """steps whose labels are used (step k has initial + acquire * k labels)"""
    methods: list[str] = field(default_factory=lambda: ["bhn", "mc_dropout"])
    """methods trained on those labels (BHN with the benchmark's options)"""
    samples: int = 20
    """posterior samples of each cheap BALD estimate (the benchmark's acq_samples)"""
    reference_samples: int = 200
    """posterior samples of the reference estimate"""
    top_k: int = 10
    """points acquired per step (the benchmark's acquire)"""
    subset: int = 2000
    """unlabelled pool points scored (the benchmark's pool_subset)"""
    coupling_layers: int = 4
    """BHN coupling layers (the benchmark's)"""
    bhn_prior_mean: str = "init"
    """BHN prior centre (the benchmark's)"""
    threads: int = 1
    """torch CPU threads"""
    out_dir: str = str(RESULTS / "al_score_noise")
    """where al_score_noise.{md,csv} go"""


def top_k_agreement(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Fraction of the ``k`` highest entries of ``a`` that are among the ``k`` highest of ``b``.

    Example:
        >>> top_k_agreement(torch.tensor([3.0, 2, 1, 0]), torch.tensor([3.0, 0, 2, 1]), 2)
        0.5
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"need two 1-d score tensors of one shape, got {a.shape} and {b.shape}")
    if not 1 <= k <= a.numel():
        raise ValueError(f"k must lie in 1..{a.numel()}, got {k}")
    top_a = set(torch.topk(a, k).indices.tolist())
    return len(top_a & set(torch.topk(b, k).indices.tolist())) / k


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-d tensors without ties.

    Example:
        >>> spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 30, 20]))
        0.5
    """
    ranks = [t.argsort().argsort().double() for t in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def bald_scores(model, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """BALD of each row of ``x`` from ``n`` posterior samples drawn with ``seed``."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        logits = model.sample_logits(x, n, gen, auto_batch_size(model, n))
    return bald(F.softmax(logits.double(), dim=-1).cpu())


def measure(args: Args, data: tuple, run: str, step: int, method: str) -> dict:
    """Train ``method`` on the labels of ``run`` at ``step`` and compare BALD estimates."""
    folder = Path(args.runs_dir) / run
    base = replace(saved_config(folder), device="cpu")
    learner = ActiveLearner(base, data[0], test=data[1], out=folder, resume=True)
    options = {"coupling_layers": args.coupling_layers, "prior_mean": args.bhn_prior_mean}
    cfg = replace(base, method=method, options=options if method == "bhn" else {})
    model = learner.model_at(step, config=cfg)
    model.eval()
    n_labels, seed = learner.history[step]["n_labels"], step_seed(cfg, step)
    taken = set(learner.labelled[:n_labels]) | set(learner.val)
    unlabelled = torch.tensor([i for i in range(learner.x.shape[0]) if i not in taken])
    pick = torch.randperm(len(unlabelled), generator=torch.Generator().manual_seed(seed))
    points = learner.x[unlabelled[pick[: args.subset]]]
    first = bald_scores(model, points, args.samples, seed + 1)
    second = bald_scores(model, points, args.samples, seed + 2)
    reference = bald_scores(model, points, args.reference_samples, seed + 3)
    k = args.top_k
    return {
        "labels_from": run, "n_labels": n_labels, "method": method,
        "spearman": spearman(first, second),
        "top_k_two_draws": top_k_agreement(first, second, k),
        "top_k_vs_reference": top_k_agreement(first, reference, k),
        "mean_bald": float(reference.mean()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    command = command_line("al_score_noise.py", argv)
    check_flags("al_score_noise.py", args,
                positive=["samples", "reference_samples", "top_k", "subset", "threads"],
                distinct=["runs", "steps", "methods"])  # fmt: skip
    if min(args.samples, args.reference_samples) < 2:  # one sample's BALD is 0 everywhere
        fail("al_score_noise.py", "--samples and --reference-samples must be at least 2, got "
             f"{args.samples} and {args.reference_samples}")  # fmt: skip
    if args.top_k > args.subset:
        fail("al_score_noise.py", f"--top-k {args.top_k} must be at most --subset {args.subset}")
    for method in args.methods:  # BALD needs posterior samples that can disagree
        with flag_errors("al_score_noise.py", f"--methods {method}: "):
            options = {"coupling_layers": args.coupling_layers, "prior_mean": args.bhn_prior_mean}
            ActiveConfig(method=method, acquisition="bald", acq_samples=args.samples,
                         options=options if method == "bhn" else {}).validate()  # fmt: skip
    check_al_steps("al_score_noise.py", args.runs_dir, args.runs, args.steps)
    torch.set_num_threads(args.threads)
    start = time.time()
    jobs = [(r, s, m) for r in args.runs for s in args.steps for m in args.methods]
    data = mnist_pool()  # (pool, test), read once
    rows = [measure(args, data, *job) for job in tqdm(jobs, desc="trained models")]
    out = Path(args.out_dir)
    write_csv(rows, out / "al_score_noise.csv")
    env = environment()
    table = [
        [r["labels_from"], r["n_labels"], r["method"], f"{r['spearman']:.3f}",
         f"{r['top_k_two_draws']:.1f}", f"{r['top_k_vs_reference']:.1f}", f"{r['mean_bald']:.4f}"]
        for r in rows
    ]  # fmt: skip
    summary = [
        [m, mean_std([r["spearman"] for r in rows if r["method"] == m], "{:.3f}"),
         mean_std([r["top_k_two_draws"] for r in rows if r["method"] == m], "{:.2f}"),
         mean_std([r["top_k_vs_reference"] for r in rows if r["method"] == m], "{:.2f}")]
        for m in args.methods
    ]  # fmt: skip
    k, s, ref = args.top_k, args.samples, args.reference_samples
    lines = [
        "# Top-k BALD picks and posterior-sampling noise",
        "",
        f"`{command}`",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"{(time.time() - start) / 60:.1f} min",
        f"- settings: {asdict(args)}",
        f"- each model is trained on a run's labels as the loop's retrain of that step; BALD on "
        f"{args.subset} unlabelled pool points from {s} samples, twice (independent draws), and "
        f"from {ref} samples (reference)",
        "",
        markdown_table(
            [
                "method",
                f"Spearman, two {s}-sample estimates",
                f"top-{k} agreement, two {s}-sample estimates",
                f"top-{k} agreement, {s}-sample vs {ref}-sample",
            ],
            summary,
        ),  # fmt: skip
        "",
        "Per model:",
        "",
        markdown_table(
            [
                "labels from",
                "labels",
                "method",
                "Spearman",
                f"top-{k} two draws",
                f"top-{k} vs reference",
                "mean BALD",
            ],
            table,
        ),  # fmt: skip
    ]
    atomic_write_text(out / "al_score_noise.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
