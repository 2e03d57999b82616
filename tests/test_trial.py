"""Trial boot: the editor functions (corpus, properties), ``grub --trial`` and
``install-kernel --trial`` on sandbox roots, ``verify --commit`` and rollback.

What GRUB itself does with these files (boots the entry once, writes the old entry
back, reboots after a panic) is proven by booting them: tests/test_lab_trial.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from centos6_root import GRUB, RUNNING, Sandbox, centos6_root, snapshot
from conftest import PROJECT_DIR
from hypothesis import given
from hypothesis import strategies as st
from test_grubconf import PROPERTY, RELEASE, corpus, editable, grub_configs
from verify_support import MESSAGES, PROC_MODULES_OTHERS, PROC_MODULES_TOA, TOA_STATS

from toa_kernel.boot import grubconf
from toa_kernel.boot import hooks as boothooks
from toa_kernel.boot.grubconf import (
    edit_commit_trial,
    edit_for_release,
    edit_for_trial,
    parse,
    parse_saved_default,
    saved_default_text,
    saved_default_usable,
)
from toa_kernel.boot.install import configure_grub
from toa_kernel.boot.rollback import rollback
from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import backups_of
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.verify.commit import commit

DEFAULT_FILE = "/boot/grub/default"
TOA = "2.6.32-toa"


def savedefaults(entry: grubconf.Entry) -> list[str]:
    return [c.value for c in entry.body if c.keyword == "savedefault"]


# ---------------------------------------------------------------- the saved-default file


def test_saved_default_file_has_the_number_first_and_room_for_grub_to_rewrite():
    text = saved_default_text(3)
    assert text.startswith("3\n#\n") and len(text) > grubconf.SAVED_DEFAULT_MIN
    assert parse_saved_default(text) == 3 and saved_default_usable(text)
    # what GRUB's savedefault leaves: the number, a NUL and newlines over the first 10 bytes
    rewritten = "1\0\n\n\n\n\n\n\n\n" + text[10:]
    assert parse_saved_default(rewritten) == 1 and saved_default_usable(rewritten)
    assert not saved_default_usable("0\n") and not saved_default_usable(None)
    with pytest.raises(UserError):
        saved_default_text(-1)


# ---------------------------------------------------------------- editing grub.conf for a trial


def test_trial_edit_boots_the_new_entry_once_and_goes_back_to_the_old_default():
    text = corpus("centos6-boot-partition")
    edit = edit_for_trial(text, RELEASE, panic_seconds=7)
    config = parse(edit.text)
    toa, old = config.entries[edit.entry_index], config.entries[edit.return_entry]
    assert (edit.entry_index, edit.return_entry, edit.saved_default) == (0, 1, 0)
    assert toa.release == RELEASE and old.title == parse(text).entries[0].title
    assert config.default == "saved" and config.fallback == 1
    assert toa.body[0].keyword == "savedefault" and savedefaults(toa) == ["1"]
    assert toa.kernel_args[-2:] == ["nohz=off", "panic=7"]
    assert savedefaults(old) == []
    added = [line for line in edit.text.splitlines() if line not in text.splitlines()]
    assert added[:2] == ["default=saved", "fallback=1"] and "\tsavedefault 1" in added
    assert any("savedefault 1" in line for line in edit.summary) and "default 0 -> saved" in edit.summary


def test_trial_edit_twice_changes_nothing_before_and_after_the_trial_boot():
    edit = edit_for_trial(corpus("centos6-boot-partition"), RELEASE)
    for saved in (edit.saved_default, edit.return_entry, None):  # armed; GRUB wrote OLD back; file gone
        again = edit_for_trial(edit.text, RELEASE, saved_default=saved)
        assert again.text == edit.text and again.summary == [] and again.return_entry == 1


def test_trial_after_a_permanent_install_returns_to_the_fallback_entry():
    installed = edit_for_release(corpus("centos6-boot-partition"), RELEASE).text
    edit = edit_for_trial(installed, RELEASE)
    assert edit.entry_index == 0 and edit.return_entry == 1
    assert savedefaults(parse(edit.text).entries[0]) == ["1"]


def test_a_trial_without_an_old_entry_to_return_to_is_refused():
    text = "default=0\ntitle T\n\troot (hd0,0)\n\tkernel /vmlinuz-2.6.32-toa ro\n"
    with pytest.raises(UserError, match="no other entry") as caught:
        edit_for_trial(text, RELEASE)
    assert "fallback=N" in caught.value.fix


def test_copied_savedefault_and_panic_are_replaced_not_repeated():
    text = corpus("default-saved")  # every entry carries a bare savedefault; grubby copies it
    text = text.replace("rhgb quiet\n", "rhgb quiet panic=60\n", 1)
    edit = edit_for_trial(text, RELEASE, saved_default=1)
    toa = parse(edit.text).entries[edit.entry_index]
    assert savedefaults(toa) == [str(edit.return_entry)] and edit.return_entry == 2
    assert [a for a in toa.kernel_args if a.startswith("panic=")] == ["panic=10"]


@pytest.mark.parametrize("seconds", [0, -1, 3601, "ten", True, "1.5"])
def test_panic_seconds_must_be_whole_seconds_up_to_an_hour(seconds):
    with pytest.raises(UserError, match="panic seconds"):
        edit_for_trial(corpus("centos6-boot-partition"), RELEASE, panic_seconds=seconds)


def test_commit_makes_the_trial_entry_the_numeric_default_without_savedefault():
    trial = edit_for_trial(corpus("centos6-boot-partition"), RELEASE)
    edit = edit_commit_trial(trial.text, RELEASE)
    config = parse(edit.text)
    assert config.default == 0 and config.fallback == 1
    assert savedefaults(config.entries[0]) == [] and "panic=10" in config.entries[0].kernel_args
    assert edit.text.count("\n") == trial.text.count("\n") - 1
    assert edit_commit_trial(edit.text, RELEASE).summary == []
    with pytest.raises(UserError, match=r"no entry for 2\.6\.32-other"):
        edit_commit_trial(trial.text, "2.6.32-other")


def test_crlf_file_gets_crlf_savedefault_line():
    edit = edit_for_trial(corpus("crlf"), RELEASE)
    line = next(line for line in edit.text.splitlines(keepends=True) if "savedefault" in line)
    assert line.endswith("\r\n")


@PROPERTY
@given(grub_configs(), st.integers(1, 3600))
def test_trial_then_commit_on_generated_configs(text, panic):
    if not editable(text):
        return
    try:
        edit = edit_for_trial(text, RELEASE, panic_seconds=panic)
    except UserError as error:  # only when the new entry is the default and nothing else is set
        assert "no other entry" in error.message
        return
    config = parse(edit.text)
    toa = config.entries[edit.entry_index]
    assert config.render() == edit.text and config.default == "saved"
    assert savedefaults(toa) == [str(edit.return_entry)] and edit.return_entry != edit.entry_index
    assert f"panic={panic}" in toa.kernel_args and config.fallback == edit.return_entry
    assert edit_for_trial(edit.text, RELEASE, panic_seconds=panic).text == edit.text
    committed_text = edit_commit_trial(edit.text, RELEASE).text
    committed = parse(committed_text)
    assert committed.default == edit.entry_index and savedefaults(committed.entries[edit.entry_index]) == []
    assert edit_for_release(edit.text, RELEASE).text == committed_text  # a plain edit ends the trial
    for before, after in zip(config.entries, committed.entries):
        if before.index != edit.entry_index:
            assert config.lines[before.first : before.end] == committed.lines[after.first : after.end]


# ---------------------------------------------------------------- grub --trial on a sandbox root


# The System each test root is reached through (locally or over SSH: the ``node`` fixture).
SYSTEMS: dict[Path, object] = {}
FLAGS: dict[Path, list[str]] = {}


@pytest.fixture
def root(tmp_path, node) -> Path:
    """A CentOS 6 root with the TOA kernel's files in /boot (no build needed for 'invoke grub'),
    reached as a System of the kind under test (``SYSTEMS[root]``)."""
    base = centos6_root(tmp_path / "root")
    for name in (f"vmlinuz-{TOA}", f"initramfs-{TOA}.img"):
        (base / "boot" / name).write_bytes(b"placeholder")
    SYSTEMS[base], FLAGS[base] = node.open(base), node.flags(base)
    yield base
    del SYSTEMS[base], FLAGS[base]


def settings_for(root: Path, **values: object) -> Settings:
    work = root.parent / "work"
    return Settings.from_config(None, workdir=work, root=root, project_dir=PROJECT_DIR, **values)


def run_grub(root: Path, **options: object):
    output = io.StringIO()
    values = {"trial_panic": options.pop("panic")} if "panic" in options else {}
    report = configure_grub(
        settings_for(root, **values), TOA, console=Console(stream=output), trial=True, system=SYSTEMS[root],
        **options,
    )  # fmt: skip
    return report, output.getvalue()


def test_grub_trial_writes_the_default_file_first_then_grub_conf(root):
    original = (root / "boot/grub/grub.conf").read_bytes()
    report, output = run_grub(root, panic=5)
    config = parse((root / "boot/grub/grub.conf").read_text())
    assert config.default == "saved" and config.entries[0].release == TOA
    assert savedefaults(config.entries[0]) == ["1"] and config.entries[1].release == RUNNING
    saved = root / "boot/grub/default"
    assert saved.read_text() == saved_default_text(0) and oct(saved.stat().st_mode & 0o777) == "0o644"
    assert output.index("write /boot/grub/default") < output.index("edit /boot/grub/grub.conf")
    assert "power cycle" in " ".join(report.notes) and "watchdog" in " ".join(report.notes)
    assert "panic=5" in report.trial and f"'CentOS ({RUNNING})'" in report.trial
    assert backups_of(root / "boot/grub/grub.conf")[0].read_bytes() == original
    trial = Workdir(root.parent / "work").section("install")["trial"]
    assert trial["default_file"] == DEFAULT_FILE and trial["default_file_existed"] is False
    assert trial["return_entry"]["title"] == f"CentOS ({RUNNING})" and trial["panic_seconds"] == 5


def test_grub_trial_twice_changes_nothing(root):
    run_grub(root)
    before = snapshot(root)
    report, output = run_grub(root)
    assert report.changes == [] and snapshot(root) == before
    assert "nothing to do" in output


def test_grub_trial_dry_run_shows_both_diffs_and_changes_nothing(root):
    before = snapshot(root)
    report, output = run_grub(root, dry_run=True)
    assert snapshot(root) == before and not (root.parent / "work" / "manifest.json").exists()
    assert "+++ b/boot/grub/default" in output and "+0" in output
    assert "-default=0" in output and "+default=saved" in output and "+\tsavedefault 1" in output
    assert len(report.changes) == 2 and "watchdog" in " ".join(report.notes)


def test_rollback_removes_a_default_file_the_trial_created_and_restores_grub_conf(root):
    original = snapshot(root)
    grub_bytes = (root / "boot/grub/grub.conf").read_bytes()
    run_grub(root)
    (root / "boot/grub/default").write_bytes(b"1\0\n\n\n\n\n\n\n\n" + saved_default_text(0).encode()[10:])
    report = rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root])
    assert (root / "boot/grub/grub.conf").read_bytes() == grub_bytes
    assert not (root / "boot/grub/default").exists()
    assert any("remove /boot/grub/default" in change for change in report.changes)
    now = snapshot(root)
    assert {k: v for k, v in now.items() if ".toa-backup-" not in k} == original
    assert (
        rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root]).changes
        == []
    )


def test_rollback_puts_back_a_default_file_that_was_there(root):
    (root / "boot/grub/default").write_bytes(b"2\n#\n#\n#\n#\n#\n#\n#\n#\n#\n#\n")
    before = (root / "boot/grub/default").read_bytes()
    run_grub(root)
    assert parse_saved_default((root / "boot/grub/default").read_text()) == 0
    rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root])
    assert (root / "boot/grub/default").read_bytes() == before


def test_a_default_file_too_short_for_grub_is_rewritten(root):
    (root / "boot/grub/default").write_text("0\n")  # GRUB: Error 18 at savedefault, the trial would not boot
    run_grub(root)
    assert (root / "boot/grub/default").read_text() == saved_default_text(0)


# ---------------------------------------------------------------- a plain edit after a trial, and back


def run_plain(root: Path):
    output = io.StringIO()
    report = configure_grub(settings_for(root), TOA, console=Console(stream=output), system=SYSTEMS[root])
    return report, output.getvalue()


def fresh_root(root: Path) -> Path:
    """Another root like ``root`` (same grub.conf), reached locally: the reference edits."""
    other = centos6_root(root.parent / "reference")
    shutil.copy(root / "boot/grub/grub.conf", other / "boot/grub/grub.conf")
    for name in (f"vmlinuz-{TOA}", f"initramfs-{TOA}.img"):
        (other / "boot" / name).write_bytes(b"placeholder")
    return other


def test_a_plain_edit_after_a_trial_gives_the_committed_form_and_says_the_trial_ends(root):
    reference = edit_for_trial((root / "boot/grub/grub.conf").read_text(), TOA)
    committed = edit_commit_trial(reference.text, TOA).text
    run_grub(root)
    report, output = run_plain(root)
    text = (root / "boot/grub/grub.conf").read_text()
    config = parse(text)
    assert text == committed and config.default == 0 and config.fallback == 1
    assert savedefaults(config.entries[0]) == [] and config.entries[1].release == RUNNING
    assert "-\tsavedefault 1" in output and "+default=0" in output
    assert any("trial boot of 2.6.32-toa ends" in note for note in report.notes)
    assert Workdir(root.parent / "work").section("install")["trial"]["ended_at"]
    before = snapshot(root)
    assert run_plain(root)[0].changes == [] and snapshot(root) == before


def test_a_plain_edit_after_the_trial_booted_gives_the_same_form(root):
    run_grub(root)
    (root / "boot/grub/default").write_bytes(b"1\0\n\n\n\n\n\n\n\n" + saved_default_text(0).encode()[10:])
    run_plain(root)
    config = parse((root / "boot/grub/grub.conf").read_text())
    assert config.default == 0 and config.fallback == 1 and savedefaults(config.entries[0]) == []


def test_a_trial_after_a_plain_edit_gives_exactly_the_trial_form(root):
    reference = fresh_root(root)
    run_plain(root)
    run_grub(root)
    configure_grub(
        settings_for(reference).with_(workdir=reference.parent / "reference-work"), TOA,
        console=Console(stream=io.StringIO()), trial=True,
    )  # fmt: skip
    for name in ("grub.conf", "default"):
        assert (root / "boot/grub" / name).read_bytes() == (reference / "boot/grub" / name).read_bytes()
    before = snapshot(root)
    assert run_grub(root)[0].changes == [] and snapshot(root) == before
    run_plain(root)
    run_grub(root)
    assert (root / "boot/grub/grub.conf").read_bytes() == (reference / "boot/grub/grub.conf").read_bytes()


def test_rollback_of_a_trial_after_grub_conf_changed_leaves_no_trial_behind(root):
    run_grub(root)
    conf = root / "boot/grub/grub.conf"
    conf.write_text(conf.read_text().replace("timeout=5", "timeout=7"))  # edited since the trial
    report = rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root])
    config = parse(conf.read_text())
    assert any("pointing default= back" in note for note in report.notes)
    assert config.default == 1 and config.entries[1].release == RUNNING and config.fallback is None
    assert all(savedefaults(entry) == [] for entry in config.entries) and "timeout=7" in conf.read_text()
    assert not (root / "boot/grub/default").exists()
    before = snapshot(root)
    assert (
        rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root]).changes
        == []
    )
    assert snapshot(root) == before


def test_rollback_of_a_changed_trial_puts_back_a_default_file_that_was_there(root):
    (root / "boot/grub/default").write_bytes(b"0\n#\n#\n#\n#\n#\n#\n#\n#\n#\n#\n")
    before = (root / "boot/grub/default").read_bytes()
    run_grub(root)
    conf = root / "boot/grub/grub.conf"
    conf.write_text(conf.read_text().replace("timeout=5", "timeout=7"))
    rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root])
    assert (root / "boot/grub/default").read_bytes() == before
    assert "savedefault" not in conf.read_text() and parse(conf.read_text()).default == 1


# ---------------------------------------------------------------- verify --commit


def boot_into(root: Path, release: str, cmdline: str) -> None:
    """The root as it looks with ``release`` running healthy: /proc, modules, log, boot hooks."""
    files = {
        "/proc/sys/kernel/osrelease": release + "\n",
        "/proc/cmdline": cmdline + "\n",
        "/proc/modules": PROC_MODULES_OTHERS + PROC_MODULES_TOA,
        "/proc/net/toa_stats": TOA_STATS,
        "/var/log/messages": MESSAGES.format(release=release),
        f"/boot/config-{release}": "CONFIG_IPV6=y\nCONFIG_TOA=m\n",
        f"/lib/modules/{release}/kernel/net/toa/toa.ko": "module\n",
        f"/lib/modules/{release}/modules.dep": "kernel/net/toa/toa.ko:\n",
        "/etc/sysconfig/modules/toa.modules": boothooks.modules_script(),
        "/etc/cron.d/toa": boothooks.cron_file(release),
    }
    for system_path, text in files.items():
        path = root / system_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(root / "etc/sysconfig/modules/toa.modules", 0o755)


def toa_cmdline(root: Path) -> str:
    return " ".join(parse((root / "boot/grub/grub.conf").read_text()).entries[0].kernel_args)


def do_commit(root: Path, **options: object):
    output = io.StringIO()
    done = commit(settings_for(root), Console(stream=output), release=TOA, system=SYSTEMS[root], **options)
    return done, output.getvalue()


def test_commit_after_a_healthy_trial_boot_keeps_the_new_kernel(root):
    grub_bytes = (root / "boot/grub/grub.conf").read_bytes()
    run_grub(root)
    boot_into(root, TOA, toa_cmdline(root))
    before = snapshot(root)
    report, output = do_commit(root, dry_run=True)
    assert snapshot(root) == before and "+default=0" in output and "-\tsavedefault 1" in output
    report, output = do_commit(root)
    config = parse((root / "boot/grub/grub.conf").read_text())
    assert config.default == 0 and config.fallback == 1 and savedefaults(config.entries[0]) == []
    assert report.verify.exit_code == 0 and "grub-default" not in [r.name for r in report.verify.results]
    assert Workdir(root.parent / "work").section("install")["trial"]["committed_at"]
    assert do_commit(root)[0].changes == []
    rollback(settings_for(root), console=Console(stream=io.StringIO()), system=SYSTEMS[root])
    assert (root / "boot/grub/grub.conf").read_bytes() == grub_bytes
    assert not (root / "boot/grub/default").exists()


def test_verify_during_a_trial_points_at_the_commit(root):
    from toa_kernel.verify.run import expectation, judge, obtain_facts

    run_grub(root)
    boot_into(root, TOA, toa_cmdline(root))
    (root / "boot/grub/default").write_bytes(b"1\0\n\n\n\n\n\n\n\n" + saved_default_text(0).encode()[10:])
    settings = settings_for(root)
    report = judge(
        obtain_facts(settings, None, TOA, SYSTEMS[root]), expectation(settings, TOA), "grub-default"
    )
    (result,) = report.results
    assert result.status.value == "FAIL" and "the next reboot leaves TOA" in result.reason
    assert "invoke verify --commit" in result.fix


def test_commit_is_refused_when_the_old_kernel_runs(root):
    run_grub(root)
    before = snapshot(root)
    with pytest.raises(UserError, match=f"running kernel is {RUNNING}, not the trial's {TOA}") as caught:
        do_commit(root)
    assert "invoke rollback" in caught.value.fix and snapshot(root) == before


def test_commit_is_refused_when_verify_fails(root):
    run_grub(root)
    boot_into(root, TOA, "ro root=/dev/sda1")  # booted without nohz=off
    before = snapshot(root)
    with pytest.raises(UserError, match=r"verify fails \(nohz-off\)"):
        do_commit(root)
    assert snapshot(root) == before


def test_commit_without_a_trial_is_refused(root):
    with pytest.raises(UserError, match="no trial boot is recorded"):
        do_commit(root)


# ---------------------------------------------------------------- the command line


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=PROJECT_DIR, capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def test_invoke_grub_trial_then_verify_commit(root):
    where = [*FLAGS[root], "--workdir", str(root.parent / "work")]
    done = invoke("grub", "--trial", "--panic-seconds", "3", "--release", TOA, *where)
    assert done.returncode == 0, done.stderr
    assert "panic=3" in done.stdout and "power cycle" in done.stdout and "watchdog" in done.stdout
    refused = invoke("verify", "--commit", *where)
    assert refused.returncode == 2 and "not the trial's" in refused.stderr
    boot_into(root, TOA, toa_cmdline(root))
    done = invoke("verify", "--commit", "--json", *where)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["committed"] and document["default_entry"] == 0
    assert document["verify"]["verdict"] in ("PASS", "WARN")
    assert parse((root / "boot/grub/grub.conf").read_text()).default == 0


def test_bad_panic_seconds_on_the_command_line_is_a_user_error(root):
    done = invoke("grub", "--trial", "--panic-seconds", "0", "--release", TOA, "--root", str(root))
    assert done.returncode == 2 and "--panic-seconds '0'" in done.stderr


# ---------------------------------------------------------------- install-kernel --trial (real install)


@pytest.mark.slow
def test_install_kernel_trial_then_commit_then_rollback(tmp_path, build_section, node):
    sandbox = Sandbox(tmp_path, build_section, node)
    original = sandbox.path(GRUB).read_bytes()
    before = snapshot(sandbox.root.base)
    planned = sandbox.install(trial=True, dry_run=True)
    assert snapshot(sandbox.root.base) == before and planned.trial and "watchdog" in " ".join(planned.notes)
    assert "+++ b/boot/grub/default" in sandbox.output.getvalue()
    report = sandbox.install(trial=True)
    config = sandbox.grub_config()
    assert config.default == "saved" and config.entries[0].release == sandbox.release
    assert savedefaults(config.entries[0]) == ["1"] and config.entries[1].release == RUNNING
    assert parse_saved_default(sandbox.path(DEFAULT_FILE).read_text()) == 0
    assert report.trial and sandbox.install(trial=True).changes == []
    boot_into(sandbox.root.base, sandbox.release, toa_cmdline(sandbox.root.base))
    result = commit(sandbox.settings, Console(stream=io.StringIO()), system=sandbox.system)
    assert result.release == sandbox.release and sandbox.grub_config().default == 0
    sandbox.rollback()
    assert sandbox.path(GRUB).read_bytes() == original and not sandbox.path(DEFAULT_FILE).exists()
    assert sandbox.grub_config().entries[0].release == RUNNING


@pytest.mark.slow
def test_install_kernel_plain_after_trial_and_trial_after_plain(tmp_path, build_section, node):
    sandbox = Sandbox(tmp_path, build_section, node)
    original = sandbox.path(GRUB).read_bytes()
    sandbox.install(trial=True)
    trial_text = sandbox.path(GRUB).read_bytes()
    report = sandbox.install()
    config = sandbox.grub_config()
    assert config.default == 0 and config.fallback == 1 and savedefaults(config.entries[0]) == []
    assert sandbox.path(GRUB).read_text() == edit_commit_trial(trial_text.decode(), sandbox.release).text
    assert any(f"trial boot of {sandbox.release} ends" in note for note in report.notes)
    assert sandbox.install().changes == []
    sandbox.install(trial=True)
    assert sandbox.path(GRUB).read_bytes() == trial_text
    assert parse_saved_default(sandbox.path(DEFAULT_FILE).read_text()) == 0
    assert sandbox.install(trial=True).changes == []
    sandbox.rollback()
    assert sandbox.path(GRUB).read_bytes() == original and not sandbox.path(DEFAULT_FILE).exists()
