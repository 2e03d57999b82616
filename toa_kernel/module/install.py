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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.layout import MODULES_DIR, PROC_OSRELEASE
from toa_kernel.core.plan import Change, Plan
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.kernel.modinfo import (
    MAX_MODULE_BYTES,
    ModuleInfo,
    check_vermagic,
    module_info_from_bytes,
    not_a_module,
    read_module_info,
)
from toa_kernel.module.boot import BootFile, boot_files, boot_style, has_systemd
from toa_kernel.module.distro import Distro
from toa_kernel.system.api import NotRegularFile, System
from toa_kernel.system.files import system_file_edit
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


def running_release(system: System) -> str | None:
    """The running kernel's release as the system's ``/proc`` says (None: no /proc)."""
    text = read_text(system, PROC_OSRELEASE)
    return text.strip() if text and text.strip() else None


def module_dest(release: str, name: str) -> str:
    return f"{MODULES_DIR}/{release}/extra/{name}.ko"


def in_modules_dep(system: System, release: str, name: str) -> bool:
    text = read_text(system, f"{MODULES_DIR}/{release}/modules.dep") or ""
    return any(line.partition(":")[0].strip().endswith(f"/{name}.ko") for line in text.splitlines())


def module_info_of(system: System, system_path: str) -> ModuleInfo:
    """``read_module_info`` of a module file on the system."""
    try:
        data = system.read_bytes(system_path, MAX_MODULE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, NotRegularFile) as exc:
        raise not_a_module(Path(system_path), str(exc)) from None
    if len(data) > MAX_MODULE_BYTES:
        raise not_a_module(Path(system_path), "larger than any kernel module")
    return module_info_from_bytes(data, Path(system_path))


def is_file(system: System, path: str) -> bool:
    found = system.stat(path)
    return found is not None and found.kind == "file"


@dataclass
class InstallFacts:
    """What install-module sees before it changes anything."""

    system: System
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
        return self.system.is_live and self.running == self.release


def gather_install_facts(system: System, release: str, ko: Path, distro: Distro) -> InstallFacts:
    """Facts for installing ``ko`` (a file here) for ``release`` on ``system``; refuse bad inputs."""
    module = read_module_info(ko)
    check_vermagic(module, release)
    kernel_dir = system.stat(f"{MODULES_DIR}/{release}")
    if kernel_dir is None or kernel_dir.kind != "dir":
        raise UserError(
            f"kernel {release} is not installed on {system.label} ({MODULES_DIR}/{release} is missing)",
            "install the module for a kernel that is installed (--release), or install that kernel first",
        )
    if system.which("depmod") is None:
        raise ToolMissing("depmod", f"on {system.label}: {KMOD_HINT}")
    dest = module_dest(release, module.name)
    style = boot_style(distro, has_systemd(system))
    return InstallFacts(
        system=system,
        release=release,
        module=module,
        distro=distro,
        style=style,
        running=running_release(system),
        installed_same=system.sha256(dest) == file_sha256(ko),
        registered=in_modules_dep(system, release, module.name),
        loaded=module.name in (read_loaded_modules(system) or []),
        boot=boot_files(module.name, style),
    )


def recorded_where(record: dict[str, Any]) -> str:
    host = record.get("host") or ""
    return (f"--host {host} " if host else "") + f"--root {record.get('root')}"


class Recorder:
    """Keeps the manifest's record of what install-module changed, change by change."""

    def __init__(self, workdir: Workdir, system: System) -> None:
        self.workdir = workdir
        self.system = system

    def matches(self, record: dict[str, Any]) -> bool:
        return record.get("root") == self.system.root and (record.get("host") or "") == self.system.host

    def load(self) -> dict[str, Any]:
        section = self.workdir.section(SECTION)
        record = section.get("install") or {}
        if record and not self.matches(record):
            raise UserError(
                f"the work directory {self.workdir.path} records a module install on "
                f"{recorded_where(record)}, not {self.system.flags}",
                f"run 'invoke rollback-module {recorded_where(record)}' first, or use another --workdir",
            )
        record.setdefault("root", self.system.root)
        record.setdefault("host", self.system.host)
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
        entry = files.get(system_path)
        if entry is None:
            record["dirs"] = [*record.get("dirs", []), *self.missing_dirs(system_path)]
            existed = self.system.stat(system_path, follow_symlinks=False) is not None
            backup = (
                self.system.backup(system_path)
                if kind == "file" and is_file(self.system, system_path)
                else None
            )
            entry = {"created": not existed, "backup": backup, "kind": kind}
        produce()
        entry["sha256"] = sha256
        files[system_path] = entry
        self.save(record)

    def missing_dirs(self, system_path: str) -> list[str]:
        """System paths of the directories above ``system_path`` that do not exist yet."""
        missing = []
        parent = PurePosixPath(system_path).parent
        while str(parent) != "/" and self.system.stat(str(parent)) is None:
            missing.append(str(parent))
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


def run_command(system: System, command: list[str]) -> str:
    """Run a command on the system; raise with its output when it fails."""
    result = system.run(command, timeout=300)
    if result.returncode == 127 and b"not found" in result.stderr:
        raise ToolMissing(command[0], f"on {system.label}: {KMOD_HINT}")
    if not result.ok:
        output = (result.err or result.out).strip()
        raise EnvironmentFailure(
            f"'{' '.join(command)}' failed on {system.label} (exit {result.returncode}): {output}"
        )
    return result.out


def depmod_command(system: System, release: str) -> list[str]:
    return [system.which("depmod") or "depmod", "-b", system.host_path("/"), release]


def copy_module(system: System, ko: Path, system_path: str) -> None:
    system.makedirs(str(PurePosixPath(system_path).parent))
    system.copy_file_in(ko, system_path, mode=0o644)


def module_change(facts: InstallFacts, recorder: Recorder) -> Change | None:
    if facts.installed_same:
        return None
    system_path = module_dest(facts.release, facts.name)
    ko = facts.module.path
    data_sha = sha256_bytes(ko.read_bytes())

    def install() -> None:
        recorder.touch_file(system_path, lambda: copy_module(facts.system, ko, system_path), data_sha)
        recorder.add_release(facts.release, facts.name)

    return Change(f"install {ko.name} as {system_path} (vermagic {facts.module.vermagic.strip()})", install)


def depmod_change(facts: InstallFacts, recorder: Recorder, module_changed: bool) -> Change | None:
    if facts.registered and not module_changed:
        return None
    command = depmod_command(facts.system, facts.release)

    def depmod() -> None:
        run_command(facts.system, command)
        recorder.add_release(facts.release, facts.name)

    return Change(f"update the module index of {facts.release} (depmod)", depmod, command=command)


def boot_file_change(system: System, boot_file: BootFile, recorder: Recorder) -> Change | None:
    path = boot_file.path
    if boot_file.link_to:
        if system.readlink(path) == boot_file.link_to:
            return None

        def link() -> None:
            def make() -> None:
                system.makedirs(str(PurePosixPath(path).parent))
                system.symlink(boot_file.link_to, path)

            recorder.touch_file(path, make, f"link:{boot_file.link_to}", kind="link")

        return Change(f"enable at boot: {path} -> {boot_file.link_to}", link)
    change = system_file_edit(system, path, boot_file.text, f"write {path}", mode=boot_file.mode)
    if change is None:
        found = system.stat(path)
        if found is not None and found.kind == "file" and (found.mode & 0o777) != boot_file.mode:
            return Change(f"chmod {boot_file.mode:o} {path}", lambda: system.set_mode(path, boot_file.mode))
        return None
    write = change.action
    sha = sha256_bytes(boot_file.text.encode())

    def write_with_mode() -> None:
        system.makedirs(str(PurePosixPath(path).parent))
        write()
        system.set_mode(path, boot_file.mode)

    def recorded_write() -> None:
        recorder.touch_file(path, write_with_mode, sha)

    change.action = recorded_write
    return change


def load_change(facts: InstallFacts, recorder: Recorder) -> Change | None:
    if not facts.may_load or facts.loaded:
        return None
    command = [facts.system.which("modprobe") or "modprobe", facts.name]

    def load() -> None:
        run_command(facts.system, command)
        recorder.mark_loaded()

    return Change(f"load {facts.name} into the running kernel", load, command=command)


def plan_install(facts: InstallFacts, recorder: Recorder) -> Plan:
    """The changes that make the root load ``facts.module`` now and at boot."""
    plan = Plan("install-module")
    copy = module_change(facts, recorder)
    plan.add(copy)
    plan.add(depmod_change(facts, recorder, module_changed=copy is not None))
    for boot_file in facts.boot:
        plan.add(boot_file_change(facts.system, boot_file, recorder))
    plan.add(load_change(facts, recorder))
    return plan


def confirm_loaded(facts: InstallFacts, console: Console) -> bool | None:
    """After install: is the module loaded (None: not this root's running kernel)?"""
    if not facts.may_load:
        return None
    loaded = facts.name in (read_loaded_modules(facts.system) or [])
    if not loaded:
        raise EnvironmentFailure(
            f"modprobe {facts.name} returned but {facts.name} is not in /proc/modules",
            "look at 'dmesg | tail' for the kernel's reason",
        )
    if facts.name == "toa":
        log = read_kernel_log(facts.system)
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
