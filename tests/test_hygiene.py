"""Project hygiene: one version, a licence, a changelog, notebooks built from one source."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

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
