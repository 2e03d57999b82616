"""A small HTTP server on 127.0.0.1 that serves one directory, with Range support.

The demo serves the sample tarball with it (the real vendor site cannot be
reached from our machines) and the tests build their fault-injecting server on
it. It speaks enough HTTP/1.1 for a download client: ``GET``/``HEAD``, ``Range:
bytes=N-`` and ``bytes=N-M`` (206 with ``Content-Range``, 416 past the end),
``If-Range`` with the ETag or Last-Modified it hands out, and sends file bodies
with ``sendfile``.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import posixpath
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class DirectoryHandler(BaseHTTPRequestHandler):
    """Serve files of ``server.directory``; subclasses may override ``send_body``."""

    protocol_version = "HTTP/1.1"
    server_version = "toa-loopback/1"

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: the server runs inside tasks and tests."""

    def do_HEAD(self) -> None:
        self.serve(head=True)

    def do_GET(self) -> None:
        self.serve(head=False)

    def local_path(self) -> Path | None:
        """The file a request path names, or None when it leaves the directory."""
        relative = posixpath.normpath(unquote(urlparse(self.path).path)).lstrip("/")
        if relative.startswith("..") or relative in ("", "."):
            return None
        return Path(self.server.directory, relative)  # type: ignore[attr-defined]

    def serve(self, head: bool) -> None:
        path = self.local_path()
        if path is None or not path.is_file():
            self.send_error(404, "Not Found")
            return
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            size = st.st_size
            etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            start, end = self.wanted_range(size, etag, modified)
            if start is None:
                return
            status = 206 if self.partial_asked else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not head:
                self.send_body(handle, start, end - start + 1)

    def wanted_range(self, size: int, etag: str, modified: str) -> tuple[int | None, int]:
        """The byte range to send (start None: an error was already answered)."""
        self.partial_asked = False
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if not header or (if_range and if_range not in (etag, modified)):
            return 0, size - 1
        match = RANGE_RE.match(header.strip())
        if not match:
            return 0, size - 1
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
        if start >= size or end < start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None, 0
        self.partial_asked = True
        return start, min(end, size - 1)

    def send_body(self, handle: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of the file from ``offset`` (sendfile when possible)."""
        self.wfile.flush()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.connection.sendfile(handle, offset, count)


class DirectoryServer(ThreadingHTTPServer):
    """A threaded HTTP server bound to 127.0.0.1 serving ``directory``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, directory: Path, handler: type[DirectoryHandler] = DirectoryHandler) -> None:
        self.directory = Path(directory)
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@contextlib.contextmanager
def run_server(server: DirectoryServer) -> Iterator[DirectoryServer]:
    """Run ``server`` in a background thread while the block runs."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-http", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """Serve ``path`` on 127.0.0.1 (a free port) and yield the base URL, ending in ``/``."""
    with run_server(DirectoryServer(Path(path))) as server:
        yield server.base_url
