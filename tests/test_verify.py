"""``invoke verify``: expected release, report, and the real command line (exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from verify_support import CMDLINE, OLD, TOA, grub_conf, make_root

from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.verify.checks import Status
from toa_kernel.verify.facts import Facts, grub_facts_from_text
from toa_kernel.verify.run import expectation, judge


def invoke(project_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=project_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def workdir(tmp_path):
    work = Workdir(tmp_path / "work")
    work.update_manifest("build", {"release": TOA})
    return work.path


def test_expected_release_from_the_manifest_then_flag(tmp_path, workdir):
    settings = Settings(workdir=workdir)
    expect = expectation(settings)
    assert expect.release == TOA and "(build)" in expect.release_source
    assert expect.kernel_args == ("nohz=off",)
    assert expectation(settings, "2.6.32-other").release == "2.6.32-other"
    assert expectation(settings.with_(kernel_args="crashkernel=auto")).kernel_args == (
        "nohz=off",
        "crashkernel=auto",
    )


def test_expected_release_from_the_install_section_or_none(tmp_path):
    work = Workdir(tmp_path / "w")
    assert expectation(Settings(workdir=work.path)).release is None
    work.update_manifest("install", {"release": OLD})
    assert expectation(Settings(workdir=work.path)).release == OLD


def test_bad_release_flag_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a kernel release name"):
        expectation(Settings(workdir=tmp_path), "2.6.32 toa; rm -rf /")


def test_nothing_judgeable_is_an_error_not_a_pass():
    with pytest.raises(UserError, match="none of the selected checks could be judged"):
        judge(Facts(release=TOA), expectation(Settings(), TOA), "hooks")


def test_report_json_and_table(tmp_path, workdir):
    facts = Facts(
        release=OLD, cmdline=CMDLINE, grub=grub_facts_from_text(grub_conf(default=0)), source="test"
    )
    report = judge(facts, expectation(Settings(workdir=workdir)), "boot")
    assert report.status is Status.FAIL and report.exit_code == 1
    document = report.as_dict()
    assert document["verdict"] == "FAIL"
    assert document["counts"] == {"PASS": 2, "WARN": 0, "FAIL": 1, "n/a": 0}
    assert [c["check"] for c in document["checks"]] == ["running-release", "nohz-off", "grub-default"]
    table = report.table()
    assert table[0].startswith("  FAIL  running-release  running 2.6.32-220.el6.x86_64")
    assert table[1].strip().startswith("fix: read the console")
    assert len(table) == 4  # PASS lines carry no fix line


def test_cli_all_good_exits_0(project_dir, tmp_path, workdir, node):
    root = make_root(tmp_path)
    done = invoke(project_dir, "verify", *node.flags(root), "--workdir", str(workdir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: PASS" in done.stdout
    assert f"TOA release {TOA} from" in done.stdout


def test_cli_fallback_boot_exits_1_with_the_reason(project_dir, tmp_path, workdir, node):
    root = make_root(tmp_path, running=OLD, toa_loaded=False)
    done = invoke(project_dir, "verify", *node.flags(root), "--workdir", str(workdir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "verdict: FAIL" in done.stdout
    assert "fell back" in done.stdout
    # the TOA kernel's own module and config are inspected, not the old kernel's
    assert f"IPv6 is built into {TOA}" in done.stdout
    assert f"PASS  module-installed  /lib/modules/{TOA}/kernel/net/toa/toa.ko" in done.stdout


def test_cli_json_for_machines(project_dir, tmp_path, workdir, node):
    root = make_root(tmp_path, cron_mode=0o666)
    done = invoke(project_dir, "verify", *node.flags(root), "--workdir", str(workdir), "--json")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    failed = [c["check"] for c in document["checks"] if c["status"] == "FAIL"]
    assert failed == ["cron"]


def test_cli_collect_then_judge_the_file_elsewhere(project_dir, tmp_path, workdir, node):
    root = make_root(tmp_path, running=OLD, grub_default=1)
    collected = invoke(project_dir, "verify", *node.flags(root), "--collect")
    assert collected.returncode == 0, collected.stderr
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(collected.stdout)
    assert json.loads(collected.stdout)["release"] == OLD

    done = invoke(
        project_dir, "verify", "--facts", str(facts_file), "--checks", "boot", "--workdir", str(workdir)
    )
    assert done.returncode == 1
    assert "never switched" in done.stdout
    assert "ipv6-builtin" not in done.stdout


def test_cli_partial_facts_file_with_the_boot_checks(project_dir, tmp_path):
    facts_file = tmp_path / "lab-facts.json"
    facts = Facts(release=TOA, cmdline=CMDLINE, grub=grub_facts_from_text(grub_conf()), source="lab")
    facts_file.write_text(facts.to_json())
    done = invoke(project_dir, "verify", "--facts", str(facts_file), "--checks", "boot", "--release", TOA)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") >= 3


def test_cli_malformed_facts_file_exits_2_with_a_clear_error(project_dir, tmp_path):
    facts_file = tmp_path / "facts.json"
    facts_file.write_text('{"schema": 1, "release": ["2.6.32-toa"]}')
    done = invoke(project_dir, "verify", "--facts", str(facts_file))
    assert done.returncode == 2
    assert f"error: --facts {facts_file}: field release must be a string" in done.stderr
    assert "fix:" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_unknown_check_exits_2(project_dir, tmp_path):
    root = make_root(tmp_path)
    done = invoke(project_dir, "verify", "--root", str(root), "--checks", "boot,nope", "--release", TOA)
    assert done.returncode == 2
    assert "unknown check or check set 'nope'" in done.stderr
