"""Smoke tests: the bandit and safe-exploration benchmarks run end to end with --quick."""

import csv
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
