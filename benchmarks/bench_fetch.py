"""Benchmark of ``invoke fetch``'s two halves against the usual tools.

    python benchmarks/bench_fetch.py [--rounds 3] [--dir /var/tmp]

1. Download: our ``Downloader`` (sha256 in the same pass, fsync, rename into
   place) against ``curl -o``, on a 100 MB file served by the project's loopback
   server (``toa_kernel.source.loopback``, in a process of its own) on 127.0.0.1.
   Target: our throughput at least 0.9x curl's.
2. Unpack: our ``archive.unpack`` (all safety checks on, in a fresh Python
   process, start-up included) against ``tar xzf``, on
   a kernel-sized tarball this script generates: about 30,000 files in 2,000
   directories, about 450 MB unpacked, about 90 MB compressed, with C-like text
   so that gzip compresses it about as much as the real tree. Target: at most
   1.15x tar's time.

The runs alternate (curl, ours, curl, ours, ...) so that load from other
processes hits both alike; the medians are compared. Everything is written
under a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from toa_kernel.core.console import Console  # noqa: E402
from toa_kernel.source.archive import DECOMPRESSORS, identify  # noqa: E402
from toa_kernel.source.download import Downloader  # noqa: E402

MIB = 1 << 20
KEYWORDS = [
    *("int", "char", "void", "static", "struct", "return", "if", "else", "for", "while", "unsigned"),
    *("long", "const", "u32", "u64", "NULL", "sizeof", "goto", "out", "err", "break", "case"),
    *("switch", "default", "#define", "#include", "#ifdef", "#endif"),
]
PUNCTUATION = ["(", ")", ";", " {", "}", ", ", " = ", " == ", "->", ".", " *", "&", " + ", "[", "]", "0", "1"]


def c_like_corpus(size: int, rng: random.Random, vocabulary: int = 4000, repeat: float = 0.62) -> bytes:
    """Text shaped like C source: Zipf-distributed identifiers, keywords, repeated lines."""
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(3, 14))) for _ in range(vocabulary)
    ]
    weights = [1 / (i + 1) ** 1.1 for i in range(vocabulary)]
    lines: list[str] = []
    recent: list[str] = []
    total = 0
    while total < size:
        if recent and rng.random() < repeat:
            line = rng.choice(recent[-60:])
        else:
            parts = ["\t" * rng.randint(0, 3)]
            for word in rng.choices(words, weights, k=rng.randint(2, 9)):
                if rng.random() < 0.3:
                    parts.append(rng.choice(KEYWORDS) + " ")
                parts.append(word)
                parts.append(rng.choice(PUNCTUATION))
            line = "".join(parts)
            recent.append(line)
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines).encode()


def make_kernel_sized_tree(
    parent: Path, files: int = 30000, dirs: int = 2000, total: int = 450 * MIB
) -> Path:
    """A tree with the real source's counts and sizes (not its content)."""
    rng = random.Random(2012)
    corpus = c_like_corpus(8 * MIB, rng)
    top = parent / "linux-2.6.32-220.23.1.el6.x86_64.rs"
    directories = [top]
    for index in range(dirs):
        base = rng.choice(directories[: max(1, len(directories))])
        if len(base.relative_to(top).parts) >= 5:
            base = top
        directories.append(base / f"d{index}_{rng.choice(KEYWORDS).strip('#')}")
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    sizes = [rng.lognormvariate(8.7, 1.3) for _ in range(files)]
    scale = total / sum(sizes)
    for index, raw_size in enumerate(sizes):
        size = max(1, min(int(raw_size * scale), len(corpus) - 1))
        start = rng.randrange(0, len(corpus) - size)
        path = rng.choice(directories) / f"f{index}.{rng.choice('chS')}"
        path.write_bytes(corpus[start : start + size])
    return top


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True)


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def drop_dirty_pages() -> None:
    """Write back dirty data so one run's writeback does not slow the next one.

    Outputs are removed only at the end: deleting 450 MB on a filesystem mounted
    with ``discard`` makes the next journal commits slow, whoever runs next."""
    os.sync()


SERVER = """
import sys
from pathlib import Path
from toa_kernel.source.loopback import serve_directory
with serve_directory(Path(sys.argv[1])) as url:
    print(url, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def loopback_process(directory: Path) -> Iterator[str]:
    """toa_kernel.source.loopback's server in its own process, so that neither client shares
    a process (and its GIL) with the server."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        yield server.stdout.readline().decode().strip()
    finally:
        server.stdin.close()
        server.wait(timeout=10)


def bench_download(work: Path, rounds: int, size: int) -> tuple[list[float], list[float]]:
    public = work / "pub"
    public.mkdir()
    blob = public / "blob.bin"
    with open(blob, "wb") as handle:
        for _ in range(size // MIB):
            handle.write(os.urandom(MIB))
    ours, curl = [], []
    downloader = Downloader(Console(quiet=True), retries=0)
    with loopback_process(public) as base:
        url = base + blob.name
        for round_number in range(rounds):
            target = work / f"curl-{round_number}.bin"
            drop_dirty_pages()
            curl.append(
                timed(lambda t=target: subprocess.run(["curl", "-sS", "-o", str(t), url], check=True))
            )
            target = work / f"ours-{round_number}.bin"
            drop_dirty_pages()
            ours.append(timed(lambda t=target: downloader.fetch(url, t)))
            print(
                f"  download round {round_number + 1}: curl {curl[-1]:.3f} s, ours {ours[-1]:.3f} s",
                flush=True,
            )
    return ours, curl


UNPACK = """
import sys
from pathlib import Path
from toa_kernel.source.archive import unpack
from toa_kernel.core.console import Console
unpack(Path(sys.argv[1]), Path(sys.argv[2]), Console(quiet=True))
"""


def unpack_in_new_process(tarball: Path, target: Path) -> None:
    """Our unpack in a fresh interpreter, as ``invoke fetch`` runs it and as tar runs:
    the interpreter's start-up (about 0.1 s) is counted against us."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    subprocess.run([sys.executable, "-c", UNPACK, str(tarball), str(target)], check=True, env=env)


def bench_unpack(work: Path, rounds: int) -> tuple[list[float], list[float], Path]:
    # The tree to pack is made in memory when possible (see drop_dirty_pages).
    staging = Path(
        tempfile.mkdtemp(prefix="bench-tree-", dir="/dev/shm" if os.path.isdir("/dev/shm") else work)
    )
    started = time.perf_counter()
    try:
        top = make_kernel_sized_tree(staging)
        tarball = work / "Linux-2.6.32-220.23.1.el6.x86_64.rs.src.tar.gz"
        subprocess.run(["tar", "czf", str(tarball), "-C", str(staging), top.name], check=True)
    finally:
        shutil.rmtree(staging)
    count = sum(
        1 for _ in subprocess.run(["tar", "tzf", str(tarball)], capture_output=True).stdout.splitlines()
    )
    print(
        f"  sample: {count} entries, {tarball.stat().st_size / MIB:.1f} MiB compressed "
        f"(made in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    identify(tarball)
    ours, tar = [], []
    for round_number in range(rounds):
        target = work / f"tar-{round_number}"
        target.mkdir()
        drop_dirty_pages()
        tar.append(
            timed(lambda t=target: subprocess.run(["tar", "xzf", str(tarball), "-C", str(t)], check=True))
        )
        target = work / f"ours-{round_number}"
        drop_dirty_pages()
        ours.append(timed(lambda t=target: unpack_in_new_process(tarball, t)))
        print(f"  unpack round {round_number + 1}: tar {tar[-1]:.2f} s, ours {ours[-1]:.2f} s", flush=True)
    return ours, tar, tarball


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the temporary files (default: $TMPDIR)")
    parser.add_argument("--size-mib", type=int, default=100, help="size of the download (MiB)")
    parser.add_argument("--skip-download", action="store_true")
    parser.add_argument("--skip-unpack", action="store_true")
    args = parser.parse_args()
    for tool in ("curl", "tar", "gzip"):
        if not shutil.which(tool):
            print(f"{tool} is needed for this benchmark", file=sys.stderr)
            return 2
    decompressor = next(name for name in DECOMPRESSORS["gzip"] if shutil.which(name))
    print(f"cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}, our gzip decompressor: {decompressor}")
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=args.dir))
    try:
        if not args.skip_download:
            print(f"download of {args.size_mib} MiB from 127.0.0.1, {args.rounds} rounds, alternating:")
            ours, curl = bench_download(work, args.rounds, args.size_mib * MIB)
            ratio = statistics.median(curl) / statistics.median(ours)
            rate = args.size_mib / statistics.median(ours)
            print(
                f"download: curl {statistics.median(curl):.3f} s, ours {statistics.median(ours):.3f} s "
                f"({rate:.0f} MiB/s with sha256) -> throughput ratio {ratio:.2f}x curl (target >= 0.90)"
            )
        if not args.skip_unpack:
            print(f"unpack of a kernel-sized sample, {args.rounds} rounds, alternating:")
            ours, tar, _ = bench_unpack(work, args.rounds)
            ratio = statistics.median(ours) / statistics.median(tar)
            print(
                f"unpack: tar xzf {statistics.median(tar):.2f} s, ours {statistics.median(ours):.2f} s "
                f"-> time ratio {ratio:.2f}x tar (target <= 1.15)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
