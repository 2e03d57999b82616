"""The probe's guest: an initramfs whose /init brings up the NIC and serves HTTP.

``/init`` prints the lab's marks (release, ``uname -r``, command line), loads
the NIC driver, gives the first Ethernet interface a static address on the
virtual link, and starts two busybox ``httpd``: one on ``0.0.0.0`` (IPv4) and
one on ``[::]`` (IPv4 clients arrive there as v4-mapped IPv6 connections).
Their CGI scripts report what the probe asks:

- ``peer``: ``REMOTE_ADDR`` and ``REMOTE_PORT``, the address ``accept()`` gave;
- ``load``: ``insmod`` of the TOA module (status and output);
- ``report``: is toa loaded, ``/proc/net/toa_stats``, the TOA lines of dmesg;
- ``poweroff``: asks ``/init`` to print the report on the console and power off.

The module is loaded only when the probe asks, so the first case runs
without it. Packed like the lab's other initramfs (``busybox cpio``, gzip).
"""

from __future__ import annotations

import gzip
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toa_kernel.lab.console import MARK
from toa_kernel.lab.initramfs import init_script, pack
from toa_kernel.lab.tools import static_busybox

GUEST_MODULE = "/lib/modules/toa.ko"
NIC_DIR = "/lib/modules/nic"
POWEROFF_FLAG = "/tmp/poweroff"
READY = "ready"
CGI_HEADER = 'echo "Content-Type: text/plain"\necho\n'

CGI_SCRIPTS = {
    "peer": CGI_HEADER + 'echo "REMOTE_ADDR=$REMOTE_ADDR"\necho "REMOTE_PORT=$REMOTE_PORT"\n',
    "load": CGI_HEADER
    + f'output=$(insmod {GUEST_MODULE} 2>&1)\necho "status=$?"\n'
    + 'echo "$output" | sed "s/^/output:/"\n',
    "report": CGI_HEADER
    + 'echo "uname=$(uname -r)"\n'
    + "if grep -q '^toa ' /proc/modules; then echo loaded=yes; else echo loaded=no; fi\n"
    + "[ -r /proc/net/toa_stats ] && sed 's/^/stats:/' /proc/net/toa_stats\n"
    + "dmesg | grep -i toa | sed 's/^/dmesg:/'\n",
    "poweroff": CGI_HEADER + f"touch {POWEROFF_FLAG}\necho bye\n",
}

PROBE_INIT = """#!/bin/busybox sh
# Boot lab, TOA probe: report the boot, serve HTTP on the virtual link, wait.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "{mark} release="{release}
echo "{mark} uname=$(uname -r)"
echo "{mark} cmdline=$(cat /proc/cmdline)"
for module in {nic_modules}; do
    [ -e "$module" ] && insmod "$module"
done
ip link set lo up
nic=""
# interfaces from /proc/net/dev, not a glob of /sys/class/net: this busybox cannot list a
# directory on a 2.6.32 kernel; the NIC is the first Ethernet one (type 1; lo and sit0 are not)
for tries in $(seq 50); do
    for name in $(tail -n +3 /proc/net/dev | cut -d: -f1); do
        [ "$(cat /sys/class/net/$name/type 2>/dev/null)" = 1 ] && nic=$name && break
    done
    [ -n "$nic" ] && break
    usleep 100000
done
if [ -z "$nic" ]; then
    echo "{mark} error=no network interface (is the NIC driver in the kernel or the initramfs?)"
else
    ip link set "$nic" up
    ip addr add {address}/{prefix} dev "$nic"
    httpd -p 0.0.0.0:{port} -h /www
    httpd -p [::]:{v6_port} -h /www
    echo "{mark} nic=$nic"
    echo "{mark} {ready}"
fi
while [ ! -e {flag} ]; do
    usleep 200000
done
grep -q '^toa ' /proc/modules && echo "{mark} toa=loaded" || echo "{mark} toa=not loaded"
[ -r /proc/net/toa_stats ] && sed 's/^/{mark} stats:/' /proc/net/toa_stats
echo "{mark} end"
sync
poweroff -f
"""


@dataclass(frozen=True)
class GuestNet:
    """The guest's side of the virtual link."""

    address: str
    prefix: int
    port: int
    v6_port: int


def probe_init(release: str, net: GuestNet, nic_modules: Sequence[str] = ()) -> str:
    """The probe's ``/init`` for the boot entry of ``release``.

    The NIC driver files are named, not globbed: the guest's busybox cannot list
    a directory on a 2.6.32 kernel.
    """
    init_script(release)  # refuses a release the lab cannot mark
    return PROBE_INIT.format(
        mark=MARK,
        release=shlex.quote(release),
        nic_modules=" ".join(f"{NIC_DIR}/{shlex.quote(name)}" for name in nic_modules),
        address=net.address,
        prefix=net.prefix,
        port=net.port,
        v6_port=net.v6_port,
        ready=READY,
        flag=POWEROFF_FLAG,
    )


def stage_guest(
    directory: Path, release: str, net: GuestNet, module: Path, nic: list[Path], busybox: Path
) -> None:
    """Write the probe initramfs's files into ``directory``."""
    for name in ("bin", "proc", "dev", "sys", "tmp", "www/cgi-bin", NIC_DIR.lstrip("/")):
        (directory / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, directory / "bin" / "busybox")
    write_executable(directory / "init", probe_init(release, net, [driver.name for driver in nic]))
    for name, body in CGI_SCRIPTS.items():
        write_executable(directory / "www" / "cgi-bin" / name, "#!/bin/sh\n" + body)
    shutil.copyfile(module, directory / GUEST_MODULE.lstrip("/"))
    for driver in nic:
        shutil.copyfile(driver, directory / NIC_DIR.lstrip("/") / driver.name)


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def build_guest_initramfs(
    release: str, output: Path, net: GuestNet, module: Path, nic: list[Path], busybox: Path | None = None
) -> Path:
    """Write the gzip-compressed probe initramfs for ``release`` to ``output``."""
    busybox = busybox or static_busybox()
    with tempfile.TemporaryDirectory(prefix="probe-initramfs-") as scratch:
        stage_guest(Path(scratch), release, net, module, nic, busybox)
        archive = pack(Path(scratch), busybox)
    output.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
    return output
