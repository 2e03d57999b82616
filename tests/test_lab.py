"""The boot lab: console parsing, staging and the image (fast), then real boots of
GRUB legacy 0.97 under QEMU (slow, lab): after the grub.conf edit install-kernel
makes, after rollback, with the TOA kernel missing (fallback=), and corpus files
with and without a separate /boot."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, have
from lab_support import PREVIOUS, TOA, centos_grub_conf, kernel_cache_dir, make_boot_root

from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.state import Workdir
from toa_kernel.lab import tools
from toa_kernel.lab.bootconf import read_boot_conf
from toa_kernel.lab.console import boot_is_over, clean, last_lines, parse_console
from toa_kernel.lab.grub import check_transcript
from toa_kernel.lab.image import lab_grub_conf, make_image, partition_script, stage_boot
from toa_kernel.lab.initramfs import build_initramfs, init_script
from toa_kernel.lab.kernel import DEPENDS_RE, chosen_kernel
from toa_kernel.lab.qemu import BootRun, run_qemu
from toa_kernel.lab.run import boot_problem, expected_entry, left_out, run_lab
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.checks import Expectation

CONSOLES = Path(__file__).parent / "data" / "lab-console"
CORPUS = Path(__file__).parent / "grub_corpus"
LAB_PROGRAMS = ("qemu-system-x86_64", "busybox", "sfdisk", "mke2fs")
needs_lab = pytest.mark.skipif(
    not tools.lab_available(), reason="lab packages missing: " + tools.install_line(*tools.missing_packages())
)
needs_busybox = pytest.mark.skipif(not have("busybox"), reason="busybox-static is not installed")


def console(name: str) -> str:
    return (CONSOLES / name).read_text(errors="replace")


# --- console parsing (real consoles captured from lab boots) ------------------------


def test_a_default_boot_names_the_entry_the_release_and_the_command_line():
    report = parse_console(console("default-entry.log"))
    assert report.tried == [f"CentOS ({TOA})"]
    assert report.booted_title == f"CentOS ({TOA})"
    assert report.release == TOA
    assert report.markers["uname"] != TOA  # the real kernel has its own release
    assert report.cmdline.split()[-3:] == ["nohz=off", "console=ttyS0", "panic=-1"]
    assert report.finished and not report.stuck and report.grub_errors == []


def test_a_fallback_boot_shows_the_error_and_the_entry_grub_fell_back_to():
    report = parse_console(console("fallback.log"))
    assert report.tried == [f"CentOS ({TOA})", f"CentOS ({PREVIOUS})"]
    assert report.grub_errors == ["Error 15: File not found"]
    assert report.booted_title == f"CentOS ({PREVIOUS})"
    assert report.release == PREVIOUS
    assert "nohz=off" not in report.cmdline.split()


def test_an_error_without_fallback_is_stuck_and_quoted():
    text = console("error-no-fallback.log")
    report = parse_console(text)
    assert report.gave_up and report.stuck and not report.guest_ran
    assert report.grub_errors == ["Error 15: File not found"]
    assert report.booted_title is None
    assert boot_is_over(text)


def test_a_grub_prompt_is_stuck():
    text = console("grub-prompt.log")
    report = parse_console(text)
    assert report.grub_prompt and report.stuck and report.tried == []
    assert boot_is_over(text)


def test_a_boot_in_progress_is_not_over():
    text = console("default-entry.log")
    cut = text.index("TOA-LAB end")
    assert not boot_is_over(text[:cut])
    assert boot_is_over(text[: cut + len("TOA-LAB end\r\n")])


def test_clean_drops_escapes_and_carriage_returns_and_last_lines_keeps_the_tail():
    assert clean("\x1b[H\x1b[J  Booting 'A'\r\nx\x1bc\x1b[?7l\r\n") == "  Booting 'A'\nx\n"
    text = "".join(f"line {n}\r\n" for n in range(50))
    assert last_lines(text).splitlines() == [f"line {n}" for n in range(20, 50)]


def test_boot_problem_quotes_grub_and_gives_the_console_tail(tmp_path):
    text = console("error-no-fallback.log")
    run = BootRun(text, 3.0, timed_out=False, stopped=True, returncode=None)
    problem = boot_problem(run, parse_console(text), 30, tmp_path / "console.log")
    assert isinstance(problem, EnvironmentFailure)
    assert f"GRUB stopped at 'Error 15: File not found' while booting 'CentOS ({TOA})'" in problem.message
    assert "Press any key to continue" in problem.message


def test_boot_problem_reports_a_timeout_with_the_last_console_lines(tmp_path):
    text = "".join(f"[    {n}.000000] probing {n}\r\n" for n in range(40))
    run = BootRun(text, 30.0, timed_out=True, stopped=False, returncode=None)
    problem = boot_problem(run, parse_console(text), 30, tmp_path / "console.log")
    assert "did not finish within 30 s" in problem.message
    tail = problem.message.split("last console lines:\n", 1)[1].splitlines()
    assert tail == [f"[    {n}.000000] probing {n}" for n in range(10, 40)]
    ran = parse_console(console("default-entry.log"))
    assert boot_problem(BootRun("", 5, False, False, 0), ran, 30, tmp_path) is None


# --- grub.conf: the lab copy and what the lab reads -----------------------------------


def test_the_lab_copy_changes_only_console_menu_wait_splash_and_kernel_lines():
    original = (CORPUS / "centos6-boot-partition.conf").read_text()
    lab = lab_grub_conf(original)
    assert (
        lab.startswith("# boot lab:")
        and "\nserial --unit=0 --speed=115200\nterminal --timeout=0 serial\n" in lab
    )
    body = lab.split("terminal --timeout=0 serial\n", 1)[1].splitlines()
    before = original.splitlines()
    assert len(body) == len(before)
    changed = [(a, b) for a, b in zip(before, body) if a != b]
    assert [a.split("=")[0].split()[0] for a, _ in changed] == ["timeout", "splashimage", "kernel", "kernel"]
    for old, new in changed:
        if old.lstrip().startswith("kernel"):
            assert new == f"{old} console=ttyS0 panic=-1"
    assert "timeout=0" in body and "# (lab) splashimage=(hd0,0)/grub/splash.xpm.gz" in body


def test_boot_conf_layout_from_the_corpus():
    separate = read_boot_conf((CORPUS / "centos6-boot-partition.conf").read_text())
    assert (separate.boot_on_root, separate.partition, separate.default_index) == (False, 0, 0)
    single = read_boot_conf((CORPUS / "centos6-single-partition.conf").read_text())
    assert (single.boot_on_root, single.partition, single.default_index) == (True, 0, 1)
    assert single.default_entry.release == "2.6.32-754.30.2.el6.x86_64"
    second = read_boot_conf(centos_grub_conf([(TOA, "")], partition=1))
    assert second.partition == 1


def test_scenarios_choose_what_should_boot_and_what_to_leave_out():
    conf = read_boot_conf(centos_grub_conf([(TOA, "nohz=off"), (PREVIOUS, "")], fallback=1))
    assert expected_entry(conf, "default").release == TOA
    assert expected_entry(conf, "fallback").release == PREVIOUS
    assert left_out(conf, "fallback") == [f"/boot/vmlinuz-{TOA}"]
    assert left_out(conf, "default") == []
    on_root = read_boot_conf(centos_grub_conf([(TOA, ""), (PREVIOUS, "")], fallback=1, boot_prefix="/boot"))
    assert left_out(on_root, "fallback") == [f"/boot/vmlinuz-{TOA}"]
    with pytest.raises(UserError, match="fallback="):
        expected_entry(read_boot_conf(centos_grub_conf([(TOA, "")])), "fallback")
    with pytest.raises(UserError, match="unknown lab scenario"):
        expected_entry(conf, "reboot-twice")


# --- initramfs, staging, image, GRUB transcript ------------------------------------------


def test_init_script_marks_its_release_and_refuses_odd_names():
    script = init_script(TOA)
    assert script.startswith("#!/bin/busybox sh\n")
    assert f'echo "TOA-LAB release="{TOA}\n' in script and "poweroff -f" in script
    with pytest.raises(UserError):
        init_script("2.6.32; reboot")


@needs_busybox
def test_the_initramfs_is_a_gzipped_newc_archive_with_busybox_and_init(tmp_path):
    image = build_initramfs(TOA, tmp_path / "initramfs.img")
    archive = gzip.decompress(image.read_bytes())
    assert archive[:6] == b"070701"  # newc
    listing = subprocess.run(
        ["busybox", "cpio", "-t"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert {"init", "bin/busybox", "proc", "dev"} <= set(listing.split())
    assert init_script(TOA).encode() in archive


def fake_kernel(tmp_path: Path) -> Path:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"REAL KERNEL" * 100)
    return kernel


@pytest.mark.skipif(not tools.lab_available(), reason="lab packages missing")
@pytest.mark.parametrize("boot_prefix", ["", "/boot"])
def test_staging_replaces_kernels_and_initramfs_and_keeps_the_rest(tmp_path, boot_prefix):
    conf_text = centos_grub_conf([(TOA, "nohz=off"), (PREVIOUS, "")], fallback=1, boot_prefix=boot_prefix)
    root = make_boot_root(tmp_path / "root", conf_text, [TOA, PREVIOUS])
    conf = read_boot_conf(conf_text)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    staged = stage_boot(
        Root.of(root),
        tmp_path / "stage",
        conf,
        conf_text,
        fake_kernel(tmp_path),
        omit=left_out(conf, "fallback"),
        scratch=scratch,
    )
    boot = tmp_path / "stage" / ("boot" if boot_prefix else "")
    assert staged.boot == boot
    assert not (boot / f"vmlinuz-{TOA}").exists()
    assert staged.omitted == [f"/boot/vmlinuz-{TOA}"]
    assert (boot / f"vmlinuz-{PREVIOUS}").read_bytes() == fake_kernel(tmp_path).read_bytes()
    assert staged.initramfs == {
        f"/boot/initramfs-{TOA}.img": TOA,
        f"/boot/initramfs-{PREVIOUS}.img": PREVIOUS,
    }
    previous_init = gzip.decompress((boot / f"initramfs-{PREVIOUS}.img").read_bytes())
    assert init_script(PREVIOUS).encode() in previous_init and TOA.encode() not in previous_init
    assert (boot / f"System.map-{TOA}").read_text() == (root / "boot" / f"System.map-{TOA}").read_text()
    assert (boot / "grub" / "menu.lst").is_symlink() and str(
        (boot / "grub" / "menu.lst").readlink()
    ) == "grub.conf"
    assert (boot / "grub" / "grub.conf").read_text() == lab_grub_conf(conf_text)
    for name in tools.STAGE_FILES:
        assert (boot / "grub" / name).read_bytes() == (tools.grub_stage_dir() / name).read_bytes()
    assert (root / "boot" / "grub" / "grub.conf").read_text() == conf_text  # the root is untouched
    assert "+timeout=0" in staged.lab_edits


@pytest.mark.skipif(not have("sfdisk", "mke2fs", "debugfs"), reason="fdisk/e2fsprogs missing")
@pytest.mark.parametrize("partition", [0, 1])
def test_the_image_has_one_ext2_partition_holding_the_stage(tmp_path, partition):
    stage = tmp_path / "stage"
    (stage / "grub").mkdir(parents=True)
    (stage / "grub" / "grub.conf").write_text("default=0\n")
    (stage / "grub" / "menu.lst").symlink_to("grub.conf")
    image = tmp_path / "disk.img"
    offset = make_image(stage, image, partition)
    assert offset == 2048 * 512 * (partition + 1)
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True).stdout
    )
    parts = table["partitiontable"]["partitions"]
    assert len(parts) == partition + 1 and parts[-1]["start"] * 512 == offset and parts[-1].get("bootable")
    listing = subprocess.run(
        ["debugfs", "-R", "stat /grub/menu.lst", f"{image}?offset={offset}"], capture_output=True, text=True
    ).stdout
    assert "Type: symlink" in listing and 'Fast link dest: "grub.conf"' in listing
    content = subprocess.run(
        ["debugfs", "-R", "cat /grub/grub.conf", f"{image}?offset={offset}"], capture_output=True, text=True
    ).stdout
    assert content == "default=0\n"


def test_partition_script_puts_placeholders_before_the_boot_partition():
    assert partition_script(0, 40).splitlines() == ["label: dos", "start=2048, size=81920, type=83, bootable"]
    assert partition_script(2, 40).splitlines()[1:] == [
        "size=2048, type=83",
        "size=2048, type=83",
        "start=6144, size=81920, type=83, bootable",
    ]


def test_the_grub_transcript_is_checked_because_the_shell_exits_zero():
    good = (
        'grub> setup (hd0)\n Checking if "/grub/stage1" exists... yes\n'
        ' Running "embed /grub/e2fs_stage1_5 (hd0)"...'
        "  19 sectors are embedded.\nsucceeded\nDone.\n"
    )
    check_transcript(good)
    with pytest.raises(EnvironmentFailure, match="'Error 15: File not found'"):
        check_transcript(
            'grub> setup (hd0)\n Checking if "/boot/grub/stage1" exists... no\n\nError 15: File not found\n'
        )
    with pytest.raises(EnvironmentFailure, match="never said 'succeeded'"):
        check_transcript("grub> quit\n")


# --- tools and kernel ----------------------------------------------------------------------


def test_a_missing_program_names_its_package_and_the_apt_get_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(tools, "SBIN_DIRS", ())
    with pytest.raises(ToolMissing) as caught:
        tools.require_lab_tools()
    assert caught.value.tool == "qemu-system-x86_64"
    assert (
        "apt-get install -y --no-install-recommends qemu-system-x86 grub-legacy busybox-static"
        in caught.value.fix
    )
    assert not tools.lab_available()


def test_the_kernel_package_is_read_from_apt_cache_depends():
    output = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: firmware\n"
    assert DEPENDS_RE.search(output).group("name") == "linux-image-6.1.0-56-amd64"


def test_a_given_kernel_must_be_a_bzimage(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        chosen_kernel(tmp_path / "missing", tmp_path)
    with pytest.raises(UserError, match="not a Linux x86 boot image"):
        chosen_kernel(fake_kernel(tmp_path), tmp_path)


# --- real boots -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_kernel() -> Path:
    """Debian's kernel, downloaded once per machine (cache outside the test's tmp dirs)."""
    return chosen_kernel(None, kernel_cache_dir(), say=lambda text: None)


def lab(root: Path, workdir: Path, kernel: Path, scenario: str = "default", release: str = TOA):
    result = run_lab(
        Root.of(root),
        Workdir(workdir),
        expect=Expectation(release=release),
        scenario=scenario,
        timeout=60,
        kernel=kernel,
        say=lambda text: None,
    )
    assert result.seconds["boot"] < 30
    return result


@pytest.fixture(scope="module")
def build_section(tmp_path_factory) -> dict:
    """The sample tree built once by ``invoke build``'s code (its manifest section)."""
    from centos6_root import build_sample

    return build_sample(tmp_path_factory.mktemp("build"))


@pytest.fixture
def installed(tmp_path, build_section):
    """A CentOS 6 sandbox root after ``install-kernel`` (its installkernel adds the entry)."""
    from centos6_root import Sandbox

    sandbox = Sandbox(tmp_path, build_section)
    sandbox.install()
    return sandbox


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_after_install_kernel_the_toa_entry_boots_with_nohz_off(installed, real_kernel):
    toa, root, workdir = installed.release, installed.root.base, installed.workdir.path
    result = lab(root, workdir, real_kernel, release=toa)
    assert result.report.booted_title == f"CentOS ({toa})"
    assert result.report.release == toa and "nohz=off" in result.report.cmdline.split()
    assert result.ok and result.verdict == "PASS"
    assert [r.status.value for r in result.judged.results] == ["PASS", "PASS", "PASS"]
    facts = json.loads((workdir / "lab" / "default" / "facts.json").read_text())
    assert facts["release"] == toa and facts["lab"]["booted_entry"] == f"CentOS ({toa})"
    assert (workdir / "lab" / "default" / "disk.img").is_file()
    assert not (workdir / "lab" / "default" / "stage").exists()


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_after_rollback_the_previous_kernel_boots(installed, real_kernel):
    from centos6_root import RUNNING

    from toa_kernel.boot.rollback import rollback

    rollback(installed.settings)
    result = lab(installed.root.base, installed.workdir.path, real_kernel, release=installed.release)
    assert result.report.booted_title == f"CentOS ({RUNNING})"
    assert result.report.release == RUNNING
    assert not result.ok  # not the TOA entry: `invoke lab` exits non-zero
    assert {r.name: r.status.value for r in result.judged.results}["running-release"] == "FAIL"


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_without_the_toa_kernel_file_grub_falls_back_to_the_previous_kernel(installed, real_kernel):
    from centos6_root import RUNNING

    toa, root = installed.release, installed.root.base
    result = lab(root, installed.workdir.path, real_kernel, scenario="fallback", release=toa)
    assert result.report.tried == [f"CentOS ({toa})", f"CentOS ({RUNNING})"]
    assert result.report.grub_errors == ["Error 15: File not found"]
    assert result.report.release == RUNNING and result.ok
    reasons = {r.name: r.reason for r in result.judged.results}
    assert "fell back" in reasons["running-release"]
    assert (root / "boot" / f"vmlinuz-{toa}").exists()  # left out of the image only


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
@pytest.mark.parametrize(
    ("corpus", "booted"),
    [
        ("centos6-boot-partition.conf", "CentOS (2.6.32-754.35.1.el6.x86_64)"),
        ("centos6-single-partition.conf", "CentOS (2.6.32-754.30.2.el6.x86_64)"),
    ],
)
def test_corpus_grub_conf_boots_its_default_entry(tmp_path, real_kernel, corpus, booted):
    text = (CORPUS / corpus).read_text()
    conf = read_boot_conf(text)
    root = make_boot_root(tmp_path / corpus.split(".")[0], text, [e.release for e in conf.entries])
    result = lab(root, tmp_path / "work", real_kernel, release=conf.default_entry.release)
    assert result.report.booted_title == booted
    assert result.report.release == conf.default_entry.release
    assert result.staged.boot_on_root == ("single" in corpus)


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_grub_stopping_at_an_error_is_a_clear_error_without_waiting_for_the_timeout(tmp_path, real_kernel):
    conf = centos_grub_conf([(TOA, "nohz=off"), (PREVIOUS, "")])  # no fallback=
    root = make_boot_root(tmp_path / "root", conf, [PREVIOUS])  # the TOA kernel is missing
    started = time.monotonic()
    with pytest.raises(EnvironmentFailure, match="GRUB stopped at 'Error 15: File not found'"):
        run_lab(
            Root.of(root),
            Workdir(tmp_path / "work"),
            expect=Expectation(release=TOA),
            timeout=60,
            kernel=real_kernel,
            say=lambda text: None,
        )
    assert time.monotonic() - started < 30
    facts = json.loads((tmp_path / "work" / "lab" / "default" / "facts.json").read_text())
    assert facts["release"] is None and facts["lab"]["grub_errors"] == ["Error 15: File not found"]


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.skipif(not have("qemu-system-x86_64"), reason="qemu-system-x86 missing")
def test_qemu_is_stopped_at_the_timeout(tmp_path):
    image = tmp_path / "blank.img"
    image.write_bytes(bytes(1024 * 1024))  # no boot loader: SeaBIOS finds nothing to boot
    run = run_qemu(image, tmp_path / "console.log", timeout=3)
    assert run.timed_out and run.seconds < 10
    assert "Booting from Hard Disk" in (tmp_path / "console.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
def test_invoke_lab_prints_the_verdict_and_exits_non_zero_when_toa_does_not_boot(installed, real_kernel):
    from centos6_root import RUNNING

    toa, root, workdir = installed.release, installed.root.base, installed.workdir.path
    command = [
        sys.executable, "-m", "invoke", "lab", "--root", str(root), "--workdir", str(workdir),
        "--kernel", str(real_kernel), "--scenario", "fallback", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["booted_release"] == RUNNING and document["verdict"] == "PASS"
    assert document["expected_release"] == RUNNING and document["left_out"] == [f"/boot/vmlinuz-{toa}"]
    grub_conf = root / "boot" / "grub" / "grub.conf"
    grub_conf.write_text(grub_conf.read_text().replace(" nohz=off", ""))
    done = subprocess.run(command[:-3], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"booted entry  'CentOS ({toa})'" in done.stdout and "FAIL  nohz-off" in done.stdout
