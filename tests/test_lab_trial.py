"""Trial boots proven with the real GRUB legacy 0.97: one disk image booted several
times, keeping what GRUB writes on it (``/boot/grub/default``) between boots.

Scenarios (slow, lab), each on a CentOS 6 sandbox root after ``install-kernel --trial``
with ``panic=1``:

1. trial: boot 1 -> TOA entry; boot 2 (no commit) -> the old entry;
2. trial, commit (the real ``verify --commit`` code on boot 1's facts, written into
   the image): boot 2 -> TOA entry;
3. trial with a TOA kernel that panics at once (no usable initramfs, so no root):
   boot 1 panics and the machine reboots by itself, boot 2 -> old entry, in ONE
   power-on;
4. rollback of a trial: the old entry boots, grub.conf has its old bytes.

Fast tests cover splitting a console into boots and the image's file access.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from centos6_root import GRUB, RUNNING, Sandbox
from conftest import PROJECT_DIR, have
from lab_support import kernel_cache_dir

from toa_kernel.boot.grubconf import parse_saved_default, saved_default_text
from toa_kernel.boot.rollback import rollback
from toa_kernel.core.console import Console
from toa_kernel.lab import tools
from toa_kernel.lab.console import panic_reason, parse_console, split_boots
from toa_kernel.lab.image import lab_grub_conf, make_image
from toa_kernel.lab.kernel import chosen_kernel
from toa_kernel.lab.multiboot import MULTIBOOT_KERNEL_ARGS, LabDisk, last_boot_is_over, saved_entry
from toa_kernel.lab.qemu import qemu_command
from toa_kernel.verify.commit import commit

CONSOLES = Path(__file__).parent / "data" / "lab-console"
DEFAULT_FILE = "/boot/grub/default"
needs_lab = pytest.mark.skipif(
    not tools.lab_available(), reason="lab packages missing: " + tools.install_line(*tools.missing_packages())
)


def quiet(text: str) -> None:
    pass


# --- the console of a run that rebooted (captured from a real lab run) ------------------------------


def test_a_run_that_rebooted_after_a_panic_splits_into_two_boots():
    text = (CONSOLES / "trial-panic-reboot.log").read_text(errors="replace")
    first, second = split_boots(text)
    assert parse_console(first).tried == ["CentOS (2.6.32-toa)"] and not parse_console(first).guest_ran
    assert panic_reason(first) == "VFS: Unable to mount root fs on unknown-block(0,0)"
    assert parse_console(second).tried == [f"CentOS ({RUNNING})"] and parse_console(second).release == RUNNING
    assert panic_reason(second) is None
    assert not last_boot_is_over(text[: text.index("Rebooting in")]) and last_boot_is_over(text)


def test_a_run_without_reboot_is_one_boot():
    text = (CONSOLES / "default-entry.log").read_text(errors="replace")
    assert split_boots(text) == [text] and split_boots("") == [""]


def test_qemu_restarts_the_guest_only_when_asked():
    if not have("qemu-system-x86_64"):
        pytest.skip("qemu-system-x86 missing")
    assert "-no-reboot" in qemu_command(Path("disk.img"))
    assert "-no-reboot" not in qemu_command(Path("disk.img"), reboot=True)


def test_saved_entry_reads_what_grub_leaves():
    assert saved_entry(saved_default_text(0)) == "0" and saved_entry("1\0\n\n\n") == "1"
    assert saved_entry(None) is None


@pytest.mark.skipif(not have("sfdisk", "mke2fs", "debugfs"), reason="fdisk/e2fsprogs missing")
@pytest.mark.parametrize("boot_on_root", [False, True])
def test_files_inside_the_image_are_read_written_and_removed(tmp_path, boot_on_root):
    stage = tmp_path / "stage"
    grub = stage / ("boot/grub" if boot_on_root else "grub")
    grub.mkdir(parents=True)
    (grub / "grub.conf").write_text("default=0\n")
    image = tmp_path / "disk.img"
    disk = LabDisk(tmp_path, image, make_image(stage, image), boot_on_root)
    assert disk.read(GRUB) == b"default=0\n" and disk.read(DEFAULT_FILE) is None
    data = b"1\0\n\n\n\n\n\n\n\n#\n"
    disk.write(DEFAULT_FILE, data)
    assert disk.read(DEFAULT_FILE) == data
    disk.write(DEFAULT_FILE, None)
    assert disk.read(DEFAULT_FILE) is None


# --- real boots ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_kernel() -> Path:
    return chosen_kernel(None, kernel_cache_dir(), say=quiet)


@pytest.fixture
def trial(tmp_path, build_section) -> Sandbox:
    """A CentOS 6 sandbox after ``install-kernel --trial`` with panic=1."""
    sandbox = Sandbox(tmp_path, build_section)
    sandbox.settings = sandbox.settings.with_(trial_panic=1)
    sandbox.original = sandbox.path(GRUB).read_bytes()
    sandbox.install(trial=True)
    return sandbox


def lab_disk(sandbox: Sandbox, kernel: Path, **options) -> LabDisk:
    return LabDisk.build(sandbox.root, sandbox.workdir.path / "lab" / "trial", kernel, **options)


def title(release: str) -> str:
    return f"CentOS ({release})"


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_scenario_1_trial_boots_the_new_kernel_once_then_the_old_one(trial, real_kernel):
    toa, root, work = trial.release, trial.root.base, trial.workdir.path
    command = [
        sys.executable, "-m", "invoke", "lab", "--root", str(root), "--workdir", str(work),
        "--kernel", str(real_kernel), "--boots", "2", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)["boots"]
    assert (first["entry"], first["release"]) == (title(toa), toa)
    assert {"nohz=off", "panic=1"} <= set(first["cmdline"].split())
    assert saved_entry(first["saved_default_before"]) == "0"
    assert saved_entry(first["saved_default_after"]) == "1"
    assert (second["entry"], second["release"], second["run"]) == (title(RUNNING), RUNNING, 2)
    assert second["tried"] == [title(RUNNING)] and second["panic"] is None
    assert saved_entry(second["saved_default_after"]) == "1"


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_scenario_2_a_commit_after_the_trial_boot_keeps_the_new_kernel(trial, real_kernel):
    toa, root = trial.release, trial.root
    disk = lab_disk(trial, real_kernel)
    (first,) = disk.boot(root, say=quiet)
    assert first.release == toa and saved_entry(first.saved_after) == "1"
    disk.take_saved_default(root)  # the server's /boot as GRUB left it
    assert parse_saved_default(root.path(DEFAULT_FILE).read_text()) == 1
    report = commit(trial.settings, Console(stream=io.StringIO()), facts_file=first.facts)
    assert report.changes and trial.grub_config().default == 0
    disk.put_boot_files(root)
    assert disk.read(GRUB) == lab_grub_conf(root.path(GRUB).read_text(), MULTIBOOT_KERNEL_ARGS).encode()
    (second,) = disk.boot(root, say=quiet)
    assert (second.title, second.release) == (title(toa), toa) and "nohz=off" in second.report.cmdline


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_scenario_3_a_panicking_trial_kernel_reboots_into_the_old_one_by_itself(trial, real_kernel):
    toa, root = trial.release, trial.root
    # The sandbox's initramfs stand-in holds no /init: the kernel cannot mount a root and panics.
    disk = lab_disk(trial, real_kernel, as_is=[f"/boot/initramfs-{toa}.img"])
    first, second = disk.boot(root, say=quiet)  # ONE power-on, no -no-reboot
    assert first.title == title(toa) and first.release is None
    assert first.panic == "VFS: Unable to mount root fs on unknown-block(0,0)"
    assert (second.title, second.release, second.run) == (title(RUNNING), RUNNING, 1)
    assert len(disk.runs) == 1 and saved_entry(second.saved_after) == "1"


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_scenario_4_rollback_of_a_trial_boots_the_old_entry_with_the_old_grub_conf(trial, real_kernel):
    root = trial.root
    disk = lab_disk(trial, real_kernel)
    assert parse_saved_default(disk.read(DEFAULT_FILE).decode()) == 0  # armed: TOA would boot next
    rollback(trial.settings, console=Console(stream=io.StringIO()))
    assert root.path(GRUB).read_bytes() == trial.original and not root.path(DEFAULT_FILE).exists()
    disk.put_boot_files(root)
    assert disk.read(DEFAULT_FILE) is None
    assert disk.read(GRUB) == lab_grub_conf(trial.original.decode(), MULTIBOOT_KERNEL_ARGS).encode()
    (first,) = disk.boot(root, say=quiet)
    assert (first.title, first.release) == (title(RUNNING), RUNNING) and first.report.grub_errors == []


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_a_plain_install_after_a_trial_boots_the_toa_entry_every_time(trial, real_kernel):
    toa, root = trial.release, trial.root
    report = trial.install()  # plain: ends the trial
    assert any("trial boot of" in note for note in report.notes)
    assert "savedefault" not in root.path(GRUB).read_text() and trial.grub_config().default == 0
    disk = lab_disk(trial, real_kernel)
    (first,) = disk.boot(root, say=quiet)
    assert (first.title, first.release) == (title(toa), toa) and "nohz=off" in first.report.cmdline
    assert first.report.grub_errors == [] and first.saved_after == first.saved_before  # no savedefault ran
