"""Load toa at boot and keep it loaded: the startup hook and the cron job.

CentOS 6's rc.sysinit runs every executable ``/etc/sysconfig/modules/*.modules``
at boot; ``/etc/rc.d/rc.local`` runs last. Cron reads ``/etc/cron.d/*`` (files
root-owned, not group/world-writable). Every file or line written here carries
the marker ``# toa-kernel:`` so that removal touches only what this project added.

A hook file that exists without the marker belongs to the administrator: the
install refuses to overwrite it unless asked to take it over
(``--take-over-hooks``), which first backs it up (a hidden file beside it, which
cron and rc.sysinit ignore); rollback then puts back exactly those bytes, mode
and owner. Files are read and written byte for byte (``fileops``), so rc.local
keeps its line endings, and removing our line gives back the original bytes.

- startup ``modules``: ``/etc/sysconfig/modules/toa.modules``, executable, loads
  toa only when the running kernel has the module (another kernel stays quiet);
- startup ``rc.local``: one line with a marker comment, added once;
- ``/etc/cron.d/toa`` (0644, root): every minute, on the TOA release only, loads
  toa when it is not loaded and logs one line to syslog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable

from toa_kernel.core import settings
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import lines_of
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT, RC_LOCAL
from toa_kernel.core.plan import Change, Plan
from toa_kernel.system.api import FileStat, NotRegularFile, System
from toa_kernel.system.files import current_text, read_system_text, system_file_edit

MARKER = "toa-kernel"
SYSLOG_TAG = "toa-kernel"
STARTUP_STYLES = ("modules", "rc.local")
MODULES_MODE = 0o755
CRON_MODE = 0o644
# modules.dep names a module by its path, relative (module-init-tools 3.6+) or absolute.
HAS_TOA = "grep -Eq '(^|/)toa\\.ko:' \"/lib/modules/$(uname -r)/modules.dep\" 2>/dev/null"


def check_release(release: str) -> str:
    """A kernel release safe to put in a shell line; a UserError otherwise."""
    return settings.check_release(release, "kernel release")


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


def is_ours(text: str) -> bool:
    """True when a hook file carries our marker line (we wrote it)."""
    return any(is_marked(line) for line in lines_of(text))


def file_eol(lines: list[str]) -> str:
    """The file's most common line ending."""
    crlf = sum(1 for line in lines if line.endswith("\r\n"))
    return "\r\n" if crlf * 2 > len(lines) else "\n"


def with_rc_local_line(text: str) -> str:
    """rc.local with exactly one marked line, the current one (before a final ``exit``).

    Other lines keep their bytes. After a last line without a newline our line is
    added without one too, so that ``without_rc_local_line`` gives back ``text``.
    """
    line = rc_local_line()
    lines = lines_of(text)
    marked = [i for i, old in enumerate(lines) if is_marked(old)]
    if len(marked) == 1 and lines[marked[0]].rstrip("\r\n") == line:
        return text
    lines = lines_of(without_rc_local_line(text))
    eol = file_eol(lines)
    position = len(lines)
    for index in range(len(lines) - 1, -1, -1):
        stripped = lines[index].strip()
        if not stripped:
            continue
        if re.match(r"^exit(\s+\d+)?\s*(#.*)?$", stripped):
            position = index
        break
    if position < len(lines):
        lines.insert(position, line + eol)
    elif lines and not lines[-1].endswith("\n"):
        lines[-1] += eol
        lines.append(line)
    else:
        lines.append(line + eol)
    return "".join(lines)


def without_rc_local_line(text: str) -> str:
    """rc.local without the lines this project added (the inverse of ``with_rc_local_line``)."""
    kept: list[str] = []
    lines = lines_of(text)
    for index, line in enumerate(lines):
        if not is_marked(line):
            kept.append(line)
        elif index == len(lines) - 1 and not line.endswith("\n") and kept:
            # Our unterminated last line: the line before got its ending from us.
            ending = "\r\n" if kept[-1].endswith("\r\n") else "\n"
            kept[-1] = kept[-1][: -len(ending)]
    return "".join(kept)


@dataclass(frozen=True)
class HookPaths:
    """Where the hooks live on a system (system paths, links resolved inside the root)."""

    modules_script: str
    cron_file: str
    rc_local: str

    @classmethod
    def of(cls, system: System) -> HookPaths:
        return cls(
            modules_script=system.resolve(MODULES_SCRIPT),
            cron_file=system.resolve(CRON_FILE),
            rc_local=system.resolve(RC_LOCAL),
        )


TAKE_OVER_FIX = (
    "look at it: move it aside yourself, or pass --take-over-hooks to have it backed up first "
    "(rollback puts it back exactly as it is now)"
)


def parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


def is_file(system: System, path: str) -> bool:
    found = system.stat(path)
    return found is not None and found.kind == "file"


def is_dir(system: System, path: str) -> bool:
    found = system.stat(path)
    return found is not None and found.kind == "dir"


def ours(system: System, path: str) -> bool:
    """True when ``path`` is a file carrying our marker."""
    text = current_text(system, path) if is_file(system, path) else None
    return text is not None and is_ours(text)


def foreign_problem(system: System, path: str, take_over: bool) -> UserError | None:
    """Why installing our hook at ``path`` would destroy something not ours (None: it would not)."""
    found = system.stat(path)
    if found is None:
        return None
    if found.kind != "file":
        kind = "a directory" if found.kind == "dir" else "not a regular file"
        return UserError(
            f"{path} is {kind}, not a file: the hook cannot be written there",
            f"remove {system.host_path(path)}",
        )
    if take_over or ours(system, path):
        return None
    return UserError(
        f"{path} exists and was not written by toa-kernel (it has no '# {MARKER}:' line): "
        "installing would overwrite it",
        TAKE_OVER_FIX,
    )


def hook_targets(paths: HookPaths, startup: str) -> list[str]:
    """The hook files an install writes whole."""
    return [paths.modules_script, paths.cron_file] if startup == "modules" else [paths.cron_file]


def problems(system: System, startup: str, take_over: bool = False) -> list[UserError]:
    """What stops the hooks from being installed on ``system`` (empty: nothing)."""
    found: list[UserError] = []
    if startup not in STARTUP_STYLES:
        found.append(
            UserError(
                f"startup style {startup!r} is not known", "use --startup modules or --startup rc.local"
            )
        )
        return found
    paths = HookPaths.of(system)
    if startup == "modules" and not is_dir(system, parent(paths.modules_script)):
        found.append(
            UserError(
                f"{parent(paths.modules_script)} does not exist: this does not look "
                "like CentOS 6 / RHEL 6 (its rc.sysinit runs /etc/sysconfig/modules/*.modules)",
                "pass --startup rc.local, or check --root",
            )
        )
    if startup == "rc.local" and not is_file(system, paths.rc_local):
        found.append(
            UserError(
                f"{RC_LOCAL} does not exist on {system.label}",
                "pass --startup modules (the default), or create rc.local first",
            )
        )
    if not is_dir(system, parent(paths.cron_file)):
        found.append(
            UserError(
                f"{parent(paths.cron_file)} does not exist: cron is not installed",
                "install cron (yum install cronie) and run again",
            )
        )
    for directory in sorted({parent(paths.modules_script), parent(paths.cron_file), parent(paths.rc_local)}):
        if is_dir(system, directory) and not system.writable(directory):
            found.append(
                UserError(
                    f"{system.host_path(directory)} is not writable", "run as root on a writable filesystem"
                )
            )
    for path in hook_targets(paths, startup):
        problem = foreign_problem(system, path, take_over)
        if problem is not None:
            found.append(problem)
    return found


def ownership_change(system: System, path: str, mode: int) -> Change | None:
    """A change that sets ``path`` to ``mode`` and root ownership, when it differs."""
    found = system.stat(path)
    if found is None:
        return None
    if found.mode == mode and found.uid == 0 and found.gid == 0:
        return None
    return Change(
        summary=f"{path}: mode {found.mode:04o} uid {found.uid} -> {mode:04o} root:root",
        action=lambda: system.set_mode(path, mode, 0, 0),
    )


def removal(system: System, path: str, why: str) -> Change | None:
    """A change that deletes ``path`` when it exists and carries our marker."""
    if not ours(system, path):
        return None
    return Change(summary=f"remove {path} ({why})", action=lambda: system.remove(path))


def rc_local_edit(system: System, path: str, new_text: str, summary: str) -> Change | None:
    if not is_file(system, path):
        return None
    return system_file_edit(system, path, new_text, summary)


# Called with (system path, backup's system path, stat of the file) when a foreign hook is backed up.
OnBackup = Callable[[str, str, FileStat], None]


def hook_write(
    system: System, path: str, text: str, summary: str, mode: int, on_backup: OnBackup | None
) -> Change | None:
    """Write a whole hook file; one that is not ours is backed up first (take-over)."""
    before = None
    if is_file(system, path) and not ours(system, path):

        def before() -> None:
            found = system.stat(path)
            backup = system.backup(path, hidden=True)
            if on_backup is not None and found is not None:
                on_backup(path, backup, found)

        summary += " (taking it over: the file there now is backed up first)"
    return system_file_edit(system, path, text, summary, mode=mode, before=before)


def plan_install(system: System, release: str, startup: str, on_backup: OnBackup | None = None) -> Plan:
    """Changes that install the startup hook and the cron job for ``release``.

    A hook file that is not ours is taken over (backed up, ``on_backup`` told):
    the preflight (``problems``) refuses that unless the user asked for it.
    """
    check_release(release)
    paths = HookPaths.of(system)
    plan = Plan("boot hooks")
    if startup == "modules":
        summary = f"write {MODULES_SCRIPT} (loads toa at boot)"
        plan.add(hook_write(system, paths.modules_script, modules_script(), summary, MODULES_MODE, on_backup))
        plan.add(ownership_change(system, paths.modules_script, MODULES_MODE))
        text = current_text(system, paths.rc_local) if is_file(system, paths.rc_local) else None
        if text is not None:
            plan.add(
                rc_local_edit(system, paths.rc_local, without_rc_local_line(text), "remove the rc.local line")
            )
    else:
        text = read_system_text(system, paths.rc_local)
        plan.add(
            rc_local_edit(system, paths.rc_local, with_rc_local_line(text), "add the toa line to rc.local")
        )
        plan.add(removal(system, paths.modules_script, "startup is rc.local now"))
    summary = f"write {CRON_FILE} (reloads toa every minute on {release})"
    plan.add(hook_write(system, paths.cron_file, cron_file(release), summary, CRON_MODE, on_backup))
    plan.add(ownership_change(system, paths.cron_file, CRON_MODE))
    return plan


def restore_change(system: System, path: str, saved: dict[str, Any], notes: list[str]) -> Change | None:
    """Put back the file a take-over backed up: its bytes, mode and owner (None: already so)."""
    backup = str(saved.get("backup"))
    try:
        data = system.read_bytes(backup)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotRegularFile):
        notes.append(f"the backup {saved.get('backup')} of {path} is gone: {path} is left as it is")
        return None
    try:
        mode, uid, gid = int(saved.get("mode", 0o644)), int(saved.get("uid", 0)), int(saved.get("gid", 0))
    except (TypeError, ValueError):
        notes.append(f"the install record of {path} is damaged (mode/uid/gid): {path} is left as it is")
        return None
    found = system.stat(path)
    same = (
        found is not None and found.kind == "file" and (found.mode, found.uid, found.gid) == (mode, uid, gid)
    )
    if same and system.read_bytes(path) == data:
        return None

    def restore() -> None:
        written = system.write_bytes_atomic(path, data, mode=mode)
        system.set_mode(written.path, mode, uid, gid)

    return Change(f"restore {path} as it was before the install (from {saved.get('backup')})", restore)


def plan_remove(
    system: System, taken_over: dict[str, Any] | None = None, notes: list[str] | None = None
) -> Plan:
    """Changes that undo the hooks: files we took over come back from their backups,
    files and lines carrying our marker go."""
    paths = HookPaths.of(system)
    taken_over = taken_over or {}
    notes = notes if notes is not None else []
    plan = Plan("boot hooks")
    for system_path, path, why in (
        (MODULES_SCRIPT, paths.modules_script, "startup hook"),
        (CRON_FILE, paths.cron_file, "cron job"),
    ):
        saved = taken_over.get(path) or taken_over.get(system_path)
        if saved:
            plan.add(restore_change(system, path, saved, notes))
        else:
            plan.add(removal(system, path, why))
    text = current_text(system, paths.rc_local) if is_file(system, paths.rc_local) else None
    if text is not None:
        plan.add(
            rc_local_edit(system, paths.rc_local, without_rc_local_line(text), "remove the rc.local line")
        )
    return plan


def installed(system: System) -> list[str]:
    """System paths of the hooks present now (for the manifest and reports)."""
    paths = HookPaths.of(system)
    found = [
        system_path
        for system_path, path in ((MODULES_SCRIPT, paths.modules_script), (CRON_FILE, paths.cron_file))
        if ours(system, path)
    ]
    if ours(system, paths.rc_local):
        found.append(RC_LOCAL)
    return found
