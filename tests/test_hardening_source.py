"""Hardening of fetch, downloads, unpacks and the module source: bounded retries and
sizes, names that cannot climb out of the work directory, archives refused and
forgotten. Real HTTP on 127.0.0.1 (tests/httpfaults.py), real files, real tmpfs."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import time
from pathlib import Path

import pytest
from cli_support import run_invoke
from fetch_support import small_tmpfs
from httpfaults import fault_server
from module_support import installed_headers, pack_like_elb_toa

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.layout import TARBALL_NAME, TREE_NAME
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.module import steps
from toa_kernel.module.steps import SourceRequest
from toa_kernel.source.archive import unpack
from toa_kernel.source.download import Downloader, file_name_of
from toa_kernel.source.fetch import fetch_source

MiB = 1 << 20


def quiet() -> Console:
    return Console(quiet=True)


def listing(directory: Path) -> list[str]:
    """Every path under ``directory``, relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- 1. a branch that climbs out of the work directory ------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory outside the work directory where a climbing branch would unpack."""
    tree = tmp_path / "victim" / "elb-toa-master"
    tree.mkdir(parents=True)
    (tree / "keep").write_text("precious\n")
    return tree


def test_branch_that_climbs_out_is_refused_before_anything_is_written(tmp_path, victim):
    tarball = pack_like_elb_toa(tmp_path / "pub" / "master.tar.gz")
    work = Workdir(tmp_path / "work").ensure()
    settings = Settings.from_config(None, workdir=work.path)
    before = listing(tmp_path)
    request = SourceRequest(tarball=tarball, branch="x/../../../victim")
    with pytest.raises(UserError) as caught:
        steps.fetch_source(settings, work, request, quiet(), force=False)
    assert "--branch 'x/../../../victim'" in caught.value.message
    assert "not a git branch name" in caught.value.message
    assert listing(tmp_path) == before and (victim / "keep").read_text() == "precious\n"


@pytest.mark.parametrize(
    "branch",
    [
        "..",
        "a/../b",
        "-rf",
        "a b",
        "a:b",
        "x.lock",
        ".hidden",
        "a//b",
        "/abs",
        "end.",
        "a@{1}",
        "a\\b",
        "a\nb",
    ],
)
def test_branch_names_follow_git_check_ref_format(branch):
    with pytest.raises(UserError, match="--branch"):
        SourceRequest(branch=branch).chosen_branch(Settings())


def test_module_branch_setting_from_the_environment_is_checked_too(tmp_path, victim):
    tarball = pack_like_elb_toa(tmp_path / "pub" / "master.tar.gz")
    release = installed_headers() or "5.10.0-1-amd64"
    done = run_invoke(
        "build-module",
        "--tarball",
        str(tarball),
        "--release",
        release,
        "--workdir",
        str(tmp_path / "work"),
        env={"INVOKE_TOA_MODULE_BRANCH": "x/../../../victim"},
    )
    assert done.returncode == 2, done.stderr
    assert "INVOKE_TOA_MODULE_BRANCH" in done.stderr and "not a git branch name" in done.stderr
    assert "Traceback" not in done.stderr
    assert (victim / "keep").read_text() == "precious\n" and listing(victim) == ["keep"]


def test_a_nested_branch_is_one_quoted_file_name_and_a_url_path(tmp_path):
    pack_like_elb_toa(tmp_path / "pub" / "feature" / "x.tar.gz", branch="feature-x")
    work = Workdir(tmp_path / "work").ensure()
    with fault_server(tmp_path / "pub") as server:
        settings = Settings.from_config(None, workdir=work.path, module_url=server.url("{branch}.tar.gz"))
        tree, origin = steps.fetch_source(settings, work, SourceRequest(branch="feature/x"), quiet(), False)
        assert [seen.path for seen in server.requests] == ["/feature/x.tar.gz"]
    assert os.listdir(work.downloads) == ["module-feature%2Fx-x.tar.gz"]
    assert tree == work.src / "module-feature%2Fx" / "elb-toa-feature-x" and origin["branch"] == "feature/x"


def test_a_url_ending_in_dot_dot_downloads_into_the_downloads_directory(tmp_path):
    assert file_name_of("http://h/a/..", "default.tgz") == "default.tgz"
    assert file_name_of("http://h/a/%2e%2e", "default.tgz") == "default.tgz"
    assert file_name_of("http://h/a/b.tgz", "default.tgz") == "b.tgz"


# --- 5. retries bounded by count and by time ------------------------------------------------


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "pub" / "blob.tar.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(300_000))
    return path


class Sleeps:
    """The downloader's sleep: records delays, and stops a loop that would never end."""

    def __init__(self, limit: int = 30) -> None:
        self.delays: list[float] = []
        self.limit = limit

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) > self.limit:
            raise AssertionError(f"retried {len(self.delays)} times: the loop is not bounded")


def test_a_server_that_cuts_the_body_and_ignores_range_is_given_up_on(payload, tmp_path):
    dest = tmp_path / "downloads" / payload.name
    sleeps = Sleeps()
    with fault_server(payload.parent) as server:
        server.ignore_range = True
        server.add(payload.name, *[("drop", 100_000)] * 50)
        downloader = Downloader(
            quiet(), connect_timeout=2, read_timeout=5, retries=1, backoff=0, sleep=sleeps
        )
        with pytest.raises(EnvironmentFailure, match="tried 2 times") as caught:
            downloader.fetch(server.url(payload.name), dest)
        # The first cut brought new bytes (resumable); the next ones brought none.
        assert len(server.requests) == 3
    assert "toa.retries is 1" in caught.value.message and len(sleeps.delays) == 2


def test_the_deadline_bounds_a_download_that_keeps_making_a_little_progress(payload, tmp_path):
    dest = tmp_path / "downloads" / payload.name
    with fault_server(payload.parent) as server:
        server.add(payload.name, *[("drop", 1000)] * 400)
        settings = Settings(url=server.url(payload.name), workdir=tmp_path).with_(
            retries=3, backoff=0.05, download_deadline=1.0, connect_timeout=2, read_timeout=5
        )
        started = time.monotonic()
        with pytest.raises(EnvironmentFailure, match="gave up after 1 s") as caught:
            Downloader.from_settings(settings, quiet()).fetch(server.url(payload.name), dest)
        assert time.monotonic() - started < 5
    assert "toa.download_deadline" in caught.value.message
    assert "download_deadline" in caught.value.fix


# --- 6. downloads bounded in size -------------------------------------------------------------


def sized_downloader(max_bytes: int) -> Downloader:
    return Downloader(quiet(), connect_timeout=2, read_timeout=5, retries=1, backoff=0, max_bytes=max_bytes)


def test_an_endless_body_stops_at_the_maximum_and_leaves_nothing(tmp_path):
    (tmp_path / "pub").mkdir()
    dest = tmp_path / "downloads" / "endless.tar.gz"
    with fault_server(tmp_path / "pub") as server:
        server.add("endless.tar.gz", ("endless", 64 * MiB))
        with pytest.raises(UserError, match="more than the largest download allowed") as caught:
            sized_downloader(2 * MiB).fetch(server.url("endless.tar.gz"), dest)
    assert "toa.max_download_gib" in caught.value.fix
    assert os.listdir(dest.parent) == []


def test_an_announced_size_over_the_maximum_is_refused_before_the_body(payload, tmp_path):
    dest = tmp_path / "downloads" / payload.name
    too_big = re.escape("is 0.3 MiB, more than the largest download allowed")
    with fault_server(payload.parent) as server, pytest.raises(UserError, match=too_big):
        sized_downloader(100_000).fetch(server.url(payload.name), dest)
    assert os.listdir(dest.parent) == []


def test_an_endless_body_stops_before_the_disk_is_full(tmp_path):
    (tmp_path / "pub").mkdir()
    with small_tmpfs(tmp_path / "small", "4m") as small, fault_server(tmp_path / "pub") as server:
        server.add("endless.tar.gz", ("endless", 64 * MiB))
        with pytest.raises(EnvironmentFailure, match=re.escape("no space left for endless.tar.gz")) as caught:
            sized_downloader(1 << 30).fetch(server.url("endless.tar.gz"), small / "endless.tar.gz")
        assert os.listdir(small) == []
        assert os.statvfs(small).f_bfree > 0  # stopped at the reserve, not at ENOSPC
    assert f"df -h {small}" in caught.value.fix


def test_a_local_file_larger_than_the_maximum_is_not_copied(payload, tmp_path):
    dest = tmp_path / "downloads" / "copy.tar.gz"
    with pytest.raises(UserError, match="more than the largest download allowed"):
        sized_downloader(1000).fetch(payload.as_uri(), dest)
    assert os.listdir(dest.parent) == []


# --- fetch: --force, unsafe archives, --tarball that is not a file ----------------------------


def vendor_tarball(path: Path, members: list[tuple[str, bytes]], links: list[tuple[str, str]] = ()) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(f"{TREE_NAME}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def fetch_settings(url: str, work: Path) -> Settings:
    return Settings(url=url, workdir=work).with_(retries=0, backoff=0, connect_timeout=2, read_timeout=5)


def test_an_unsafe_archive_is_removed_and_not_recorded(tmp_path):
    vendor_tarball(
        tmp_path / "pub" / TARBALL_NAME, [("Makefile", b"VERSION = 2\n")], [(f"{TREE_NAME}/h", "/etc/passwd")]
    )
    work = tmp_path / "work"
    named = re.escape(f"hard link '{TREE_NAME}/h' -> '/etc/passwd'")
    with fault_server(tmp_path / "pub") as server, pytest.raises(UserError, match=named) as caught:
        fetch_source(fetch_settings(server.url(TARBALL_NAME), work), console=quiet())
    assert "the file was removed" in caught.value.message
    assert os.listdir(work / "downloads") == [] and os.listdir(work / "src") == []
    assert Workdir(work).section("fetch") == {}


def test_a_failed_force_keeps_the_fetched_tarball_tree_and_record(tmp_path):
    vendor_tarball(tmp_path / "pub" / TARBALL_NAME, [("Makefile", b"VERSION = 2\n")])
    work = tmp_path / "work"
    with fault_server(tmp_path / "pub") as server:
        settings = fetch_settings(server.url(TARBALL_NAME), work)
        first = fetch_source(settings, console=quiet())
        record = Workdir(work).section("fetch")
        server.add(TARBALL_NAME, ("status", 404))
        with pytest.raises(UserError, match="404"):
            fetch_source(settings, force=True, console=quiet())
    assert (first.tree / "Makefile").read_bytes() == b"VERSION = 2\n"
    assert first.tarball.is_file() and Workdir(work).section("fetch") == record


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_tarball_that_is_not_a_file_says_what_it_is(tmp_path, kind):
    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(UserError) as caught:
        fetch_source(Settings(workdir=tmp_path / "work"), tarball=path, console=quiet())
    assert "no such file" not in caught.value.message
    assert ("a directory" if kind == "directory" else "a FIFO") in caught.value.message


def test_disk_full_during_unpack_points_df_at_a_directory_that_exists(tmp_path):
    vendor_tarball(tmp_path / "pub" / TARBALL_NAME, [("zeros.bin", bytes(2 * MiB))])
    with small_tmpfs(tmp_path / "full", "512k") as work, fault_server(tmp_path / "pub") as server:
        with pytest.raises(EnvironmentFailure, match="no space left") as caught:
            fetch_source(fetch_settings(server.url(TARBALL_NAME), work), console=quiet())
        place = caught.value.fix.split("df -h ", 1)[1].split(")", 1)[0]
        assert Path(place).is_dir() and Path(place) == work / "src"


@pytest.mark.slow
@pytest.mark.skipif(installed_headers() is None, reason="no linux-headers package installed")
def test_invoke_build_module_with_a_climbing_branch_exits_2_and_writes_nothing(tmp_path, victim):
    tarball = pack_like_elb_toa(tmp_path / "pub" / "master.tar.gz")
    before = listing(tmp_path)
    done = run_invoke(
        "build-module",
        "--branch",
        "x/../../../victim",
        "--tarball",
        str(tarball),
        "--release",
        str(installed_headers()),
        "--workdir",
        str(tmp_path / "work"),
    )
    assert done.returncode == 2, done.stderr
    assert "--branch 'x/../../../victim': is not a git branch name" in done.stderr
    assert listing(tmp_path) == before


# --- the unpack is bounded too ------------------------------------------------------------------


def test_an_archive_of_too_many_members_is_refused_and_leaves_nothing(tmp_path):
    members = [(f"m{index}.c", b"") for index in range(30)]
    tarball = vendor_tarball(tmp_path / "many.tar.gz", members)
    with pytest.raises(UserError, match="more than 20 members"):
        unpack(tarball, tmp_path / "src", quiet(), max_members=20)
    assert os.listdir(tmp_path / "src") == []


def test_an_archive_bomb_stops_before_the_disk_is_full(tmp_path):
    tarball = vendor_tarball(tmp_path / "bomb.tar.gz", [(f"zeros{index}", bytes(MiB)) for index in range(8)])
    assert tarball.stat().st_size < 100_000  # 8 MiB of zeros, compressed
    with small_tmpfs(tmp_path / "small", "4m") as small:
        with pytest.raises(EnvironmentFailure, match="no space left for the unpacked tree"):
            unpack(tarball, small, quiet())
        assert os.listdir(small) == [] and os.statvfs(small).f_bfree > 0
