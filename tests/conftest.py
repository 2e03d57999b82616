"""Fixtures shared by every test module. Area-specific helpers live in their own
``tests/<area>_support.py`` modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture(scope="session")
def sample_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample tree packed as the vendor's tarball (vendor variant), built once."""
    from toa_kernel.sample import pack_sample_tarball

    return pack_sample_tarball(tmp_path_factory.mktemp("sample"))


def have(*programs: str) -> bool:
    """True when every program is on PATH."""
    return all(shutil.which(p) for p in programs)
