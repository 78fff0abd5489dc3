"""README.md stays true: its Python example runs, and it names the test command CI runs."""

import re
from pathlib import Path

import pytest

from safety_bhn.ood import available_sets, unregister_ood_set

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


SHORTER = {"epochs=20": "epochs=1", "epochs=5": "epochs=1", "range(30)": "range(2)",
           "steps=3,": "steps=1,"}  # same code, smaller budgets  # fmt: skip
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_examples_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write runs/ and reports/ folders
    code = BLOCKS[index]
    for long, short in SHORTER.items():
        code = code.replace(long, short)
    namespace: dict = {}
    before = set(available_sets())
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    finally:  # the OOD example registers a set: leave the registry as other tests expect it
        for name in set(available_sets()) - before:
            unregister_ood_set(name)
    if index == 0:
        assert namespace["probs"].shape == (100, 8, 10)
        assert namespace["action_values"].shape == (1, 10)


def test_readme_has_examples_for_core_and_every_application():
    joined = "\n".join(BLOCKS)
    for module in ("safety_bhn.active", "safety_bhn.ood", "safety_bhn.explore"):
        assert module in joined


def test_readme_gives_the_test_command_that_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in README and "<!-- test-command -->" in ci
    command = README.split("<!-- test-command -->")[1].split("```")[1]
    assert "pytest" in command and "pip install torch==2.13.0" in command
