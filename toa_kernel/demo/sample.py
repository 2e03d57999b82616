"""The sample tree: a small directory shaped like the LVS 2.6.32 kernel source.

The real source cannot be downloaded on our build machines, so tests and the
demo run the pipeline on this SAMPLE instead. It is *not* a kernel: it has the
files the pipeline reads and edits, in the places and shapes the real tree has
them (see the project's notes on the real tree), and its make offers the real
2.6.32 Kbuild interface wherever the pipeline touches it, with the same target
names, variables, messages and failures:

``make silentoldconfig`` / ``make oldconfig``
    build ``scripts/kconfig/conf`` (C, host gcc) and run it on
    ``arch/x86/Kconfig`` (which sources ``init/Kconfig``, ``net/Kconfig``,
    ``net/toa/Kconfig``, ``net/ipv6/Kconfig``). It drops options no Kconfig
    declares and values whose ``depends on`` fail, resolves duplicates
    last-wins (warning ``override: reassigning to symbol TOA``), writes the
    ``# CONFIG_X is not set`` form, keeps ``.config.old`` and writes
    ``include/config/auto.conf``. Like 2.6.32, ``silentoldconfig`` aborts with
    ``Console input/output is redirected`` when a NEW option needs an answer
    and stdin, stdout or stderr is not a terminal (``yes "" | make oldconfig``
    answers with the defaults). There is no ``olddefconfig``: it fails with
    ``No rule to make target 'olddefconfig'``.
``make include/config/kernel.release`` / ``make prepare``
    regenerate the release (VERSION.PATCHLEVEL.SUBLEVEL + EXTRAVERSION +
    localversion files + CONFIG_LOCALVERSION); ``make -s kernelrelease``
    prints the file as it is (on a fresh tree it fails with ``kernelrelease
    not valid - run 'make prepare' to update it``).
``make [-j N] [V=1]``
    compiles C for real (init/, kernel/, lib/, net/, net/ipv4/, net/ipv6/,
    net/toa/, arch/x86/) with Kbuild's quiet lines (``  CC      init/main.o``,
    ``  CC [M]  net/toa/toa.o``, ``  LD      vmlinux``, ``  LD [M]
    net/toa/toa.ko``, ``Kernel: arch/x86/boot/bzImage is ready  (#1)``), and
    links ``vmlinux`` (ELF at 0xffffffff81000000), ``System.map`` and
    ``arch/x86/boot/bzImage``: a bzImage-SHAPED file (0xAA55 at 510, "HdrS"
    at 514, boot protocol 2.10, kernel_version pointer at 526) that libmagic
    calls ``Linux kernel x86 boot executable bzImage, version 2.6.32-toa
    (user@host) #1 SMP <date>, ...``. ``net/toa/toa.ko`` (an ELF relocatable
    with ``.modinfo``: ``vermagic=<release> SMP mod_unload modversions ``,
    license, description and ``tcpopt_toa=<TCPOPT_TOA from toa.h>``) is built
    only with ``CONFIG_TOA=m`` AND net/Makefile's ``obj-$(CONFIG_TOA) +=
    toa/``. With ``CONFIG_IPV6=m`` ``net/ipv6/ipv6.ko`` is built too. A second
    ``make`` compiles nothing; a change of EXTRAVERSION recompiles only what
    carries the release.
``make modules_install [INSTALL_MOD_PATH=DIR]``
    installs ``DIR/lib/modules/<R>/kernel/net/toa/toa.ko`` (+ modules.order,
    ``source`` and ``build`` links) and then, as 2.6.32's Makefile does, runs
    ``$(DEPMOD) -ae -F System.map [-b DIR] <R>`` when System.map is readable
    and ``$(DEPMOD)`` (default ``/sbin/depmod``) is executable, else nothing.
``make install [INSTALL_PATH=DIR]``
    runs ``sh arch/x86/boot/install.sh <R> arch/x86/boot/bzImage System.map
    DIR`` (DIR defaults to /boot), which behaves as 2.6.32's: it execs
    ``~/bin/$INSTALLKERNEL`` if executable, else ``/sbin/$INSTALLKERNEL`` if
    executable, with those four arguments; otherwise it moves DIR/vmlinuz and
    DIR/System.map to .old, copies the image and map to DIR/vmlinuz and
    DIR/System.map and runs /sbin/lilo if there is one.

Which installkernel ``make install`` runs (the caller's control):
the top Makefile sets ``INSTALLKERNEL := installkernel`` and exports it, so an
``INSTALLKERNEL`` environment variable is IGNORED; only make's command line
changes it (``make install INSTALLKERNEL=name``). ``~`` is ``$HOME``. So:

* to run a given script: put it (or a link to it) at ``$HOME/bin/NAME`` with
  ``HOME`` set to a directory of the caller's, and run ``make install
  INSTALLKERNEL=NAME`` (``~/bin`` is tried before ``/sbin``);
* to run none: pass ``INSTALLKERNEL=`` a name that exists in neither
  ``$HOME/bin`` nor ``/sbin`` (never an empty value: ``~/bin/`` is then a
  directory that ``-x`` accepts). Beware that this fallback runs the host's
  ``/sbin/lilo`` when it exists;
* plain ``make install`` on a Debian host runs the HOST's
  ``/sbin/installkernel``, which writes into INSTALL_PATH and runs
  ``/etc/kernel/postinst.d`` hooks (update-grub): never in tests.

Variants reproduce the real copies' differences:
``vendor`` (option code 200, net/Makefile wired, .config with CONFIG_TOA=m as
the LVS copy has it), ``no-toa-wiring`` (net/Makefile lacks ``obj-$(CONFIG_TOA)
+= toa/``, as in one public copy: no toa.ko is built), ``option-254`` (toa.h
already says 254), ``no-toa-config`` (.config has no CONFIG_TOA line, as the
vendor's manual assumes: silentoldconfig then has a NEW option to ask about).
A compile error is made by a test editing a ``.c`` file of the written tree.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from importlib import resources
from pathlib import Path

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import TARBALL_NAME, TREE_NAME

VARIANTS = ("vendor", "no-toa-wiring", "option-254", "no-toa-config")
# The real tree carries symlinks to absolute paths on the vendor's build host.
ABSOLUTE_LINKS = {
    "patches": "/home/build/rpmbuild/SOURCES/patches",
    "refresh_patch.sh": "/home/build/bin/refresh_patch.sh",
}
FIXED_MTIME = 1341100800  # 2012-07-01, about when the vendor's tarball was made
RENAMED = {"dot-config": ".config"}
# The installkernel name that exists nowhere: ``make install`` then copies the
# files itself (see the module docstring).
NO_INSTALLKERNEL = "toa-kernel-no-installkernel"


def template_dir() -> Path:
    """Where the sample tree's files are shipped inside the package."""
    return Path(str(resources.files("toa_kernel.demo") / "data" / "sample-tree"))


def write_sample_tree(parent: Path, variant: str = "vendor") -> Path:
    """Write the sample tree as ``parent/linux-2.6.32-220.23.1.el6.x86_64.rs``."""
    if variant not in VARIANTS:
        raise UserError(f"unknown sample variant {variant!r}", f"use one of: {', '.join(VARIANTS)}")
    tree = Path(parent) / TREE_NAME
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(template_dir(), tree, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
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
        drop_lines(tree / "net" / "Makefile", "toa/")
    elif variant == "option-254":
        header = tree / "net" / "toa" / "toa.h"
        header.write_text(header.read_text().replace("#define TCPOPT_TOA  200", "#define TCPOPT_TOA  254"))
    elif variant == "no-toa-config":
        drop_lines(tree / ".config", "CONFIG_TOA")


def drop_lines(path: Path, marker: str) -> None:
    """Remove the lines of ``path`` that contain ``marker``."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if marker not in line))


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
        tarball.write_bytes(gzip.compress(buffer.getvalue(), mtime=FIXED_MTIME))
        return tarball
    finally:
        shutil.rmtree(staging, ignore_errors=True)
