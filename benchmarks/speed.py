"""Speed of training steps and predictive inference per method, as ratios to the MAP net.

Every timing is a median over repeats, taken in one process with the methods interleaved,
and reported as a ratio to the MAP network measured in the same run (machines are noisy).
Writes benchmarks/results/speed.{csv,md}. Run from the project root:

    python benchmarks/speed.py            # 800-unit MLP, 1000 images
    python benchmarks/speed.py --arch cnn --samples 1 20 --repeats 3 \
        --out benchmarks/results/speed_cnn  # Gal et al.'s CNN, as in active learning
    python benchmarks/speed.py --quick    # a smoke test
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    command_line,
    fail,
    flag_errors,
    markdown_table,
    parse_args,
    quick_out,
    quick_settings,
    seed_everything,
    write_csv,
)

import safety_bhn  # noqa: E402
from safety_bhn.core.primary import max_pool_2x2  # noqa: E402
from safety_bhn.core.training import make_optimizer  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402

METHODS = ["map", "mc_dropout", "factorial_vi", "bhn"]


@dataclass
class Args:
    """Timing of one training step and of n-sample prediction, per method."""

    arch: str = "mlp"
    """mlp (784-hidden-10), or cnn (Gal et al. 2017's conv-conv-pool-dense net, with the
    default 32 channels and 128 dense units); the bars below are for the MLP"""
    hidden: int = 800
    """MLP width (one hidden layer)"""
    samples: list[int] = field(default_factory=lambda: [1, 10, 100])
    """posterior sample counts for the prediction timings (the largest is also timed as that
    many separate 1-sample calls)"""
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
    if args.arch not in ("mlp", "cnn"):
        fail("speed.py", f"--arch must be mlp or cnn, got {args.arch!r}")
    if args.repeats < 1:
        fail("speed.py", f"--repeats must be at least 1 (the median of the timings), got "
                         f"{args.repeats}")  # fmt: skip
    sizes = {"samples": min(args.samples, default=0), "n_predict": args.n_predict,
             "batch_size": args.batch_size, "train_steps": args.train_steps}  # fmt: skip
    for name, value in sizes.items():
        if value < 1:
            fail("speed.py", f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.quick:
        args = quick_settings(args, hidden=32, coupling_layers=2, n_predict=50, repeats=2,
                              train_steps=2, out=quick_out(args.out))  # fmt: skip
    seed_everything(args.seed)
    torch.set_grad_enabled(True)
    x = torch.rand(args.n_predict, 1, 28, 28)
    xb = torch.rand(args.batch_size, 1, 28, 28)
    yb = torch.randint(0, 10, (args.batch_size,))
    most = max(args.samples)

    def build(method: str, train_samples: int = 1) -> safety_bhn.UncertaintyModel:
        opts: dict = {"hidden": [args.hidden]} if args.arch == "mlp" else {}
        if args.quick and args.arch == "cnn":
            opts = {"channels": 4, "dense": 16}
        if method == "bhn":
            opts |= {"coupling_layers": args.coupling_layers, "train_samples": train_samples}
        elif method == "factorial_vi":
            opts |= {"train_samples": train_samples}
        return safety_bhn.build_model(method, args.arch, seed=args.seed, device="cpu", **opts)

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

    for method in METHODS:  # a bad --hidden or --coupling-layers: one error line, not a trace
        with flag_errors("speed.py"):
            build(method)
    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for method in METHODS:
        jobs[(method, "train step, 1 sample")] = train_step(build(method))
        if method in ("bhn", "factorial_vi"):
            jobs[(method, "train step, 8 samples")] = train_step(build(method, 8))
        model = build(method)
        for n in args.samples:
            jobs[(method, f"predict, {n} samples")] = predict(model, n)
        if method != "map":
            jobs[(method, f"predict, {most} separate 1-sample calls")] = separate(model, most)
    # Same-run comparisons of speed-ups against what they replaced: factorial VI's inputs
    # chunked or not; the 2x2 max pool of the CNN's (samples x images) second-layer
    # activations, by max_pool_2x2 or F.max_pool2d; and the same pool's forward and backward
    # on one training batch (one draw), as in a training step.
    unchunked = build("factorial_vi")
    unchunked.chunk_elements = 2**62
    not_chunked = ("factorial_vi", f"predict, {most} samples, inputs not chunked")
    jobs[not_chunked] = predict(unchunked, most)
    if args.arch == "cnn":
        second = build("map").layers[1]  # its output is pooled
        size = [n - second.kernel_size + 1 for n in second.in_shape[1:]]
        h = torch.rand(most, min(args.n_predict, 100), second.out_features, *size)
        pool = f"2x2 max pool of {tuple(h.shape)}"
        jobs[("kernel", f"{pool}: max_pool_2x2")] = lambda: max_pool_2x2(h)
        jobs[("kernel", f"{pool}: F.max_pool2d")] = lambda: F.max_pool2d(h.flatten(0, 1), 2)
        ht = torch.rand(1, args.batch_size, *h.shape[2:], requires_grad=True)
        pool_t = f"2x2 max pool forward and backward of {tuple(ht.shape)}"
        jobs[("kernel", f"{pool_t}: max_pool_2x2")] = lambda: max_pool_2x2(ht).sum().backward()
        jobs[("kernel", f"{pool_t}: F.max_pool2d")] = lambda: (
            F.max_pool2d(ht[0], 2).sum().backward()
        )

    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):  # interleave methods so drifts in machine speed hit all alike
        for key, fn in jobs.items():
            if "train" in key[1]:
                times[key].append(median_seconds(fn, 1) / args.train_steps)
            elif "backward" in key[1]:
                times[key].append(median_seconds(fn, 1))
            else:
                with torch.no_grad():
                    times[key].append(median_seconds(fn, 1))
    seconds = {k: statistics.median(v) for k, v in times.items()}

    base_train = seconds[("map", "train step, 1 sample")]
    base_pred = seconds[("map", f"predict, {min(args.samples)} samples")]
    rows = []
    for (method, what), s in seconds.items():
        base = base_train if what.startswith("train") else base_pred
        ratio_to_map = s / base if method != "kernel" else float("nan")
        rows.append({"method": method, "measurement": what, "seconds": s,
                     "ratio_to_map": ratio_to_map})  # fmt: skip
    out = Path(args.out)
    write_csv(rows, out / "speed.csv")

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return seconds[a] / seconds[b]

    bars = args.arch == "mlp"  # the bars are set on the MLP

    def line(text: str, a: tuple[str, str], b: tuple[str, str], bar: str = "") -> str:
        return f"{text}: {ratio(a, b):.3f}" + (f" (bar {bar})" if bars and bar else "")

    predict_most = f"predict, {most} samples"
    lines = [
        line("BHN training step / MC dropout's", ("bhn", "train step, 1 sample"),
             ("mc_dropout", "train step, 1 sample"), "≤ 2"),
        line(f"BHN {most}-sample prediction / {most} separate 1-sample calls",
             ("bhn", predict_most), ("bhn", f"predict, {most} separate 1-sample calls"), "≤ 0.3"),
        line(f"BHN {most}-sample prediction / MC dropout's", ("bhn", predict_most),
             ("mc_dropout", predict_most), "≤ 0.1"),
        line(f"factorial VI {most}-sample prediction, inputs chunked / not chunked",
             ("factorial_vi", predict_most),
             ("factorial_vi", f"{predict_most}, inputs not chunked")),
    ]  # fmt: skip
    pools = [k for k in seconds if k[0] == "kernel"]  # (max_pool_2x2, F.max_pool2d) pairs
    for mine, ref in zip(pools[0::2], pools[1::2], strict=True):
        lines.append(line(f"{mine[1].split(':')[0]}, max_pool_2x2 / F.max_pool2d", mine, ref))
    env = environment()
    net = f"MLP 784-{args.hidden}-10" if args.arch == "mlp" else "Gal et al.'s CNN"
    md = (
        "# Speed: training steps and predictive inference (ratios to MAP, same run)\n\n"
        f"Command: `{command_line('speed.py', argv)}`  \n"
        f"Machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"seed {args.seed}.  \n"
        f"Setup: {net}, BHN with {args.coupling_layers} couplings; training "
        f"step on a batch of {args.batch_size} (forward, backward, Adam; {args.train_steps} "
        "steps timed together); prediction = "
        f"predict_proba on {args.n_predict} images; median of {args.repeats} interleaved "
        "repeats. Ratios are to the MAP net's training step / single prediction.\n\n"
        + markdown_table(
            ["method", "measurement", "ratio to MAP"],
            [
                [r["method"], r["measurement"], f"{r['ratio_to_map']:.2f}"]
                for r in rows
                if r["method"] != "kernel"
            ],
        )  # fmt: skip
        + ("\nBars:\n\n" if bars else "\nRatios:\n\n")
        + "".join(f"- {line}\n" for line in lines)
    )
    (out / "speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
