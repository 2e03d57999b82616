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

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core import settings
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import (
    atomic_write,
    backup_file,
    disk_error,
    file_kind,
    fsync_dir,
    lines_of,
    read_bytes,
    read_text,
)
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT, RC_LOCAL
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


TAKE_OVER_FIX = (
    "look at it: move it aside yourself, or pass --take-over-hooks to have it backed up first "
    "(rollback puts it back exactly as it is now)"
)


def foreign_problem(root: Root, path: Path, take_over: bool) -> UserError | None:
    """Why installing our hook at ``path`` would destroy something not ours (None: it would not)."""
    if not (path.exists() or path.is_symlink()):
        return None
    where = label(root, path)
    if not path.is_file():
        kind = file_kind(path.lstat().st_mode) if not path.exists() else file_kind(path.stat().st_mode)
        return UserError(f"{where} is {kind}, not a file: the hook cannot be written there", f"remove {path}")
    if take_over or is_ours(read_text(path)):
        return None
    return UserError(
        f"{where} exists and was not written by toa-kernel (it has no '# {MARKER}:' line): "
        "installing would overwrite it",
        TAKE_OVER_FIX,
    )


def hook_targets(paths: HookPaths, startup: str) -> list[Path]:
    """The hook files an install writes whole."""
    return [paths.modules_script, paths.cron_file] if startup == "modules" else [paths.cron_file]


def problems(root: Root, startup: str, take_over: bool = False) -> list[UserError]:
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
    for path in hook_targets(paths, startup):
        problem = foreign_problem(root, path, take_over)
        if problem is not None:
            found.append(problem)
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
    if not path.is_file() or not is_ours(read_text(path)):
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


# Called with (system path, backup path, stat of the file) when a foreign hook is backed up.
OnBackup = Callable[[str, Path, os.stat_result], None]


def hook_write(
    root: Root, path: Path, text: str, summary: str, mode: int, on_backup: OnBackup | None
) -> Change | None:
    """Write a whole hook file; one that is not ours is backed up first (take-over)."""
    before = None
    if path.is_file() and not is_ours(read_text(path)):

        def before() -> None:
            st = path.stat()
            backup = backup_file(path, hidden=True)
            if on_backup is not None:
                on_backup(label(root, path), backup, st)

        summary += " (taking it over: the file there now is backed up first)"
    return file_edit(path, text, summary, label=label(root, path).lstrip("/"), mode=mode, before=before)


def plan_install(root: Root, release: str, startup: str, on_backup: OnBackup | None = None) -> Plan:
    """Changes that install the startup hook and the cron job for ``release``.

    A hook file that is not ours is taken over (backed up, ``on_backup`` told):
    the preflight (``problems``) refuses that unless the user asked for it.
    """
    check_release(release)
    paths = HookPaths.of(root)
    plan = Plan("boot hooks")
    if startup == "modules":
        summary = f"write {MODULES_SCRIPT} (loads toa at boot)"
        plan.add(hook_write(root, paths.modules_script, modules_script(), summary, MODULES_MODE, on_backup))
        plan.add(ownership_change(root, paths.modules_script, MODULES_MODE))
        if paths.rc_local.is_file():
            text = read_text(paths.rc_local)
            plan.add(
                rc_local_edit(root, paths.rc_local, without_rc_local_line(text), "remove the rc.local line")
            )
    else:
        text = read_text(paths.rc_local)
        plan.add(
            rc_local_edit(root, paths.rc_local, with_rc_local_line(text), "add the toa line to rc.local")
        )
        plan.add(removal(root, paths.modules_script, "startup is rc.local now"))
    summary = f"write {CRON_FILE} (reloads toa every minute on {release})"
    plan.add(hook_write(root, paths.cron_file, cron_file(release), summary, CRON_MODE, on_backup))
    plan.add(ownership_change(root, paths.cron_file, CRON_MODE))
    return plan


def restore_change(root: Root, path: Path, saved: dict[str, Any], notes: list[str]) -> Change | None:
    """Put back the file a take-over backed up: its bytes, mode and owner (None: already so)."""
    backup = root.path(str(saved.get("backup")))
    where = label(root, path)
    try:
        data = read_bytes(backup)
    except (FileNotFoundError, UserError):
        notes.append(f"the backup {saved.get('backup')} of {where} is gone: {where} is left as it is")
        return None
    try:
        mode, uid, gid = int(saved.get("mode", 0o644)), int(saved.get("uid", 0)), int(saved.get("gid", 0))
    except (TypeError, ValueError):
        notes.append(f"the install record of {where} is damaged (mode/uid/gid): {where} is left as it is")
        return None
    try:
        same = read_bytes(path) == data
        st = path.stat()
        same = same and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid)
    except (FileNotFoundError, UserError):
        same = False
    if same:
        return None

    def restore() -> None:
        written = atomic_write(path, data, mode=mode)
        try:
            os.chmod(written, mode)
            with contextlib.suppress(PermissionError):
                os.chown(written, uid, gid)
        except OSError as exc:
            raise disk_error(exc, written) from exc

    return Change(f"restore {where} as it was before the install (from {saved.get('backup')})", restore)


def plan_remove(root: Root, taken_over: dict[str, Any] | None = None, notes: list[str] | None = None) -> Plan:
    """Changes that undo the hooks: files we took over come back from their backups,
    files and lines carrying our marker go."""
    paths = HookPaths.of(root)
    taken_over = taken_over or {}
    notes = notes if notes is not None else []
    plan = Plan("boot hooks")
    for system_path, path, why in (
        (MODULES_SCRIPT, paths.modules_script, "startup hook"),
        (CRON_FILE, paths.cron_file, "cron job"),
    ):
        saved = taken_over.get(label(root, path)) or taken_over.get(system_path)
        if saved:
            plan.add(restore_change(root, path, saved, notes))
        else:
            plan.add(removal(root, path, why))
    if paths.rc_local.is_file():
        text = read_text(paths.rc_local)
        plan.add(rc_local_edit(root, paths.rc_local, without_rc_local_line(text), "remove the rc.local line"))
    return plan


def installed(root: Root) -> list[str]:
    """System paths of the hooks present now (for the manifest and reports)."""
    paths = HookPaths.of(root)
    found = [
        system
        for system, path in ((MODULES_SCRIPT, paths.modules_script), (CRON_FILE, paths.cron_file))
        if path.is_file() and is_ours(read_text(path))
    ]
    if paths.rc_local.is_file() and is_ours(read_text(paths.rc_local)):
        found.append(RC_LOCAL)
    return found
