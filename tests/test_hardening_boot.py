"""Hardening of install-kernel, grub and rollback: grub.conf and hooks byte for byte,
hook files we did not write, the system lock, installs that fail half-way, and the
messages about grub.conf links and backups. Sandbox roots shaped like CentOS 6."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from centos6_root import GRUB, INSTALLKERNEL, RUNNING, Sandbox, centos6_root, snapshot
from cli_support import run_invoke
from conftest import PROJECT_DIR

from toa_kernel.boot import hooks as boothooks
from toa_kernel.boot.grubstep import GrubFile
from toa_kernel.boot.install import configure_grub
from toa_kernel.boot.rollback import rollback
from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.system.api import FileStat, System
from toa_kernel.system.rootfs import Root

CORPUS = Path(__file__).resolve().parent / "grub_corpus"
TOA = "2.6.32-toa"
ADMIN_CRON = b"# the administrator's own job\r\n*/5 * * * * root /usr/local/bin/check-toa\r\n"


def quiet() -> Console:
    return Console(stream=io.StringIO())


# --- 3. grub.conf round-trips byte for byte --------------------------------------------------


def grub_root(tmp_path: Path, data: bytes) -> tuple[Path, Settings]:
    """A CentOS 6 root whose grub.conf holds ``data``, with a vmlinuz for the TOA release."""
    root = centos6_root(tmp_path / "root")
    (root / "boot" / "grub" / "grub.conf").write_bytes(data)
    (root / "boot" / f"vmlinuz-{TOA}").write_bytes(b"kernel")
    settings = Settings.from_config(None, workdir=tmp_path / "work", root=root, project_dir=PROJECT_DIR)
    return root, settings


def grub_node(tmp_path: Path, data: bytes, node) -> tuple[Path, Settings, System]:
    """``grub_root`` reached as a System of the kind under test (locally or over SSH)."""
    root, settings = grub_root(tmp_path, data)
    return root, settings, node.open(root)


def physical_lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


@pytest.mark.parametrize(
    "data",
    [
        (CORPUS / "crlf.conf").read_bytes(),
        (CORPUS / "centos6-boot-partition.conf").read_bytes().rstrip(b"\n"),  # no final newline
        (CORPUS / "centos6-boot-partition.conf").read_bytes().replace(b"# grub.conf", b"# caf\xe9 grub.conf"),
    ],
    ids=["crlf", "no-final-newline", "latin-1-comment"],
)
def test_grub_conf_edit_changes_only_its_lines_and_rollback_gives_the_bytes_back(tmp_path, data, node):
    root, settings, system = grub_node(tmp_path, data, node)
    conf = root / "boot" / "grub" / "grub.conf"
    configure_grub(settings, TOA, console=quiet(), system=system)
    edited = conf.read_bytes()
    removed = Counter(physical_lines(data)) - Counter(physical_lines(edited))
    assert sum(removed.values()) <= 2  # default= (and fallback=) changed; every other line kept whole
    new = physical_lines(edited)
    if b"\r\n" in data:
        assert all(line.endswith(b"\r\n") for line in new)
    rollback(settings, console=quiet(), system=system)
    assert conf.read_bytes() == data


def test_the_diff_a_dry_run_shows_is_what_the_write_changes(tmp_path, node):
    data = (CORPUS / "crlf.conf").read_bytes()
    root, settings, system = grub_node(tmp_path, data, node)
    output = io.StringIO()
    configure_grub(settings, TOA, dry_run=True, console=Console(stream=output), system=system)
    changed_in_diff = [line for line in output.getvalue().splitlines() if line.strip().startswith(("+", "-"))]
    configure_grub(settings, TOA, console=quiet(), system=system)
    edited = (root / "boot" / "grub" / "grub.conf").read_bytes()
    old, new = Counter(physical_lines(data)), Counter(physical_lines(edited))
    changed = sum((old - new).values()) + sum((new - old).values())
    assert changed == len(changed_in_diff) - 2  # the ---/+++ header lines aside


# --- 12. messages about grub.conf links and backups ---------------------------------------------


def test_a_dangling_grub_conf_link_is_called_dangling(tmp_path, node):
    root = centos6_root(tmp_path / "root")
    (root / "boot" / "grub" / "grub.conf").unlink()
    with pytest.raises(UserError) as caught:
        GrubFile.read(node.open(root))
    assert (
        "dangling symbolic link" in caught.value.message and "../boot/grub/grub.conf" in caught.value.message
    )


def test_a_grub_conf_link_loop_has_a_fix(tmp_path, node):
    root = centos6_root(tmp_path / "root")
    (root / "boot" / "grub" / "grub.conf").unlink()
    (root / "boot" / "grub" / "grub.conf").symlink_to("/etc/grub.conf")
    with pytest.raises(UserError) as caught:
        GrubFile.read(node.open(root))
    assert "loop" in caught.value.message
    assert "ln" in caught.value.fix or "link" in caught.value.fix


def test_the_grub_summary_names_only_a_backup_that_exists(tmp_path):
    root, settings = grub_root(tmp_path, (CORPUS / "centos6-boot-partition.conf").read_bytes())
    first = configure_grub(settings, TOA, console=quiet())
    (root / first.grub_backup.lstrip("/")).unlink()
    time.sleep(1.05)  # backups are named by the second: the next one gets another name
    conf = root / "boot" / "grub" / "grub.conf"
    conf.write_bytes(conf.read_bytes().replace(b"default=0", b"default=1"))
    again = configure_grub(settings, TOA, console=quiet())
    assert again.grub_backup != first.grub_backup
    assert again.grub_backup is None or (root / again.grub_backup.lstrip("/")).is_file()
    assert any(first.grub_backup in note and "gone" in note for note in again.notes)


def test_a_corrupt_manifest_is_explained_without_advising_to_delete_the_install_record(tmp_path):
    work = Workdir(tmp_path).ensure()
    work.manifest_path.write_text('{"install": {"release": "2.6.32-toa"')
    with pytest.raises(UserError) as caught:
        work.load_manifest()
    assert "rollback" in caught.value.fix and not caught.value.fix.startswith("remove")


# --- 2. hook files we did not write --------------------------------------------------------


@pytest.fixture
def admin_root(tmp_path: Path, node) -> System:
    """A CentOS 6 root whose /etc/cron.d/toa is the administrator's (mode 0640, uid 4242)."""
    root = Root.of(centos6_root(tmp_path / "root"))
    cron = root.path(CRON_FILE)
    cron.write_bytes(ADMIN_CRON)
    os.chmod(cron, 0o640)
    os.chown(cron, 4242, 4343)
    return node.open(root.base)


def test_a_hook_file_not_ours_is_refused_with_a_take_over_flag_named(admin_root):
    problems = boothooks.problems(admin_root, "modules")
    assert len(problems) == 1
    assert f"{CRON_FILE} exists and was not written by toa-kernel" in problems[0].message
    assert "--take-over-hooks" in problems[0].fix
    assert boothooks.problems(admin_root, "modules", take_over=True) == []


def test_a_taken_over_hook_comes_back_with_its_bytes_mode_and_owner(admin_root):
    root = Root.of(admin_root.root)
    cron = root.path(CRON_FILE)
    taken: dict = {}

    def remember(system_path: str, backup: str, st: FileStat) -> None:
        taken[system_path] = {"backup": backup, "mode": st.mode, "uid": st.uid, "gid": st.gid}

    boothooks.plan_install(admin_root, TOA, "modules", on_backup=remember).apply(False, echo=lambda _: None)
    assert boothooks.is_ours(cron.read_text())
    backup = root.path(taken[CRON_FILE]["backup"])
    assert backup.name.startswith(".toa.toa-backup-")  # cron ignores dot files in cron.d
    boothooks.plan_remove(admin_root, taken).apply(False, echo=lambda _: None)
    st = cron.stat()
    assert cron.read_bytes() == ADMIN_CRON
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 4242, 4343)
    assert not root.path(MODULES_SCRIPT).exists()  # that one we created: it is gone
    assert not boothooks.plan_remove(admin_root, taken)


def test_install_kernel_refuses_a_hook_not_ours_and_changes_nothing(sandbox):
    cron = sandbox.path(CRON_FILE)
    cron.write_bytes(ADMIN_CRON)
    before = snapshot(sandbox.root.base)
    with pytest.raises(ToaError) as caught:
        sandbox.install()
    assert "--take-over-hooks" in caught.value.render()
    assert snapshot(sandbox.root.base) == before


@pytest.mark.slow
def test_install_taking_over_and_rollback_leave_the_administrators_file_as_it_was(sandbox):
    cron = sandbox.path(CRON_FILE)
    cron.write_bytes(ADMIN_CRON)
    os.chmod(cron, 0o600)
    os.chown(cron, 4242, 0)
    sandbox.install(take_over_hooks=True)
    assert boothooks.is_ours(cron.read_text())
    sandbox.rollback()
    st = cron.stat()
    assert cron.read_bytes() == ADMIN_CRON and (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 4242)


# --- 4. the lock of the system -------------------------------------------------------------

HOLD_SYSTEM_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from toa_kernel.core.layout import SYSTEM_LOCK
    from toa_kernel.core.state import SystemLock
    from toa_kernel.system.rootfs import Root
    root = Root.of(sys.argv[1])
    with SystemLock(root.resolve(SYSTEM_LOCK), root.base):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_run_on_the_same_root_stops_whatever_its_work_directory(tmp_path, node):
    root, _ = grub_root(tmp_path, (CORPUS / "centos6-boot-partition.conf").read_bytes())
    where = node.flags(root)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SYSTEM_LOCK, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(root)
        done = run_invoke("grub", "--release", TOA, *where, "--workdir", str(tmp_path / "other-work"))
        assert done.returncode == 3, done.stderr
        assert "another toa-kernel run holds the lock" in done.stderr and str(holder.pid) in done.stderr
        assert ("on root@127.0.0.1" if node.remote else f"the lock of the system under {root}") in done.stderr
        assert snapshot(root) == before
    finally:
        holder.kill()
        holder.wait()
    done = run_invoke("grub", "--release", TOA, *where, "--workdir", str(tmp_path / "other-work"))
    assert done.returncode == 0, done.stderr
    assert (root / "var" / "lock" / "toa-kernel.lock").is_file()


LOGGED = 'echo "installkernel $*" >> "$ROOT/var/log/installkernel.log"\n'


@pytest.mark.slow
def test_two_install_kernel_processes_on_one_root_never_interleave(tmp_path, build_section, node):
    sandbox = Sandbox(tmp_path / "a", build_section, node)
    script = sandbox.path("/sbin/installkernel")
    text = script.read_text()
    assert LOGGED in text
    script.write_text(text.replace(LOGGED, LOGGED + "sleep 4\n", 1))  # holds the lock a while
    other = Workdir(tmp_path / "b" / "work").ensure()
    other.update_manifest("build", build_section)
    first = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(PROJECT_DIR), "install-kernel", *sandbox.flags,
         "--workdir", str(sandbox.workdir.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )  # fmt: skip
    try:
        log = sandbox.path("/var/log/installkernel.log")
        deadline = time.monotonic() + 60
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run_invoke("install-kernel", *sandbox.flags, "--workdir", str(other.path))
        assert second.returncode == 3, second.stderr
        assert "another toa-kernel run holds the lock" in second.stderr
        assert f"pid {first.pid}" in second.stderr
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert sandbox.grub_config().entries[0].release == sandbox.release
    assert "install" not in other.load_manifest()


# --- an install that fails half-way ----------------------------------------------------------

FAILING_INSTALLKERNEL = "#!/bin/sh\necho 'dracut: cannot make the initramfs' >&2\nexit 1\n"


@pytest.mark.slow
def test_a_failed_installkernel_names_what_it_left_and_rollback_removes_it(sandbox):
    script = sandbox.path("/sbin/installkernel")
    script.write_text(FAILING_INSTALLKERNEL)
    grub_before = sandbox.path(GRUB).read_bytes()
    with pytest.raises(EnvironmentFailure) as caught:
        sandbox.install()
    modules = f"/lib/modules/{sandbox.release}"
    assert f"left behind: {modules}" in caught.value.message
    assert "invoke rollback" in caught.value.fix and "invoke install-kernel" in caught.value.fix
    assert sandbox.path(GRUB).read_bytes() == grub_before and sandbox.path(modules).is_dir()
    report = sandbox.rollback()
    assert not sandbox.path(modules).exists()
    assert any(modules in change for change in report.changes)
    assert sandbox.path(GRUB).read_bytes() == grub_before
    assert sandbox.path(f"/lib/modules/{RUNNING}").is_dir()


# An installkernel that adds its grub.conf entry (grubby) but makes no initramfs (dracut failed
# quietly): installkernel succeeds, the install's next step (the check of what landed) fails.
ENTRY_WITHOUT_INITRAMFS = "\n".join(
    line for line in INSTALLKERNEL.splitlines() if "gzip -n" not in line and line != "# dracut"
)


@pytest.mark.slow
def test_rollback_restores_grub_conf_as_it_was_before_installkernel_added_its_entry(sandbox):
    script = sandbox.path("/sbin/installkernel")
    script.write_text(ENTRY_WITHOUT_INITRAMFS + "\n")
    grub_before = sandbox.path(GRUB).read_bytes()
    with pytest.raises(EnvironmentFailure, match="no initramfs"):
        sandbox.install()
    entries = [entry.release for entry in sandbox.grub_config().entries]
    assert entries[0] == sandbox.release and sandbox.grub_config().default == 1  # grubby's entry, old default
    report = sandbox.rollback()
    assert sandbox.path(GRUB).read_bytes() == grub_before
    assert not sandbox.path(f"/boot/vmlinuz-{sandbox.release}").exists()
    assert not sandbox.path(f"/lib/modules/{sandbox.release}").exists()
    assert not any("left as it is" in note for note in report.notes)
    before = snapshot(sandbox.root.base)
    assert sandbox.rollback().changes == [] and snapshot(sandbox.root.base) == before


# --- backups taken within one second --------------------------------------------------------------

SECOND = "20261122T043100Z"


@pytest.fixture
def one_second(monkeypatch):
    """Every backup named with the same second, as when steps follow each other at once."""
    from toa_kernel.core import fileops
    from toa_kernel.system import ssh

    monkeypatch.setattr(fileops, "timestamp", lambda: SECOND)
    monkeypatch.setattr(ssh, "timestamp", lambda: SECOND)


def test_an_install_and_a_second_edit_within_one_second_keep_both_backups(tmp_path, node, one_second):
    data = (CORPUS / "centos6-boot-partition.conf").read_bytes()
    root, settings, system = grub_node(tmp_path, data, node)
    conf = root / "boot" / "grub" / "grub.conf"
    first = configure_grub(settings, TOA, console=quiet(), system=system)
    installed = conf.read_bytes()
    configure_grub(settings, TOA, console=quiet(), trial=True, system=system)
    backups = system.backups_of(GRUB)
    assert len(backups) == 2 and all(SECOND in backup for backup in backups)
    assert [(root / b.lstrip("/")).read_bytes() for b in backups] == [data, installed]
    assert Workdir(tmp_path / "work").section("install")["grub"]["backup"] == first.grub_backup == backups[0]
    rollback(settings, console=quiet(), system=system)
    assert conf.read_bytes() == data


def test_backups_of_lists_the_backups_of_one_second_oldest_first(tmp_path, node, one_second):
    root = centos6_root(tmp_path / "root")
    system = node.open(root)
    conf = root / "boot" / "grub" / "grub.conf"
    for number in range(12):
        conf.write_bytes(b"version %d\n" % number)
        system.backup(GRUB)
    found = [(root / backup.lstrip("/")).read_bytes() for backup in system.backups_of(GRUB)]
    assert found == [b"version %d\n" % number for number in range(12)]
    if not node.remote:
        from toa_kernel.core.fileops import backups_of

        assert [path.read_bytes() for path in backups_of(conf)] == found
