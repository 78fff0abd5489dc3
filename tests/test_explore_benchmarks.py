"""Smoke tests: the bandit and safe-exploration benchmarks run end to end with --quick."""

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safety_bhn_envs.gridworld import LAYOUTS, MOVES

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    """Run ``benchmarks/SCRIPT *args`` as a user would; the finished process."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _quick(script, out, *flags):
    """``SCRIPT --quick --out OUT *flags``, which must succeed; its stdout."""
    result = _run(script, "--quick", "--out", out, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_bandit_target_without_epsilon_greedy_is_not_measured(tmp_path):
    _quick("bandit.py", tmp_path, "--agents", "bhn", "--deltas", "0.95", "--no-progress")
    assert "| 0.95 | bhn |" in (text := (tmp_path / "bandit.md").read_text())
    assert "| not measured |" in text and "| missed |" not in text  # "missed" before


@pytest.mark.slow
def test_bandit_quick(tmp_path):
    stdout = _quick("bandit.py", tmp_path, "--no-progress")
    with open(tmp_path / "bandit.csv") as f:
        rows = list(csv.DictReader(f))
    needed = {"method", "delta", "seed", "cumulative_regret", "normalized_regret"}
    assert needed <= set(rows[0])
    assert {r["method"] for r in rows} == {"uniform", "bhn", "mc_dropout", "factorial_vi",
                                            "epsilon_greedy"}  # fmt: skip
    assert all(float(r["normalized_regret"]) == 1.0 for r in rows if r["method"] == "uniform")
    assert (tmp_path / "bandit.png").stat().st_size > 0
    assert "QUICK smoke test" in (tmp_path / "bandit.md").read_text() and "δ=0.95" in stdout


def test_explore_diagnostics_quick(tmp_path):
    stdout = _quick("explore_diagnostics.py", tmp_path, "--no-progress")
    text = (tmp_path / "explore_diagnostics.md").read_text()
    assert text in stdout + "\n" and "| cell | action | Q up |" in text
    assert re.search(r"again \d+ times in 300 steps", text)
    assert "| agent (safe) | old lava (6 moves) | (1, 3) down | (2, 2) right |" in text
    assert "| steps into lava after | freed cells (4 moves), at the end |" in text
    # one seed: a new-lava move is masked on 0% or 100% of seeds
    assert re.search(r"\| bhn \| \d\.\d\d \(\d+%\) \| \d\.\d\d \((0|100)%\) \|", text)


@pytest.mark.parametrize("replay", [0, 4])
def test_cost_diagnostic_replays_the_benchmark_run(benchmark_module, replay):
    """cost_at_shift reruns safe_exploration.py's run of a safe agent: the same episodes on
    the shifted layout, although it reads the cost model between the phases, and each step
    into lava it records is a move into the shifted layout's lava. (After 60 steps the agent
    still acts at random, so lava is hit; the full run's violations per seed can be set
    against safe_exploration_grid_10seeds/safe_exploration.csv.)"""
    diag, safe_exploration = (
        benchmark_module("explore_diagnostics"),
        benchmark_module("safe_exploration"),
    )
    result = diag.cost_at_shift(diag.Args(grid_steps=60, cost_shift_steps=150,
                                          violation_replay=replay), "bhn", 3)  # fmt: skip
    bench = safe_exploration.Args(grid_steps=60, shift_steps=150, violation_replay=replay)
    rows, episodes = safe_exploration.run_one(bench, "gridworld", "bhn", True, 3)
    shifted = [r for r in rows if r["env"] == "LavaGridShifted-v0"][0]
    assert shifted["violations"] == len(result["violations"]) > 0
    returns = [e["episode_return"] for e in episodes if e["env"] == "LavaGridShifted-v0"]
    assert [e["episode_return"] for e in result["episodes"]] == returns
    for cell, action, upper in result["violations"]:  # each a step from a neighbour of (2, 3)
        assert (cell, action) in diag.NEW_LAVA_MOVES and math.isfinite(upper)
        row, col = (cell[0] + MOVES[action][0], cell[1] + MOVES[action][1])
        assert LAYOUTS["shifted"][row][col] == "L"
    assert len(result["upper"]) == len(diag.NEW_LAVA_MOVES)
    assert len(result["train_upper"]) == len(diag.TRAIN_LAVA_MOVES) == 6
    for (row, col), action in diag.TRAIN_LAVA_MOVES:  # each into the training layout's lava
        assert LAYOUTS["train"][row + MOVES[action][0]][col + MOVES[action][1]] == "L"
    assert len(result["freed_upper"]) == len(diag.FREED_MOVES) == 4
    for (row, col), action in diag.FREED_MOVES:  # from free cells into the lava that left
        target = LAYOUTS["train"][row + MOVES[action][0]][col + MOVES[action][1]]
        assert LAYOUTS["shifted"][row][col] == " " and target == "L"
        assert LAYOUTS["shifted"][row + MOVES[action][0]][col + MOVES[action][1]] == " "


@pytest.mark.slow
def test_safe_exploration_quick(tmp_path):
    _quick("safe_exploration.py", tmp_path, "--no-progress")
    with open(tmp_path / "safe_exploration.csv") as f:
        rows = list(csv.DictReader(f))
    needed = {"env", "method", "safe", "seed", "episode_return", "violations"}
    assert needed <= set(rows[0])
    assert {r["env"] for r in rows} == {"LavaGrid-v0", "LavaGridShifted-v0", "CartPoleCost-v0"}
    assert {r["safe"] for r in rows} == {"True", "False"}
    assert (tmp_path / "safe_exploration.png").stat().st_size > 0
    assert "fewer violations" in (tmp_path / "safe_exploration.md").read_text()


def test_bandit_ring_counter_on_known_actions(benchmark_module):
    from safety_bhn.explore import make_env

    bandit = benchmark_module("bandit")
    # delta = 0: every context lies in the outer ring; delta = 1: none does
    env = bandit.RingCounter(make_env("safety_bhn/WheelBandit-v0", delta=0.0))
    obs, _ = env.reset(seed=0)
    paid = set()
    for _ in range(5):  # the ring's paying action, then action 0 (pays 1.2)
        action = int(env.unwrapped.expected_rewards(obs).argmax())
        paid.add(action)
        obs, *_ = env.step(action)
    for _ in range(3):
        obs, *_ = env.step(0)
    assert (env.ring_contexts, env.ring_payouts) == (8, 5)
    assert env.paid_actions == paid and env.quadrants_found == len(paid) >= 1
    mu_action0, _, mu_ring = env.unwrapped.mu
    assert env.ring_regret == pytest.approx(3 * (mu_ring - mu_action0))  # the three action-0s
    assert env.inner_optimal == 0
    env = bandit.RingCounter(make_env("safety_bhn/WheelBandit-v0", delta=1.0))
    env.reset(seed=0)
    for action in range(5):
        env.step(action)
    assert (env.ring_contexts, env.ring_payouts) == (0, 0)
    assert env.ring_regret == 0.0 and env.inner_optimal == 1  # only action 0 is optimal there


def test_bandit_posterior_width_flags_reach_the_agents_models(benchmark_module):
    from safety_bhn.explore import NeuralBandit

    bandit = benchmark_module("bandit")
    args = bandit.parse_args(
        bandit.Args, ["--bhn-init-scale", "0.3", "--fvi-init-std", "0.1", "--mc-dropout-p", "0.4"]
    )
    expected = {"bhn": ("init_scale", 0.3), "factorial_vi": ("init_std", 0.1),
                "mc_dropout": ("p_hidden", 0.4)}  # fmt: skip
    for method, (key, value) in expected.items():
        agent = NeuralBandit(
            5, 2, method, hidden=[8], model_options=bandit.model_options(args, method)
        )
        assert agent.posterior.model.config["options"][key] == value
    assert bandit.model_options(args, "map") == {}


def test_safe_exploration_verdicts_on_hand_made_inputs(benchmark_module):
    se = benchmark_module("safe_exploration")
    assert se.violation_verdict(66.7, 17.0) == "met"
    assert se.violation_verdict(0.0, 0.0) == "tie (no violations either way)"
    assert se.violation_verdict(0.0, 0.3) == "missed"
    assert se.violation_verdict(2.0, 2.0) == "missed"
    assert se.violation_verdict(2.0, 3.0) == "missed"
    # return loss relative to the plain agent's gain over random (random = -1 here)
    assert se.return_verdict(0.2, 0.5, -1.0) == "none"
    assert se.return_verdict(1.0, 0.6, -1.0) == "modest"  # lost 0.4 of a 2.0 gain
    assert se.return_verdict(1.0, 0.0, -1.0) == "large"  # lost half the gain
    assert se.return_verdict(-1.0, -1.5, -1.0) == "n/a"  # plain no better than random
    assert se.return_verdict(1.0, 0.0, float("nan")) == "n/a"


def test_safe_exploration_overall_verdict_counts_ties_neither_way(benchmark_module):
    se = benchmark_module("safe_exploration")
    tie = "tie (no violations either way)"
    grid = [("Grid", "met", "none"), ("Grid", "met", "modest")]
    assert se.overall_verdict(grid + [("Shift", tie, "none")]).endswith("target met.\n")
    text = se.overall_verdict(grid + [("Shift", tie, "none"), ("Shift", "missed", "none")])
    assert "target partly met" in text
    assert "- Shift: fewer violations for 0 of 2 agents, missed for 1, tied at zero for 1" in text
    assert se.overall_verdict(grid + [("Grid", "met", "large")]).endswith("partly met.\n")
    assert se.overall_verdict([("Shift", "missed", "none")]).endswith("target missed.\n")
    assert "not tested" in se.overall_verdict([("Shift", tie, "none")])


def test_run_kind_names_the_settings_changed_from_the_defaults(benchmark_module):
    bandit, common = benchmark_module("bandit"), benchmark_module("common")
    assert common.run_kind(bandit.Args()) == "full run"
    assert common.run_kind(bandit.Args(out="elsewhere", progress=False)) == "full run"
    reduced = common.run_kind(bandit.Args(steps=100, seeds=[5]))
    assert reduced == "REDUCED run: seeds, steps changed from the defaults"
    assert common.run_kind(bandit.Args(quick=True, steps=100)).startswith("QUICK smoke test")


def test_quick_settings_keep_what_the_user_named(benchmark_module):
    bandit, common = benchmark_module("bandit"), benchmark_module("common")
    tiny = {"deltas": [0.5], "seeds": [0], "steps": 300}
    quick = common.quick_settings(bandit.Args(), **tiny)
    assert quick == bandit.Args(**tiny, out="runs/bench-quick")  # never into the results
    named = common.quick_settings(bandit.Args(seeds=[4, 5], steps=50), **tiny)
    assert (named.deltas, named.seeds, named.steps) == ([0.5], [4, 5], 50)


def test_bandit_quick_runs_the_deltas_seeds_and_agents_named(tmp_path):
    _quick("bandit.py", tmp_path, "--no-progress", "--deltas", "0.7", "--seeds", "3",
           "--agents", "epsilon_greedy", "--steps", "60", "--train-steps", "5")  # fmt: skip
    with open(tmp_path / "bandit.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["delta"], r["seed"]) for r in rows} == {
        ("uniform", "0.7", "3"), ("epsilon_greedy", "0.7", "3")}  # fmt: skip


def test_mean_std_reports_one_run_without_a_spread(benchmark_module):
    common = benchmark_module("common")
    assert common.mean_std([1.0, 2.0, 3.0], "{:.2f}") == "2.00 ± 1.00"
    assert common.mean_std([96.08], "{:.2f}") == "96.08 (one run)"


def test_bandit_tuning_summary_chooses_the_lowest_mean_over_deltas(benchmark_module, tmp_path):
    tuning = benchmark_module("bandit_tuning")
    args = tuning.Args(out=str(tmp_path), high_seeds=[10], low_seeds=[10])
    todo = [job for job in tuning.jobs(args) if job.agent == "mc_dropout"]
    # hand-made regrets (% of uniform) per value at delta 0.9, 0.95, 0.99: 0.3 has the lowest
    # mean (40) though 0.1 is best at 0.99 alone
    made = {"0.1": (60, 60, 30), "0.3": (30, 30, 60), "0.5": (50, 50, 50)}
    for job in todo:
        deltas = job.argv[job.argv.index("--deltas") + 1 : job.argv.index("--seeds")]
        job.out.mkdir(parents=True)
        lines = ["method,delta,seed,normalized_regret"]
        for d in deltas:
            regret = made[job.value][["0.9", "0.95", "0.99"].index(d)] / 100
            lines += [f"uniform,{d},10,1.0", f"mc_dropout,{d},10,{regret}"]
        (job.out / "bandit.csv").write_text("\n".join(lines) + "\n")
    text = tuning.summary(args, todo, "python benchmarks/bandit_tuning.py")
    assert "| mc_dropout | 0.3 | 30.0 | 30.0 | 60.0 | 40.0 |" in text
    assert "Chosen (lowest mean): mc_dropout --mc-dropout-p 0.3." in text


def test_bandit_tuning_reuses_only_runs_its_own_command_made(benchmark_module, tmp_path):
    import shutil

    tuning = benchmark_module("bandit_tuning")
    job = tuning.jobs(tuning.Args(out=str(tmp_path)))[0]  # the committed sweep's first run
    shutil.copytree(tuning.RESULTS / "bandit_tuning" / job.out.name, job.out)
    tuning.run(job)  # made by this job's command (in another folder): reused, nothing runs
    other = tuning.jobs(tuning.Args(out=str(tmp_path), high_seeds=[10]))[0]
    with pytest.raises(
        SystemExit, match="holds a run made by bandit.py --deltas 0.99 --seeds 10 11"
    ):
        tuning.run(other)  # its ten seeds were mixed into a one-seed table before


@pytest.mark.slow
def test_bandit_tuning_quick(tmp_path):
    _quick("bandit_tuning.py", tmp_path)
    text = (tmp_path / "bandit_tuning.md").read_text()
    assert "| bhn | 0.05 |" in text and "| bhn | 0.2 |" in text and "Chosen" in text
    assert (tmp_path / "lower_deltas" / "bhn-0.2" / "bandit.csv").exists()


@pytest.mark.slow
def test_bandit_fixed_noise_for_one_agent_equals_fixing_it_for_all(tmp_path):
    def regrets(out, *flags):
        _quick("bandit.py", out, "--no-progress", "--agents", "factorial_vi", "epsilon_greedy",
               "--deltas", "0.9", *flags)  # fmt: skip
        with open(out / "bandit.csv") as f:
            return {r["method"]: r["cumulative_regret"] for r in csv.DictReader(f)}

    one = regrets(tmp_path / "one", "--fixed-noise", "factorial_vi=0.01")
    every = regrets(tmp_path / "all", "--no-learn-noise", "--noise-std", "0.01")
    learned = regrets(tmp_path / "learned")
    assert one["factorial_vi"] == every["factorial_vi"]  # the same model, the same run
    assert one["epsilon_greedy"] == learned["epsilon_greedy"]  # the others still learn it
    assert one["epsilon_greedy"] != every["epsilon_greedy"]  # and learning it matters


def test_bandit_rejects_a_malformed_fixed_noise(tmp_path):
    result = _run("bandit.py", "--quick", "--out", tmp_path, "--fixed-noise", "factorial_vi=-1")
    assert result.returncode != 0 and "expected AGENT=STD" in result.stderr


def test_bandit_rejects_an_unknown_heteroscedastic_agent(tmp_path):
    result = _run("bandit.py", "--quick", "--out", tmp_path, "--heteroscedastic", "bnh")
    assert result.returncode != 0 and "--heteroscedastic ['bnh']: unknown agents" in result.stderr


def test_bandit_paired_difference_matches_seeds(benchmark_module):
    bandit = benchmark_module("bandit")

    def row(method, seed, regret, delta=0.99):
        return {"method": method, "seed": seed, "delta": delta, "normalized_regret": regret}

    rows = [row("epsilon_greedy", 0, 0.80), row("bhn", 0, 0.70), row("epsilon_greedy", 1, 0.5),
            row("bhn", 1, 0.65), row("bhn", 2, 0.1, delta=0.9)]  # fmt: skip
    diff = bandit.paired_difference(rows, "bhn", 0.99)
    assert diff.tolist() == pytest.approx([-10.0, 15.0])


def test_bandit_heteroscedastic_reaches_only_the_named_agents(benchmark_module):
    bandit = benchmark_module("bandit")
    args = bandit.Args(heteroscedastic=["bhn"])
    assert bandit.heteroscedastic_agents(args) == {"bhn"}
    assert "predicted per context for bhn" in bandit.noise_words(args)
    every = bandit.heteroscedastic_agents(bandit.Args(heteroscedastic=["all"]))
    assert every == set(bandit.AGENTS)
    assert "per context" not in bandit.noise_words(bandit.Args())


def test_bandit_noise_tries_the_heteroscedastic_likelihood_for_every_agent(benchmark_module):
    noise = benchmark_module("bandit_noise")
    het = [job for job in noise.jobs(noise.Args()) if job.value == "per context"]
    assert [job.out.name for job in het] == ["heteroscedastic", "heteroscedastic"]
    assert all(job.argv[job.argv.index("--heteroscedastic") + 1] == "all" for job in het)
    assert not any("--no-learn-noise" in job.argv for job in het)
    assert not [j for j in noise.jobs(noise.Args(heteroscedastic=False)) if "hetero" in str(j.out)]


@pytest.mark.slow
def test_bandit_noise_quick_tabulates_each_agents_likelihood(tmp_path):
    stdout = _quick("bandit_noise.py", tmp_path)
    text = (tmp_path / "bandit_noise.md").read_text()
    assert "| bhn | fixed 0.01 |" in text and "Chosen (lowest mean;" in text
    assert (tmp_path / "fixed-0.01" / "bandit.csv").is_file()
    assert (tmp_path / "lower_deltas" / "fixed-0.01" / "bandit.csv").is_file()
    assert "fixed 0.01" in stdout


def test_bandit_noise_reads_the_tuning_runs_at_the_chosen_settings(benchmark_module):
    noise = benchmark_module("bandit_noise")
    folders = noise.learned_folders(noise.Args())
    assert set(folders) == {"bhn", "mc_dropout", "factorial_vi", "epsilon_greedy"}
    for paths in folders.values():  # bandit.py's defaults are values that were swept
        assert all((p / "bandit.csv").is_file() for p in paths), paths


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [("bandit", ["--fvi-init-std", "-1"],
      "bandit.py: error: agent factorial_vi: init_std must be a non-negative number"),
     ("bandit", ["--mc-dropout-p", "1.5"], "agent mc_dropout: p_hidden must be a number in"),
     ("bandit", ["--steps", "0"], "--steps must be at least 1, got 0"),
     ("bandit", ["--agents", "bhn", "bhn"], "--agents names bhn more than once"),
     ("bandit_noise", ["--values", "0"], "--values must be positive, got 0.0"),
     ("bandit_noise", ["--values", "0.01", "0.010"], "--values names 0.01 more than once"),
     ("safe_exploration", ["--grid-steps", "0"], "--grid-steps must be at least 1, got 0"),
     ("safe_exploration", ["--quantile", "2"], "bhn on gridworld: quantile must lie in [0, 1]"),
     ("safe_exploration", ["--agents", "mc_dropout", "--mc-dropout-p", "2"],
      "mc_dropout on gridworld: p_hidden must be a number in [0, 1]"),
     # settings of agents or experiments left out were accepted, ignored and reported before
     ("bandit", ["--agents", "bhn", "--epsilon", "2"],
      "bandit.py: error: --epsilon is a setting of epsilon_greedy, which --agents leaves out"),
     ("bandit", ["--fixed-noise", "factorial_vi=0.01", "factorial_vi=0.5"],
      "--fixed-noise names factorial_vi more than once"),  # the last one won
     ("bandit", ["--agents", "bhn", "--fixed-noise", "mc_dropout=0.01"],
      "--fixed-noise 'mc_dropout=0.01': mc_dropout is not among --agents bhn"),
     ("bandit", ["--agents", "bhn", "--heteroscedastic", "mc_dropout"],
      "--heteroscedastic ['mc_dropout']: not among --agents bhn"),
     ("bandit", ["--heteroscedastic", "all", "bogus"],
      "--heteroscedastic ['bogus']: unknown agents"),  # ignored beside all
     ("bandit", ["--deltas", "1.0"], "bandit.py: error: --deltas [1.0]: the wheel's delta"),
     ("safe_exploration", ["--agents", "bhn", "--mc-dropout-p", "0.3"],
      "--mc-dropout-p is a setting of mc_dropout, which --agents leaves out"),
     ("safe_exploration", ["--agents", "epsilon_greedy", "--no-resample-on-revisit"],
      "--resample-on-revisit is a setting of bhn and mc_dropout and factorial_vi"),
     ("safe_exploration", ["--envs", "gridworld", "--cartpole-steps", "0"],
      "--cartpole-steps is a setting of cartpole, which --envs leaves out"),
     ("safe_exploration", ["--agents", "random"],
      "safe_exploration.py: error: unknown agents ['random']"),
     ("explore_diagnostics", ["--samples", "1"], "--samples must be at least 2, got 1"),
     ("explore_diagnostics", ["--cartpole-steps", "0"], "--cartpole-steps must be at least 1"),
     ("explore_diagnostics", ["--cost-agents", "bhm"], "--cost-agents: unknown bhm; choose")],
)  # fmt: skip
def test_explore_benchmarks_refuse_a_bad_flag_before_any_agent_runs(
    benchmark_module, tmp_path, script, flags, message
):
    """Each gave a traceback before, some after other agents had run their steps."""
    module = benchmark_module(script)
    with pytest.raises(SystemExit, match=re.escape(message)):
        module.main(["--quick", "--out", str(tmp_path), *flags])
    assert not list(tmp_path.iterdir())  # nothing run, nothing written


def test_explore_reports_state_the_settings_of_what_ran_only(benchmark_module):
    bandit, se = benchmark_module("bandit"), benchmark_module("safe_exploration")
    assert bandit.agent_words(bandit.Args(agents=["bhn"])) == (
        "BHN with 4 couplings (32 hidden) and initial q std 0.5"  # epsilon and MC dropout's p too
    )
    assert bandit.agent_words(bandit.Args()).startswith("epsilon-greedy epsilon=0.1 with a MAP")
    assert bandit.heteroscedastic_agents(bandit.Args(agents=["bhn"], heteroscedastic=["all"])) == {
        "bhn"
    }
    assert "CartPole" not in se.experiment_words(se.Args(envs=["gridworld"]))
    assert se.agent_words(se.Args(agents=["epsilon_greedy"])) == ""
    common = benchmark_module("common")
    assert common.run_label(bandit.Args(seeds=[0])) == "reduced"  # named 'full' before


def test_explore_benchmarks_refuse_negative_or_repeated_seeds(benchmark_module, capsys):
    common, bandit, tuning = (benchmark_module(m) for m in ("common", "bandit", "bandit_tuning"))
    for cls, argv, message in [
        (bandit.Args, ["--seeds", "-1"], "--seeds -1: a seed must lie in 0..2**32 - 1"),
        (bandit.Args, ["--seeds", "0", "0"], "seed 0 given more than once"),
        (tuning.Args, ["--high-seeds", "10", "10"], "--high-seeds 10 10: seed 10 given more"),
        (bandit.Args, ["--epsilon", "nan"], "argument --epsilon: expected a finite number"),
    ]:
        with pytest.raises(SystemExit):
            common.parse_args(cls, argv)
        assert message in capsys.readouterr().err
