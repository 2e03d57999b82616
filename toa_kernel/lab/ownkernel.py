"""Boot the root's own kernel (the one ``invoke build`` compiled) with its own boot hooks.

By default the lab replaces every kernel file of ``/boot`` by a stand-in. With
``own_kernels`` it keeps each one that is a real x86 boot image (``install-kernel``
installed the bzImage ``invoke build`` made), and that entry's initramfs carries
what the system's boot needs to load toa: ``/lib/modules/RELEASE`` (its
``modules.*`` files and the toa module with the modules it depends on, per
``modules.dep``), ``/etc/sysconfig/modules/*.modules`` and ``/etc/rc.d/rc.local``.
Its ``/init`` runs those hooks as CentOS 6 does (rc.sysinit runs every executable
``*.modules``, rc.local runs last), then reports ``uname -r``, ``/proc/cmdline``,
``/proc/modules``, ``/proc/net/toa_stats`` and the kernel's TOA lines on the
console, and powers off.
"""

from __future__ import annotations

import gzip
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from toa_kernel.core.layout import MODULES_DIR, RC_LOCAL
from toa_kernel.lab.console import MARK, clean
from toa_kernel.lab.initramfs import init_script, pack, stage_initramfs
from toa_kernel.lab.kernel import is_bzimage
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import KernelLog
from toa_kernel.verify.facts import ToaStats, parse_toa_stats

MODULE_HOOKS_DIR = "/etc/sysconfig/modules"
# The modules the guest may load, with what they depend on: toa, and the
# network card's driver when it is a module (the lab's TCP probe needs it).
GUEST_MODULES = ("toa", "e1000")
STATS_MARK = f"{MARK}-STATS "
DMESG_MARK = f"{MARK}-DMESG "
QUIET_CONSOLE = "1 4 1 7"  # only emergencies on the console while the guest reports

SYSTEM_INIT = """#!/bin/busybox sh
# Boot lab, the system's own kernel: run its boot hooks as CentOS 6 does, report, power off.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /var/lock/subsys /var/log
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "{quiet}" > /proc/sys/kernel/printk
echo "{mark} release="{release}
echo "{mark} uname=$(uname -r)"
echo "{mark} cmdline=$(cat /proc/cmdline)"
ran=""
# rc.sysinit: load other user-defined modules ({hooks}/*.modules)
for file in {hook_files} ; do
  [ -x "$file" ] || continue
  "$file"; ran="$ran $file:$?"
done
# rc.local runs last
if [ -x {rc_local} ]; then {rc_local}; ran="$ran {rc_local}:$?"; fi
echo "{mark} hooks=$ran"
echo "{mark} modules=$(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')"
if [ -r /proc/net/toa_stats ]; then
  echo "{mark} toastats=present"
  sed 's/^/{stats}/' /proc/net/toa_stats
else
  echo "{mark} toastats=missing"
fi
dmesg | grep 'TOA' | sed 's/^/{dmesg}/'
echo "{mark} end"
sync
poweroff -f
"""


def system_init_script(release: str, module_hooks: Sequence[str] = ()) -> str:
    """The ``/init`` of the initramfs for the system's own kernel of ``release``.

    ``module_hooks`` is what rc.sysinit's glob ``/etc/sysconfig/modules/*.modules``
    finds, expanded when the initramfs is made: the guest's busybox (built on a
    glibc for kernels 3.2 and later) cannot list a directory on 2.6.32, whose
    fstatat() lacks AT_EMPTY_PATH.
    """
    init_script(release)  # refuses a release it cannot mark
    return SYSTEM_INIT.format(
        mark=MARK,
        release=shlex.quote(release),
        quiet=QUIET_CONSOLE,
        hooks=MODULE_HOOKS_DIR,
        hook_files=" ".join(shlex.quote(hook) for hook in sorted(module_hooks)),
        rc_local=RC_LOCAL,
        stats=STATS_MARK,
        dmesg=DMESG_MARK,
    )


def own_kernel_files(boot_dir: Path, kernels: Iterable[str]) -> dict[str, str]:
    """Kernel files (relative to /boot) that are real x86 boot images -> their release."""
    found = {}
    for relative in kernels:
        path = boot_dir / relative
        name = Path(relative).name
        if name.startswith("vmlinuz-") and path.is_file() and is_bzimage(path):
            found[relative] = name[len("vmlinuz-") :]
    return found


def module_closure(modules_dep: str, names: Sequence[str]) -> list[str]:
    """Paths (as modules.dep writes them) of the named modules and what they depend on."""
    depends: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, sep, rest = line.partition(":")
        if not sep:
            continue
        path = path.strip()
        depends[path] = rest.split()
        by_name[Path(path).name.removesuffix(".ko").replace("-", "_")] = path
    wanted = [by_name[name] for name in names if name in by_name]
    closure: list[str] = []
    while wanted:
        path = wanted.pop()
        if path not in closure:
            closure.append(path)
            wanted.extend(depends.get(path, []))
    return closure


def copy_modules(root: Root, release: str, directory: Path) -> list[str]:
    """``/lib/modules/RELEASE``'s index files and the guest's modules into ``directory``."""
    source = root.resolve(f"{MODULES_DIR}/{release}")
    target = directory / MODULES_DIR.lstrip("/") / release
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return []
    for index in source.glob("modules.*"):
        if index.is_file():
            shutil.copyfile(index, target / index.name)
    dep = source / "modules.dep"
    text = dep.read_text(errors="replace") if dep.is_file() else ""
    copied = []
    for entry in module_closure(text, GUEST_MODULES):
        inside = Path(entry)
        if inside.is_absolute():  # module-init-tools before 3.6 wrote absolute paths
            try:
                inside = inside.relative_to(f"{MODULES_DIR}/{release}")
            except ValueError:
                continue
        if (source / inside).is_file():
            (target / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / inside, target / inside)
            copied.append(inside.as_posix())
    return copied


def copy_hooks(root: Root, directory: Path) -> list[str]:
    """The system's boot hooks (``*.modules``, rc.local), modes kept."""
    copied = []
    hooks = root.resolve(MODULE_HOOKS_DIR)
    sources = sorted(hooks.glob("*.modules")) if hooks.is_dir() else []
    rc_local = root.resolve(RC_LOCAL)
    for source, system_path in [
        *((p, f"{MODULE_HOOKS_DIR}/{p.name}") for p in sources),
        *([(rc_local, RC_LOCAL)] if rc_local.is_file() else []),
    ]:
        target = directory / system_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(system_path)
    return copied


def build_system_initramfs(root: Root, release: str, output: Path, busybox: Path | None = None) -> Path:
    """The initramfs for the system's own kernel of ``release``: modules, hooks, reporting /init."""
    from toa_kernel.lab.tools import static_busybox

    busybox = busybox or static_busybox()
    with tempfile.TemporaryDirectory(prefix="initramfs-") as scratch:
        directory = Path(scratch)
        stage_initramfs(release, directory, busybox)
        copy_modules(root, release, directory)
        hooks = copy_hooks(root, directory)
        module_hooks = [hook for hook in hooks if hook.startswith(MODULE_HOOKS_DIR + "/")]
        (directory / "init").write_text(system_init_script(release, module_hooks))
        archive = pack(directory, busybox)
    output.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
    return output


def marked_lines(text: str, mark: str) -> list[str]:
    """The console lines the guest printed with ``mark``, without it."""
    return [line.strip()[len(mark) :] for line in clean(text).split("\n") if line.strip().startswith(mark)]


def guest_runtime(text: str, markers: dict[str, str]) -> tuple[list[str] | None, ToaStats | None, KernelLog]:
    """Loaded modules, toa_stats and TOA kernel-log lines the guest reported."""
    modules = markers["modules"].split() if "modules" in markers else None
    stats = None
    if markers.get("toastats") == "present":
        stats = parse_toa_stats("\n".join(marked_lines(text, STATS_MARK)))
    elif "toastats" in markers:
        stats = ToaStats(present=False)
    log = KernelLog(sources=["guest dmesg (lab console)"], lines=marked_lines(text, DMESG_MARK))
    return modules, stats, log
