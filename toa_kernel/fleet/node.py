"""One host of a rollout: preflight, ship + install, reboot, verify, rollback.

A ``Node`` talks to its host through a ``System`` (system/): an ``SshSystem`` for
a server (production), a ``LocalSystem`` for ``connection=local`` (this machine
under a root prefix). Everything the rollout does to the host is one of these
methods; the scheduler (fleet/rollout.py) only decides when.

Install, in an order that leaves a host that boots its old kernel at every
point until the last step:

1. ship: the bundle's tarball into ``/var/tmp/toa-kernel/bundle-ID/`` (written
   under a temporary name and renamed), then ``sha256sum`` ON THE HOST must
   give the bundle's sha256; a file already there with that sha256 is kept.
2. unpack: ``tar xzf`` into a fresh directory, renamed into place when whole.
3. modules: ``lib/modules/R`` copied in beside the live one and renamed into
   place; the host's own ``depmod`` makes its indexes.
4. kernel files: the host's own ``/sbin/installkernel R vmlinuz-R System.map-R
   /boot`` (new-kernel-pkg: the initramfs made by dracut for THAT host, and a
   grubby entry; grub.conf is backed up first), ``config-R`` beside them; the
   installed vmlinuz and System.map must have the bundle's sha256.
5. boot hooks and grub.conf: the same code as ``invoke install-kernel``
   (fleet/steps.py), which records what it did in the host's work directory
   for ``rollback``.

Every command goes to the host's ``rollout.log`` (never to the terminal), and
the host's system lock (``ROOT/var/lock/toa-kernel.lock``, held on the host) is
held while anything is changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from toa_kernel.boot.grubstep import boot_entry_policy, kernel_args
from toa_kernel.boot.preflight import SpaceNeed, free_space, with_margin
from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.layout import BOOT_DIR, GRUB_CONF, INSTALLKERNEL
from toa_kernel.core.settings import Settings
from toa_kernel.core.sshtarget import SshTarget
from toa_kernel.fleet import hostops, steps
from toa_kernel.fleet.bundle import Bundle
from toa_kernel.fleet.inventory import Host
from toa_kernel.system.api import RunResult, System
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.ssh import SshSystem
from toa_kernel.system.sshconnect import SshOptions
from toa_kernel.verify.checks import Expectation
from toa_kernel.verify.run import Report

SYSTEM_LOCK_NAME = "toa-kernel.lock"
Progress = Callable[[int], None]


class RebootTimeout(EnvironmentFailure):
    """The host did not come back with a new boot in time."""


class Interrupted(ToaError):
    """The rollout was told to stop (Ctrl-C): the host stays where it is, to be resumed."""


class LogConsole(Console):
    """A Console that writes everything (warnings too) to the host's log file."""

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(log, "a", buffering=1)  # noqa: SIM115 - closed by close()
        super().__init__(quiet=False, stream=self.handle)

    def warn(self, text: str) -> None:
        self.say(f"warning: {text}")

    def progress(self, total: int | None, desc: str, unit: str = "B", initial: int = 0) -> Any:
        return tqdm(total=total, disable=True)

    def close(self) -> None:
        self.handle.close()


class Node:
    """One host and the System that reaches it (opened lazily, reopened after a reboot)."""

    def __init__(self, host: Host, settings: Settings, workdir: Path) -> None:
        self.host = host
        self.settings = settings
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = LogConsole(self.workdir / "rollout.log")
        self._system: System | None = None

    # --- the connection ---------------------------------------------------------------------

    def options(self) -> SshOptions:
        """The SSH settings, with the login values the inventory gives this host."""
        return dataclasses.replace(
            SshOptions.from_settings(self.settings),
            key=self.host.key,
            legacy=self.host.legacy_ssh,
            sudo=self.host.sudo,
        )

    def connect(self) -> System:
        if self.host.is_local:
            return LocalSystem(Root.of(self.host.root))
        target = SshTarget(self.host.user, self.host.address, self.host.port)
        return SshSystem.connect(target, self.options(), self.host.root)

    @property
    def system(self) -> System:
        if self._system is None:
            self._system = self.connect()
            self.note(f"connected: {self._system.label}")
        return self._system

    def drop(self) -> None:
        """Close the connection (a reboot drops it anyway)."""
        if self._system is not None:
            with contextlib.suppress(Exception):
                self._system.close()
        self._system = None

    def close(self) -> None:
        self.drop()
        self.log.close()

    def note(self, text: str) -> None:
        self.log.say(f"[{time.strftime('%H:%M:%S')}] {text}")

    def run(self, argv: Sequence[str], check: bool = True, timeout: float | None = None) -> RunResult:
        """A command on the host, written to the host's log with its status and output."""
        self.note(f"$ {shlex.join(argv)}")
        result = self.system.run(argv, timeout=timeout)
        output = (result.out + result.err).strip()
        if output:
            self.log.say("  " + output.replace("\n", "\n  "))
        if result.returncode:
            self.note(f"  (exit {result.returncode})")
        return result.check(self.system.label) if check else result

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self.system.lock(SYSTEM_LOCK_NAME):
            yield

    # --- facts ----------------------------------------------------------------------------

    def boot_id(self) -> str | None:
        return hostops.boot_id(self.system)

    def running_release(self) -> str | None:
        return hostops.running_release(self.system)

    # --- preflight ------------------------------------------------------------------------

    def preflight(self, bundle: Bundle, installing: bool) -> list[ToaError]:
        """Everything checked before anything is written on any host (problems, not raised).

        ``installing``: the host still needs the install (not merely a reboot or a verify).
        """
        try:
            system = self.system
        except ToaError as exc:
            return [exc]
        problems: list[ToaError] = []
        missing = hostops.missing_tools(system)
        if missing:
            problems.append(
                EnvironmentFailure(
                    f"{system.label} lacks {', '.join(missing)}",
                    "install them on the server (coreutils, tar, gzip are in every CentOS 6 base install)",
                )
            )
        arch = hostops.machine(system)
        if not hostops.arch_matches(bundle.arch, arch):
            problems.append(
                UserError(
                    f"{self.host.name} is {arch}, the bundle's kernel is for {bundle.arch}",
                    "leave this host out (--hosts) or build a kernel for its architecture",
                )
            )
        if hostops.boot_id(system) is None:
            problems.append(
                EnvironmentFailure(
                    f"{system.label} has no {hostops.PROC_BOOT_ID}: a reboot could not be told from none",
                    "check that /proc is mounted (and, for a root prefix, that it holds proc/)",
                )
            )
        problems += self.reboot_problems()
        if installing:
            problems += self.install_problems(bundle)
        return problems

    def reboot_problems(self) -> list[ToaError]:
        if self.settings.reboot_hook or self.host.root == "/":
            return []
        return [
            UserError(
                f"{self.host.name} is a root prefix ({self.host.root}) on {self.host.address}: the reboot "
                f"command would reboot that whole machine",
                "set reboot_hook (INVOKE_TOA_REBOOT_HOOK) to what reboots such a root, e.g. the boot lab: "
                "'python3 -m toa_kernel.lab.reboot'",
            )
        ]

    def install_problems(self, bundle: Bundle) -> list[ToaError]:
        system = self.system
        problems: list[ToaError] = []
        running = hostops.running_release(system)
        if running == bundle.release:
            problems.append(
                UserError(
                    f"{bundle.release} is already the running kernel of {self.host.name} (installed before "
                    "this rollout?): reinstalling replaces the modules it uses now",
                    "leave it out (--hosts) and check it with 'invoke fleet-verify'",
                )
            )
        args = kernel_args(self.settings)
        initrd = boot_entry_policy(self.settings).initrd_name(bundle.release)
        _path, grub_problem = hostops.grub_conf_problem(system, bundle.release, args, initrd)
        if grub_problem is not None:
            problems.append(grub_problem)
        installkernel = hostops.installkernel_problem(system)
        if installkernel is not None:
            problems.append(installkernel)
        problems += free_space(system, self.space_needs(bundle))
        return problems

    def space_needs(self, bundle: Bundle) -> list[hostops.SpaceNeed]:
        system = self.system
        vmlinuz = int((bundle.member(bundle.vmlinuz) or {}).get("size") or 0)
        boot = vmlinuz  # vmlinux-R stays in the staging directory
        for path in (bundle.system_map, bundle.config):
            boot += int((bundle.member(path) or {}).get("size") or 0)
        grub = system.stat(GRUB_CONF)
        boot += hostops.initramfs_estimate(system, vmlinuz) + 3 * (grub.size if grub else 0)
        modules = bundle.bytes_under(bundle.modules_dir)
        staging = bundle.size + sum(int(info.get("size") or 0) for info in bundle.files.values())
        return [
            SpaceNeed(BOOT_DIR, BOOT_DIR, with_margin(boot)),
            SpaceNeed(hostops.modules_dir(bundle.release), "/lib/modules", with_margin(modules)),
            SpaceNeed(hostops.STAGING, hostops.STAGING, with_margin(staging)),
        ]

    # --- install --------------------------------------------------------------------------

    def staging(self, bundle: Bundle) -> str:
        return f"{hostops.STAGING}/bundle-{bundle.id}"

    def ship(self, bundle: Bundle, progress: Progress | None = None) -> str:
        """The tarball on the host, its sha256 checked THERE; returns its system path."""
        system = self.system
        stage = self.staging(bundle)
        remote = f"{stage}/{bundle.tarball_name}"
        system.makedirs(stage, mode=0o700)
        if hostops.sha256(system, remote) == bundle.sha256:
            self.note(f"{remote} is already there with sha256 {bundle.id}...: not sent again")
            return remote
        self.note(f"sending {bundle.tarball} ({bundle.size} bytes) to {remote}")
        system.copy_file_in(bundle.tarball, remote, mode=0o600, progress=progress)
        arrived = hostops.sha256(system, remote)
        if arrived != bundle.sha256:
            system.remove(remote)
            raise EnvironmentFailure(
                f"the bundle arrived on {self.host.name} with sha256 {arrived}, not {bundle.sha256}",
                "check the network and the disk of that host, then run the rollout again",
            )
        self.note(f"sha256sum on the host: {arrived} (the bundle's)")
        return remote

    def unpack(self, bundle: Bundle, tarball: str) -> str:
        """The bundle's tree on the host (unpacked whole, or not at all); returns its system path."""
        system = self.system
        tree = f"{self.staging(bundle)}/tree"
        if system.stat(tree) is not None:
            return tree
        partial = f"{self.staging(bundle)}/tree.partial"
        system.remove(partial, recursive=True)
        system.makedirs(partial, mode=0o700)
        self.run(
            ["tar", "xzf", system.host_path(tarball), "-C", system.host_path(partial), "--no-same-owner"]
        )
        wanted = [bundle.vmlinuz, bundle.system_map, bundle.config]
        found = hostops.sha256_many(system, [f"{partial}{path}" for path in wanted])
        for path in wanted:
            if found.get(f"{partial}{path}") != bundle.sha_of(path):
                raise EnvironmentFailure(
                    f"{path} unpacked on {self.host.name} differs from the bundle's record",
                    "check the host's disk; then run the rollout again",
                )
        self.run(["mv", system.host_path(partial), system.host_path(tree)])
        return tree

    def modules_ready(self, bundle: Bundle) -> bool:
        toa = bundle.toa_module()
        if toa is None:
            return False
        return hostops.sha256(self.system, toa) == bundle.sha_of(toa) and hostops.dep_lists_toa(
            self.system, bundle.release
        )

    def install_modules(self, bundle: Bundle, tree: str) -> None:
        """``lib/modules/R`` put in place whole (copied beside it, renamed), then depmod."""
        system = self.system
        if self.modules_ready(bundle):
            self.note(f"{bundle.modules_dir}: toa.ko is the bundle's and modules.dep lists it")
            return
        target = bundle.modules_dir
        fresh = f"/lib/modules/.{bundle.release}.toa-new"
        old = f"/lib/modules/.{bundle.release}.toa-old"
        system.makedirs("/lib/modules")
        system.remove(fresh, recursive=True)
        self.run(["cp", "-R", "-P", system.host_path(f"{tree}{target}"), system.host_path(fresh)])
        if system.stat(target, follow_symlinks=False) is not None:
            system.remove(old, recursive=True)
            self.run(["mv", system.host_path(target), system.host_path(old)])
        self.run(["mv", system.host_path(fresh), system.host_path(target)])
        system.remove(old, recursive=True)
        self.note(f"$ depmod -a -b {system.host_path('/')} {bundle.release}")
        hostops.run_depmod(system, bundle.release, system.host_path(f"{tree}{bundle.system_map}"))
        if not hostops.dep_lists_toa(system, bundle.release):
            raise EnvironmentFailure(
                f"{target}/modules.dep on {self.host.name} does not list toa.ko after depmod",
                f"run 'depmod -a {bundle.release}' on the host and read its errors",
            )

    def kernel_ready(self, bundle: Bundle) -> bool:
        """vmlinuz-R and System.map-R are the bundle's and an initramfs-R exists (installkernel ran)."""
        system = self.system
        found = hostops.sha256_many(system, [bundle.vmlinuz, bundle.system_map])
        same = all(found.get(p) == bundle.sha_of(p) for p in (bundle.vmlinuz, bundle.system_map))
        return same and system.stat(f"{BOOT_DIR}/initramfs-{bundle.release}.img") is not None

    def installkernel_argv(self, bundle: Bundle, tree: str) -> list[str]:
        """``installkernel R vmlinuz-R System.map-R /boot`` (arch/x86/boot/install.sh's four arguments)."""
        system = self.system
        return [
            system.host_path(INSTALLKERNEL),
            bundle.release,
            system.host_path(f"{tree}{bundle.vmlinuz}"),
            system.host_path(f"{tree}{bundle.system_map}"),
            system.host_path(BOOT_DIR),
        ]

    def install_kernel_files(self, bundle: Bundle, tree: str, before: Callable[[], object]) -> None:
        """The host's own installkernel (initramfs and entry); config-R beside the kernel."""
        system = self.system
        if self.kernel_ready(bundle):
            self.note(f"{BOOT_DIR}: vmlinuz-{bundle.release}, System.map and initramfs are in place")
        else:
            before()
            self.run(self.installkernel_argv(bundle, tree), timeout=1800)
        if hostops.sha256(system, bundle.config) != bundle.sha_of(bundle.config):
            config = system.host_path(bundle.config)
            self.run(["cp", system.host_path(f"{tree}{bundle.config}"), config + ".toa-tmp"])
            self.run(["mv", "-f", config + ".toa-tmp", config])
        self.check_kernel_files(bundle)

    def check_kernel_files(self, bundle: Bundle) -> None:
        system = self.system
        found = hostops.sha256_many(system, [bundle.vmlinuz, bundle.system_map])
        for path in (bundle.vmlinuz, bundle.system_map):
            if found.get(path) != bundle.sha_of(path):
                raise EnvironmentFailure(
                    f"{path} on {self.host.name} is not the bundle's after installkernel "
                    f"(sha256 {found.get(path) or 'missing'})",
                    f"read {self.workdir / 'rollout.log'}; the old kernel is still the default",
                )
        initramfs = f"{BOOT_DIR}/initramfs-{bundle.release}.img"
        if system.stat(initramfs) is None:
            raise EnvironmentFailure(
                f"installkernel made no {initramfs} on {self.host.name}",
                f"run 'dracut -f {initramfs} {bundle.release}' there (see {self.workdir / 'rollout.log'})",
            )

    def install(self, bundle: Bundle, progress: Progress | None = None) -> dict[str, Any]:
        """Ship, check, unpack, install, then the boot steps of install-kernel. Idempotent."""
        tarball = self.ship(bundle, progress)
        with self.locked():
            tree = self.unpack(bundle, tarball)
            books = steps.InstallBooks(self.system, self.settings, self.workdir, bundle.release)
            try:
                self.install_modules(bundle, tree)
                self.install_kernel_files(bundle, tree, books.before_installkernel)
            finally:  # what was added is recorded even when a step failed: rollback removes it
                books.files_added()
            report = steps.configure_boot(self.system, self.settings, self.workdir, bundle, self.log)
        self.system.remove(self.staging(bundle), recursive=True)
        self.note(f"installed {bundle.release}: {len(report.changes)} changes ({'; '.join(report.changes)})")
        return report.as_dict()

    def preview(self, bundle: Bundle, console: Console) -> None:
        """``--dry-run``: what the install would do on this host (commands, diffs); nothing written."""
        system = self.system
        stage = self.staging(bundle)
        tree = f"{stage}/tree"
        console.say(f"{self.host.name} ({self.host.where}):")
        console.say(f"  would send {bundle.tarball} to {stage}/ and check its sha256 there ({bundle.id}...)")
        console.say(
            f"    $ tar xzf {system.host_path(stage)}/{bundle.tarball_name} -C {system.host_path(tree)}"
        )
        if not self.modules_ready(bundle):
            console.say(
                f"  would put {bundle.modules_dir} in place and run depmod -a -b {system.host_path('/')}"
            )
        if not self.kernel_ready(bundle):
            argv = self.installkernel_argv(bundle, tree)
            console.say(
                f"  would run the host's installkernel (initramfs, boot entry):\n    $ {shlex.join(argv)}"
            )
        steps.preview_boot(system, self.settings, bundle, console)
        console.say(
            "  (installkernel adds its own grub.conf entry first; the diff is for grub.conf as it is now)"
        )
        reboot = self.settings.reboot_hook or self.settings.reboot_command
        console.say(f"  would reboot with: {reboot}; then wait for a new boot id and verify")

    # --- reboot ---------------------------------------------------------------------------

    def hook_env(self, phase: str) -> dict[str, str]:
        return {
            **os.environ,
            "TOA_FLEET_HOST": self.host.name,
            "TOA_FLEET_ADDRESS": self.host.address,
            "TOA_FLEET_PORT": str(self.host.port),
            "TOA_FLEET_USER": self.host.user,
            "TOA_FLEET_ROOT": self.host.root,
            "TOA_FLEET_WORKDIR": str(self.workdir),
            "TOA_FLEET_PHASE": phase,
        }

    def request_reboot(self, phase: str) -> None:
        """Send the reboot: the reboot hook here, or the reboot command on the host (detached)."""
        hook = self.settings.reboot_hook
        if hook:
            argv = shlex.split(hook)
            self.note(f"reboot hook: {shlex.join(argv)} (TOA_FLEET_HOST={self.host.name}, phase {phase})")
            with open(self.workdir / "rollout.log", "ab") as log:
                done = subprocess.run(argv, env=self.hook_env(phase), stdout=log, stderr=log, check=False)
            if done.returncode != 0:
                raise EnvironmentFailure(
                    f"the reboot hook failed for {self.host.name} (exit {done.returncode})",
                    f"read {self.workdir / 'rollout.log'}",
                )
            self.drop()
            return
        command = shlex.split(self.settings.reboot_command)
        detached = '(sleep 2; "$@") </dev/null >/dev/null 2>&1 &'
        self.run(["sh", "-c", detached, "toa-reboot", *command])
        self.drop()

    def wait_for_new_boot(
        self, before: str | None, deadline: float, timeout: float, stop: threading.Event | None = None
    ) -> str:
        """Poll until the host answers with a boot id other than ``before``; the new one.

        ``stop`` set (the rollout was interrupted) ends the wait with ``Interrupted``."""
        poll = min(5.0, max(0.5, timeout / 50))
        last_error = ""
        while True:
            if stop is not None and stop.is_set():
                raise Interrupted(f"{self.host.name}: stopped while waiting for it to come back")
            try:
                current = self.boot_id()
                if current and current != before:
                    self.note(f"back with a new boot: {current}")
                    return current
                last_error = f"still boot {current}"
            except ToaError as exc:
                last_error = exc.message
                self.drop()
            if time.time() >= deadline:
                raise RebootTimeout(
                    f"{self.host.name} did not come back with a new boot within {timeout:g} s ({last_error})",
                    "look at the server's console; raise boot_timeout (--boot-timeout) for slow servers",
                )
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)

    # --- verify and rollback --------------------------------------------------------------

    def verify(self, expect: Expectation, checks: str | None) -> Report:
        facts = steps.gather_facts(self.system, expect.release)
        return steps.judge_facts(facts, expect, checks)

    def rollback(self) -> dict[str, Any]:
        with self.locked():
            report = steps.roll_back(self.system, self.settings, self.workdir, self.log)
        self.note(f"rolled back: {'; '.join(report.changes) or 'nothing to change'}")
        return report.as_dict()
