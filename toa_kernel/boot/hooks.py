"""Load toa at boot and keep it loaded: the startup hook and the cron job.

CentOS 6's rc.sysinit runs every executable ``/etc/sysconfig/modules/*.modules``
at boot; ``/etc/rc.d/rc.local`` runs last. Cron reads ``/etc/cron.d/*`` (files
root-owned, not group/world-writable). Every file or line written here carries
the marker ``toa-kernel`` so that removal touches only what this project added.

- startup ``modules``: ``/etc/sysconfig/modules/toa.modules``, executable, loads
  toa only when the running kernel has the module (another kernel stays quiet);
- startup ``rc.local``: one line with a marker comment, added once;
- ``/etc/cron.d/toa`` (0644, root): every minute, on the TOA release only, loads
  toa when it is not loaded and logs one line to syslog.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import disk_error, fsync_dir
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT, RC_LOCAL, RELEASE_RE
from toa_kernel.core.plan import Change, Plan, file_edit
from toa_kernel.system.rootfs import Root

MARKER = "toa-kernel"
SYSLOG_TAG = "toa-kernel"
STARTUP_STYLES = ("modules", "rc.local")
MODULES_MODE = 0o755
CRON_MODE = 0o644
# modules.dep names a module by its path, relative (module-init-tools 3.6+) or absolute.
HAS_TOA = "grep -Eq '(^|/)toa\\.ko:' \"/lib/modules/$(uname -r)/modules.dep\" 2>/dev/null"


def check_release(release: str) -> str:
    """A kernel release safe to put in a shell line; a UserError otherwise."""
    if not RELEASE_RE.fullmatch(release or ""):
        raise UserError(
            f"kernel release {release!r} is not a valid release name",
            "use the release 'invoke build' printed, e.g. 2.6.32-toa (letters, digits and . _ + ~ -)",
        )
    return release


def modules_script() -> str:
    """The executable ``/etc/sysconfig/modules/toa.modules``."""
    return (
        "#!/bin/sh\n"
        f"# {MARKER}: load the TOA module at boot (rc.sysinit runs /etc/sysconfig/modules/*.modules).\n"
        "# Loads toa only when the running kernel has it, so another kernel boots quietly.\n"
        "# Removed by 'invoke rollback'.\n"
        f"if {HAS_TOA}; then\n"
        "    /sbin/modprobe toa >/dev/null 2>&1\n"
        "fi\n"
        "exit 0\n"
    )


def rc_local_line() -> str:
    """The one line ``--startup rc.local`` adds to rc.local (marker included)."""
    return f"if {HAS_TOA}; then /sbin/modprobe toa; fi  # {MARKER}: load the TOA module"


def cron_command(release: str) -> str:
    """The shell command the cron job runs every minute."""
    release = check_release(release)
    return (
        f'[ "$(uname -r)" = "{release}" ] || exit 0; '
        "grep -q '^toa ' /proc/modules && exit 0; "
        "if /sbin/modprobe toa >/dev/null 2>&1; "
        f'then logger -t {SYSLOG_TAG} "toa was not loaded on {release}: loaded it with modprobe"; '
        f'else logger -t {SYSLOG_TAG} "toa is not loaded on {release} and modprobe toa failed"; fi'
    )


def cron_file(release: str) -> str:
    """The content of ``/etc/cron.d/toa``."""
    return (
        f"# {MARKER}: keep the TOA module loaded while kernel {check_release(release)} runs.\n"
        "# On any other kernel the job does nothing. Removed by 'invoke rollback'.\n"
        "SHELL=/bin/sh\n"
        "PATH=/sbin:/bin:/usr/sbin:/usr/bin\n"
        f"* * * * * root {cron_command(release)}\n"
    )


def is_marked(line: str) -> bool:
    return f"# {MARKER}:" in line


def with_rc_local_line(text: str) -> str:
    """rc.local with exactly one marked line, the current one (before a final ``exit``)."""
    line = rc_local_line()
    lines = text.splitlines(keepends=True)
    marked = [i for i, old in enumerate(lines) if is_marked(old)]
    if len(marked) == 1 and lines[marked[0]].rstrip("\n") == line:
        return text
    lines = [old for old in lines if not is_marked(old)]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    position = len(lines)
    for index in range(len(lines) - 1, -1, -1):
        stripped = lines[index].strip()
        if not stripped:
            continue
        if re.match(r"^exit(\s+\d+)?\s*(#.*)?$", stripped):
            position = index
        break
    lines.insert(position, line + "\n")
    return "".join(lines)


def without_rc_local_line(text: str) -> str:
    """rc.local without the lines this project added."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_marked(line))


@dataclass(frozen=True)
class HookPaths:
    """Where the hooks live under a root (rc.local resolved inside the root)."""

    modules_script: Path
    cron_file: Path
    rc_local: Path

    @classmethod
    def of(cls, root: Root) -> HookPaths:
        return cls(
            modules_script=root.resolve(MODULES_SCRIPT),
            cron_file=root.resolve(CRON_FILE),
            rc_local=root.resolve(RC_LOCAL),
        )


def problems(root: Root, startup: str) -> list[UserError]:
    """What stops the hooks from being installed under ``root`` (empty: nothing)."""
    found: list[UserError] = []
    if startup not in STARTUP_STYLES:
        found.append(
            UserError(
                f"startup style {startup!r} is not known", "use --startup modules or --startup rc.local"
            )
        )
        return found
    paths = HookPaths.of(root)
    if startup == "modules" and not paths.modules_script.parent.is_dir():
        found.append(
            UserError(
                f"{root.system_path(paths.modules_script.parent)} does not exist: this does not look "
                "like CentOS 6 / RHEL 6 (its rc.sysinit runs /etc/sysconfig/modules/*.modules)",
                "pass --startup rc.local, or check --root",
            )
        )
    if startup == "rc.local" and not paths.rc_local.is_file():
        found.append(
            UserError(
                f"{RC_LOCAL} does not exist under {root.base}",
                "pass --startup modules (the default), or create rc.local first",
            )
        )
    if not paths.cron_file.parent.is_dir():
        found.append(
            UserError(
                f"{root.system_path(paths.cron_file.parent)} does not exist: cron is not installed",
                "install cron (yum install cronie) and run again",
            )
        )
    for directory in {paths.modules_script.parent, paths.cron_file.parent, paths.rc_local.parent}:
        if directory.is_dir() and not os.access(directory, os.W_OK):
            found.append(UserError(f"{directory} is not writable", "run as root on a writable filesystem"))
    return found


def label(root: Root, path: Path) -> str:
    return root.system_path(path) if path.is_relative_to(root.base) else str(path)


def ownership_change(root: Root, path: Path, mode: int) -> Change | None:
    """A change that sets ``path`` to ``mode`` and root ownership, when it differs."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(st.st_mode) == mode and st.st_uid == 0 and st.st_gid == 0:
        return None

    def fix() -> None:
        try:
            os.chmod(path, mode)
            os.chown(path, 0, 0)
        except OSError as exc:
            raise disk_error(exc, path) from exc

    return Change(
        summary=f"{label(root, path)}: mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid} -> "
        f"{mode:04o} root:root",
        action=fix,
    )


def removal(root: Root, path: Path, why: str) -> Change | None:
    """A change that deletes ``path`` when it exists and carries our marker."""
    if not path.is_file() or MARKER not in path.read_text(errors="replace"):
        return None

    def remove() -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fsync_dir(path.parent)
        except OSError as exc:
            raise disk_error(exc, path) from exc

    return Change(summary=f"remove {label(root, path)} ({why})", action=remove)


def rc_local_edit(root: Root, path: Path, new_text: str, summary: str) -> Change | None:
    if not path.is_file():
        return None
    return file_edit(path, new_text, summary, label=label(root, path).lstrip("/"))


def plan_install(root: Root, release: str, startup: str) -> Plan:
    """Changes that install the startup hook and the cron job for ``release``."""
    check_release(release)
    paths = HookPaths.of(root)
    plan = Plan("boot hooks")
    if startup == "modules":
        plan.add(
            file_edit(
                paths.modules_script,
                modules_script(),
                f"write {MODULES_SCRIPT} (loads toa at boot)",
                label=MODULES_SCRIPT.lstrip("/"),
                mode=MODULES_MODE,
            )
        )
        plan.add(ownership_change(root, paths.modules_script, MODULES_MODE))
        if paths.rc_local.is_file():
            text = paths.rc_local.read_text(errors="surrogateescape")
            plan.add(
                rc_local_edit(root, paths.rc_local, without_rc_local_line(text), "remove the rc.local line")
            )
    else:
        text = paths.rc_local.read_text(errors="surrogateescape")
        plan.add(
            rc_local_edit(root, paths.rc_local, with_rc_local_line(text), "add the toa line to rc.local")
        )
        plan.add(removal(root, paths.modules_script, "startup is rc.local now"))
    plan.add(
        file_edit(
            paths.cron_file,
            cron_file(release),
            f"write {CRON_FILE} (reloads toa every minute on {release})",
            label=CRON_FILE.lstrip("/"),
            mode=CRON_MODE,
        )
    )
    plan.add(ownership_change(root, paths.cron_file, CRON_MODE))
    return plan


def plan_remove(root: Root) -> Plan:
    """Changes that remove every hook this project added (files with our marker)."""
    paths = HookPaths.of(root)
    plan = Plan("boot hooks")
    plan.add(removal(root, paths.modules_script, "startup hook"))
    plan.add(removal(root, paths.cron_file, "cron job"))
    if paths.rc_local.is_file():
        text = paths.rc_local.read_text(errors="surrogateescape")
        plan.add(rc_local_edit(root, paths.rc_local, without_rc_local_line(text), "remove the rc.local line"))
    return plan


def installed(root: Root) -> list[str]:
    """System paths of the hooks present now (for the manifest and reports)."""
    paths = HookPaths.of(root)
    found = [
        system
        for system, path in ((MODULES_SCRIPT, paths.modules_script), (CRON_FILE, paths.cron_file))
        if path.is_file() and MARKER in path.read_text(errors="replace")
    ]
    if paths.rc_local.is_file() and any(
        is_marked(line) for line in paths.rc_local.read_text(errors="replace").splitlines()
    ):
        found.append(RC_LOCAL)
    return found
