"""Execute every notebook top to bottom, headless, in its small (CI) size.

The notebooks read ``NBSEG_SMALL=1`` to shrink data and epochs; the code path is the same as
in the full size. Each runs in a scratch copy of ``notebooks/`` so files it writes (models,
zarr stores) never land in the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_clean():
    names = [p.name for p in NOTEBOOKS]
    for expected in (
        "01_quickstart",
        "02_label_and_train",
        "03_multiphase",
        "04_teaching",
        "05_big_volumes",
    ):
        assert any(n.startswith(expected) for n in names), f"missing notebook {expected}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs")]
        assert not stale, f"{path.name} is committed with outputs in cells {stale}"
        assert nb.cells[0].cell_type == "markdown" and "learn" in nb.cells[0].source.lower(), (
            f"{path.name} must open by saying what it teaches"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    work = tmp_path / "notebooks"
    shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns("*.nbseg", "*.zarr"))
    monkeypatch.setenv("NBSEG_SMALL", "1")
    monkeypatch.setenv("NBSEG_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    nb = nbformat.read(work / path.name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
