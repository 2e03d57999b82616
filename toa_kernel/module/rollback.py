"""Undo install-module: exactly what its manifest record says it added.

Files it created are removed (unless someone changed them since: those are kept
and reported), files it replaced are restored from their backups, the module
index of every release it touched is rebuilt with ``depmod``, and on the live
system the module it loaded is unloaded. A second run finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import atomic_write
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.core.plan import Change, Plan
from toa_kernel.module.install import Recorder, depmod_command, file_sha256, run_command
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import read_loaded_modules


def current_digest(host: Path, kind: str) -> str | None:
    """What is at ``host`` now, in the form the record keeps."""
    if kind == "link":
        return f"link:{os.readlink(host)}" if host.is_symlink() else None
    return file_sha256(host) if host.is_file() else None


def restore(backup: Path, host: Path) -> None:
    """Put back the bytes, mode and owner the backup kept."""
    st = backup.stat()
    mode = st.st_mode & 0o7777
    if host.is_symlink():
        host.unlink()
    atomic_write(host, backup.read_bytes(), mode=mode, follow_symlinks=False)
    os.chmod(host, mode)
    with contextlib.suppress(PermissionError):
        os.chown(host, st.st_uid, st.st_gid)
    backup.unlink()


def file_rollback(root: Root, system_path: str, entry: dict[str, Any], console: Console) -> Change | None:
    """Restore or remove one recorded file; None when there is nothing to undo."""
    host = root.path(system_path)
    kind = entry.get("kind", "file")
    backup = entry.get("backup")
    now = current_digest(host, kind)
    if backup:
        backup_path = Path(backup)
        if not backup_path.is_file():
            console.warn(f"the backup {backup} of {system_path} is gone; {system_path} is left as it is")
            return None
        if now is not None and now == file_sha256(backup_path):
            return Change(f"remove the backup {backup_path}", backup_path.unlink)
        return Change(f"restore {system_path} from {backup_path.name}", lambda: restore(backup_path, host))
    if not entry.get("created") or now is None:
        return None
    if now != entry.get("sha256"):
        console.warn(f"{system_path} changed since install-module wrote it; it is kept (remove it by hand)")
        return None
    return Change(f"remove {system_path}", host.unlink)


def remove_if_empty(path: Path) -> None:
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()


def dir_rollback(root: Root, system_path: str) -> Change | None:
    """Remove a directory install-module created, if nothing else lives in it by then."""
    host = root.path(system_path)
    if not host.is_dir():
        return None
    return Change(f"remove {system_path} if empty", lambda: remove_if_empty(host))


def plan_rollback(root: Root, record: dict[str, Any], console: Console) -> Plan:
    """The changes that undo ``record`` (the manifest's install record)."""
    plan = Plan("rollback-module")
    name = record.get("name", "toa")
    loaded = name in (read_loaded_modules(root) or [])
    if root.is_live and record.get("loaded") and loaded:
        command = ["modprobe", "-r", name]
        plan.add(Change(f"unload {name}", lambda: run_command(command), command=command))
    for system_path, entry in reversed(list(record.get("files", {}).items())):
        plan.add(file_rollback(root, system_path, entry, console))
    if plan:
        for system_path in sorted(set(record.get("dirs", [])), key=len, reverse=True):
            plan.add(dir_rollback(root, system_path))
        for release in record.get("releases", []):
            if root.resolve(f"{MODULES_DIR}/{release}").is_dir():
                command = depmod_command(root, release)
                plan.add(
                    Change(
                        f"update the module index of {release} (depmod)",
                        lambda command=command: run_command(command),
                        command=command,
                    )
                )
    return plan


def rollback_module(root: Root, recorder: Recorder, console: Console, dry_run: bool) -> list[str]:
    """Undo the recorded install under ``root``; return what was (or would be) done."""
    record = recorder.workdir.section("module").get("install")
    if not record:
        console.say("rollback-module: nothing recorded (install-module did not change this root)")
        return []
    if record.get("root") != str(root.base):
        raise UserError(
            f"the recorded module install is under {record.get('root')}, not {root.base}",
            f"run 'invoke rollback-module --root {record.get('root')}'",
        )
    plan = plan_rollback(root, record, console)
    done = plan.apply(dry_run, echo=console.say)
    if not dry_run:
        recorder.save(None)
    return done
