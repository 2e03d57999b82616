"""rollback: grub.conf as before the install, boot hooks gone, kernel files kept."""

from __future__ import annotations

import pytest
from centos6_root import GRUB, OLDER, RUNNING, Sandbox, snapshot

from toa_kernel.boot import grubconf
from toa_kernel.boot.kernelfiles import KernelFiles
from toa_kernel.core.errors import UserError


def roll_back(sandbox: Sandbox, **options: object):
    return sandbox.rollback(**options)


@pytest.mark.slow
def test_rollback_restores_grub_conf_removes_hooks_and_keeps_the_kernel(sandbox):
    original = sandbox.path(GRUB).read_bytes()
    sandbox.install()
    report = roll_back(sandbox)
    assert sandbox.path(GRUB).read_bytes() == original
    assert sandbox.path("/etc/grub.conf").is_symlink()
    assert oct(sandbox.path(GRUB).stat().st_mode & 0o777) == "0o600"
    assert not sandbox.path("/etc/sysconfig/modules/toa.modules").exists()
    assert not sandbox.path("/etc/cron.d/toa").exists()
    assert sandbox.path("/etc/cron.d/0hourly").exists()
    files = KernelFiles(sandbox.system, sandbox.release)
    assert sandbox.path(files.vmlinuz).is_file() and sandbox.path(files.initramfs).is_file()
    assert files.toa_modules()
    assert f"/boot/vmlinuz-{sandbox.release}" in report.kept
    manifest = sandbox.workdir.load_manifest()
    assert "install" not in manifest and manifest["rollback"]["release"] == sandbox.release


@pytest.mark.slow
def test_second_rollback_changes_nothing(sandbox):
    sandbox.install()
    roll_back(sandbox)
    before = snapshot(sandbox.root.base)
    assert roll_back(sandbox).changes == []
    assert snapshot(sandbox.root.base) == before


@pytest.mark.slow
def test_dry_run_rollback_prints_the_diff_and_changes_nothing(sandbox):
    sandbox.install()
    before = snapshot(sandbox.root.base)
    manifest = sandbox.workdir.load_manifest()
    report = roll_back(sandbox, dry_run=True)
    assert snapshot(sandbox.root.base) == before
    assert sandbox.workdir.load_manifest() == manifest
    text = sandbox.output.getvalue()
    assert "-fallback=1" in text and "would remove /etc/cron.d/toa" in text
    assert len(report.changes) == 3


@pytest.mark.slow
def test_a_grub_conf_changed_since_the_install_only_gets_default_pointed_back(sandbox):
    sandbox.install()
    grub = sandbox.path(GRUB)
    # yum installed another kernel meanwhile: grubby put its entry first.
    text = grub.read_text()
    first = text.index("title ")
    newer = (
        "title CentOS (2.6.32-573.el6.x86_64)\n\troot (hd0,0)\n\tkernel /vmlinuz-2.6.32-573.el6.x86_64 ro\n"
    )
    grub.write_text(text[:first] + newer + text[first:])
    report = roll_back(sandbox)
    config = grubconf.parse(grub.read_text())
    assert config.entries[config.default].release == RUNNING
    assert config.fallback is None
    assert [e.release for e in config.entries][:2] == ["2.6.32-573.el6.x86_64", sandbox.release]
    assert any("pointing default= back" in note for note in report.notes)


@pytest.mark.slow
def test_rc_local_line_is_removed(sandbox):
    original = sandbox.path("/etc/rc.d/rc.local").read_text()
    sandbox.install(startup="rc.local")
    roll_back(sandbox)
    assert sandbox.path("/etc/rc.d/rc.local").read_text() == original


@pytest.mark.slow
def test_rollback_into_another_root_than_recorded_is_refused(sandbox, tmp_path, build_section, node):
    sandbox.install()
    other = Sandbox(tmp_path / "other", build_section, node)
    other.settings = other.settings.with_(workdir=sandbox.workdir.path)
    before = snapshot(other.root.base)
    with pytest.raises(UserError) as caught:
        roll_back(other)
    assert f"invoke rollback {sandbox.system.flags}'" in caught.value.fix
    assert snapshot(other.root.base) == before


@pytest.mark.slow
def test_without_a_record_only_marked_hooks_go(sandbox):
    sandbox.install()
    sandbox.workdir.update_manifest("install", None)
    grub_before = sandbox.path(GRUB).read_text()
    report = roll_back(sandbox)
    assert sandbox.path(GRUB).read_text() == grub_before
    assert not sandbox.path("/etc/cron.d/toa").exists()
    assert any("no install is recorded" in note for note in report.notes)


@pytest.mark.slow
def test_a_lost_backup_falls_back_to_pointing_default_back(sandbox):
    sandbox.install()
    record = sandbox.workdir.section("install")
    sandbox.path(record["grub"]["backup"]).unlink()
    report = roll_back(sandbox)
    config = grubconf.parse(sandbox.path(GRUB).read_text())
    assert config.entries[config.default].release == RUNNING
    assert config.entries[-1].release == OLDER
    assert any("backup" in note for note in report.notes)
