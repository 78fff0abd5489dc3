"""README.md stays true: its Python example runs, and it names the test command CI runs."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.slow
def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python example"
    code = blocks[0].replace("epochs=20", "epochs=1")  # same code, shorter training
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["probs"].shape == (100, 8, 10)
    assert namespace["action_values"].shape == (1, 10)


def test_readme_gives_the_test_command_that_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in README and "<!-- test-command -->" in ci
    command = README.split("<!-- test-command -->")[1].split("```")[1]
    assert "pytest" in command and "pip install torch==2.13.0" in command
