"""Shared fixtures. Data is found relative to this file; nothing loads on import."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The ../shared folder (or $MRDFLOW_SHARED) when present, else None."""
    p = Path(os.environ.get("MRDFLOW_SHARED", REPO.parent / "shared"))
    return p if p.is_dir() else None


@pytest.fixture
def shared() -> Path:
    p = shared_dir()
    if p is None:
        pytest.skip("../shared is absent (set MRDFLOW_SHARED to point at it)")
    return p


@pytest.fixture
def repo() -> Path:
    return REPO


def pytest_configure(config):
    # tests/test_slurm.py (the pyproject marker list predates it)
    config.addinivalue_line("markers", "slurm: runs the tiny test cohort through a real SLURM (skips without one)")
