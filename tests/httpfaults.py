"""A real HTTP server on 127.0.0.1 that misbehaves on request, for download tests.

It serves a directory like ``toa_kernel.source.loopback`` (Range, If-Range, ETag) and
injects faults per file: each request for a name takes the next fault queued for
it; with none left the file is served normally. It records every request (path,
Range header, status) and counts the body bytes it actually sent.

Faults:
  ("status", 404)        answer with this status and a short body
  ("drop", n)            normal headers, then only n body bytes, then close
  ("stall", n)           n body bytes, then wait until ``release()`` (or 30 s), then close
  ("html", text)         status 200 with an HTML page
  ("endless", limit)     status 200 without Content-Length, then zeros until the client
                         goes away (or ``limit`` bytes: the server thread never runs forever)
Server-wide: ``ignore_range = True`` answers every request with the whole file (200).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from toa_kernel.source.loopback import DirectoryHandler, DirectoryServer, run_server


@dataclass
class Seen:
    path: str
    range: str | None
    status: int = 0


class FaultHandler(DirectoryHandler):
    server: FaultServer

    def serve(self, head: bool) -> None:
        self.fault = self.server.next_fault(self.path)
        self.seen = Seen(self.path, self.headers.get("Range"))
        self.server.record(self.seen)
        kind, arg = self.fault or (None, None)
        if kind == "status":
            self.answer(int(arg), "text/plain", f"error {arg}\n".encode())
        elif kind == "html":
            self.answer(200, "text/html; charset=utf-8", str(arg).encode())
        elif kind == "endless":
            self.endless(int(arg))
        else:
            super().serve(head)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.seen.status = code
        super().send_response(code, message)

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.count(len(body))

    def endless(self, limit: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block = bytes(64 * 1024)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < limit:
                self.wfile.write(block)
                sent += len(block)
        self.server.count(sent)

    def wanted_range(self, size: int, etag: str, modified: str) -> tuple[int | None, int]:
        if self.server.ignore_range:
            self.partial_asked = False
            return 0, size - 1
        return super().wanted_range(size, etag, modified)

    def send_body(self, handle: BinaryIO, offset: int, count: int) -> None:
        kind, arg = self.fault or (None, None)
        limit = count if kind not in ("drop", "stall") else min(count, int(arg))
        self.wfile.flush()
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if limit:
                sent = self.connection.sendfile(handle, offset, limit)
        self.server.count(sent)
        if kind == "stall":
            self.server.released.wait(30)
        if kind in ("drop", "stall"):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class FaultServer(DirectoryServer):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, FaultHandler)
        self.lock = threading.Lock()
        self.faults: dict[str, list[tuple[str, Any]]] = {}
        self.requests: list[Seen] = []
        self.sent = 0
        self.ignore_range = False
        self.released = threading.Event()

    def add(self, name: str, *faults: tuple[str, Any]) -> None:
        with self.lock:
            self.faults.setdefault("/" + name, []).extend(faults)

    def next_fault(self, path: str) -> tuple[str, Any] | None:
        with self.lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.requests.append(seen)

    def count(self, sent: int) -> None:
        with self.lock:
            self.sent += sent

    def release(self) -> None:
        self.released.set()

    def url(self, name: str) -> str:
        return self.base_url + name


@contextlib.contextmanager
def fault_server(directory: Path) -> Iterator[FaultServer]:
    """A FaultServer on 127.0.0.1 serving ``directory`` while the block runs."""
    server = FaultServer(directory)
    with run_server(server):
        try:
            yield server
        finally:
            server.release()
