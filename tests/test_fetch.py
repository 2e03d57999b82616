"""``fetch_source`` and the ``invoke fetch`` command, end to end on 127.0.0.1."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from fetch_support import small_tmpfs
from httpfaults import fault_server

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.layout import TARBALL_NAME, TREE_NAME
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.source.archive import Damaged
from toa_kernel.source.fetch import fetch_source

FILLER = 400_000


def pack(path: Path, filler: bytes) -> Path:
    """A vendor-named tarball: the tree's top directory, a Makefile and a filler file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("Makefile", b"VERSION = 2\nEXTRAVERSION =\n"), ("filler.bin", filler)):
            info = tarfile.TarInfo(f"{TREE_NAME}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for index in range(40):
            info = tarfile.TarInfo(f"{TREE_NAME}/drivers/f{index}.c")
            data = b"int x;\n" * (index + 1)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=1))
    return path


@pytest.fixture
def public(tmp_path: Path) -> Path:
    pack(tmp_path / "pub" / TARBALL_NAME, os.urandom(FILLER))
    return tmp_path / "pub"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


def settings(url: str, work: Path, **more: object) -> Settings:
    values = {"retries": 2, "backoff": 0.0, "connect_timeout": 2, "read_timeout": 5, **more}
    return Settings(url=url, workdir=work).with_(**values)


def quiet() -> Console:
    return Console(quiet=True)


def test_fetch_downloads_unpacks_and_records(public, work, capsys):
    with fault_server(public) as server:
        result = fetch_source(settings(server.url(TARBALL_NAME), work), console=Console())
    tarball = work / "downloads" / TARBALL_NAME
    assert result.tarball == tarball and result.tree == work / "src" / TREE_NAME
    assert (result.tree / "Makefile").read_text().startswith("VERSION = 2")
    recorded = Workdir(work).section("fetch")
    assert recorded["tree"] == str(result.tree) and recorded["sha256"] == result.sha256
    assert recorded["size"] == tarball.stat().st_size and recorded["pinned"] is False
    assert recorded["url"] == server.url(TARBALL_NAME)
    assert recorded["downloaded_at"] and recorded["unpacked_at"]
    assert not result.nothing_to_do and len(result.actions) == 2
    out = capsys.readouterr().out
    assert f"not pinned: pin it with --sha256 {result.sha256}" in out


def test_second_run_does_nothing_and_says_so(public, work, capsys):
    with fault_server(public) as server:
        first = fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
        requests_before = len(server.requests)
        second = fetch_source(settings(server.url(TARBALL_NAME), work), console=Console())
        assert len(server.requests) == requests_before
    assert second.nothing_to_do and second.actions == []
    assert second.sha256 == first.sha256 and second.tree == first.tree
    assert "nothing to do" in capsys.readouterr().out


def test_force_starts_over(public, work):
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        first = fetch_source(settings(url, work), console=quiet())
        (first.tree / "stale.o").write_text("x")
        again = fetch_source(settings(url, work), force=True, console=quiet())
        assert [r.status for r in server.requests] == [200, 200]
    assert [action.split()[0] for action in again.actions] == ["download", "unpack"]
    assert not (again.tree / "stale.o").exists() and (again.tree / "Makefile").is_file()


def test_missing_tree_is_unpacked_again_without_downloading(public, work):
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        first = fetch_source(settings(url, work), console=quiet())
        subprocess.run(["rm", "-rf", str(first.tree)], check=True)
        again = fetch_source(settings(url, work), console=quiet())
        assert len(server.requests) == 1
    assert len(again.actions) == 1 and again.actions[0].startswith("unpack")
    assert (again.tree / "Makefile").is_file()


def test_changed_tarball_is_downloaded_again(public, work):
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        first = fetch_source(settings(url, work), console=quiet())
        with open(first.tarball, "r+b") as handle:
            handle.seek(1000)
            handle.write(b"garbage")
        again = fetch_source(settings(url, work), console=quiet())
        assert len(server.requests) == 2
    assert again.sha256 == first.sha256


def test_failed_download_keeps_the_previous_fetch(public, work):
    with fault_server(public) as server:
        first = fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
        recorded = Workdir(work).section("fetch")
        with pytest.raises(UserError, match="HTTP 404"):
            fetch_source(settings(server.base_url + "gone/" + TARBALL_NAME, work), console=quiet())
    assert Workdir(work).section("fetch") == recorded
    assert first.tarball.is_file() and (first.tree / "Makefile").is_file()


def test_pinned_sha256_mismatch_is_an_error_and_nothing_is_used(public, work):
    with fault_server(public) as server, pytest.raises(UserError, match="the pin says") as info:
        fetch_source(settings(server.url(TARBALL_NAME), work, sha256="a" * 64), console=quiet())
    assert "removed and not used" in info.value.message
    assert os.listdir(work / "downloads") == [] and os.listdir(work / "src") == []
    assert Workdir(work).section("fetch") == {}


def test_pinned_sha256_match_is_recorded_as_pinned(public, work):
    digest = __import__("hashlib").sha256((public / TARBALL_NAME).read_bytes()).hexdigest()
    with fault_server(public) as server:
        result = fetch_source(settings(server.url(TARBALL_NAME), work, sha256=digest), console=quiet())
    assert result.pinned and Workdir(work).section("fetch")["pinned"] is True


def test_html_page_leaves_nothing_behind(public, work):
    with fault_server(public) as server:
        server.add(TARBALL_NAME, ("html", "<html><title>Service Unavailable</title></html>"))
        with pytest.raises(UserError, match='HTML page titled "Service Unavailable"'):
            fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
    assert os.listdir(work / "downloads") == [] and os.listdir(work / "src") == []


def test_truncated_tarball_is_removed_and_nothing_is_trusted(public, work):
    whole = (public / TARBALL_NAME).read_bytes()
    (public / TARBALL_NAME).write_bytes(whole[: len(whole) // 2])  # the server's copy is cut short
    with fault_server(public) as server:
        with pytest.raises(Damaged, match=r"damaged or truncated.*the file was removed") as info:
            fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
        assert "again" in info.value.fix
        assert os.listdir(work / "downloads") == [] and os.listdir(work / "src") == []
        assert Workdir(work).section("fetch") == {}
        (public / TARBALL_NAME).write_bytes(whole)
        result = fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
    assert (result.tree / "drivers" / "f39.c").is_file()


def test_mirror_is_used_when_the_source_fails(public, work):
    with fault_server(public) as server:
        source = server.base_url + "gone/" + TARBALL_NAME
        result = fetch_source(settings(source, work, mirrors=server.url(TARBALL_NAME)), console=quiet())
    assert result.url == server.url(TARBALL_NAME)
    assert Workdir(work).section("fetch")["source"] == source


def test_local_tarball_replaced_by_another_file_is_taken_again(public, work, tmp_path):
    local = pack(tmp_path / "mine" / TARBALL_NAME, b"first")
    first = fetch_source(settings("http://unused.invalid/x.tar.gz", work), tarball=local, console=quiet())
    pack(local, b"second")
    second = fetch_source(settings("http://unused.invalid/x.tar.gz", work), tarball=local, console=quiet())
    assert not second.nothing_to_do and second.sha256 != first.sha256
    assert (second.tree / "filler.bin").read_bytes() == b"second"


def test_local_tarball(public, work):
    result = fetch_source(
        settings("http://unused.invalid/x.tar.gz", work), tarball=public / TARBALL_NAME, console=quiet()
    )
    assert (result.tree / "Makefile").is_file() and result.url.startswith("file://")
    with pytest.raises(UserError, match="no such file"):
        fetch_source(
            settings("http://unused.invalid/x.tar.gz", work), tarball=public / "nope", console=quiet()
        )


def test_dry_run_changes_nothing(public, work, capsys):
    with fault_server(public) as server:
        result = fetch_source(settings(server.url(TARBALL_NAME), work), dry_run=True, console=Console())
        assert server.requests == []
    assert not work.exists()
    assert result.dry_run and [a.split()[0] for a in result.actions] == ["download", "unpack"]
    assert "fetch: would download" in capsys.readouterr().out


def test_disk_full_during_download(public, tmp_path):
    with small_tmpfs(tmp_path / "full") as work, fault_server(public) as server:
        with pytest.raises(EnvironmentFailure, match="no space left"):
            fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
        assert os.listdir(work / "downloads") == []
        assert Workdir(work).section("fetch") == {}


def test_disk_full_during_unpack(tmp_path):
    pack(tmp_path / "pub" / TARBALL_NAME, bytes(1_000_000))  # compresses to a few KiB
    with small_tmpfs(tmp_path / "full", "256k") as work, fault_server(tmp_path / "pub") as server:
        with pytest.raises(EnvironmentFailure, match="no space left"):
            fetch_source(settings(server.url(TARBALL_NAME), work), console=quiet())
        assert os.listdir(work / "src") == []  # neither a half tree nor a temporary directory
        recorded = Workdir(work).section("fetch")
        assert recorded["sha256"] and recorded["tree"] == ""


# --- the command line, processes, signals --------------------------------------------------


def invoke_fetch(project_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project_dir), "INVOKE_TOA_BACKOFF": "0"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(project_dir), "fetch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_invoke_fetch_command_line(public, work, project_dir):
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        dry = invoke_fetch(project_dir, "--url", url, "--workdir", str(work), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "fetch: would download" in dry.stdout and not work.exists() and server.requests == []
        first = invoke_fetch(project_dir, "--url", url, "--workdir", str(work))
        assert first.returncode == 0, first.stderr
        assert "fetch: done" in first.stdout and str(work / "src" / TREE_NAME) in first.stdout
        second = invoke_fetch(project_dir, "--url", url, "--workdir", str(work), "--json")
        assert second.returncode == 0, second.stderr
        document = json.loads(second.stdout)
        assert document["nothing_to_do"] is True and document["tree"] == str(work / "src" / TREE_NAME)
        assert len(server.requests) == 1
        bad = invoke_fetch(project_dir, "--url", server.base_url + "missing.tar.gz", "--workdir", str(work))
    assert bad.returncode == 2
    assert "HTTP 404" in bad.stderr and "fix:" in bad.stderr and "Traceback" not in bad.stderr


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.slow
def test_download_killed_with_sigkill_then_run_again(public, work, project_dir):
    part = work / "downloads" / (TARBALL_NAME + ".part")
    size = (public / TARBALL_NAME).stat().st_size
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        server.add(TARBALL_NAME, ("stall", 150_000))
        env = {**os.environ, "PYTHONPATH": str(project_dir)}
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "invoke",
                "-r",
                str(project_dir),
                "fetch",
                "--url",
                url,
                "--workdir",
                str(work),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: part.exists() and part.stat().st_size == 150_000)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert not (work / "downloads" / TARBALL_NAME).exists() and os.listdir(work / "src") == []
        again = invoke_fetch(project_dir, "--url", url, "--workdir", str(work))
        assert again.returncode == 0, again.stderr
        assert "resuming" in again.stdout
        assert server.requests[-1].range == "bytes=150000-"
        assert server.sent == size  # the second run fetched only the rest
    recorded = Workdir(work).section("fetch")
    assert (
        recorded["sha256"] == __import__("hashlib").sha256((public / TARBALL_NAME).read_bytes()).hexdigest()
    )
    assert (work / "src" / TREE_NAME / "drivers" / "f39.c").is_file()


KILLABLE_FETCH = """
import sys, time
from pathlib import Path
from toa_kernel.source import archive
from toa_kernel.source.archive import Damaged
from toa_kernel.core.console import Console
from toa_kernel.source.fetch import fetch_source
from toa_kernel.core.settings import Settings

real = archive.Extractor.write_file
count = 0

def slow(self, name, info, reader):
    global count
    real(self, name, info, reader)
    count += 1
    if count == 10:
        print("half-way", flush=True)
        time.sleep(60)

archive.Extractor.write_file = slow
fetch_source(Settings(url=sys.argv[1], workdir=Path(sys.argv[2])), console=Console(quiet=True))
"""


@pytest.mark.slow
def test_unpack_killed_with_sigkill_then_run_again(public, work, project_dir):
    with fault_server(public) as server:
        url = server.url(TARBALL_NAME)
        env = {**os.environ, "PYTHONPATH": str(project_dir)}
        child = subprocess.Popen(
            [sys.executable, "-c", KILLABLE_FETCH, url, str(work)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "half-way"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        leftover = os.listdir(work / "src")
        assert len(leftover) == 1 and leftover[0].startswith(".unpack-")  # no tree a later step could trust
        assert Workdir(work).section("fetch")["tree"] == ""
        again = invoke_fetch(project_dir, "--url", url, "--workdir", str(work))
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == 1  # the verified tarball was kept
    assert "fetch: unpack" in again.stdout and "fetch: download" not in again.stdout
    assert os.listdir(work / "src") == [TREE_NAME]
    assert len(list((work / "src" / TREE_NAME / "drivers").iterdir())) == 40
    assert Workdir(work).section("fetch")["tree"] == str(work / "src" / TREE_NAME)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from toa_kernel.core.state import Workdir, WorkLock
with WorkLock(Workdir(Path(sys.argv[1]))):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_second_concurrent_run_stops_at_once_naming_the_holder(public, work, project_dir):
    env = {**os.environ, "PYTHONPATH": str(project_dir)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(work)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        blocked = invoke_fetch(project_dir, "--tarball", str(public / TARBALL_NAME), "--workdir", str(work))
        assert time.monotonic() - started < 15
        assert blocked.returncode == 3
        assert f"pid {holder.pid}" in blocked.stderr and "Traceback" not in blocked.stderr
        assert not (work / "src" / TREE_NAME).exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    after = invoke_fetch(project_dir, "--tarball", str(public / TARBALL_NAME), "--workdir", str(work))
    assert after.returncode == 0, after.stderr
    assert (work / "src" / TREE_NAME / "Makefile").is_file()
