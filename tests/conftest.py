"""Shared test isolation."""

from __future__ import annotations

import pytest

from nbseg.models.registry import ARCHITECTURES


@pytest.fixture(autouse=True)
def _isolated_architecture_registry():
    """Tests that import external networks register architectures: undo that afterwards."""
    before = dict(ARCHITECTURES)
    yield
    ARCHITECTURES.clear()
    ARCHITECTURES.update(before)
