"""`safety-bhn explore`: run a (safe) Thompson-sampling or baseline agent on a gymnasium env."""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._argtypes import positive_int, seed_int
from .._io import atomic_write_json, atomic_write_text, folder_lock, load_state, save_state

if TYPE_CHECKING:
    from ..core.build import Method
    from .agents import Exploration


class _Given(argparse.Action):
    """Stores a flag's value as argparse's own actions do (``nargs=0``: ``const``, as
    ``store_true``), and records in ``namespace.given`` that the flag was given, so that
    ``--resume`` can tell a flag given with its default value from one left out."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given = (*getattr(namespace, "given", ()), self.dest)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explore`` sub-command."""
    p = subparsers.add_parser(
        "explore",
        help="run a Thompson-sampling (optionally safe) or baseline agent on a gymnasium env",
        description="Run an agent, count its safety violations while it learns, and save a "
        "per-episode CSV (return, cost, regret), a summary JSON and plots in --out. Each "
        "environment uses the settings its benchmark chose (the wheel bandit: per method, on "
        "tuning seeds). Violations are the sum of the env's info['cost']; an env that gives "
        "none (e.g. CartPole-v1) reports them as n/a and cannot take --safe.",
    )
    run_flag = {"action": _Given}  # the settings of a run: see RUN_FLAGS
    p.add_argument("--env", default="safety_bhn/WheelBandit-v0", **run_flag,
                   help="gymnasium id, e.g. safety_bhn/WheelBandit-v0, safety_bhn/LavaGrid-v0, "
                   "safety_bhn/CartPoleCost-v0")  # fmt: skip
    p.add_argument("--agent", default="thompson", **run_flag,
                   help="thompson, epsilon_greedy or random")  # fmt: skip
    p.add_argument("--method", default="bhn", **run_flag,
                   help="bhn, mc_dropout, factorial_vi or map")  # fmt: skip
    p.add_argument("--safe", nargs=0, const=True, default=False, **run_flag,
                   help="mask actions whose cost is too likely (needs an env that gives "
                   "info['cost'])")  # fmt: skip
    p.add_argument("--threshold", type=float, default=0.2, **run_flag,
                   help="cost threshold in [0, 1]")  # fmt: skip
    p.add_argument("--quantile", type=float, default=0.9, **run_flag,
                   help="upper credible quantile")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=2000, **run_flag,
                   help="environment steps")  # fmt: skip
    p.add_argument("--delta", type=float, default=None, **run_flag,
                   help="wheel bandit exploration delta")  # fmt: skip
    p.add_argument("--hidden", type=positive_int, nargs="+", default=None, **run_flag,
                   help="hidden units")  # fmt: skip
    p.add_argument("--seed", type=seed_int, default=0, **run_flag,
                   help="seeds the env and agent")  # fmt: skip
    p.add_argument("--out", required=True, help="run folder, e.g. runs/wheel_bhn")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in --out (it stays until the new run finishes; an "
        "interrupted overwrite continues with --resume)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run saved in --out with its saved settings (other "
        "flags may only repeat them), exactly as if it had not stopped (not with --overwrite, "
        "which deletes an interrupted run's state and starts again)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run, given=())


#: The settings of a run (saved in its checkpoint and taken from it by --resume).
RUN_FLAGS = ("env", "agent", "method", "safe", "threshold", "quantile", "steps", "delta",
             "hidden", "seed")  # fmt: skip
CHECKPOINT = "checkpoint.pt"
#: What a checkpoint holds besides "config" (see ``checkpoint`` in :func:`run`), and what
#: its "loop" holds (see :func:`~safety_bhn.explore.run_agent`).
CHECKPOINT_KEYS = ("loop", "agent", "torch_rng")
LOOP_KEYS = ("t", "rows", "recent", "violations", "fallbacks_before", "env_rng")
#: Least seconds between two checkpoints (one is written at an episode's end at most).
CHECKPOINT_SECONDS = 30.0
DAMAGED = "start the run again with --overwrite (without --resume)"


def _defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return vars(parser.parse_args(["explore", "--out", "-"]))


def _canonical(flag: str, value: Any) -> Any:
    """A flag's value as compared by --resume: agent and method names as parsed at the start
    of a run ("MC-Dropout" is "mc_dropout"); other values as they are."""
    from .._choices import parse_choice
    from ..core.build import Method
    from .agents import Exploration

    choices = {"agent": Exploration, "method": Method}
    if flag in choices:
        try:
            return parse_choice(value, choices[flag], flag).value
        except ValueError:  # compared as given; check_choices names a bad name
            return value
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given_flags(args: argparse.Namespace) -> list[str]:
    """The run flags (RUN_FLAGS) given on the command line; for a namespace made otherwise
    than by :func:`add_parser`, those that differ from their defaults."""
    if "given" in vars(args):
        return [k for k in RUN_FLAGS if k in args.given]
    defaults = _defaults()
    return [k for k in RUN_FLAGS if getattr(args, k) != defaults[k]]


def _load_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint of the interrupted run in ``--out``; its settings replace the flags
    (a flag given with another value, its default included, is an error naming both)."""

    path = Path(args.out) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"cannot resume {args.out}: it holds no {CHECKPOINT} (no interrupted "
                         "run is saved there; a finished run has none)")  # fmt: skip
    saved = load_state(path, "config", DAMAGED)

    def damaged(what: str) -> ValueError:
        return ValueError(f"{path} is a damaged checkpoint ({what}); {DAMAGED}")

    config = saved["config"]
    if not isinstance(config, dict) or not set(RUN_FLAGS) <= set(config):
        missing = sorted(set(RUN_FLAGS) - set(config)) if isinstance(config, dict) else []
        raise damaged(
            f"its config lacks {', '.join(missing)}" if missing else "its config is no dict"
        )
    given = _given_flags(args)
    conflicts = [
        f"{_flag(k)}: saved {config[k]!r}, given {getattr(args, k)!r}"
        for k in given
        if _canonical(k, getattr(args, k)) != _canonical(k, config[k])
    ]
    if conflicts:
        raise ValueError(f"cannot resume {args.out}: flags contradict the saved run "
                         f"({'; '.join(conflicts)}); leave them out")  # fmt: skip
    missing = [k for k in CHECKPOINT_KEYS if k not in saved]
    loop = saved.get("loop")
    if not missing and not isinstance(loop, dict):
        missing = ["loop"]
    elif not missing:
        missing = [f"loop[{k!r}]" for k in LOOP_KEYS if k not in loop]
    if missing:
        raise damaged(f"no {', '.join(missing)}")
    for k in RUN_FLAGS:
        setattr(args, k, config[k])
    return saved


def check_choices(args: argparse.Namespace) -> tuple[Exploration, Method]:
    """The agent and method, checked before any environment is made (whatever the agent)."""
    from .._choices import parse_choice
    from ..core.build import Method
    from .agents import Exploration, _check_probability, check_exploration

    exploration = parse_choice(args.agent, Exploration, "agent")
    method = parse_choice(args.method, Method, "method")
    for name in ("threshold", "quantile"):  # the agents' own check, before any env is made
        _check_probability(name, getattr(args, name))
    if exploration is Exploration.RANDOM and args.safe:
        raise ValueError("the random agent has no cost model to be safe with; drop --safe, or "
                         "use --agent thompson or epsilon_greedy")  # fmt: skip
    given = _given_flags(args)  # flags that would be ignored are refused, as train does
    unused = [k for k in ("method", "hidden", "threshold", "quantile") if k in given]
    if exploration is Exploration.RANDOM and unused:
        verb = (
            "does not apply to it; drop it" if len(unused) == 1 else "do not apply to it; drop them"
        )
        raise ValueError(f"the random agent has no network: {', '.join(map(_flag, unused))} "
                         f"{verb}")  # fmt: skip
    check_exploration(method, exploration)
    return exploration, method


def _check_costs(env_id: str, seed: int) -> None:
    """Refuse, before any folder is made, an env whose reset and first step give no
    ``info["cost"]``: a safe agent learns from the costs (:func:`run_agent` would refuse the
    env at its first step, after the run folder was made). Run on a copy of the env."""
    from .run import make_env, no_costs_message

    probe = make_env(env_id)
    _, info = probe.reset(seed=seed)
    if "cost" not in info:
        info = probe.step(probe.action_space.start)[-1]  # any action: only the keys matter
    probe.close()
    if "cost" not in info:
        raise ValueError(no_costs_message(env_id))


def run(args: argparse.Namespace) -> int:
    """Run the agent and write ``episodes.csv``, ``summary.json`` and ``training.png``."""
    import torch

    from ..runs import check_run_folder, refuse_other_runs
    from .agents import Exploration
    from .plots import plot_regret, plot_training
    from .run import (
        bandit_preset,
        dqn_preset,
        is_bandit,
        make_agent,
        make_env,
        run_agent,
        summarize,
    )

    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run saved in --out and --overwrite deletes it; pass "
            "--resume alone to continue it, or --overwrite alone to start it again"
        )
    saved = _load_checkpoint(args) if args.resume else None
    exploration, method = check_choices(args)
    env = make_env(args.env)
    if args.delta is not None:
        if not is_bandit(env):
            raise ValueError(
                f"--delta is the wheel bandit's exploration parameter; {args.env} has none "
                "(leave --delta out, or use --env safety_bhn/WheelBandit-v0)"
            )
        env = make_env(args.env, delta=args.delta)
    unused = [k for k in ("threshold", "quantile") if k in _given_flags(args)]
    if unused and not args.safe:
        fix = ("the wheel bandit has no costs, so drop them" if is_bandit(env) else
               "add --safe, or drop them")  # fmt: skip
        raise ValueError(f"the safe variant's mask settings ({', '.join(map(_flag, unused))}) "
                         f"need --safe; {fix}")  # fmt: skip
    # the agent is built (its spaces and settings checked) before the folder is made, so a
    # run that cannot start leaves no folder behind
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # tiny networks: extra intra-op threads only add overhead
    kwargs = {} if args.hidden is None else {"hidden": args.hidden}
    if is_bandit(env):
        if args.safe:
            raise ValueError("--safe needs costs, and the wheel bandit has none")
        kwargs.update(bandit_preset(exploration, method))
    elif exploration is not Exploration.RANDOM:
        kwargs.update(dqn_preset(args.env, method))
        if args.safe:
            kwargs.update(threshold=args.threshold, quantile=args.quantile)
    agent = make_agent(env, exploration, method, safe=args.safe, seed=args.seed, **kwargs)
    if args.safe:
        _check_costs(args.env, args.seed)
    label = (
        "random"
        if exploration is Exploration.RANDOM
        else f"{exploration.value}/{method.value}" + ("/safe" if args.safe else "")
    )
    refuse_other_runs(Path(args.out), own="summary.json")  # a training run's folder, say
    # --resume continues the checkpoint beside a finished run too: an interrupted --overwrite
    replacing = args.overwrite or args.resume
    out = check_run_folder(args.out, replacing, marker="summary.json")  # before the run
    with folder_lock(out):  # a second process writing here fails at once
        refuse_other_runs(out, own="summary.json")  # again, under the lock
        check_run_folder(out, replacing, marker="summary.json")
        if (out / CHECKPOINT).exists() and not (args.resume or args.overwrite):
            raise ValueError(f"{out} holds an interrupted run ({CHECKPOINT}); continue it with "
                             "--resume, or replace it with --overwrite")  # fmt: skip
        if args.overwrite:  # a new run: an interrupted one's state goes; the finished run
            (out / CHECKPOINT).unlink(missing_ok=True)  # stays until the new one replaces it
        if saved is not None:  # the agent and torch's RNG as they were at the checkpoint
            try:
                agent.load_state_dict(saved["agent"])
                torch.set_rng_state(saved["torch_rng"])
            except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
                # a state from another agent or build, or cut short
                raise ValueError(
                    f"{out / CHECKPOINT} is a damaged checkpoint (its agent state does not fit "
                    f"this run's agent: {type(err).__name__}: {str(err):.200}); {DAMAGED}"
                ) from None
        last_save = time.monotonic()

        def checkpoint(loop: dict[str, Any]) -> None:
            nonlocal last_save
            if time.monotonic() - last_save < CHECKPOINT_SECONDS:
                return
            state = {"config": {k: getattr(args, k) for k in RUN_FLAGS}, "loop": loop,
                     "agent": agent.state_dict(), "torch_rng": torch.get_rng_state()}  # fmt: skip
            save_state(out / CHECKPOINT, state)
            last_save = time.monotonic()

        rows = run_agent(env, agent, args.steps, seed=args.seed, progress=not args.no_progress,
                         desc=label, checkpoint=checkpoint,
                         resume=None if saved is None else saved["loop"])  # fmt: skip
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "episodes.csv", buf.getvalue())
        summary = summarize(rows)
        config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "given")}
        config["settings"] = dict(kwargs)  # the presets and flags the agent was built with
        if is_bandit(env):
            config["delta"] = float(env.unwrapped.delta)
        atomic_write_json(out / "summary.json", {"config": config, "summary": summary})
        (out / CHECKPOINT).unlink(missing_ok=True)  # finished: nothing left to resume
        for r in rows:
            r["agent"] = label
        plot_training(rows, out / "training.png")
        if is_bandit(env):
            plot_regret(rows, out / "regret.png")
        else:  # a replaced bandit run's plot would outlive it
            (out / "regret.png").unlink(missing_ok=True)
        regret = summary["cumulative_regret"]
        violations = summary["violations"]  # NaN: the env gives no costs, not none counted
        shown = "n/a (the env gives no info['cost'])" if math.isnan(violations) else (
            f"{violations:.0f}")  # fmt: skip
        print(
            f"{label} on {args.env}: {summary['episodes']} episodes, mean return "
            f"{summary['mean_return']:.3f}, violations {shown}"
            + ("" if math.isnan(regret) else f", cumulative regret {regret:.1f}")
        )
        print(f"saved {out / 'episodes.csv'}, {out / 'summary.json'} and plots in {out}")
        return 0
