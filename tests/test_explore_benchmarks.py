"""Smoke tests: the bandit and safe-exploration benchmarks run end to end with --quick."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick(script, out):
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out),
           "--no-progress"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_bandit_quick(tmp_path):
    stdout = _quick("bandit.py", tmp_path)
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
    stdout = _quick("explore_diagnostics.py", tmp_path)
    text = (tmp_path / "explore_diagnostics.md").read_text()
    assert text in stdout + "\n" and "| cell | action | Q up |" in text
    assert re.search(r"again \d+ times in 300 steps", text)


@pytest.mark.slow
def test_safe_exploration_quick(tmp_path):
    _quick("safe_exploration.py", tmp_path)
    with open(tmp_path / "safe_exploration.csv") as f:
        rows = list(csv.DictReader(f))
    needed = {"env", "method", "safe", "seed", "episode_return", "violations"}
    assert needed <= set(rows[0])
    assert {r["env"] for r in rows} == {"LavaGrid-v0", "LavaGridShifted-v0", "CartPoleCost-v0"}
    assert {r["safe"] for r in rows} == {"True", "False"}
    assert (tmp_path / "safe_exploration.png").stat().st_size > 0
    assert "fewer violations" in (tmp_path / "safe_exploration.md").read_text()


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


def test_mean_std_reports_one_run_without_a_spread(benchmark_module):
    common = benchmark_module("common")
    assert common.mean_std([1.0, 2.0, 3.0], "{:.2f}") == "2.00 ± 1.00"
    assert common.mean_std([96.08], "{:.2f}") == "96.08 (one run)"
