"""Helpers for the module tests: sandbox roots shaped like real distributions, the
installed kernel headers, a real HTTP server, tarballs shaped like elb-toa's."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

from toa_kernel.module.build import headers_release

DATA = Path(__file__).resolve().parent / "data"
HELLO_SRC = DATA / "hello_module"

OS_RELEASES = {
    "centos7": 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\n'
    'VERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
    "rhel8": 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="8.6"\n'
    'PRETTY_NAME="Red Hat Enterprise Linux 8.6 (Ootpa)"\n',
    "ubuntu1804": 'NAME="Ubuntu"\nVERSION="18.04.6 LTS (Bionic Beaver)"\nID=ubuntu\nID_LIKE=debian\n'
    'PRETTY_NAME="Ubuntu 18.04.6 LTS"\nVERSION_ID="18.04"\n',
    "debian8": 'PRETTY_NAME="Debian GNU/Linux 8 (jessie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="8"\n'
    "ID=debian\n",
    "opensuse42": 'NAME="openSUSE Leap"\nVERSION="42.3"\nID=opensuse\nID_LIKE="suse"\n'
    'VERSION_ID="42.3"\nPRETTY_NAME="openSUSE Leap 42.3"\n',
    "coreos": 'NAME="Container Linux by CoreOS"\nID=coreos\nVERSION_ID=1632.3.0\n'
    'PRETTY_NAME="Container Linux by CoreOS 1632.3.0 (Ladybug)"\n',
}
CENTOS6_RELEASE = "CentOS release 6.10 (Final)\n"
SLES11_RELEASE = "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 3\n"


def installed_headers() -> str | None:
    """A release whose real Kbuild headers are installed here (linux-headers-*)."""
    base = Path("/lib/modules")
    if not base.is_dir():
        return None
    for directory in sorted(base.iterdir()):
        kdir = directory / "build"
        if (kdir / "Makefile").is_file() and headers_release(kdir.resolve()) == directory.name:
            return directory.name
    return None


def make_root(parent: Path, distro: str, releases: tuple[str, ...] = (), systemd: bool | None = None) -> Path:
    """A sandbox root: os-release (or redhat-/SuSE-release), /lib/modules/R, systemd marker."""
    root = parent / f"root-{distro}"
    (root / "etc").mkdir(parents=True)
    if distro == "centos6":
        (root / "etc" / "redhat-release").write_text(CENTOS6_RELEASE)
    elif distro == "sles11":
        (root / "etc" / "SuSE-release").write_text(SLES11_RELEASE)
    else:
        (root / "etc" / "os-release").write_text(OS_RELEASES[distro])
    for release in releases:
        (root / "lib" / "modules" / release).mkdir(parents=True)
    if systemd is None:
        systemd = distro not in ("centos6", "sles11")
    if systemd:
        marker = root / "usr" / "lib" / "systemd" / "systemd"
        marker.parent.mkdir(parents=True)
        marker.write_bytes(b"")
    return root


def copy_source(dest: Path, makefile: bool = True, extra_c: str = "") -> Path:
    """A copy of the test module, optionally without its Makefile or with broken code."""
    shutil.copytree(HELLO_SRC, dest)
    if not makefile:
        (dest / "Makefile").unlink()
    if extra_c:
        with open(dest / "hello.c", "a") as handle:
            handle.write(extra_c)
    return dest


def pack_like_elb_toa(dest: Path, branch: str = "master") -> Path:
    """The test module packed as GitHub packs a branch: elb-toa-BRANCH/src/{Makefile,...}."""
    buffer = io.BytesIO()
    top = f"elb-toa-{branch}"
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in (top, f"{top}/src"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            archive.addfile(info)
        for path in sorted(HELLO_SRC.iterdir()):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/src/{path.name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        readme = b"test module packed like elb-toa\n"
        info = tarfile.TarInfo(f"{top}/README.md")
        info.size = len(readme)
        archive.addfile(info, io.BytesIO(readme))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(gzip.compress(buffer.getvalue()))
    return dest


def stub_bin(directory: Path, root: Path, release: str) -> Path:
    """Commands for running a loader script in a sandbox: ``uname -r`` says ``release``,
    ``modinfo`` is the real one looking inside ``root``, ``modprobe`` records its call."""
    directory.mkdir(parents=True, exist_ok=True)
    modinfo = shutil.which("modinfo") or "/usr/sbin/modinfo"
    scripts = {
        "uname": f'#!/bin/sh\necho "{release}"\n',
        "modinfo": f'#!/bin/sh\nexec {modinfo} -b "{root}" "$@"\n',
        "modprobe": f'#!/bin/sh\necho "modprobe $*" >>"{directory}/calls"\n',
    }
    for name, text in scripts.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return directory
