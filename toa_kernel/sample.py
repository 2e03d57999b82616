"""The sample tree: a small directory shaped like the LVS 2.6.32 kernel source.

The real source cannot be downloaded on our build machines, so tests and the
demo run the pipeline on this sample instead. It is *not* a kernel: it has the
files the pipeline reads and edits, in the places and shapes the real tree has
them (see the project's notes on the real tree).

Variants reproduce the real copies' differences:
``vendor`` (option code 200, net/Makefile wired), ``no-toa-wiring`` (net/Makefile
lacks ``obj-$(CONFIG_TOA) += toa/``, as in one public copy), ``option-254``
(toa.h already says 254).
"""

from __future__ import annotations

import io
import shutil
import tarfile
from importlib import resources
from pathlib import Path

from .errors import UserError
from .layout import TARBALL_NAME, TREE_NAME

VARIANTS = ("vendor", "no-toa-wiring", "option-254")
# The real tree carries symlinks to absolute paths on the vendor's build host.
ABSOLUTE_LINKS = {
    "patches": "/home/build/rpmbuild/SOURCES/patches",
    "refresh_patch.sh": "/home/build/bin/refresh_patch.sh",
}
FIXED_MTIME = 1341100800  # 2012-07-01, about when the vendor's tarball was made
RENAMED = {"dot-config": ".config"}


def template_dir() -> Path:
    """Where the sample tree's files are shipped inside the package."""
    return Path(str(resources.files("toa_kernel") / "data" / "sample-tree"))


def write_sample_tree(parent: Path, variant: str = "vendor") -> Path:
    """Write the sample tree as ``parent/linux-2.6.32-220.23.1.el6.x86_64.rs``."""
    if variant not in VARIANTS:
        raise UserError(f"unknown sample variant {variant!r}", f"use one of: {', '.join(VARIANTS)}")
    tree = Path(parent) / TREE_NAME
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(template_dir(), tree, symlinks=True)
    for shipped, real in RENAMED.items():
        for path in list(tree.rglob(shipped)):
            path.rename(path.with_name(real))
    for name, target in ABSOLUTE_LINKS.items():
        (tree / name).symlink_to(target)
    apply_variant(tree, variant)
    return tree


def apply_variant(tree: Path, variant: str) -> None:
    """Edit a freshly written sample tree into one of the real copies' shapes."""
    if variant == "no-toa-wiring":
        makefile = tree / "net" / "Makefile"
        lines = makefile.read_text().splitlines(keepends=True)
        makefile.write_text("".join(line for line in lines if "toa/" not in line))
    elif variant == "option-254":
        header = tree / "net" / "toa" / "toa.h"
        header.write_text(header.read_text().replace("#define TCPOPT_TOA  200", "#define TCPOPT_TOA  254"))


def pack_sample_tarball(dest_dir: Path, variant: str = "vendor", name: str = TARBALL_NAME) -> Path:
    """Pack the sample tree as a reproducible ``.tar.gz`` with the vendor's file name."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = dest_dir / f".sample-staging-{variant}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        tree = write_sample_tree(staging, variant)
        tarball = dest_dir / name
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for path in sorted([tree, *tree.rglob("*")]):
                info = archive.gettarinfo(str(path), arcname=str(path.relative_to(staging)))
                info.mtime = FIXED_MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
        import gzip

        with (
            open(tarball, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME) as gz,
        ):
            gz.write(buffer.getvalue())
        return tarball
    finally:
        shutil.rmtree(staging, ignore_errors=True)
