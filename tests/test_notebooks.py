"""Every notebook in notebooks/ runs top to bottom with small settings (so it cannot rot)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    # Notebooks read SAFETY_BHN_NOTEBOOK_SMALL to shrink data, epochs and samples.
    monkeypatch.setenv("SAFETY_BHN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]  # fmt: skip
    assert not errors
    # Every notebook saves its figures in figures/ under the working folder (git-ignored as
    # notebooks/figures/ when run from notebooks/) and writes nothing else there.
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written, "the notebook saved no figure"
    stray = [str(p) for p in written if p.parts[0] != "figures"]
    assert not stray, f"files written outside figures/: {stray}"
    assert all(p.suffix == ".png" for p in written), written
