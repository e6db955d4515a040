"""Shared fixtures: tiny synthetic competition files, and the real stand-in data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from an2dl_kit.data.discover import shared_data_root
from an2dl_kit.data.synth import write_synthetic


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """Root of tiny synthetic files (with contaminants), laid out as ../shared/data: cells/, mars/."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, seed=0, contaminants=True, size="tiny")
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real stand-in files (cells/, mars/); the test is skipped where they are absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real stand-in data (../shared/data or $AN2DL_SHARED_DATA) not available")
    return root
