"""A real bootable x86-64 kernel for the lab, fetched once and cached.

The 2.6.32 kernels a CentOS 6 ``/boot`` names cannot run here, so in the lab
image every kernel file is replaced by Debian's current kernel: the package
``linux-image-amd64`` depends on, fetched with ``apt-get download`` and opened
with ``dpkg-deb --fsys-tarfile | tar -x``, keeping only ``./boot/vmlinuz-*``
and the driver of the probe's NIC (e1000, a module in Debian's kernel; it goes
to ``CACHE/modules/RELEASE/``). ``CACHE/package`` names the package and version.
Nothing is installed on the host.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.lab.tools import program

META_PACKAGE = "linux-image-amd64"
VMLINUZ_GLOB = "./boot/vmlinuz-*"
NIC_MODULE = "e1000.ko"
NIC_MODULE_GLOB = f"./lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/{NIC_MODULE}"
PACKAGE_FILE = "package"
SETUP_HEADER_MAGIC = b"HdrS"
SETUP_READ = 0x10000  # the real-mode setup code, which holds the version string
DEPENDS_RE = re.compile(r"^\s*Depends:\s*(?P<name>linux-image-[^\s<>]+)", re.MULTILINE)


def is_bzimage(path: Path) -> bool:
    """True when ``path`` is a Linux x86 boot image (libmagic's verdict)."""
    import magic

    return "Linux kernel x86 boot executable" in magic.from_file(str(path))


def cached_kernel(cache: Path) -> Path | None:
    """The kernel already in the cache, if any."""
    found = sorted(Path(cache).glob("vmlinuz-*"))
    return found[-1] if found else None


def kernel_package(meta: str = META_PACKAGE) -> str:
    """The versioned kernel package the meta package depends on."""
    result = subprocess.run(
        [program("apt-cache"), "depends", meta], capture_output=True, text=True, check=False
    )
    match = DEPENDS_RE.search(result.stdout)
    if result.returncode != 0 or not match:
        why = result.stderr.strip() or "no Depends line"
        raise EnvironmentFailure(
            f"apt does not know which kernel package {meta} depends on ({why})",
            "run 'apt-get update' (the lab downloads a kernel from Debian's mirrors), or pass --kernel FILE",
        )
    return match.group("name")


def download_command(package: str) -> list[str]:
    """``apt-get download PACKAGE`` (quiet about its sandbox user when run as root)."""
    command = [program("apt-get"), "download", "-q"]
    if os.geteuid() == 0:
        command += ["-o", "APT::Sandbox::User=root"]
    return [*command, package]


def download_package(package: str, directory: Path) -> Path:
    """Download ``package``'s .deb into ``directory``; return its path."""
    result = subprocess.run(download_command(package), cwd=directory, capture_output=True, text=True)
    debs = sorted(directory.glob("*.deb"))
    if result.returncode != 0 or not debs:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise EnvironmentFailure(
            f"apt-get download {package} failed:\n{tail}",
            "check the network to Debian's mirrors and 'apt-get update', or pass --kernel FILE",
        )
    return debs[0]


def extract_boot_files(deb: Path, directory: Path) -> Path:
    """Extract ``./boot/vmlinuz-*`` and the NIC module from ``deb`` into ``directory``; the vmlinuz."""
    unpack = subprocess.Popen([program("dpkg-deb"), "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ["tar", "-x", "-C", str(directory), "--wildcards", VMLINUZ_GLOB, NIC_MODULE_GLOB],
        stdin=unpack.stdout,
        capture_output=True,
        text=True,
    )
    assert unpack.stdout is not None
    unpack.stdout.close()
    unpacked = unpack.wait()
    found = sorted((directory / "boot").glob("vmlinuz-*"))
    if unpacked != 0 or not found:
        raise EnvironmentFailure(
            f"no ./boot/vmlinuz-* could be extracted from {deb.name} ({tar.stderr.strip()})",
            "remove the lab's kernel cache and run again",
        )
    return found[0]


def nic_modules(cache: Path, release: str) -> list[Path]:
    """The NIC driver(s) cached for ``release`` (empty: none cached)."""
    return sorted((Path(cache) / "modules" / release).glob("*.ko"))


def release_of_vmlinuz(path: Path) -> str:
    return path.name.removeprefix("vmlinuz-")


def package_of(deb: Path) -> str:
    """``linux-image-R_6.1.192-3_amd64.deb`` -> ``linux-image-R 6.1.192-3``."""
    name, _, rest = deb.name.partition("_")
    return f"{name} {rest.split('_')[0]}" if rest else name


def cached_package(cache: Path) -> str | None:
    """The package and version the cached kernel came from, as ``NAME VERSION``."""
    path = Path(cache) / PACKAGE_FILE
    return path.read_text().strip() if path.is_file() else None


def fetch_kernel(cache: Path, say: Callable[[str], None] = print, *, with_nic: bool = False) -> Path:
    """A cached real kernel; download and extract it on first use (again when the NIC driver is wanted
    and missing)."""
    cache = Path(cache)
    existing = cached_kernel(cache)
    if existing and not (with_nic and not nic_modules(cache, release_of_vmlinuz(existing))):
        return existing
    cache.mkdir(parents=True, exist_ok=True)
    package = kernel_package()
    say(f"lab: downloading {package} (a real kernel to boot; not installed)")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as scratch:
        deb = download_package(package, Path(scratch))
        vmlinuz = extract_boot_files(deb, Path(scratch))
        release = release_of_vmlinuz(vmlinuz)
        modules = cache / "modules" / release
        modules.mkdir(parents=True, exist_ok=True)
        for driver in Path(scratch).glob(NIC_MODULE_GLOB.removeprefix("./")):
            os.replace(driver, modules / driver.name)
        (Path(scratch) / PACKAGE_FILE).write_text(package_of(deb) + "\n")
        os.replace(Path(scratch) / PACKAGE_FILE, cache / PACKAGE_FILE)
        target = cache / vmlinuz.name
        os.replace(vmlinuz, target)
    return target


def bzimage_release(path: Path) -> str | None:
    """The release a bzImage was built as (its setup header's version string), if it says."""
    with open(path, "rb") as handle:
        header = handle.read(SETUP_READ)
    if header[0x202:0x206] != SETUP_HEADER_MAGIC:
        return None
    pointer = int.from_bytes(header[0x20E:0x210], "little")
    start = 0x200 + pointer
    if not pointer or start >= len(header):
        return None
    text = header[start : header.index(b"\0", start) if b"\0" in header[start:] else len(header)]
    words = text.decode(errors="replace").split()
    return words[0] if words else None


def chosen_kernel(
    given: Path | None, cache: Path, say: Callable[[str], None] = print, *, with_nic: bool = False
) -> Path:
    """The kernel the lab boots: ``given`` (checked to be a bzImage) or the cached download."""
    if given is None:
        return fetch_kernel(cache, say, with_nic=with_nic)
    path = Path(given)
    if not path.is_file():
        raise UserError(f"kernel file {path} does not exist", "pass --kernel with a bzImage (vmlinuz) file")
    if not is_bzimage(path):
        raise UserError(
            f"{path} is not a Linux x86 boot image (bzImage)",
            "pass a vmlinuz file, e.g. /boot/vmlinuz-$(uname -r) of an x86-64 machine",
        )
    return path
