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
    from toa_kernel.demo.sample import pack_sample_tarball

    return pack_sample_tarball(tmp_path_factory.mktemp("sample"))


def have(*programs: str) -> bool:
    """True when every program is on PATH."""
    return all(shutil.which(p) for p in programs)


@pytest.fixture(scope="session")
def build_section(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample tree built once by ``invoke build``'s code: the manifest's build section."""
    from centos6_root import build_sample

    return build_sample(tmp_path_factory.mktemp("build"))


@pytest.fixture
def sandbox(tmp_path: Path, build_section: dict):
    """A CentOS 6 sandbox root whose work directory records the sample build."""
    from centos6_root import Sandbox

    return Sandbox(tmp_path, build_section)
