"""Fixtures shared by every test module. Area-specific helpers live in their own
``tests/<area>_support.py`` modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sshd_support import needs_sshd, start_sshd

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The two ways a step reaches a system: this machine under a root prefix, and the same
# root prefix on a server over SSH (the real sshd on 127.0.0.1). Tests that take the
# ``node`` fixture (or ``sandbox``) run once with each.
SYSTEM_KINDS = ["local", pytest.param("ssh", marks=[pytest.mark.slow, pytest.mark.ssh, needs_sshd])]


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


@pytest.fixture(scope="session")
def node_sshd():
    """One real sshd for every test that reaches a sandbox root over SSH (started when first needed)."""
    server = start_sshd()
    yield server
    server.stop()


@pytest.fixture(params=SYSTEM_KINDS)
def system_kind(request) -> str:
    return request.param


@pytest.fixture
def node(system_kind: str, request, tmp_path: Path):
    """Opens a sandbox root as a System of the kind under test (``node.open(ROOT)``); the
    systems it opened are closed at teardown."""
    from node_support import Node

    server = request.getfixturevalue("node_sshd") if system_kind == "ssh" else None
    opened = Node(system_kind, server, tmp_path / "node_known_hosts")
    yield opened
    opened.close()


@pytest.fixture
def sandbox(tmp_path: Path, build_section: dict, node):
    """A CentOS 6 sandbox root whose work directory records the sample build, reached
    locally and over SSH (``sandbox.system``)."""
    from centos6_root import Sandbox

    return Sandbox(tmp_path, build_section, node=node)


@pytest.fixture
def local_sandbox(tmp_path: Path, build_section: dict):
    """The sandbox on this machine only (for tests about something else than system access)."""
    from centos6_root import Sandbox

    return Sandbox(tmp_path, build_section)
