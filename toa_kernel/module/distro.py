"""Which distribution a root holds, and how it installs kernel development files.

Read from ``ROOT/etc/os-release`` (any systemd-era distribution), else from
``/etc/redhat-release`` (CentOS/RHEL 6), ``/etc/SuSE-release`` (SLES 11) or
``/etc/debian_version``. The family decides the package manager and the name of
the kernel development package for a release:

- Red Hat family (CentOS, RHEL, Fedora, EulerOS, ...): ``yum install kernel-devel-R``
- Debian family (Debian, Ubuntu): ``apt-get install linux-headers-R``
- SUSE family (SLES, openSUSE): ``zypper install kernel-<flavour>-devel``
- CoreOS (Container Linux, Flatcar): no compiler on the host; build in its
  development container.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from toa_kernel.system.api import System
from toa_kernel.system.runtime import read_text

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
# os-release and its kin are a few lines; never read more than this of them.
RELEASE_FILE_LIMIT = 64 * 1024
REDHAT_RELEASE = "/etc/redhat-release"
SUSE_RELEASE = "/etc/SuSE-release"
DEBIAN_VERSION = "/etc/debian_version"

FAMILY_IDS = {
    "redhat": {
        "rhel",
        "centos",
        "fedora",
        "rocky",
        "almalinux",
        "ol",
        "amzn",
        "euleros",
        "openeuler",
        "hce",
        "scientific",
    },
    "debian": {"debian", "ubuntu", "linuxmint", "raspbian"},
    "suse": {"sles", "sled", "suse", "opensuse", "opensuse-leap", "opensuse-tumbleweed"},
    "coreos": {"coreos", "flatcar", "fedora-coreos", "rhcos"},
}
SUSE_FLAVOURS = ("default", "xen", "pae", "azure", "rt", "trace", "ec2", "kvmsmall", "preempt")
COREOS_HINT = (
    "Container Linux has no compiler or kernel headers on the host: build toa.ko in its "
    "development container (the coreos_developer_container image of the same version, "
    "started with systemd-nspawn), then install the .ko with 'invoke install-module --ko PATH'"
)


@dataclass(frozen=True)
class Distro:
    """The distribution of a root: ``family`` is redhat, debian, suse, coreos or unknown."""

    id: str
    family: str
    version: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.id} {self.version}".strip() or "unknown distribution"


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines of os-release, shell quoting removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = " ".join(words)
    return values


def family_of(ids: list[str]) -> str:
    """The first family that any of ``ids`` (ID then ID_LIKE words) belongs to."""
    for distro_id in ids:
        for family, members in FAMILY_IDS.items():
            if distro_id.lower() in members:
                return family
    return "unknown"


def from_os_release(text: str) -> Distro:
    values = parse_os_release(text)
    distro_id = values.get("ID", "linux").lower()
    like = values.get("ID_LIKE", "").lower().split()
    family = "coreos" if distro_id in FAMILY_IDS["coreos"] else family_of([distro_id, *like])
    return Distro(distro_id, family, values.get("VERSION_ID", ""), values.get("PRETTY_NAME", ""))


def from_redhat_release(text: str) -> Distro:
    """``CentOS release 6.10 (Final)``, ``Red Hat Enterprise Linux Server release 6.5 (Santiago)``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    match = re.search(r"release\s+([0-9][0-9.]*)", first)
    lowered = first.lower()
    distro_id = "centos" if "centos" in lowered else "fedora" if "fedora" in lowered else "rhel"
    return Distro(distro_id, "redhat", match.group(1) if match else "", first)


def from_suse_release(text: str) -> Distro:
    """``SUSE Linux Enterprise Server 11 (x86_64)`` then ``VERSION = 11``, ``PATCHLEVEL = 3``."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in lines[1:]) if _)
    version = fields.get("VERSION", "")
    if fields.get("PATCHLEVEL"):
        version = f"{version}.{fields['PATCHLEVEL']}"
    distro_id = "opensuse" if "opensuse" in first.lower() else "sles"
    return Distro(distro_id, "suse", version, first)


def detect_distro(system: System) -> Distro:
    """The distribution installed on ``system``."""
    for system_path in OS_RELEASE:
        text = read_text(system, system_path, limit=RELEASE_FILE_LIMIT)
        if text is not None:
            return from_os_release(text)
    readers = (
        (REDHAT_RELEASE, from_redhat_release),
        (SUSE_RELEASE, from_suse_release),
    )
    for system_path, reader in readers:
        text = read_text(system, system_path, limit=RELEASE_FILE_LIMIT)
        if text is not None:
            return reader(text)
    text = read_text(system, DEBIAN_VERSION, limit=RELEASE_FILE_LIMIT)
    if text is not None:
        return Distro("debian", "debian", text.strip(), "")
    return Distro("unknown", "unknown")


def suse_flavour(release: str) -> str:
    """``4.4.21-69-default`` -> ``default`` (the kernel package's flavour)."""
    last = release.rsplit("-", 1)[-1]
    return last if last in SUSE_FLAVOURS else "default"


def headers_package(distro: Distro, release: str) -> str | None:
    """The package holding ``/lib/modules/RELEASE/build`` on this distribution."""
    if distro.family == "redhat":
        return f"kernel-devel-{release}"
    if distro.family == "debian":
        return f"linux-headers-{release}"
    if distro.family == "suse":
        return f"kernel-{suse_flavour(release)}-devel"
    return None


def install_command(distro: Distro, packages: list[str]) -> list[str] | None:
    """The argv that installs ``packages`` non-interactively, or None (CoreOS, unknown)."""
    if not packages:
        return None
    if distro.family == "redhat":
        return ["yum", "install", "-y", *packages]
    if distro.family == "debian":
        return ["apt-get", "install", "-y", *packages]
    if distro.family == "suse":
        return ["zypper", "--non-interactive", "install", *packages]
    return None


def headers_command(distro: Distro, release: str) -> list[str] | None:
    """The command that installs the kernel development files for ``release``."""
    package = headers_package(distro, release)
    return install_command(distro, [package]) if package else None


def missing_fix(distro: Distro, packages: list[str], what: str) -> str:
    """The ``fix`` text for missing packages: the exact command, or what to do instead."""
    command = install_command(distro, packages)
    if command:
        return f"run '{shlex.join(command)}' (or pass --install-deps to have it run)"
    if distro.family == "coreos":
        return COREOS_HINT
    return f"install {what} with the package manager of {distro.label}"
