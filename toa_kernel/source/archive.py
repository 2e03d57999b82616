"""What a downloaded file is (libmagic), and unpacking it safely.

``identify`` accepts a gzip, xz or bzip2 compressed tar (and a plain tar): it
checks the outer type with libmagic and then decompresses the first blocks to
check a tar is inside. An HTML or text page, which portals and error pages serve
with status 200, is refused with a message quoting it (the page's title).

``unpack`` never writes outside the tree: it refuses absolute member names,
``..`` components, device nodes and FIFOs, hard links and symbolic links that
lead out of the tree and members placed behind a symbolic link. Symbolic links to
absolute paths (the vendor's tree has some, pointing into its build host) are
skipped with one warning line each. Members are written into a temporary
directory beside the destination, which is renamed into place only when the whole
archive was read and the decompressor reported no error; a run killed half-way
leaves only a ``.unpack-PID-*`` directory, removed by the next run.

Speed: the decompressor (pigz or gzip, xz, bzip2) runs as a separate process,
so decompression and writing use two cores, as with ``tar xzf``; the tar headers
are parsed with ``tarfile.TarInfo.fromtarfile`` (no dependence on
``tarfile.data_filter``, absent before Python 3.11.4) and members are written
with plain ``os`` calls.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import magic

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import disk_error, free_space_budget, remove_tree
from toa_kernel.core.state import pid_alive

COMPRESSIONS = {
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/x-xz": "xz",
    "application/x-bzip2": "bzip2",
    "application/x-tar": "",
}
DECOMPRESSORS = {"gzip": ("pigz", "gzip"), "xz": ("xz",), "bzip2": ("lbzip2", "bzip2")}
# The vendor's tree has about 32,000 members; an archive with many more is a bomb of inodes.
MAX_MEMBERS = 500_000
TEMP_PREFIX = ".unpack-"
DISCARD_PREFIX = ".discard-"
CHUNK = 1 << 20
HEAD = 1 << 16
TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
FIX_REDOWNLOAD = "download it again ('invoke fetch --force') or check the file given with --tarball"


@dataclass(frozen=True)
class ArchiveKind:
    """A file identified as a tar archive."""

    compression: str  # gzip, xz, bzip2 or "" for a plain tar
    description: str  # what libmagic says about the file


@dataclass
class Unpacked:
    """The result of an unpack."""

    tree: Path
    top: str
    files: int = 0
    directories: int = 0
    links: int = 0
    size: int = 0
    skipped_links: list[str] = field(default_factory=list)


class Damaged(UserError):
    """The archive is corrupt or truncated."""


class Unsafe(UserError):
    """The archive would write outside its tree, or holds what an unpack must not create."""


# --- identification ----------------------------------------------------------


def identify(path: Path) -> ArchiveKind:
    """Check that ``path`` is a (compressed) tar archive; raise UserError otherwise."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    mime = magic.from_buffer(head, mime=True)
    description = magic.from_buffer(head)
    if mime not in COMPRESSIONS:
        what = what_it_is(head, mime, description)
        raise UserError(f"{path.name} is not a source tarball: it is {what}", FIX_BAD)
    compression = COMPRESSIONS[mime]
    if compression:
        inner = decompressed_head(path, compression)
        if not looks_like_tar(inner):
            inside = magic.from_buffer(inner) if inner else "nothing"
            raise UserError(
                f"{path.name} is {compression}-compressed but holds no tar archive (inside: {inside})",
                FIX_BAD,
            )
    return ArchiveKind(compression, description)


FIX_BAD = (
    "the server sent something else than the source tarball (a portal or error page?): "
    "check the URL, or download the tarball by hand and pass --tarball PATH"
)


def what_it_is(head: bytes, mime: str, description: str) -> str:
    """Describe a file that is not an archive, quoting it when it is a page or text."""
    if mime == "text/html" or b"<html" in head[:1024].lower():
        match = TITLE_RE.search(head)
        if match:
            title = " ".join(match.group(1).decode("utf-8", "replace").split())
            return f'an HTML page titled "{title[:120]}"'
        return "an HTML page (no title)"
    if mime.startswith("text/") or mime in ("application/json", "application/xml"):
        lines = [line.strip() for line in head.decode("utf-8", "replace").splitlines()]
        first = next((line for line in lines if line), "")
        return f'a text file ({mime}) starting "{first[:120]}"'
    if not head:
        return "an empty file"
    return f"{description} ({mime})"


def decompressed_head(path: Path, compression: str, want: int = 4096, limit: int = 4 << 20) -> bytes:
    """The first ``want`` bytes of the decompressed content (less if it ends or is damaged)."""
    if compression == "gzip":
        engine: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif compression == "xz":
        engine = lzma.LZMADecompressor()
    else:
        engine = bz2.BZ2Decompressor()
    out = b""
    read = 0
    with open(path, "rb") as handle:
        while len(out) < want and read < limit:
            chunk = handle.read(HEAD)
            if not chunk:
                break
            read += len(chunk)
            try:
                out += engine.decompress(chunk, want - len(out))
            except (zlib.error, lzma.LZMAError, OSError, EOFError):
                break
            if getattr(engine, "eof", False):
                break
    return out


def looks_like_tar(block: bytes) -> bool:
    """True when ``block`` starts with a tar header whose checksum is right."""
    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[: tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


# --- reading the stream --------------------------------------------------------


class StreamReader:
    """A forward-only reader over the decompressed archive, with ``tell``/``seek``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pos = 0
        self.at_end = False
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
            self.pos += len(data)
            return data
        try:
            data = self.raw.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise Damaged(f"the archive is damaged: {exc}", FIX_REDOWNLOAD) from None
        self.pos += len(data)
        if size and len(data) < size:
            self.at_end = True
        return data

    def unread(self, data: bytes) -> None:
        """Put back what was just read (a header the fast parser leaves to tarfile)."""
        self.pending = data + self.pending
        self.pos -= len(data)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.pos:
            raise Damaged("the archive asks to go backwards, which a stream cannot do", FIX_REDOWNLOAD)
        while self.pos < offset:
            if not self.read(min(CHUNK, offset - self.pos)):
                raise Damaged("the archive ends in the middle of a member (truncated?)", FIX_REDOWNLOAD)
        return self.pos

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass
class Member:
    """The parts of a tar header the unpacker uses."""

    name: str
    type: bytes
    mode: int
    size: int
    mtime: int
    linkname: str


REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
FAST_TYPES = frozenset(bytes([t]) for t in b"0\x001234567")
END_BLOCK = bytes(tarfile.BLOCKSIZE)
USTAR = b"ustar\x00"


def octal(field: bytes) -> int:
    """A NUL/space padded octal number field; ValueError when it is not one."""
    digits = field.split(b"\x00", 1)[0].strip()
    return int(digits, 8) if digits else 0


def fast_header(block: bytes) -> Member | None:
    """Parse a plain ustar/GNU header; None leaves the block to tarfile (long names,
    pax headers, sparse files, base-256 numbers, bad checksums, the end)."""
    kind = block[156:157]
    if len(block) != tarfile.BLOCKSIZE or kind not in FAST_TYPES or block[124] & 0x80 or block[136] & 0x80:
        return None
    try:
        checksum = octal(block[148:156])
        mode, size, mtime = octal(block[100:108]), octal(block[124:136]), octal(block[136:148])
    except ValueError:
        return None
    if checksum != sum(block) - sum(block[148:156]) + 256:
        return None
    name = block[:100].split(b"\x00", 1)[0]
    if block[257:263] == USTAR and block[345] != 0:
        name = block[345:500].split(b"\x00", 1)[0] + b"/" + name
    text = name.decode("utf-8", "surrogateescape")
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) and text.endswith("/"):
        kind = tarfile.DIRTYPE
    linkname = block[157:257].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    return Member(text, kind, mode, size, mtime, linkname)


class Cursor:
    """Walks the headers of the stream. Plain headers are parsed here; the rest
    (GNU long names, pax, sparse) by ``tarfile.TarInfo.fromtarfile``, which reads
    through the attributes of a ``TarFile`` this class provides."""

    def __init__(self, reader: StreamReader) -> None:
        self.fileobj = reader
        self.offset = 0
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}

    def members(self) -> Any:
        """Yield each member; the caller reads a regular file's data right after."""
        reader = self.fileobj
        while True:
            reader.seek(self.offset)
            block = reader.read(tarfile.BLOCKSIZE)
            member = fast_header(block) if not self.pax_headers else None
            if member is not None:
                data = self.offset + tarfile.BLOCKSIZE
                blocks = -(-member.size // tarfile.BLOCKSIZE) if member.type in REGULAR_TYPES else 0
                self.offset = data + blocks * tarfile.BLOCKSIZE
                yield member
                continue
            if block == END_BLOCK or not block:
                return
            reader.unread(block)
            yield self.slow_member()

    def slow_member(self) -> Member:
        try:
            info = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
        except tarfile.HeaderError as exc:
            where = "at its start" if self.offset == 0 else f"at byte {self.offset}"
            raise Damaged(f"the archive has a bad tar header {where}: {exc}", FIX_REDOWNLOAD) from None
        kind = tarfile.GNUTYPE_SPARSE if info.issparse() else info.type
        return Member(info.name, kind, info.mode, info.size, int(info.mtime), info.linkname)


@contextlib.contextmanager
def decompressed(path: Path, compression: str) -> Any:
    """A reader of the archive's tar stream; the decompressor's failures become Damaged."""
    tools = [shutil.which(name) for name in DECOMPRESSORS.get(compression, ())]
    tool = next((t for t in tools if t), None)
    if not compression:
        with open(path, "rb") as raw:
            yield StreamReader(raw)
        return
    if tool is None:
        opener = {"gzip": __import__("gzip").open, "xz": lzma.open, "bzip2": bz2.open}[compression]
        with opener(path, "rb") as raw:
            reader = StreamReader(raw)
            yield reader
            reader.drain()
        return
    process = subprocess.Popen(
        [tool, "-dc", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=CHUNK
    )
    assert process.stdout is not None and process.stderr is not None
    reader = StreamReader(process.stdout)
    try:
        try:
            yield reader
            reader.drain()
        except Damaged:
            # A truncated stream: the decompressor's own words say it best.
            if reader.at_end:
                check_decompressor(process, tool)
            raise
        check_decompressor(process, tool)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def check_decompressor(process: subprocess.Popen[bytes], tool: str) -> None:
    """Raise Damaged when the decompressor failed (truncated or corrupt input)."""
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace").strip()
    if process.wait() != 0:
        detail = errors.splitlines()[-1] if errors else f"exit status {process.returncode}"
        raise Damaged(f"the archive is damaged or truncated ({Path(tool).name}: {detail})", FIX_REDOWNLOAD)


# --- safe names ------------------------------------------------------------------


def clean_name(name: str) -> str:
    """The member's normalised relative name; UserError for absolute or ``..`` names."""
    if name.startswith("/") or (len(name) > 2 and name[1] == ":" and name[2] in "/\\"):
        raise unsafe(f"member {name!r} has an absolute path")
    parts = name.split("/")
    if "" in parts or "." in parts or ".." in parts:
        parts = [p for p in parts if p not in ("", ".")]
        if ".." in parts:
            raise unsafe(f"member {name!r} climbs out of the tree with '..'")
        return "/".join(parts)
    return name


def unsafe(message: str) -> Unsafe:
    return Unsafe(
        f"unsafe archive: {message}; nothing was unpacked",
        "this is not the vendor's source tarball: check where it came from (pin its sha256)",
    )


def inside(top: str, path: str) -> bool:
    return path == top or path.startswith(top + "/")


# --- unpacking ---------------------------------------------------------------------

FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Extractor:
    """Writes members into ``root`` (the temporary directory), checking each.

    Paths are opened relative to a descriptor of ``root``; symbolic links are
    created only after every other member, so no member is ever written through
    one (a member behind a link name makes a real directory there, and the link
    then collides with it: an error).
    """

    def __init__(
        self, root: Path, console: Console, budget: int | None = None, max_members: int = MAX_MEMBERS
    ) -> None:
        self.root = root
        self.console = console
        self.members = 0
        self.max_members = max_members
        # Where a disk-full fix points: the temporary root is gone by the time it is read.
        self.where = root.parent
        self.budget = budget
        self.top = ""
        self.top_slash = ""
        self.made_dirs: set[str] = set()
        self.dir_times: dict[str, tuple[int, int]] = {}
        self.files: set[str] = set()
        self.symlinks: dict[str, str] = {}
        self.result = Unpacked(tree=root, top="")
        self.umask = current_umask()
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def member(self, info: Member, reader: StreamReader) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise unsafe(f"the archive holds more than {self.max_members} members (not a kernel source tree)")
        name = clean_name(info.name)
        if not name:
            return
        if not name.startswith(self.top_slash) or not self.top:
            self.check_top(name)
        kind = info.type
        if self.symlinks:
            self.symlinks.pop(name, None)
        if kind in REGULAR_TYPES:
            self.write_file(name, info, reader)
        elif kind == tarfile.DIRTYPE:
            self.make_dir(name)
            self.dir_times[name] = (info.mtime, info.mode)
        elif kind == tarfile.SYMTYPE:
            self.symlink(name, info.linkname)
        elif kind == tarfile.LNKTYPE:
            self.hardlink(name, info.linkname)
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            raise unsafe(f"member {name!r} is a device node")
        elif kind == tarfile.FIFOTYPE:
            raise unsafe(f"member {name!r} is a FIFO")
        elif kind == tarfile.GNUTYPE_SPARSE:
            raise unsafe(f"member {name!r} is a sparse file, which this unpacker does not write")
        else:
            self.console.warn(f"skipped member {name} of unknown type {kind!r}")

    def check_top(self, name: str) -> None:
        top = name.split("/", 1)[0]
        if not self.top:
            self.top, self.top_slash = top, top + "/"
        elif top != self.top:
            raise unsafe(f"member {name!r} lies outside the top directory {self.top!r}")

    def make_dir(self, name: str) -> None:
        if name in self.made_dirs:
            return
        if "/" in name:
            self.make_dir(name.rsplit("/", 1)[0])
        try:
            os.mkdir(name, 0o755, dir_fd=self.fd)
        except FileExistsError:
            if not os.path.isdir(os.path.join(self.root, name)):
                raise unsafe(f"directory {name!r} collides with another member of that name") from None
        except OSError as exc:
            raise disk_error(exc, self.root / name, self.where) from exc
        self.made_dirs.add(name)
        self.result.directories += 1

    def write_file(self, name: str, info: Member, reader: StreamReader) -> None:
        if self.budget is not None and self.result.size + info.size > self.budget:
            raise EnvironmentFailure(
                f"no space left for the unpacked tree: it grows past {self.budget // (1 << 20)} MiB at "
                f"{name}, more than the filesystem of {self.where} can give (a reserve is kept free)",
                f"free space there (df -h {self.where}), or use a --workdir on a larger filesystem",
            )
        parent = name.rpartition("/")[0]
        if parent and parent not in self.made_dirs:
            self.make_dir(parent)
        mode = info.mode & 0o777
        try:
            try:
                fd = os.open(name, FILE_FLAGS, mode, dir_fd=self.fd)
            except FileExistsError:
                self.replace_existing(name)
                fd = os.open(name, FILE_FLAGS, mode, dir_fd=self.fd)
            try:
                remaining = info.size
                while remaining:
                    data = reader.read(remaining if remaining < CHUNK else CHUNK)
                    if not data:
                        raise Damaged(f"the archive ends inside {name} (truncated?)", FIX_REDOWNLOAD)
                    written = os.write(fd, data)
                    if written != len(data):
                        write_rest(fd, data, written)
                    remaining -= len(data)
                os.utime(fd, (info.mtime, info.mtime))
            finally:
                os.close(fd)
        except OSError as exc:
            raise disk_error(exc, self.root / name, self.where) from exc
        self.files.add(name)
        self.result.files += 1
        self.result.size += info.size

    def replace_existing(self, name: str) -> None:
        """A later member of the same name replaces an earlier file (tar's rule)."""
        path = self.root / name
        if path.is_dir() and not path.is_symlink():
            raise unsafe(f"member {name!r} collides with a directory of the same name")
        path.unlink()
        self.files.discard(name)

    def symlink(self, name: str, target: str) -> None:
        if target.startswith("/"):
            self.console.warn(f"skipped symbolic link {name} -> {target} (absolute target)")
            self.result.skipped_links.append(f"{name} -> {target}")
            return
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if not inside(self.top, resolved):
            raise unsafe(f"symbolic link {name!r} -> {target!r} points out of the tree")
        parent = name.rpartition("/")[0]
        if parent:
            self.make_dir(parent)
        self.symlinks[name] = target  # created at the end, after every file

    def hardlink(self, name: str, target: str) -> None:
        try:
            source = clean_name(target)
        except Unsafe:
            raise unsafe(f"hard link {name!r} -> {target!r} points out of the tree") from None
        if not inside(self.top, source):
            raise unsafe(f"hard link {name!r} -> {target!r} points out of the tree")
        if source not in self.files:
            raise unsafe(f"hard link {name!r} -> {target!r} does not name a file unpacked before it")
        parent = name.rpartition("/")[0]
        if parent:
            self.make_dir(parent)
        path = self.root / name
        try:
            if path.exists() or path.is_symlink():
                self.replace_existing(name)
            os.link(source, name, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except OSError as exc:
            raise disk_error(exc, path, self.where) from exc
        self.files.add(name)
        self.result.links += 1

    def finish(self) -> None:
        """Create the symbolic links, then set directory times and modes."""
        for name, target in self.symlinks.items():
            self.check_not_behind_link(name)
            path = self.root / name
            try:
                if path.is_symlink() or path.exists():
                    if name in self.made_dirs:
                        raise unsafe(f"members lie behind the symbolic link {name!r} -> {target!r}")
                    self.replace_existing(name)
                os.symlink(target, name, dir_fd=self.fd)
            except OSError as exc:
                raise disk_error(exc, path, self.where) from exc
            self.result.links += 1
        for name in sorted(self.dir_times, key=len, reverse=True):
            mtime, mode = self.dir_times[name]
            with contextlib.suppress(OSError):
                os.chmod(name, (mode & 0o777 & ~self.umask) | 0o700, dir_fd=self.fd)
                os.utime(name, (mtime, mtime), dir_fd=self.fd)
        if not self.top:
            raise unsafe("the archive holds no files")
        if self.top not in self.made_dirs:
            raise unsafe(f"the archive's top entry {self.top!r} is not a directory")

    def check_not_behind_link(self, name: str) -> None:
        parent = name
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in self.symlinks:
                raise unsafe(f"symbolic link {name!r} lies behind the symbolic link {parent!r}")


def write_rest(fd: int, data: bytes, written: int) -> None:
    """Finish a short write."""
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def top_directory(path: Path, kind: ArchiveKind) -> str:
    """The archive's top directory, read from its first header (for plans and dry runs)."""
    if kind.compression:
        head = decompressed_head(path, kind.compression, want=tarfile.BLOCKSIZE)
    else:
        with open(path, "rb") as handle:
            head = handle.read(tarfile.BLOCKSIZE)
    try:
        info = tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError as exc:
        raise Damaged(f"{path.name} has no readable tar header: {exc}", FIX_REDOWNLOAD) from None
    return clean_name(info.name).split("/", 1)[0]


def unpack(
    tarball: Path,
    dest_parent: Path,
    console: Console,
    kind: ArchiveKind | None = None,
    max_members: int = MAX_MEMBERS,
) -> Unpacked:
    """Unpack ``tarball`` to ``dest_parent/<top dir>``, replacing what was there, all or nothing.

    Bounded: at most ``max_members`` members, and file data no larger than the free space
    of ``dest_parent``'s filesystem less a reserve."""
    kind = kind or identify(tarball)
    try:
        dest_parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, dest_parent) from exc
    clean_stale(dest_parent, console)
    temp = dest_parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        temp.mkdir()
    except OSError as exc:
        raise disk_error(exc, temp) from exc
    try:
        extractor = Extractor(temp, console, free_space_budget(dest_parent)[0], max_members)
        try:
            with decompressed(tarball, kind.compression) as reader:
                for member in Cursor(reader).members():
                    extractor.member(member, reader)
            extractor.finish()
        finally:
            extractor.close()
        tree = dest_parent / extractor.top
        move_into_place(temp / extractor.top, tree)
        temp.rmdir()
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    result = extractor.result
    result.tree, result.top = tree, extractor.top
    return result


def move_into_place(new: Path, dest: Path) -> None:
    """Rename ``new`` to ``dest``; an existing ``dest`` is moved aside, then removed.

    Like ``tar``, this does not fsync: on ext4 a directory fsync here would commit
    the journal and, in data=ordered mode, write back the whole tree first (about
    a second for the real tree). The caller's manifest update, written with
    fsync, makes the rename durable in the same commit.
    """
    old = None
    try:
        if dest.exists() or dest.is_symlink():
            old = dest.with_name(f"{DISCARD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(dest, old)
        os.rename(new, dest)
    except OSError as exc:
        if old is not None and not dest.exists():
            with contextlib.suppress(OSError):
                os.rename(old, dest)  # put the previous tree back
        raise EnvironmentFailure(f"cannot move the unpacked tree into {dest}: {exc.strerror}") from exc
    if old is not None:
        remove_tree(old)


def clean_stale(parent: Path, console: Console) -> None:
    """Remove temporary and discarded trees left by runs that died."""
    for path in parent.iterdir():
        if not path.name.startswith((TEMP_PREFIX, DISCARD_PREFIX)):
            continue
        pid_text = path.name.split("-", 2)[1] if path.name.count("-") >= 2 else ""
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue
        console.say(f"removing {path.name}, left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)
