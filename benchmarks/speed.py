"""Speed of training steps and predictive inference per method, as ratios to the MAP net.

Every timing is a median over repeats, taken in one process with the methods interleaved,
and reported as a ratio to the MAP network measured in the same run (machines are noisy).
Writes benchmarks/results/speed.{csv,md}. Run from the project root:

    python benchmarks/speed.py            # 800-unit MLP, 1000 images
    python benchmarks/speed.py --quick    # a smoke test
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, parse_args, quick_out, seed_everything, write_csv  # noqa: E402

import safety_bhn  # noqa: E402
from safety_bhn.core.training import make_optimizer  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402

METHODS = ["map", "mc_dropout", "factorial_vi", "bhn"]


@dataclass
class Args:
    """Timing of one training step and of n-sample prediction, per method."""

    hidden: int = 800
    """MLP width (one hidden layer)"""
    coupling_layers: int = 12
    """BHN coupling layers"""
    batch_size: int = 100
    """training minibatch size"""
    n_predict: int = 1000
    """images for the prediction timings"""
    repeats: int = 7
    """timed repeats per measurement (the median is kept)"""
    train_steps: int = 20
    """training steps timed together in one repeat (one step alone is too short to time)"""
    seed: int = 0
    """seed for weights and data"""
    out: str = str(RESULTS)
    """folder for speed.{csv,md}"""
    quick: bool = False
    """smoke test: tiny net, 2 repeats, written to runs/bench-quick"""


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:
        args = dataclasses.replace(args, hidden=32, coupling_layers=2, n_predict=50, repeats=2,
                                   train_steps=2, out=quick_out(args.out))  # fmt: skip
    seed_everything(args.seed)
    torch.set_grad_enabled(True)
    x = torch.rand(args.n_predict, 1, 28, 28)
    xb = torch.rand(args.batch_size, 1, 28, 28)
    yb = torch.randint(0, 10, (args.batch_size,))

    def build(method: str, train_samples: int = 1) -> safety_bhn.UncertaintyModel:
        opts = {}
        if method == "bhn":
            opts = {"coupling_layers": args.coupling_layers, "train_samples": train_samples}
        elif method == "factorial_vi":
            opts = {"train_samples": train_samples}
        return safety_bhn.build_model(method, hidden=[args.hidden], seed=args.seed,
                                      device="cpu", **opts)  # fmt: skip

    def train_step(model: safety_bhn.UncertaintyModel) -> Callable[[], None]:
        opt = make_optimizer(model, lr=1e-4)  # the optimizer fit() uses

        def steps() -> None:
            for _ in range(args.train_steps):
                opt.zero_grad(set_to_none=True)
                model.loss(xb, yb, 5000).backward()
                opt.step()

        return steps

    def predict(model: safety_bhn.UncertaintyModel, n: int) -> Callable[[], None]:
        return lambda: model.predict_proba(x, n)

    def separate(model: safety_bhn.UncertaintyModel, n: int) -> Callable[[], None]:
        return lambda: [model.predict_proba(x, 1) for _ in range(n)]

    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for method in METHODS:
        jobs[(method, "train step, 1 sample")] = train_step(build(method))
        if method in ("bhn", "factorial_vi"):
            jobs[(method, "train step, 8 samples")] = train_step(build(method, 8))
        model = build(method)
        for n in (1, 10, 100):
            jobs[(method, f"predict, {n} samples")] = predict(model, n)
        if method != "map":
            jobs[(method, "predict, 100 separate 1-sample calls")] = separate(model, 100)

    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):  # interleave methods so drifts in machine speed hit all alike
        for key, fn in jobs.items():
            if "train" in key[1]:
                times[key].append(median_seconds(fn, 1) / args.train_steps)
            else:
                with torch.no_grad():
                    times[key].append(median_seconds(fn, 1))
    seconds = {k: statistics.median(v) for k, v in times.items()}

    base_train = seconds[("map", "train step, 1 sample")]
    base_pred = seconds[("map", "predict, 1 samples")]
    rows = []
    for (method, what), s in seconds.items():
        base = base_train if what.startswith("train") else base_pred
        rows.append({"method": method, "measurement": what, "seconds": s, "ratio_to_map": s / base})
    out = Path(args.out)
    write_csv(rows, out / "speed.csv")

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return seconds[a] / seconds[b]

    bhn_vs_dropout_train = ratio(("bhn", "train step, 1 sample"),
                                 ("mc_dropout", "train step, 1 sample"))  # fmt: skip
    bhn_batched = ratio(("bhn", "predict, 100 samples"),
                        ("bhn", "predict, 100 separate 1-sample calls"))  # fmt: skip
    bhn_vs_dropout_pred = ratio(("bhn", "predict, 100 samples"),
                                ("mc_dropout", "predict, 100 samples"))  # fmt: skip
    env = environment()
    md = (
        "# Speed: training steps and predictive inference (ratios to MAP, same run)\n\n"
        f"Command: `python benchmarks/speed.py{' --quick' if args.quick else ''}`  \n"
        f"Machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"seed {args.seed}.  \n"
        f"Setup: MLP 784-{args.hidden}-10, BHN with {args.coupling_layers} couplings; training "
        f"step on a batch of {args.batch_size} (forward, backward, Adam; {args.train_steps} "
        "steps timed together); prediction = "
        f"predict_proba on {args.n_predict} images; median of {args.repeats} interleaved "
        "repeats. Ratios are to the MAP net's training step / single prediction.\n\n"
        + markdown_table(
            ["method", "measurement", "ratio to MAP"],
            [[r["method"], r["measurement"], f"{r['ratio_to_map']:.2f}"] for r in rows],
        )
        + "\nBars:\n\n"
        f"- BHN training step / MC dropout's: {bhn_vs_dropout_train:.2f} (bar ≤ 2)\n"
        f"- BHN 100-sample prediction / 100 separate 1-sample calls: {bhn_batched:.3f} "
        "(bar ≤ 0.3)\n"
        f"- BHN 100-sample prediction / MC dropout's 100-sample prediction: "
        f"{bhn_vs_dropout_pred:.3f} (bar ≤ 0.1)\n"
    )
    (out / "speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
