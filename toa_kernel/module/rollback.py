"""Undo install-module: exactly what its manifest record says it added.

Files it created are removed (unless someone changed them since: those are kept
and reported), files it replaced are restored from their backups, the module
index of every release it touched is rebuilt with ``depmod``, and on the live
system the module it loaded is unloaded. A second run finds nothing to do.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.core.plan import Change, Plan
from toa_kernel.module.install import Recorder, depmod_command, recorded_where, run_command
from toa_kernel.system.api import System
from toa_kernel.system.runtime import read_loaded_modules


def current_digest(system: System, path: str, kind: str) -> str | None:
    """What is at ``path`` now, in the form the record keeps."""
    if kind == "link":
        target = system.readlink(path)
        return f"link:{target}" if target is not None else None
    found = system.stat(path, follow_symlinks=False)
    return system.sha256(path) if found is not None and found.kind == "file" else None


def backup_digest(system: System, backup: str) -> str | None:
    return system.sha256(backup)


def restore(system: System, backup: str, path: str) -> None:
    """Put back the bytes, mode and owner the backup kept."""
    found = system.stat(backup)
    if found is None:
        raise UserError(f"the backup {backup} of {path} is gone on {system.label}")
    data = system.read_bytes(backup)
    if system.readlink(path) is not None:
        system.remove(path)
    written = system.write_bytes_atomic(path, data, mode=found.mode)
    system.set_mode(written.path, found.mode, found.uid, found.gid)
    system.remove(backup)


def file_rollback(system: System, path: str, entry: dict[str, Any], console: Console) -> Change | None:
    """Restore or remove one recorded file; None when there is nothing to undo."""
    kind = entry.get("kind", "file")
    backup = entry.get("backup")
    now = current_digest(system, path, kind)
    if backup:
        backup = str(backup)
        found = system.stat(backup)
        if found is None or found.kind != "file":
            console.warn(f"the backup {backup} of {path} is gone; {path} is left as it is")
            return None
        if now is not None and now == backup_digest(system, backup):
            return Change(f"remove the backup {backup}", lambda: system.remove(backup))
        name = PurePosixPath(backup).name
        return Change(f"restore {path} from {name}", lambda: restore(system, backup, path))
    if not entry.get("created") or now is None:
        return None
    if now != entry.get("sha256"):
        console.warn(f"{path} changed since install-module wrote it; it is kept (remove it by hand)")
        return None
    return Change(f"remove {path}", lambda: system.remove(path))


def remove_if_empty(system: System, path: str) -> None:
    found = system.stat(path, follow_symlinks=False)
    if found is not None and found.kind == "dir" and not system.listdir(path):
        system.remove(path)


def dir_rollback(system: System, path: str) -> Change | None:
    """Remove a directory install-module created, if nothing else lives in it by then."""
    found = system.stat(path, follow_symlinks=False)
    if found is None or found.kind != "dir":
        return None
    return Change(f"remove {path} if empty", lambda: remove_if_empty(system, path))


def plan_rollback(system: System, record: dict[str, Any], console: Console) -> Plan:
    """The changes that undo ``record`` (the manifest's install record)."""
    plan = Plan("rollback-module")
    name = record.get("name", "toa")
    loaded = name in (read_loaded_modules(system) or [])
    if system.is_live and record.get("loaded") and loaded:
        command = [system.which("modprobe") or "modprobe", "-r", name]
        plan.add(Change(f"unload {name}", lambda: run_command(system, command), command=command))
    for path, entry in reversed(list(record.get("files", {}).items())):
        plan.add(file_rollback(system, path, entry, console))
    if plan:
        for path in sorted(set(record.get("dirs", [])), key=len, reverse=True):
            plan.add(dir_rollback(system, path))
        for release in record.get("releases", []):
            found = system.stat(f"{MODULES_DIR}/{release}")
            if found is not None and found.kind == "dir":
                command = depmod_command(system, release)
                plan.add(
                    Change(
                        f"update the module index of {release} (depmod)",
                        lambda command=command: run_command(system, command),
                        command=command,
                    )
                )
    return plan


def rollback_module(system: System, recorder: Recorder, console: Console, dry_run: bool) -> list[str]:
    """Undo the recorded install on ``system``; return what was (or would be) done."""
    record = recorder.workdir.section("module").get("install")
    if not record:
        console.say("rollback-module: nothing recorded (install-module did not change this root)")
        return []
    if not recorder.matches(record):
        raise UserError(
            f"the recorded module install is on {recorded_where(record)}, not {system.flags}",
            f"run 'invoke rollback-module {recorded_where(record)}'",
        )
    plan = plan_rollback(system, record, console)
    done = plan.apply(dry_run, echo=console.say)
    if not dry_run:
        recorder.save(None)
    return done
