"""Foundation: settings, root prefix, careful writes, manifest, lock, plans."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from invoke import Config

from toa_kernel.core.errors import LockHeld, UserError
from toa_kernel.core.fileops import atomic_write, backup_file, backups_of
from toa_kernel.core.plan import Plan, file_edit, unified_diff
from toa_kernel.core.settings import VENDOR_URL, Settings
from toa_kernel.core.state import Workdir, WorkLock
from toa_kernel.system.rootfs import Root

# --- settings -----------------------------------------------------------------


def project_config(project_dir: Path) -> Config:
    config = Config(project_location=str(project_dir))
    config.load_project()
    config.load_shell_env()
    return config


def test_project_config_supplies_the_documented_defaults(project_dir):
    settings = Settings.from_config(project_config(project_dir))
    assert settings.url == VENDOR_URL
    assert (settings.extraversion, settings.option_code, settings.jobs) == ("-toa", 254, 0)
    assert settings.effective_jobs == (os.cpu_count() or 1)
    assert settings.sha256 == "" and settings.mirrors == ()


def test_environment_variables_override_the_project_file(project_dir, monkeypatch):
    monkeypatch.setenv("INVOKE_TOA_OPTION_CODE", "252")
    monkeypatch.setenv("INVOKE_TOA_MIRRORS", "http://a.example/x.tgz http://b.example/x.tgz")
    settings = Settings.from_config(project_config(project_dir))
    assert settings.option_code == 252
    assert settings.urls == [VENDOR_URL, "http://a.example/x.tgz", "http://b.example/x.tgz"]


def test_flags_override_config_and_none_means_unset(project_dir):
    settings = Settings.from_config(project_config(project_dir), jobs=3, url=None)
    assert settings.jobs == 3 and settings.url == VENDOR_URL


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"sha256": "abc"}, "64 hexadecimal"),
        ({"option_code": 300}, "--option-code 300: is out of range"),
        ({"option_code": "x"}, "--option-code 'x': is not a whole number"),
        ({"url": "ftp://host/file.tgz"}, "not an http"),
        ({"extraversion": "-t oa"}, "--extraversion '-t oa': has characters"),
        ({"jobs": -1}, "jobs"),
        ({"startup": "systemd"}, "startup style"),
    ],
)
def test_bad_settings_are_user_errors_with_a_fix(override, words):
    with pytest.raises(UserError) as caught:
        Settings.from_config({}, **override)
    assert words in caught.value.message


def test_sha256_pin_is_normalised_to_lower_case():
    pin = "AB" * 32
    assert Settings.from_config({}, sha256=pin).sha256 == pin.lower()


# --- root prefix ----------------------------------------------------------------


def test_root_maps_system_paths_under_the_prefix(tmp_path):
    root = Root.of(tmp_path)
    assert root.path("/boot/grub/grub.conf") == tmp_path.resolve() / "boot/grub/grub.conf"
    assert root.system_path(root.path("/etc/cron.d/toa")) == "/etc/cron.d/toa"
    with pytest.raises(ValueError):
        root.path("etc/x")
    with pytest.raises(ValueError):
        root.path("/etc/../../x")


def test_root_resolves_links_inside_the_root_not_the_host(tmp_path):
    root = Root.of(tmp_path)
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "boot/grub/grub.conf").write_text("x")
    os.symlink("../boot/grub/grub.conf", tmp_path / "etc/grub.conf")
    os.symlink("/boot/grub/grub.conf", tmp_path / "etc/abs.conf")
    assert root.resolve("/etc/grub.conf") == root.path("/boot/grub/grub.conf")
    assert root.resolve("/etc/abs.conf") == root.path("/boot/grub/grub.conf")


def test_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Root.of(tmp_path / "nope")


# --- careful writes --------------------------------------------------------------


def test_atomic_write_through_a_symlink_writes_the_target_and_keeps_mode(tmp_path):
    target = tmp_path / "grub.conf"
    target.write_text("old\n")
    target.chmod(0o600)
    link = tmp_path / "link.conf"
    link.symlink_to("grub.conf")
    written = atomic_write(link, "new\n")
    assert written == target.resolve()
    assert link.is_symlink() and target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_backup_keeps_content_and_mode(tmp_path):
    target = tmp_path / "grub.conf"
    target.write_text("password --md5 $1$abc\n")
    target.chmod(0o600)
    backup = backup_file(target)
    assert backup.read_text() == target.read_text()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert backups_of(target) == [backup]
    assert backup_file(target) != backup  # a second backup never overwrites the first


def test_atomic_write_into_a_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "file", "x")


# --- plans -----------------------------------------------------------------------


def test_file_edit_is_none_when_nothing_differs(tmp_path):
    path = tmp_path / "toa.h"
    path.write_text("#define TCPOPT_TOA 254\n")
    assert file_edit(path, path.read_text(), "same") is None


def test_dry_run_prints_the_diff_and_changes_nothing(tmp_path):
    path = tmp_path / "toa.h"
    path.write_text("#define TCPOPT_TOA  200\n")
    plan = Plan("patch")
    plan.add(file_edit(path, "#define TCPOPT_TOA  254\n", "TCPOPT_TOA 200 -> 254", label="net/toa/toa.h"))
    lines: list[str] = []
    plan.apply(dry_run=True, echo=lines.append)
    assert "would TCPOPT_TOA 200 -> 254" in lines[0]
    assert "-#define TCPOPT_TOA  200" in lines[0] and "+#define TCPOPT_TOA  254" in lines[0]
    assert path.read_text() == "#define TCPOPT_TOA  200\n"
    plan.apply(dry_run=False, echo=lines.append)
    assert path.read_text() == "#define TCPOPT_TOA  254\n"


def test_unified_diff_marks_a_missing_final_newline():
    diff = unified_diff("a\nb", "a\nc", "f")
    assert "\\ No newline at end of file" in diff


# --- manifest and lock -----------------------------------------------------------


def test_manifest_sections_round_trip_and_corruption_is_explained(tmp_path):
    workdir = Workdir(tmp_path).ensure()
    workdir.update_manifest("fetch", {"sha256": "x"})
    workdir.update_manifest("build", {"release": "2.6.32-toa"})
    assert workdir.section("fetch") == {"sha256": "x"}
    workdir.update_manifest("build", None)
    assert workdir.section("build") == {}
    workdir.manifest_path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        workdir.load_manifest()


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from toa_kernel.core.state import WorkLock, Workdir
    with WorkLock(Workdir(Path(sys.argv[1]))):
        print("locked", flush=True)
        time.sleep(30)
    """
)


def test_second_run_stops_at_once_naming_the_lock_holder(tmp_path, project_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=project_dir
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld) as caught, WorkLock(Workdir(tmp_path)):
            pass
        assert f"pid {holder.pid}" in caught.value.message
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: its lock is taken over.
    notes: list[str] = []
    with WorkLock(Workdir(tmp_path), echo=notes.append):
        assert Workdir(tmp_path).lock_path.read_text().startswith(str(os.getpid()))
    assert notes and str(holder.pid) in notes[0]


def test_lock_is_reentrant_within_one_process(tmp_path):
    workdir = Workdir(tmp_path)
    with WorkLock(workdir), WorkLock(workdir):
        pass
    with WorkLock(workdir):
        pass


# --- the command line's error contract --------------------------------------------


def run_invoke(project_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(project_dir), *args], capture_output=True, text=True
    )


def test_user_error_prints_message_and_fix_without_traceback(project_dir, tmp_path):
    done = run_invoke(project_dir, "install-kernel", "--workdir", str(tmp_path), "--root", str(tmp_path))
    assert done.returncode == 2
    assert "error: no build is recorded" in done.stderr and "fix: run 'invoke fetch build'" in done.stderr
    assert "Traceback" not in done.stderr


def test_with_json_the_error_is_the_json_document_on_stdout(project_dir, tmp_path):
    done = run_invoke(
        project_dir, "install-kernel", "--json", "--workdir", str(tmp_path), "--root", str(tmp_path)
    )
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert document["ok"] is False
    assert document["error"]["message"].startswith("no build is recorded")
    assert document["error"]["fix"]


def test_bad_setting_from_the_environment_is_a_clear_error(project_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(project_dir), "fetch", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "INVOKE_TOA_SHA256": "not-a-digest"},
    )
    assert done.returncode == 2
    assert "64 hexadecimal digits" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "downloads").exists()
