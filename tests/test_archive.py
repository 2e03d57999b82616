"""Content sniffing and safe unpacking, on real archives written by the tests."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import TREE_NAME
from toa_kernel.source import archive
from toa_kernel.source.archive import Damaged, identify, top_directory, unpack

TOP = "linux-x"


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    return name, kind, data, linkname


def tar_bytes(members: list[tuple], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, kind, data, linkname in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = linkname
            info.mtime = 1341100800
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


def write_archive(
    path: Path, members: list[tuple], compress=gzip.compress, fmt: int = tarfile.GNU_FORMAT
) -> Path:
    path.write_bytes(compress(tar_bytes(members, fmt)))
    return path


BASIC = [
    member(f"{TOP}/", tarfile.DIRTYPE),
    member(f"{TOP}/Makefile", data=b"VERSION = 2\n"),
    member(f"{TOP}/net/toa/toa.h", data=b"#define TCPOPT_TOA  200\n"),
]


@pytest.fixture
def console() -> Console:
    return Console(quiet=True)


def entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# --- identify ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compress", "expected"),
    [(gzip.compress, "gzip"), (lzma.compress, "xz"), (bz2.compress, "bzip2"), (lambda b: b, "")],
)
def test_compressed_tars_are_recognised(tmp_path, compress, expected):
    kind = identify(write_archive(tmp_path / "a", BASIC, compress))
    assert kind.compression == expected


def test_html_page_is_rejected_with_its_title(tmp_path):
    page = tmp_path / "x.tar.gz"
    page.write_text("<html><head>\n<title>404 -\n Not Found</title></head><body>gone</body></html>")
    with pytest.raises(UserError, match='an HTML page titled "404 - Not Found"'):
        identify(page)


def test_text_page_is_rejected_quoting_its_first_line(tmp_path):
    page = tmp_path / "x.tar.gz"
    page.write_text("\nAccess denied by proxy policy\nmore\n")
    with pytest.raises(UserError, match=r'text file .* starting "Access denied by proxy policy"'):
        identify(page)


def test_gzip_without_a_tar_inside_is_rejected(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(b"just some text, no tar header here\n" * 50))
    with pytest.raises(UserError, match="gzip-compressed but holds no tar archive"):
        identify(path)


def test_other_binary_is_rejected_with_libmagics_words(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200))
    with pytest.raises(UserError, match="ELF"):
        identify(path)


def test_top_directory_is_read_from_the_first_header(tmp_path):
    path = write_archive(tmp_path / "a.tar.gz", BASIC)
    assert top_directory(path, identify(path)) == TOP


# --- unpack: good archives -----------------------------------------------------------


def test_sample_tarball_unpacks_with_one_warning_per_absolute_link(sample_tarball, tmp_path, capsys):
    result = unpack(sample_tarball, tmp_path / "src", Console())
    tree = tmp_path / "src" / TREE_NAME
    assert result.tree == tree and result.top == TREE_NAME
    assert "TCPOPT_TOA" in (tree / "net/toa/toa.h").read_text()
    assert (tree / ".config").is_file()
    assert not (tree / "patches").exists() and not (tree / "patches").is_symlink()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(result.skipped_links) == 2
    assert all("absolute target" in line for line in warnings)
    assert entries(tmp_path / "src") == [TREE_NAME]


def test_unpacked_files_match_tar_byte_for_byte(sample_tarball, tmp_path, console):
    unpack(sample_tarball, tmp_path / "ours", console)
    (tmp_path / "tar").mkdir()
    subprocess.run(["tar", "xzf", str(sample_tarball), "-C", str(tmp_path / "tar")], check=True)
    for path in (tmp_path / "tar").rglob("*"):
        if path.is_symlink():
            continue
        ours = tmp_path / "ours" / path.relative_to(tmp_path / "tar")
        if path.is_file():
            assert ours.read_bytes() == path.read_bytes()
            assert ours.stat().st_mtime == path.stat().st_mtime
            assert ours.stat().st_mode & 0o111 == path.stat().st_mode & 0o111
        else:
            assert ours.is_dir()


def test_long_names_pax_headers_and_links_inside_the_tree(tmp_path, console):
    long_dir = f"{TOP}/" + "/".join(["d" * 60] * 3)
    members = [
        *BASIC,
        member(f"{long_dir}/file-{'x' * 120}.c", data=b"long\n"),
        member(f"{TOP}/include/asm", tarfile.SYMTYPE, linkname="../arch/x86/include/asm"),
        member(f"{TOP}/arch/x86/include/asm/io.h", data=b"io\n"),
        member(f"{TOP}/Makefile.copy", tarfile.LNKTYPE, linkname=f"{TOP}/Makefile"),
        member(f"{TOP}/ünïcode.txt", data=b"u\n"),
    ]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        parent = tmp_path / str(fmt)
        result = unpack(write_archive(tmp_path / f"a{fmt}.tar.gz", members, fmt=fmt), parent, console)
        tree = parent / TOP
        assert (tree / long_dir.split("/", 1)[1] / f"file-{'x' * 120}.c").read_bytes() == b"long\n"
        assert os.readlink(tree / "include/asm") == "../arch/x86/include/asm"
        assert (tree / "include/asm/io.h").read_bytes() == b"io\n"
        assert os.stat(tree / "Makefile.copy").st_ino == os.stat(tree / "Makefile").st_ino
        assert (tree / "ünïcode.txt").read_bytes() == b"u\n"
        assert result.links == 2


def test_a_later_member_replaces_an_earlier_one_of_the_same_name(tmp_path, console):
    members = [*BASIC, member(f"{TOP}/Makefile", data=b"second\n")]
    unpack(write_archive(tmp_path / "a.tar.gz", members), tmp_path / "src", console)
    assert (tmp_path / "src" / TOP / "Makefile").read_bytes() == b"second\n"


def test_an_existing_tree_is_replaced_whole(tmp_path, console):
    old = tmp_path / "src" / TOP
    old.mkdir(parents=True)
    (old / "stale.o").write_text("old build output")
    unpack(write_archive(tmp_path / "a.tar.gz", BASIC), tmp_path / "src", console)
    assert not (old / "stale.o").exists()
    assert (old / "Makefile").is_file()
    assert entries(tmp_path / "src") == [TOP]


def test_python_decompressor_is_used_when_no_tool_is_installed(tmp_path, console, monkeypatch):
    monkeypatch.setattr(archive, "DECOMPRESSORS", {"gzip": ("no-such-gzip",), "xz": (), "bzip2": ()})
    for compress in (gzip.compress, lzma.compress, bz2.compress):
        parent = tmp_path / compress.__module__
        unpack(write_archive(tmp_path / "a", BASIC, compress), parent, console)
        assert (parent / TOP / "net/toa/toa.h").is_file()


# --- unpack: unsafe or damaged archives ----------------------------------------------


UNSAFE = {
    "dotdot": ([member(f"{TOP}/../x", data=b"evil")], "climbs out of the tree"),
    "absolute": ([member("/abs", data=b"evil")], "absolute path"),
    "symlink-out": ([member(f"{TOP}/link", tarfile.SYMTYPE, linkname="../../etc")], "points out of the tree"),
    # The message names the member (the link), not its target as if that were a member.
    "hardlink-out": (
        [member(f"{TOP}/h", tarfile.LNKTYPE, linkname="/etc/passwd")],
        f"hard link '{TOP}/h' -> '/etc/passwd' points out of the tree",
    ),
    "hardlink-up": (
        [member(f"{TOP}/h", tarfile.LNKTYPE, linkname="../outside")],
        f"hard link '{TOP}/h' -> '../outside' points out of the tree",
    ),
    "device": ([member(f"{TOP}/sda", tarfile.BLKTYPE)], "device node"),
    "chardev": ([member(f"{TOP}/mem", tarfile.CHRTYPE)], "device node"),
    "fifo": ([member(f"{TOP}/pipe", tarfile.FIFOTYPE)], "FIFO"),
    "behind-link": (
        [
            member(f"{TOP}/sub/", tarfile.DIRTYPE),
            member(f"{TOP}/sub/up", tarfile.SYMTYPE, linkname=".."),
            member(f"{TOP}/sub/up/escape", tarfile.SYMTYPE, linkname="../.."),
        ],
        "behind the symbolic link",
    ),
    "file-behind-link": (
        [member(f"{TOP}/l", tarfile.SYMTYPE, linkname="net"), member(f"{TOP}/l/x", data=b"x")],
        "behind the symbolic link",
    ),
    "two-tops": ([member("other/file", data=b"x")], "outside the top directory"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_stop_the_unpack_and_leave_nothing(tmp_path, console, case):
    extra, message = UNSAFE[case]
    path = write_archive(tmp_path / "a.tar.gz", [*BASIC, *extra])
    with pytest.raises(UserError, match=message) as info:
        unpack(path, tmp_path / "src", console)
    assert "nothing was unpacked" in info.value.message
    assert entries(tmp_path / "src") == []
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()


def test_truncated_gzip_is_a_clear_error_and_leaves_nothing(tmp_path, console):
    data = gzip.compress(tar_bytes([*BASIC, member(f"{TOP}/big", data=os.urandom(200_000))]))
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Damaged, match="damaged or truncated") as info:
        unpack(path, tmp_path / "src", console)
    assert "--force" in info.value.fix
    assert entries(tmp_path / "src") == []


def test_truncated_gzip_without_the_gzip_tool(tmp_path, console, monkeypatch):
    monkeypatch.setattr(archive, "DECOMPRESSORS", {"gzip": ("no-such-gzip",)})
    data = gzip.compress(tar_bytes(BASIC))
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data[:-12])
    with pytest.raises(Damaged, match="damaged"):
        unpack(path, tmp_path / "src", console)
    assert entries(tmp_path / "src") == []


def test_corrupt_header_in_the_middle_is_an_error(tmp_path, console):
    raw = bytearray(tar_bytes(BASIC))
    raw[1536 + 10 : 1536 + 20] = b"\xff" * 10  # third header: its checksum no longer matches
    path = tmp_path / "a.tar"
    path.write_bytes(bytes(raw))
    with pytest.raises(Damaged, match="bad tar header at byte 1536"):
        unpack(path, tmp_path / "src", console)
    assert entries(tmp_path / "src") == []


# --- interrupted runs -------------------------------------------------------------------

KILLABLE = """
import sys, time
from pathlib import Path
from toa_kernel.source import archive
from toa_kernel.core.console import Console

real = archive.Extractor.write_file
count = 0

def slow(self, name, info, reader):
    global count
    real(self, name, info, reader)
    count += 1
    if count == 20:
        print("half-way", flush=True)
        time.sleep(60)

archive.Extractor.write_file = slow
archive.unpack(Path(sys.argv[1]), Path(sys.argv[2]), Console(quiet=True))
"""


def test_unpack_killed_with_sigkill_then_run_again(tmp_path, console, project_dir):
    members = [*BASIC] + [member(f"{TOP}/drivers/f{i}.c", data=b"int x;\n" * i) for i in range(60)]
    path = write_archive(tmp_path / "a.tar.gz", members)
    src = tmp_path / "src"
    env = {**os.environ, "PYTHONPATH": str(project_dir)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(path), str(src)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout.readline().strip() == "half-way"
    child.send_signal(signal.SIGKILL)
    child.wait()
    leftover = entries(src)
    assert len(leftover) == 1 and leftover[0].startswith(f".unpack-{child.pid}-")  # no half tree in place
    result = unpack(path, src, console)
    assert entries(src) == [TOP]  # the dead run's temporary directory is gone
    assert result.files == 62
    assert (src / TOP / "drivers/f59.c").read_bytes() == b"int x;\n" * 59


def test_temporary_directory_of_a_live_run_is_left_alone(tmp_path, console):
    src = tmp_path / "src"
    src.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = src / f".unpack-{sleeper.pid}-abcd"
        live.mkdir()
        unpack(write_archive(tmp_path / "a.tar.gz", BASIC), src, console)
        assert live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    time.sleep(0)
