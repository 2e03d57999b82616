"""install-kernel and grub against sandbox roots shaped like CentOS 6.

The kernel installed is the sample tree built by ``invoke build``'s code (once per
session); the root's own ``/sbin/installkernel`` behaves like CentOS 6's.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from centos6_root import GRUB, OLDER, RUNNING, Sandbox, centos6_root, grub_conf, snapshot
from conftest import PROJECT_DIR

from toa_kernel.boot import grubconf, grubstep, preflight
from toa_kernel.boot.kernelfiles import (
    CommandLog,
    KernelFiles,
    check_installed,
    kernel_install_command,
    modules_install_command,
    root_installkernel,
)
from toa_kernel.boot.preflight import PreflightFailed
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.fileops import backups_of
from toa_kernel.core.state import Workdir
from toa_kernel.source.loopback import serve_directory
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root


def unchanged(sandbox: Sandbox, action) -> ToaError:
    """Run ``action``, expect a ToaError, and check that nothing under the root changed."""
    before = snapshot(sandbox.root.base)
    manifest = sandbox.workdir.load_manifest()
    with pytest.raises(ToaError) as caught:
        action()
    assert snapshot(sandbox.root.base) == before
    assert sandbox.workdir.load_manifest() == manifest
    return caught.value


def problems_of(error: ToaError) -> str:
    return error.render()


# --- a full install --------------------------------------------------------------------


@pytest.mark.slow
def test_install_puts_kernel_modules_hooks_and_default_entry_in_the_root(sandbox):
    host_boot = sorted(os.listdir("/boot")) if os.path.isdir("/boot") else None
    original = sandbox.path(GRUB).read_text()
    report = sandbox.install()
    release = sandbox.release
    files = KernelFiles(sandbox.system, release)
    for path in (files.vmlinuz, files.system_map, files.initramfs):
        assert sandbox.path(path).is_file(), path
    assert files.toa_modules() and files.dep_knows_toa()
    built = preflight.build_artifacts(sandbox.workdir)
    assert sandbox.path(files.vmlinuz).read_bytes() == built.bzimage.read_bytes()
    assert not sandbox.path(files.stage).exists()  # the staging directory on the system is gone
    assert not sandbox.path(f"/lib/modules/{release}/build").is_symlink()  # no link to this machine's tree
    log = sandbox.path("/var/log/installkernel.log").read_text()
    assert f"installkernel {release} " in log and log.rstrip().endswith(str(sandbox.path("/boot")))
    config = sandbox.grub_config()
    entry = config.entries[0]
    assert entry.release == release and entry.kernel_args.count("nohz=off") == 1
    assert (config.default, config.fallback) == (0, 1)
    assert config.entries[1].release == RUNNING
    assert sandbox.path("/etc/grub.conf").is_symlink()
    assert oct(sandbox.path(GRUB).stat().st_mode & 0o777) == "0o600"
    backup = sandbox.path(report.grub_backup)
    assert backup.read_text() == original and oct(backup.stat().st_mode & 0o777) == "0o600"
    assert report.hooks == ["/etc/sysconfig/modules/toa.modules", "/etc/cron.d/toa"]
    record = sandbox.workdir.section("install")
    assert record["status"] == "ok" and record["grub"]["backup"] == report.grub_backup
    assert record["grub"]["previous_entry"]["kernel"] == f"/vmlinuz-{RUNNING}"
    assert f"/boot/vmlinuz-{release}" in record["files_added"]
    assert (sorted(os.listdir("/boot")) if os.path.isdir("/boot") else None) == host_boot


@pytest.mark.slow
def test_second_install_changes_nothing(sandbox):
    sandbox.install()
    before = snapshot(sandbox.root.base)
    report = sandbox.install()
    assert report.changes == []
    assert snapshot(sandbox.root.base) == before
    assert "nothing to do" in sandbox.output.getvalue()


def test_dry_run_prints_commands_and_diffs_and_writes_nothing(sandbox):
    before = snapshot(sandbox.root.base)
    report = sandbox.install(dry_run=True)
    assert snapshot(sandbox.root.base) == before
    assert "install" not in sandbox.workdir.load_manifest()
    text = sandbox.output.getvalue()
    assert "$ make -C" in text and "modules_install" in text
    assert "+++ b/boot/grub/grub.conf" in text and "nohz=off" in text
    assert "+++ b/etc/cron.d/toa" in text
    assert report.dry_run and len(report.changes) == 5


@pytest.mark.slow
def test_without_installkernel_the_kernel_is_copied_and_an_entry_added(tmp_path, build_section, node):
    sandbox = Sandbox(tmp_path, build_section, node, installkernel=False)
    error = unchanged(sandbox, sandbox.install)
    assert "--no-initramfs" in problems_of(error)
    report = sandbox.install(initramfs=False)
    files = KernelFiles(sandbox.system, sandbox.release)
    assert sandbox.path(files.vmlinuz).is_file() and sandbox.path(files.config).is_file()
    assert not sandbox.path(files.initramfs).exists()
    entry = sandbox.grub_config().entries[0]
    assert entry.release == sandbox.release and entry.initrd is None
    assert any("no initramfs" in note for note in report.notes)
    assert sandbox.install(initramfs=False).changes == []


@pytest.mark.slow
def test_one_partition_root_gets_boot_relative_paths(tmp_path, build_section, node):
    sandbox = Sandbox(tmp_path, build_section, node, separate_boot=False, installkernel=False)
    sandbox.install(initramfs=False)
    assert sandbox.grub_config().entries[0].kernel == f"/boot/vmlinuz-{sandbox.release}"


@pytest.mark.slow
def test_rc_local_startup_and_extra_kernel_arguments(sandbox):
    sandbox.install(startup="rc.local", kernel_args="elevator=deadline")
    assert "toa-kernel" in sandbox.path("/etc/rc.d/rc.local").read_text()
    assert not sandbox.path("/etc/sysconfig/modules/toa.modules").exists()
    args = sandbox.grub_config().entries[0].kernel_args
    assert args[-2:] == ["nohz=off", "elevator=deadline"]


@pytest.mark.slow
def test_modules_dep_without_toa_is_repaired_with_depmod(sandbox, tmp_path):
    sandbox.install()
    files = KernelFiles(sandbox.system, sandbox.release)
    sandbox.path(files.modules_dep).write_text("")
    artifacts = preflight.build_artifacts(sandbox.workdir)
    notes = check_installed(files, artifacts, True, CommandLog(tmp_path / "depmod.log"))
    assert files.dep_knows_toa() and any("depmod" in note for note in notes)
    assert f"on {sandbox.system.label}" in (tmp_path / "depmod.log").read_text()


# --- preflight: every failure stops before anything is written ---------------------------


def test_no_build_recorded(sandbox):
    sandbox.workdir.update_manifest("build", None)
    error = unchanged(sandbox, sandbox.install)
    assert isinstance(error, UserError) and "invoke fetch build" in error.fix


def test_failed_build(sandbox, build_section):
    sandbox.workdir.update_manifest("build", {**build_section, "status": "failed"})
    assert "did not succeed" in unchanged(sandbox, sandbox.install).message


def test_other_release_than_built(sandbox):
    error = unchanged(sandbox, lambda: sandbox.install(release="2.6.32-other"))
    assert "--release" in error.fix


def test_missing_artifact(sandbox, build_section, tmp_path):
    sandbox.workdir.update_manifest("build", {**build_section, "bzimage": str(tmp_path / "gone")})
    assert "missing" in unchanged(sandbox, sandbox.install).message


@pytest.mark.slow
def test_running_kernel_needs_force(sandbox):
    sandbox.path("/proc/sys/kernel/osrelease").write_text(sandbox.release + "\n")
    error = unchanged(sandbox, sandbox.install)
    assert isinstance(error, PreflightFailed) and "--force" in problems_of(error)
    assert sandbox.install(force=True).changes


def test_missing_grub_conf(sandbox):
    for path in ("/etc/grub.conf", "/boot/grub/menu.lst", GRUB):
        sandbox.path(path).unlink()
    assert "no GRUB legacy configuration" in problems_of(unchanged(sandbox, sandbox.install))


def test_read_only_grub_conf(sandbox):
    os.chmod(sandbox.path(GRUB), 0o444)
    text = problems_of(unchanged(sandbox, sandbox.install))
    assert "read-only (mode 0444)" in text and "chmod u+w" in text


def test_grub_conf_on_a_read_only_filesystem(sandbox):
    grub_dir = sandbox.path("/boot/grub")
    with mounted(grub_dir, "--bind", str(grub_dir)):
        assert run_mount("-o", "remount,ro,bind", str(grub_dir)) == 0
        assert "cannot be written" in problems_of(unchanged(sandbox, sandbox.install))


def test_no_entry_to_copy(sandbox):
    sandbox.path(GRUB).write_text("default=0\ntimeout=5\n")
    assert "no boot entries" in problems_of(unchanged(sandbox, sandbox.install))


def test_boot_partition_too_small(sandbox):
    boot = sandbox.path("/boot")
    saved = sandbox.root.base / "boot-saved"
    shutil.copytree(boot, saved, symlinks=True)
    with mounted(boot, "-t", "tmpfs", "-o", "size=512k", "tmpfs"):
        shutil.copytree(saved, boot, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(saved)
        error = unchanged(sandbox, sandbox.install)
        assert isinstance(error, PreflightFailed)
        assert any(isinstance(p, EnvironmentFailure) and "/boot" in p.message for p in error.problems)
        assert "MiB free" in problems_of(error)
        assert not sandbox.path(f"/lib/modules/{sandbox.release}").exists()


def test_several_problems_are_reported_together(sandbox):
    sandbox.path("/proc/sys/kernel/osrelease").write_text(sandbox.release + "\n")
    os.chmod(sandbox.path(GRUB), 0o400)
    shutil.rmtree(sandbox.path("/etc/cron.d"))
    error = unchanged(sandbox, sandbox.install)
    assert isinstance(error, PreflightFailed) and len(error.problems) == 3


def test_a_root_whose_boot_leads_outside_is_refused(sandbox, tmp_path):
    outside = tmp_path / "outside-boot"
    shutil.move(sandbox.path("/boot"), outside)
    sandbox.path("/boot").symlink_to(outside)
    before = snapshot(outside)
    error = unchanged(sandbox, sandbox.install)
    assert "leads out of it" in problems_of(error)
    assert snapshot(outside) == before


def test_live_root_needs_root_privileges():
    assert preflight.privileges(LocalSystem(Root(Path("/"))), euid=1000)
    assert not preflight.privileges(LocalSystem(Root(Path("/"))), euid=0)
    assert not preflight.privileges(LocalSystem(Root(Path("/tmp"))), euid=1000)


@pytest.mark.slow
def test_an_install_recorded_for_another_root_must_be_rolled_back_first(
    sandbox, tmp_path, build_section, node
):
    sandbox.install()
    other = Sandbox(tmp_path / "other", build_section, node)
    other.workdir = sandbox.workdir
    other.settings = other.settings.with_(workdir=sandbox.workdir.path)
    error = unchanged(other, other.install)
    assert f"invoke rollback {sandbox.system.flags}'" in error.fix


def test_kernel_arguments_come_from_grub_dir_and_the_flag(sandbox, tmp_path):
    assert grubstep.kernel_args(sandbox.settings) == ("nohz=off",)
    assert grubstep.kernel_args(sandbox.settings.with_(kernel_args="quiet nohz=on")) == ("nohz=on", "quiet")
    with pytest.raises(UserError):
        grubstep.kernel_args(sandbox.settings.with_(kernel_args="a#b"))
    (tmp_path / "grub").mkdir()
    (tmp_path / "grub" / "boot-entry").write_text("initrd = initrd.img\n")
    with pytest.raises(UserError):
        grubstep.boot_entry_policy(sandbox.settings.with_(grub_dir=tmp_path / "grub"))


# --- invoke grub --------------------------------------------------------------------------


def test_grub_alone_needs_the_kernel_in_boot(sandbox):
    assert "does not exist" in problems_of(unchanged(sandbox, sandbox.grub))


def test_grub_alone_edits_once_and_dry_run_shows_the_diff(sandbox):
    release = sandbox.release
    shutil.copy(sandbox.path(f"/boot/vmlinuz-{RUNNING}"), sandbox.path(f"/boot/vmlinuz-{release}"))
    before = snapshot(sandbox.root.base)
    sandbox.grub(dry_run=True)
    assert snapshot(sandbox.root.base) == before
    assert "+fallback=1" in sandbox.output.getvalue()
    report = sandbox.grub()
    config = sandbox.grub_config()
    assert config.entries[0].release == release and config.entries[0].initrd is None
    assert report.default_entry == 0 and report.fallback_entry == 1
    assert len(backups_of(sandbox.path(GRUB))) == 1
    assert sandbox.grub().changes == []
    assert len(backups_of(sandbox.path(GRUB))) == 1


def test_grub_alone_with_default_saved_uses_the_saved_entry(sandbox):
    release = sandbox.release
    sandbox.path(GRUB).write_text(grub_conf((RUNNING, OLDER)).replace("default=0", "default=saved"))
    sandbox.path("/boot/grub/default").write_text("1\n")
    shutil.copy(sandbox.path(f"/boot/vmlinuz-{RUNNING}"), sandbox.path(f"/boot/vmlinuz-{release}"))
    sandbox.grub()
    config = sandbox.grub_config()
    assert config.default == 0 and config.entries[config.fallback].release == OLDER


# --- killing the grub.conf write ------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from toa_kernel.boot.grubstep import GrubFile, guarded_write
    from toa_kernel.system.local import LocalSystem
    from toa_kernel.system.rootfs import Root

    root = LocalSystem(Root.of(sys.argv[1]))
    texts = [Path(sys.argv[2]).read_text(), Path(sys.argv[3]).read_text()]
    print("ready", flush=True)
    while True:
        grub = GrubFile.read(root)
        new = texts[1] if grub.text == texts[0] else texts[0]
        guarded_write(grub, new, "flip", []).action()
    """
)


def run_mount(*args: str) -> int:
    return subprocess.run(["mount", *args], capture_output=True).returncode


@contextlib.contextmanager
def mounted(target: Path, *args: str):
    """``mount ARGS TARGET`` for the block; skip the test where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None or run_mount(*args, str(target)) != 0:
        pytest.skip("mounting is not allowed here")
    try:
        yield target
    finally:
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.slow
def test_sigkill_during_grub_conf_writes_leaves_old_or_new_never_a_mix(sandbox, tmp_path):
    old = sandbox.path(GRUB).read_text()
    new = grubconf.edit_for_release(old, "2.6.32-toa").text
    (tmp_path / "old").write_text(old)
    (tmp_path / "new").write_text(new)
    rng = random.Random(4)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    for _ in range(40):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(sandbox.root.base),
                str(tmp_path / "old"),
                str(tmp_path / "new"),
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert sandbox.path(GRUB).read_text() in (old, new)
        assert sandbox.path("/etc/grub.conf").is_symlink()
        assert oct(sandbox.path(GRUB).stat().st_mode & 0o777) == "0o600"
        for backup in backups_of(sandbox.path(GRUB)):
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
        for temporary in sandbox.path("/boot/grub").glob(".grub.conf.*"):
            temporary.unlink()  # the killed writer's temporary file: never grub.conf itself


# --- the whole chain -----------------------------------------------------------------------


def invoke(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", *args]
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_fetch_build_install_rollback_chain_into_a_sandbox_root(tmp_path, sample_tarball, node):
    root = centos6_root(tmp_path / "root")
    where = node.flags(root)
    original = (root / "boot/grub/grub.conf").read_text()
    work = str(tmp_path / "work")
    with serve_directory(sample_tarball.parent) as base_url:
        fetched = invoke("fetch", "--url", base_url + sample_tarball.name, "--workdir", work, "--quiet")
    assert fetched.returncode == 0, fetched.stderr
    built = invoke("build", "--workdir", work, "--min-free-gib", "0.01", "--jobs", "2", "--quiet")
    assert built.returncode == 0, built.stderr + built.stdout
    release = Workdir(Path(work)).section("build")["release"]

    dry = invoke("install-kernel", "--workdir", work, *where, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "+++ b/boot/grub/grub.conf" in dry.stdout and (root / "boot/grub/grub.conf").read_text() == original
    )

    installed = invoke("install-kernel", "--workdir", work, *where, "--json")
    assert installed.returncode == 0, installed.stderr
    report = json.loads(installed.stdout)
    assert report["release"] == release and report["default_entry"] == 0 and report["fallback_entry"] == 1
    config = grubconf.parse((root / "boot/grub/grub.conf").read_text())
    assert config.entries[0].release == release and "nohz=off" in config.entries[0].kernel_args
    assert (root / f"lib/modules/{release}/modules.dep").read_text().count("toa.ko:") == 1

    again = invoke("install-kernel", "--workdir", work, *where, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == []

    elsewhere = [str(root / "nonexistent") if arg == str(root) else arg for arg in where]
    running = invoke("install-kernel", "--workdir", work, *elsewhere)
    assert running.returncode == 2 and "--root" in running.stderr

    rolled = invoke("rollback", "--workdir", work, *where, "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert (root / "boot/grub/grub.conf").read_text() == original
    assert (root / f"boot/vmlinuz-{release}").is_file()


def test_the_system_runs_its_own_installkernel_on_its_own_boot_never_the_hosts(sandbox, tmp_path):
    artifacts = preflight.build_artifacts(sandbox.workdir)
    stage = tmp_path / "stage"
    assert modules_install_command(artifacts, stage) == [
        "make", "-C", str(artifacts.tree), "modules_install", f"INSTALL_MOD_PATH={stage}"
    ]  # fmt: skip
    files = KernelFiles(sandbox.system, sandbox.release)
    command = kernel_install_command(files)
    assert command[0] == str(sandbox.path("/sbin/installkernel")) == root_installkernel(sandbox.system)
    assert command[1] == sandbox.release and command[-1] == str(sandbox.path("/boot"))
    assert command[2:4] == [
        str(sandbox.path(files.stage + "/vmlinuz")),
        str(sandbox.path(files.stage + "/System.map")),
    ]
    sandbox.path("/sbin/installkernel").chmod(0o644)  # not executable: not run
    assert kernel_install_command(files) is None
    sandbox.path("/sbin/installkernel").unlink()
    assert kernel_install_command(files) is None
    live = LocalSystem(Root(Path("/")))
    if root_installkernel(live) is not None:
        expected = live.resolve("/sbin/installkernel")  # /usr/sbin/... where /sbin is a link
        assert kernel_install_command(KernelFiles(live, sandbox.release))[0] == expected
