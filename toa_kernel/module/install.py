"""Install a built module into a root, load it, load it at boot; and undo all that.

Facts (what is installed, what ``modules.dep`` says, what is loaded, which boot
style the distribution uses), then a Plan: copy the ``.ko`` to
``/lib/modules/R/extra/``, ``depmod -b ROOT R``, write the boot-time loader files,
and ``modprobe`` only on the live system running ``R``. Each applied change is
recorded in the work directory's manifest (section ``module``, key ``install``):
files created, files replaced (with their backups) and releases touched, which is
exactly what ``rollback-module`` removes or restores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.fileops import atomic_write, backup_file, disk_error
from toa_kernel.core.layout import MODULES_DIR, PROC_OSRELEASE
from toa_kernel.core.plan import Change, Plan, file_edit
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.kernel.modinfo import ModuleInfo, check_vermagic, read_module_info
from toa_kernel.module.boot import BootFile, boot_files, boot_style, has_systemd
from toa_kernel.module.distro import Distro
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import read_kernel_log, read_loaded_modules, read_text

SECTION = "module"
LOADED_MARKER = "TOA: toa loaded"
KMOD_HINT = "install kmod (CentOS 6: module-init-tools): 'yum install -y kmod' or 'apt-get install -y kmod'"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    try:
        return sha256_bytes(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def running_release(root: Root) -> str | None:
    """The running kernel's release as the root's ``/proc`` says (None: no /proc)."""
    text = read_text(root, PROC_OSRELEASE)
    return text.strip() if text and text.strip() else None


def module_dest(release: str, name: str) -> str:
    return f"{MODULES_DIR}/{release}/extra/{name}.ko"


def in_modules_dep(root: Root, release: str, name: str) -> bool:
    text = read_text(root, f"{MODULES_DIR}/{release}/modules.dep") or ""
    return any(line.partition(":")[0].strip().endswith(f"/{name}.ko") for line in text.splitlines())


@dataclass
class InstallFacts:
    """What install-module sees before it changes anything."""

    root: Root
    release: str
    module: ModuleInfo
    distro: Distro
    style: str
    running: str | None
    installed_same: bool
    registered: bool
    loaded: bool
    boot: list[BootFile] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def may_load(self) -> bool:
        """modprobe only on the live system running this release."""
        return self.root.is_live and self.running == self.release


def gather_install_facts(root: Root, release: str, ko: Path, distro: Distro) -> InstallFacts:
    """Facts for installing ``ko`` for ``release`` under ``root``; refuse bad inputs."""
    module = read_module_info(ko)
    check_vermagic(module, release)
    kernel_dir = root.resolve(f"{MODULES_DIR}/{release}")
    if not kernel_dir.is_dir():
        raise UserError(
            f"kernel {release} is not installed under {root.base} ({MODULES_DIR}/{release} is missing)",
            "install the module for a kernel that is installed (--release), or install that kernel first",
        )
    if shutil.which("depmod") is None:
        raise ToolMissing("depmod", KMOD_HINT)
    dest = root.resolve(module_dest(release, module.name))
    style = boot_style(distro, has_systemd(root))
    return InstallFacts(
        root=root,
        release=release,
        module=module,
        distro=distro,
        style=style,
        running=running_release(root),
        installed_same=dest.is_file() and dest.read_bytes() == ko.read_bytes(),
        registered=in_modules_dep(root, release, module.name),
        loaded=module.name in (read_loaded_modules(root) or []),
        boot=boot_files(module.name, style),
    )


class Recorder:
    """Keeps the manifest's record of what install-module changed, change by change."""

    def __init__(self, workdir: Workdir, root: Root) -> None:
        self.workdir = workdir
        self.root = root

    def load(self) -> dict[str, Any]:
        section = self.workdir.section(SECTION)
        record = section.get("install") or {}
        if record and record.get("root") != str(self.root.base):
            raise UserError(
                f"the work directory {self.workdir.path} records a module install under "
                f"{record.get('root')}, not {self.root.base}",
                f"run 'invoke rollback-module --root {record.get('root')}' first, or use another --workdir",
            )
        record.setdefault("root", str(self.root.base))
        record.setdefault("files", {})
        record.setdefault("releases", [])
        return record

    def save(self, record: dict[str, Any] | None) -> None:
        section = self.workdir.section(SECTION)
        if record is None:
            section.pop("install", None)
        else:
            record["updated"] = now_iso()
            section["install"] = record
        self.workdir.update_manifest(SECTION, section)

    def touch_file(
        self, system_path: str, produce: Callable[[], object], sha256: str, kind: str = "file"
    ) -> None:
        """Back up a file that is not ours yet, run ``produce``, record the result."""
        record = self.load()
        files = record["files"]
        host = self.root.path(system_path)
        entry = files.get(system_path)
        if entry is None:
            record["dirs"] = [*record.get("dirs", []), *self.missing_dirs(host)]
            existed = host.exists() or host.is_symlink()
            backup = str(backup_file(host)) if existed and kind == "file" and host.is_file() else None
            entry = {"created": not existed, "backup": backup, "kind": kind}
        produce()
        entry["sha256"] = sha256
        files[system_path] = entry
        self.save(record)

    def missing_dirs(self, host: Path) -> list[str]:
        """System paths of the directories above ``host`` that do not exist yet."""
        missing = []
        parent = host.parent
        while parent != self.root.base and not parent.exists():
            missing.append(self.root.system_path(parent))
            parent = parent.parent
        return missing

    def add_release(self, release: str, name: str) -> None:
        record = self.load()
        if release not in record["releases"]:
            record["releases"].append(release)
        record["name"] = name
        self.save(record)

    def mark_loaded(self) -> None:
        record = self.load()
        record["loaded"] = True
        self.save(record)


def run_command(command: list[str]) -> str:
    """Run a system command; raise with its output when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=300)
    except FileNotFoundError as exc:
        raise ToolMissing(command[0], KMOD_HINT) from exc
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFailure(f"'{' '.join(command)}' did not finish in 300 s") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise EnvironmentFailure(f"'{' '.join(command)}' failed (exit {done.returncode}): {output}")
    return done.stdout


def depmod_command(root: Root, release: str) -> list[str]:
    return ["depmod", "-b", str(root.base), release]


def copy_module(ko: Path, host: Path) -> None:
    try:
        host.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, host.parent) from exc
    atomic_write(host, ko.read_bytes(), mode=0o644, follow_symlinks=False)


def module_change(facts: InstallFacts, recorder: Recorder) -> Change | None:
    if facts.installed_same:
        return None
    system_path = module_dest(facts.release, facts.name)
    host = facts.root.resolve(system_path)
    ko = facts.module.path
    data_sha = sha256_bytes(ko.read_bytes())

    def install() -> None:
        recorder.touch_file(system_path, lambda: copy_module(ko, host), data_sha)
        recorder.add_release(facts.release, facts.name)

    return Change(f"install {ko.name} as {system_path} (vermagic {facts.module.vermagic.strip()})", install)


def depmod_change(facts: InstallFacts, recorder: Recorder, module_changed: bool) -> Change | None:
    if facts.registered and not module_changed:
        return None
    command = depmod_command(facts.root, facts.release)

    def depmod() -> None:
        run_command(command)
        recorder.add_release(facts.release, facts.name)

    return Change(f"update the module index of {facts.release} (depmod)", depmod, command=command)


def boot_file_change(root: Root, boot_file: BootFile, recorder: Recorder) -> Change | None:
    host = root.path(boot_file.path)
    if boot_file.link_to:
        if host.is_symlink() and os.readlink(host) == boot_file.link_to:
            return None

        def link() -> None:
            def make() -> None:
                host.parent.mkdir(parents=True, exist_ok=True)
                if host.is_symlink() or host.exists():
                    host.unlink()
                host.symlink_to(boot_file.link_to)

            recorder.touch_file(boot_file.path, make, f"link:{boot_file.link_to}", kind="link")

        return Change(f"enable at boot: {boot_file.path} -> {boot_file.link_to}", link)
    change = file_edit(
        host, boot_file.text, f"write {boot_file.path}", label=boot_file.path.lstrip("/"), mode=boot_file.mode
    )
    if change is None:
        if host.is_file() and (host.stat().st_mode & 0o777) != boot_file.mode:
            return Change(
                f"chmod {boot_file.mode:o} {boot_file.path}",
                lambda: os.chmod(host, boot_file.mode),
            )
        return None
    write = change.action
    sha = sha256_bytes(boot_file.text.encode())

    def write_with_mode() -> None:
        host.parent.mkdir(parents=True, exist_ok=True)
        write()
        os.chmod(host, boot_file.mode)

    def recorded_write() -> None:
        recorder.touch_file(boot_file.path, write_with_mode, sha)

    change.action = recorded_write
    return change


def load_change(facts: InstallFacts, recorder: Recorder) -> Change | None:
    if not facts.may_load or facts.loaded:
        return None
    command = ["modprobe", facts.name]

    def load() -> None:
        run_command(command)
        recorder.mark_loaded()

    return Change(f"load {facts.name} into the running kernel", load, command=command)


def plan_install(facts: InstallFacts, recorder: Recorder) -> Plan:
    """The changes that make the root load ``facts.module`` now and at boot."""
    plan = Plan("install-module")
    copy = module_change(facts, recorder)
    plan.add(copy)
    plan.add(depmod_change(facts, recorder, module_changed=copy is not None))
    for boot_file in facts.boot:
        plan.add(boot_file_change(facts.root, boot_file, recorder))
    plan.add(load_change(facts, recorder))
    return plan


def confirm_loaded(facts: InstallFacts, console: Console) -> bool | None:
    """After install: is the module loaded (None: not this root's running kernel)?"""
    if not facts.may_load:
        return None
    loaded = facts.name in (read_loaded_modules(facts.root) or [])
    if not loaded:
        raise EnvironmentFailure(
            f"modprobe {facts.name} returned but {facts.name} is not in /proc/modules",
            "look at 'dmesg | tail' for the kernel's reason",
        )
    if facts.name == "toa":
        log = read_kernel_log(facts.root)
        if not any(LOADED_MARKER in line for line in log.lines):
            why = log.problem or "the module rate-limits the message"
            console.warn(
                f"'{LOADED_MARKER}' is not in the kernel log ({why}); the module is loaded all the same"
            )
    return True


def stale_load_warning(facts: InstallFacts) -> str | None:
    """A loaded module keeps running the old code until it is reloaded."""
    if facts.may_load and facts.loaded and not facts.installed_same:
        return (
            f"{facts.name} is loaded from an earlier build; the new one takes over at the next boot or "
            f"after 'modprobe -r {facts.name} && modprobe {facts.name}'"
        )
    return None
