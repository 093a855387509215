"""Project hygiene: one version, a licence, a changelog, notebooks built from one source."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import nbformat

import nbseg

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_version_is_the_package_version():
    assert importlib.metadata.version("nbseg") == nbseg.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", nbseg.__version__)


def test_license_is_bsd_3_clause():
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in text
    assert "Neither the name of the copyright holder" in text  # the third clause
    assert 'license = { text = "BSD-3-Clause" }' in (ROOT / "pyproject.toml").read_text()


def test_changelog_has_a_section_for_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    version = re.escape(nbseg.__version__)
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.MULTILINE)


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


def test_committed_notebooks_are_what_the_generator_writes(tmp_path):
    """notebooks/*.ipynb come from scripts/build_notebooks.py: edit there, then rebuild."""
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "scripts" / "build_notebooks.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.main(["--out", str(tmp_path)]) == 0
    generated = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    committed = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert generated == committed == sorted(builder.NOTEBOOKS)
    for name in generated:
        assert _cells(tmp_path / name) == _cells(ROOT / "notebooks" / name), (
            f"notebooks/{name} differs from scripts/build_notebooks.py: edit the generator "
            "and run `python scripts/build_notebooks.py`"
        )
