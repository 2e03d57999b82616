"""Load an out-of-tree module at boot, and say so loudly when it no longer fits.

Two styles, chosen from the root's distribution:

- ``modules`` (Red Hat family before 8, as the vendor shows): an executable
  ``/etc/sysconfig/modules/NAME.modules`` that rc.sysinit (6) or
  rhel-loadmodules (7) runs early at boot.
- ``systemd`` (every other systemd distribution): ``/etc/modules-load.d/NAME.conf``
  for systemd-modules-load, plus a oneshot unit that runs the same loader script
  after it, so a missing module is reported in words a person understands.

The loader script checks the running kernel: after a kernel upgrade the module
built for the old release is not there for the new one, and instead of failing
silently the script writes an error to the kernel log (``/dev/kmsg``, seen in
dmesg and the journal) and to the console, naming the rebuild command. It exits
non-zero then (a failed unit shows in ``systemctl --failed``).
"""

from __future__ import annotations

from dataclasses import dataclass

from toa_kernel.module.distro import Distro
from toa_kernel.system.api import System

SYSTEMD_MARKERS = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/run/systemd/system")
SYSCONFIG_DIR = "/etc/sysconfig/modules"
MODULES_LOAD_DIR = "/etc/modules-load.d"
SYSTEMD_UNIT_DIR = "/etc/systemd/system"
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"
LOADER_DIR = "/usr/local/sbin"
REBUILD = "invoke build-module install-module"


@dataclass(frozen=True)
class BootFile:
    """A file (or, with ``link_to``, a symlink) the boot-time loading needs."""

    path: str
    text: str = ""
    mode: int = 0o644
    link_to: str = ""


def has_systemd(system: System) -> bool:
    return any(system.exists(marker) for marker in SYSTEMD_MARKERS)


def major_version(distro: Distro) -> int | None:
    head = distro.version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def boot_style(distro: Distro, systemd: bool) -> str:
    """``modules``, ``systemd`` or ``none`` (nothing this tool knows how to set up)."""
    major = major_version(distro)
    if distro.family == "redhat" and distro.id != "fedora" and (major is None or major < 8):
        return "modules"
    if systemd:
        return "systemd"
    if distro.family == "redhat":
        return "modules"
    return "none"


def loader_script(name: str) -> str:
    """The boot-time loader: load ``name`` or report clearly why it cannot."""
    return f"""#!/bin/sh
# Load the {name} kernel module at boot (TOA: real client addresses behind the
# load balancer). Installed by toa-kernel's install-module; removed by
# rollback-module. When the running kernel has no {name} module (after a kernel
# upgrade), this says so in the kernel log and on the console.
release=$(uname -r)
kmsg=${{TOA_KMSG:-/dev/kmsg}}
report() {{
    echo "{name}: $*" >&2
    if [ -w "$kmsg" ]; then
        echo "<3>{name}: $*" >"$kmsg"
    fi
}}
if grep -q '^{name} ' "${{TOA_PROC_MODULES:-/proc/modules}}" 2>/dev/null; then
    exit 0
fi
if ! modinfo -k "$release" {name} >/dev/null 2>&1; then
    report "no {name} module for the running kernel $release (was the kernel upgraded?);" \\
        "{name} is NOT loaded: clients show the load balancer's address." \\
        "Rebuild for this kernel: {REBUILD}"
    exit 1
fi
if ! output=$(modprobe {name} 2>&1); then
    report "modprobe {name} failed on kernel $release: $output;" \\
        "{name} is NOT loaded. Rebuild for this kernel: {REBUILD}"
    exit 1
fi
exit 0
"""


def modules_load_conf(name: str) -> str:
    return f"# Load the {name} kernel module at boot (toa-kernel install-module).\n{name}\n"


def systemd_unit(name: str, loader: str) -> str:
    return f"""[Unit]
Description=Load the {name} kernel module, or report that the running kernel has none
After=systemd-modules-load.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={loader}

[Install]
WantedBy=multi-user.target
"""


def unit_name(name: str) -> str:
    return f"{name}-module.service"


def boot_files(name: str, style: str) -> list[BootFile]:
    """What boot-time loading of module ``name`` consists of in ``style``."""
    if style == "modules":
        return [BootFile(f"{SYSCONFIG_DIR}/{name}.modules", loader_script(name), 0o755)]
    if style == "systemd":
        loader = f"{LOADER_DIR}/{name}-load-module"
        unit = f"{SYSTEMD_UNIT_DIR}/{unit_name(name)}"
        return [
            BootFile(f"{MODULES_LOAD_DIR}/{name}.conf", modules_load_conf(name)),
            BootFile(loader, loader_script(name), 0o755),
            BootFile(unit, systemd_unit(name, loader)),
            BootFile(f"{WANTS_DIR}/{unit_name(name)}", link_to=unit),
        ]
    return []


def all_boot_paths(name: str) -> list[str]:
    """Every path either style may have written (for checks and rollback)."""
    return [f.path for style in ("modules", "systemd") for f in boot_files(name, style)]
