"""Downloads against a real HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
import requests
from fetch_support import small_tmpfs
from httpfaults import fault_server

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.source.archive import identify
from toa_kernel.source.download import Downloader, meta_path, part_path

SIZE = 300_000


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    public = tmp_path / "pub"
    public.mkdir()
    path = public / "blob.tar.gz"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "downloads" / "blob.tar.gz"


def downloader(delays: list[float] | None = None, retries: int = 3) -> Downloader:
    record = delays if delays is not None else []
    return Downloader(
        Console(quiet=True),
        connect_timeout=2,
        read_timeout=5,
        retries=retries,
        backoff=0.5,
        sleep=record.append,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_download_writes_the_file_with_its_sha256_and_no_leftovers(payload, dest):
    with fault_server(payload.parent) as server:
        result = downloader().fetch(server.url(payload.name), dest)
    assert dest.read_bytes() == payload.read_bytes()
    assert result.sha256 == sha(payload) and result.size == SIZE
    assert leftovers(dest) == [dest.name]
    assert server.sent == SIZE


def test_404_is_a_clear_user_error_and_leaves_nothing(payload, dest):
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("status", 404))
        with pytest.raises(UserError, match="HTTP 404") as info:
            downloader().fetch(server.url(payload.name), dest)
    assert "--tarball" in info.value.fix
    assert leftovers(dest) == []
    assert len(server.requests) == 1  # a 404 is not retried


def test_500_then_200_is_retried_with_backoff(payload, dest):
    delays: list[float] = []
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("status", 500), ("status", 503))
        result = downloader(delays).fetch(server.url(payload.name), dest)
    assert [r.status for r in server.requests] == [500, 503, 200]
    assert delays == [0.5, 1.0]
    assert result.sha256 == sha(payload)


def test_5xx_forever_gives_up_after_the_retries(payload, dest):
    with fault_server(payload.parent) as server:
        server.add(payload.name, *[("status", 502)] * 10)
        with pytest.raises(EnvironmentFailure, match=r"HTTP 502.*tried 3 times"):
            downloader(retries=2).fetch(server.url(payload.name), dest)
    assert len(server.requests) == 3
    assert not dest.exists()


def test_dropped_connection_resumes_and_transfers_only_the_rest(payload, dest):
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("drop", 100_000))
        result = downloader().fetch(server.url(payload.name), dest)
    assert [r.range for r in server.requests] == [None, "bytes=100000-"]
    assert [r.status for r in server.requests] == [200, 206]
    assert server.sent == SIZE  # 100,000 bytes, then only the remaining 200,000
    assert result.resumed_from == 0 and result.transferred == SIZE
    assert dest.read_bytes() == payload.read_bytes() and result.sha256 == sha(payload)
    assert leftovers(dest) == [dest.name]


def test_server_without_range_support_restarts_cleanly(payload, dest):
    with fault_server(payload.parent) as server:
        server.ignore_range = True
        server.add(payload.name, ("drop", 120_000))
        result = downloader().fetch(server.url(payload.name), dest)
    assert [r.status for r in server.requests] == [200, 200]
    assert server.requests[1].range == "bytes=120000-"
    assert server.sent == 120_000 + SIZE
    assert dest.read_bytes() == payload.read_bytes() and result.sha256 == sha(payload)


def test_a_file_changed_on_the_server_is_not_glued_to_the_old_part(payload, dest):
    with fault_server(payload.parent) as server:
        url = server.url(payload.name)
        etag = requests.head(url, timeout=5).headers["ETag"]
        dest.parent.mkdir(parents=True)
        part_path(dest).write_bytes(payload.read_bytes()[:50_000])
        meta_path(dest).write_text(json.dumps({"url": url, "etag": etag, "last_modified": ""}))
        payload.write_bytes(os.urandom(SIZE))  # new content: the ETag changes
        result = downloader().fetch(url, dest)
    assert server.requests[1].range == "bytes=50000-"
    assert server.requests[1].status == 200  # If-Range did not match: the whole new file
    assert dest.read_bytes() == payload.read_bytes() and result.sha256 == sha(payload)


def test_a_complete_part_is_finished_without_transferring_again(payload, dest):
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("drop", SIZE))  # all bytes, but no clean end
        dest.parent.mkdir(parents=True)
        url = server.url(payload.name)
        part_path(dest).write_bytes(payload.read_bytes())
        meta_path(dest).write_text(json.dumps({"url": url, "etag": "", "last_modified": ""}))
        server.faults.clear()
        result = downloader().fetch(url, dest)
    assert [r.status for r in server.requests] == [416]
    assert server.sent == 0
    assert result.sha256 == sha(payload)


def test_html_page_with_status_200_is_rejected_quoting_its_title(payload, dest):
    page = "<!DOCTYPE html><html><head><title>Portal - please log in</title></head><body>x</body></html>"
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("html", page))
        with pytest.raises(UserError, match='HTML page titled "Portal - please log in"'):
            downloader().fetch(server.url(payload.name), dest, check=identify)
    assert leftovers(dest) == []


def test_checksum_mismatch_removes_the_file(payload, dest):
    with fault_server(payload.parent) as server, pytest.raises(UserError, match="the pin says 0000") as info:
        downloader().fetch(server.url(payload.name), dest, sha256="0" * 64)
    assert sha(payload) in info.value.message
    assert leftovers(dest) == []


def test_mirrors_are_tried_in_order(payload, dest, capsys):
    with fault_server(payload.parent) as server:
        server.add(payload.name, ("status", 404))
        urls = [server.url(payload.name), server.base_url + "missing.tar.gz", server.url(payload.name)]
        urls[1], urls[2] = urls[2], urls[1]
        result = downloader().fetch_any(urls, dest)
    assert result.url == urls[1] and result.sha256 == sha(payload)
    assert "trying the next mirror" in capsys.readouterr().err


def test_every_mirror_failing_names_each_failure(payload, dest):
    with fault_server(payload.parent) as server:
        urls = [server.base_url + "a.tar.gz", server.base_url + "b.tar.gz"]
        with pytest.raises(UserError, match=r"every source failed:\n.*a\.tar\.gz.*404.*\n.*b\.tar\.gz.*404"):
            downloader().fetch_any(urls, dest)


def test_connection_refused_is_an_environment_failure(dest):
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EnvironmentFailure, match="Connection refused") as info:
        downloader(retries=1).fetch(f"http://127.0.0.1:{port}/x.tar.gz", dest)
    assert "--tarball" in info.value.fix


def test_file_url_is_copied_and_hashed(payload, dest):
    result = downloader().fetch(payload.as_uri(), dest)
    assert dest.read_bytes() == payload.read_bytes() and result.sha256 == sha(payload)


def test_missing_local_file_is_a_user_error(tmp_path, dest):
    with pytest.raises(UserError, match="does not exist"):
        downloader().fetch((tmp_path / "nope.tar.gz").as_uri(), dest)


def test_disk_full_is_reported_and_the_partial_file_removed(payload, tmp_path):
    with small_tmpfs(tmp_path / "full") as full, fault_server(payload.parent) as server:
        dest = full / "blob.tar.gz"
        with pytest.raises(EnvironmentFailure, match="no space left") as info:
            downloader().fetch(server.url(payload.name), dest)
        assert "df -h" in info.value.fix
        assert os.listdir(full) == []
