"""Shared fixtures: tiny synthetic competition files, and the real stand-in data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from an2dl_kit.data.synth import write_synthetic

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_CANDIDATES = (Path("/work/shared/data"), REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """Root of tiny synthetic files (with contaminants), laid out as ../shared/data: cells/, mars/."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, seed=0, contaminants=True, size="tiny")
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real stand-in files (cells/, mars/); the test is skipped where they are absent."""
    for root in SHARED_DATA_CANDIDATES:
        if (root / "cells" / "training_set.npz").is_file() and (
            root / "mars" / "mars_for_students.npz"
        ).is_file():
            return root
    pytest.skip("real stand-in data (../shared/data) not available")
