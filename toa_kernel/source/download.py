"""Download one file carefully: retries, resume, sha256 in the same pass, progress.

The body goes into ``NAME.part`` beside the destination; a sidecar
``NAME.part.json`` remembers the URL and the server's validator (ETag or
Last-Modified) so a later run resumes with ``Range`` + ``If-Range`` and a server
whose file changed answers with the whole file instead. A server that ignores
``Range`` (200 instead of 206) makes the download start over cleanly. Only a
complete file that passed the checks (size, sha256 pin, the caller's content
check) is renamed to its final name: a file under the final name is always
whole. Connection errors, timeouts and 5xx answers are retried with exponential
backoff; a retry after progress resumes where the body stopped.

Every download is bounded: ``retries`` failed attempts that brought no new
bytes (a server that cuts the body and ignores ``Range`` brings none), at most
``MAX_RESUMES`` resumed ones, ``download_deadline`` seconds in all for the
task's downloads, and a body of at most ``max_download_gib`` and of no more
than the free space of the destination's filesystem (minus a reserve). A body
past a size bound stops the download with a clear error and its partial file
is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

import requests

from toa_kernel import __version__
from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.fileops import disk_error, file_kind, free_space_budget, fsync_dir
from toa_kernel.core.settings import Settings

CHUNK = 1 << 20
CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
UNSATISFIED_RANGE_RE = re.compile(r"^bytes \*/(\d+)$")
RETRY_STATUSES = frozenset({408, 429})
ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")]+")
# Attempts that failed after bringing new bytes (resumable) allowed besides ``retries``.
MAX_RESUMES = 100
MiB = 1 << 20


@dataclass
class Download:
    """A complete, checked file and how it arrived."""

    url: str
    path: Path
    size: int
    sha256: str
    resumed_from: int = 0
    transferred: int = 0


class BackgroundDigest:
    """sha256 computed on another thread while this one receives and writes.

    ``hashlib`` releases the GIL for large buffers, so hashing overlaps the
    network and disk work; the bounded queue keeps memory use small.
    """

    def __init__(self, depth: int = 16) -> None:
        self.digest = hashlib.sha256()
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self.work, name="sha256", daemon=True)
        self.thread.start()

    def work(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.queue.put(chunk)

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


class Writeback:
    """Starts the kernel's writeback of what was written so far, every few MiB
    (``sync_file_range``), so the final fsync has only the tail left to wait for.
    A no-op where the call is missing (not Linux)."""

    STEP = 8 << 20
    SYNC_FILE_RANGE_WRITE = 2

    def __init__(self, fd: int, start: int = 0) -> None:
        self.fd = fd
        self.flushed = self.written = start

    def wrote(self, count: int) -> None:
        self.written += count
        if self.written - self.flushed >= self.STEP and SYNC_FILE_RANGE is not None:
            SYNC_FILE_RANGE(
                self.fd,
                ctypes.c_longlong(self.flushed),
                ctypes.c_longlong(self.written - self.flushed),
                self.SYNC_FILE_RANGE_WRITE,
            )
            self.flushed = self.written


def load_sync_file_range() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None


SYNC_FILE_RANGE = load_sync_file_range()


class TransientError(Exception):
    """A failure worth retrying (connection lost, timeout, 5xx)."""


class Restart(Exception):
    """The partial file cannot be continued: start the body over."""


class TooLarge(UserError):
    """The body is larger than ``max_download_gib``; the partial file is removed."""


class NoSpace(EnvironmentFailure):
    """The body would not leave the reserve free on its filesystem; the partial file is removed."""


SIZE_ERRORS = (TooLarge, NoSpace)


def too_large_for_disk(name: str, need: int | None, directory: Path) -> NoSpace:
    free, reserve = free_space_budget(directory)
    wanted = f"it needs {need / MiB:.1f} MiB" if need is not None else "its body keeps growing"
    return NoSpace(
        f"no space left for {name}: {wanted}, the filesystem of {directory} has {free / MiB:.1f} MiB "
        f"to give (toa-kernel keeps {reserve / MiB:.1f} MiB free); the partial file was removed",
        f"free space there (df -h {directory}), or use a --workdir on a larger filesystem",
    )


def too_large(name: str, size: int | None, limit: int) -> TooLarge:
    what = f"is {size / MiB:.1f} MiB" if size is not None else "keeps coming"
    return TooLarge(
        f"{name} {what}, more than the largest download allowed ({limit / MiB:.0f} MiB, "
        "toa.max_download_gib); the partial file was removed",
        "check the URL: the kernel source is about 90 MiB; if the file really is larger, raise "
        "toa.max_download_gib (INVOKE_TOA_MAX_DOWNLOAD_GIB)",
    )


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def file_name_of(url: str, default: str) -> str:
    """The last path component of a URL (``default`` when it has none or names no file:
    ``.``, ``..``, a NUL byte or a name longer than a file name may be)."""
    name = unquote(urlparse(url).path).rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\0" in name or len(name.encode(errors="surrogateescape")) > 200:
        return default
    return name


def sha256_of(path: Path, *, progress: Any = None) -> str:
    """sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def discard_partial(dest: Path) -> None:
    """Remove the ``.part`` file and its sidecar of ``dest``."""
    for path in (part_path(dest), meta_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Downloader:
    """Fetch URLs into files; one instance per task run."""

    def __init__(
        self,
        console: Console,
        *,
        connect_timeout: float = 15.0,
        read_timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline_seconds: float = 7200.0,
        max_bytes: int = 2 << 30,
    ) -> None:
        self.console = console
        self.timeouts = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.deadline_seconds = deadline_seconds
        self.deadline: float | None = None
        self.max_bytes = max_bytes
        self.session = requests.Session()
        self.session.headers.update(
            {"User-Agent": f"toa-kernel/{__version__}", "Accept-Encoding": "identity"}
        )

    @classmethod
    def from_settings(cls, settings: Settings, console: Console) -> Downloader:
        return cls(
            console,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            deadline_seconds=settings.download_deadline,
            max_bytes=settings.max_download_bytes,
        )

    def start_clock(self) -> None:
        """The deadline covers every download of this run (mirrors and retries included)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.deadline_seconds

    def remaining(self) -> float:
        return (self.deadline or math.inf) - time.monotonic()

    def check_deadline(self, url: str) -> None:
        if self.remaining() <= 0:
            raise EnvironmentFailure(
                f"cannot download {url}: gave up after {self.deadline_seconds:g} s in all "
                "(toa.download_deadline); a partial download is kept and resumed next time",
                "check the network or the server, raise toa.download_deadline "
                "(INVOKE_TOA_DOWNLOAD_DEADLINE), or download the file elsewhere and pass --tarball PATH",
            )

    def fetch_any(
        self,
        urls: Sequence[str],
        dest: Path,
        *,
        sha256: str = "",
        check: Callable[[Path], None] | None = None,
    ) -> Download:
        """Try ``urls`` in order (the source, then mirrors); the first good file wins."""
        self.start_clock()
        failures: list[ToaError] = []
        for index, url in enumerate(urls):
            try:
                return self.fetch(url, dest, sha256=sha256, check=check)
            except ToaError as exc:
                failures.append(exc)
                if index + 1 < len(urls):
                    self.console.warn(f"{exc.message}; trying the next mirror {urls[index + 1]}")
        if len(failures) == 1:
            raise failures[0]
        first = failures[0]
        reasons = "\n".join(f"  - {exc.message}" for exc in failures)
        raise type(first)(f"every source failed:\n{reasons}", first.fix)

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        sha256: str = "",
        check: Callable[[Path], None] | None = None,
    ) -> Download:
        """Download ``url`` to ``dest`` (via ``dest.part``), checked, then renamed into place."""
        self.start_clock()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, dest) from exc
        local = urlparse(url).scheme == "file"
        result = self.copy_local(url, dest) if local else self.download(url, dest)
        self.accept(result, dest, sha256, check)
        return result

    def accept(self, result: Download, dest: Path, sha256: str, check: Callable[[Path], None] | None) -> None:
        """Check the finished ``.part``; rename it to ``dest`` or remove it."""
        part = part_path(dest)
        try:
            if sha256 and result.sha256 != sha256:
                raise UserError(
                    f"sha256 of {result.url} is {result.sha256}, but the pin says {sha256}; "
                    "the file was removed and not used",
                    "check the pin (--sha256 or toa.sha256) against the digest the vendor publishes, "
                    "or the file's source",
                )
            if check is not None:
                check(part)
        except BaseException:
            discard_partial(dest)
            raise
        try:
            os.replace(part, dest)
            fsync_dir(dest.parent)
        except OSError as exc:
            raise disk_error(exc, dest) from exc
        with contextlib.suppress(FileNotFoundError):
            meta_path(dest).unlink()
        result.path = dest

    # --- file:// -------------------------------------------------------------

    def copy_local(self, url: str, dest: Path) -> Download:
        """Copy a local file into ``dest.part``, hashing it on the way."""
        source = Path(unquote(urlparse(url).path))
        if not source.is_file():
            what = "does not exist" if not source.exists() else f"is {file_kind(source.stat().st_mode)}"
            raise UserError(
                f"{source} {what}, not a regular file",
                "pass --tarball with the path of the downloaded source tarball",
            )
        part = part_path(dest)
        discard_partial(dest)
        size = source.stat().st_size
        budget = check_size(source.name, size, self.max_bytes, dest.parent)
        digest = BackgroundDigest()
        try:
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(open(source, "rb", buffering=0))
                out = stack.enter_context(open(part, "wb", buffering=0))
                bar = stack.enter_context(self.console.progress(size, f"copy {source.name}"))
                writeback = Writeback(out.fileno())
                copied = 0
                while chunk := src.read(CHUNK):
                    copied += len(chunk)
                    if copied > budget:  # the file grew while it was copied
                        raise too_large_for_disk(source.name, None, dest.parent)
                    digest.update(chunk)
                    write_all(out, chunk)
                    writeback.wrote(len(chunk))
                    bar.update(len(chunk))
                os.fsync(out.fileno())
        except OSError as exc:
            discard_partial(dest)
            raise disk_error(exc, part, dest.parent) from exc
        except BaseException:
            discard_partial(dest)
            raise
        finally:
            digest.close()
        return Download(url, part, copied, digest.hexdigest(), 0, copied)

    # --- http(s):// ----------------------------------------------------------

    def download(self, url: str, dest: Path) -> Download:
        """Download with bounded retries; returns the complete ``.part``."""
        failures = resumes = transferred = 0
        resumed_from: int | None = None
        best = part_size(dest)
        while True:
            self.check_deadline(url)
            state = Transfer(self, url, dest)
            try:
                result = state.run()
                result.transferred += transferred
                result.resumed_from = resumed_from if resumed_from is not None else result.resumed_from
                return result
            except Restart as exc:
                failures += 1
                discard_partial(dest)
                best = 0
                self.give_up_after(url, exc, failures)
                self.console.say(f"{exc}; starting the download over ({failures}/{self.retries})")
            except TransientError as exc:
                size = part_size(dest)
                if size > best and resumes < MAX_RESUMES:
                    best, resumes = size, resumes + 1  # new bytes kept: resumable, not a lost attempt
                else:
                    failures += 1
                self.give_up_after(url, exc, failures)
                delay = min(self.backoff * 2 ** max(failures - 1, 0), max(self.remaining(), 0))
                self.console.say(f"{url}: {exc}; retrying in {delay:g} s ({failures}/{self.retries})")
                self.sleep(delay)
            finally:
                transferred += state.received
                if resumed_from is None and state.started:
                    resumed_from = state.offset

    def give_up_after(self, url: str, exc: Exception, failures: int) -> None:
        if failures > self.retries:
            raise EnvironmentFailure(
                f"cannot download {url}: {exc} (tried {failures} times; toa.retries is {self.retries})",
                "check the network and proxy settings, add --mirror URLs, or download the "
                "file elsewhere and pass --tarball PATH; a partial download is kept and resumed",
            ) from None


def part_size(dest: Path) -> int:
    try:
        return part_path(dest).stat().st_size
    except OSError:
        return 0


def check_size(name: str, size: int | None, limit: int, directory: Path, have: int = 0) -> int:
    """The most bytes the body may have; an error when its announced ``size`` is already too much."""
    free, _ = free_space_budget(directory)
    if size is not None and size > limit:
        raise too_large(name, size, limit)
    if size is not None and size - have > free:
        raise too_large_for_disk(name, size - have, directory)
    return min(limit, have + free)


def write_all(out: Any, data: bytes | memoryview) -> None:
    """Write all of ``data`` to an unbuffered file."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]


class Transfer:
    """One HTTP request of a download: resume or start, stream, hash."""

    def __init__(self, downloader: Downloader, url: str, dest: Path) -> None:
        self.downloader = downloader
        self.console = downloader.console
        self.url = url
        self.dest = dest
        self.part = part_path(dest)
        self.offset = 0
        self.received = 0
        self.started = False
        self.budget = downloader.max_bytes

    def request_headers(self) -> dict[str, str]:
        """Range/If-Range when a partial file from this URL is present."""
        meta = read_meta(self.dest)
        size = self.part.stat().st_size if self.part.exists() else 0
        if size == 0 or meta.get("url") != self.url:
            discard_partial(self.dest)
            return {}
        self.offset = size
        headers = {"Range": f"bytes={size}-"}
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
        return headers

    def run(self) -> Download:
        headers = self.request_headers()
        try:
            response = self.downloader.session.get(
                self.url, headers=headers, stream=True, timeout=self.downloader.timeouts
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(describe_network_error(exc)) from None
        except requests.RequestException as exc:
            raise UserError(f"cannot download {self.url}: {exc}", "check the URL") from None
        with response:
            total = self.start(response)
            self.started = True
            try:
                self.budget = check_size(
                    self.dest.name, total, self.downloader.max_bytes, self.part.parent, self.offset
                )
            except SIZE_ERRORS:
                discard_partial(self.dest)
                raise
            return self.stream(response, total)

    def start(self, response: requests.Response) -> int | None:
        """Decide from the status how the body continues; return the full size if known."""
        status = response.status_code
        if status == 206 and self.offset:
            match = CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != self.offset:
                raise Restart(f"{self.url}: the server answered a different range than asked")
            total = match.group(3)
            self.console.say(f"resuming {self.dest.name} at {self.offset} bytes")
            return int(total) if total != "*" else None
        if status == 416 and self.offset:
            match = UNSATISFIED_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == self.offset:
                return self.offset
            raise Restart(f"{self.url}: the partial file is larger than the server's file")
        if status == 200:
            if self.offset:
                self.console.say(f"{self.url}: the server does not resume (Range ignored or file changed)")
                self.offset = 0
            self.save_meta(response)
            length = response.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
        raise self.status_error(response)

    def status_error(self, response: requests.Response) -> Exception:
        status = response.status_code
        reason = f"HTTP {status} {response.reason or ''}".strip()
        if status >= 500 or status in RETRY_STATUSES:
            return TransientError(f"the server answered {reason}")
        return UserError(
            f"{self.url}: the server answered {reason}",
            "check the URL (--url or toa.url), add --mirror URLs, or pass --tarball PATH",
        )

    def save_meta(self, response: requests.Response) -> None:
        document = {
            "url": self.url,
            "etag": response.headers.get("ETag", ""),
            "last_modified": response.headers.get("Last-Modified", ""),
        }
        # Strong validators only: a weak ETag cannot be used with If-Range.
        if document["etag"].startswith("W/"):
            document["etag"] = ""
        try:
            meta_path(self.dest).write_text(json.dumps(document) + "\n")
        except OSError as exc:
            raise disk_error(exc, meta_path(self.dest)) from exc

    def stream(self, response: requests.Response, total: int | None) -> Download:
        """Append the body to the ``.part`` while hashing it."""
        digest = BackgroundDigest()
        mode = "ab" if self.offset else "wb"
        try:
            with open(self.part, mode, buffering=0) as out:
                if self.offset:
                    hash_prefix(self.part, self.offset, digest)
                self.copy_body(response, out, digest, total, Writeback(out.fileno(), self.offset))
                os.fsync(out.fileno())
        except OSError as exc:
            discard_partial(self.dest)
            raise disk_error(exc, self.part) from exc
        except SIZE_ERRORS:
            discard_partial(self.dest)
            raise
        finally:
            digest.close()
        size = self.offset + self.received
        if total is not None and size != total:
            raise TransientError(f"the connection closed after {size} of {total} bytes")
        return Download(self.url, self.part, size, digest.hexdigest(), self.offset, self.received)

    def copy_body(
        self, response: requests.Response, out: Any, digest: Any, total: int | None, writeback: Writeback
    ) -> None:
        raw = response.raw
        # read1 returns what has arrived, so the .part always holds what was received.
        read = getattr(raw, "read1", None) or raw.read
        with self.console.progress(total, self.dest.name, initial=self.offset) as bar:
            while True:
                try:
                    chunk = read(CHUNK, decode_content=False)
                except Exception as exc:  # urllib3 raises several kinds for a dropped body
                    if isinstance(exc, OSError) and not is_network_oserror(exc):
                        raise
                    raise TransientError(describe_network_error(exc)) from None
                if not chunk:
                    return
                if self.offset + self.received + len(chunk) > self.budget:
                    raise self.over_budget()
                self.downloader.check_deadline(self.url)
                write_all(out, chunk)
                digest.update(chunk)
                writeback.wrote(len(chunk))
                self.received += len(chunk)
                bar.update(len(chunk))

    def over_budget(self) -> ToaError:
        """The error for a body past the size bound (the caller removes the partial file)."""
        if self.budget >= self.downloader.max_bytes:
            return too_large(self.dest.name, None, self.downloader.max_bytes)
        return too_large_for_disk(self.dest.name, None, self.part.parent)


def hash_prefix(path: Path, length: int, digest: Any) -> None:
    """Feed the first ``length`` bytes of ``path`` (the resumed part) to ``digest``."""
    with open(path, "rb", buffering=0) as handle:
        remaining = length
        while remaining:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                raise Restart("the partial file shrank while resuming")
            digest.update(chunk)
            remaining -= len(chunk)


def read_meta(dest: Path) -> dict[str, Any]:
    try:
        document = json.loads(meta_path(dest).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def is_network_oserror(exc: OSError) -> bool:
    """True for socket errors (as opposed to the disk errors of writing the file)."""
    import errno

    return exc.errno in (
        None,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    )


def describe_network_error(exc: BaseException) -> str:
    """A one-line reason for a network failure, without urllib3's nesting."""
    text = str(exc)
    errnos = ERRNO_RE.findall(text)
    if errnos:
        return errnos[-1].rstrip("')\"")
    if "timed out" in text.lower():
        return "the server did not answer in time (read timeout)"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "the connection broke in the middle of the body"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
