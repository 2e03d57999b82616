"""The rollout's scheduler and resume, on sandbox nodes of this machine (``connection=local``).

The nodes are real CentOS 6 shaped roots; install runs the real bundle, the
nodes' own installkernel, the hooks and grub.conf step of install-kernel. The
reboot is the ``quick`` hook of tests/fleet_hook.py (the facts of grub.conf's
default entry, no QEMU), so these tests stay fast; tests/test_fleet_lab.py
reboots with the real GRUB under QEMU, over SSH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet_support import RUNNING, FleetRig, bundle_cache, tree_digest

from toa_kernel.fleet import state as st
from toa_kernel.verify.facts import grub_facts_from_text

# Real make (targz-pkg), real installkernel, depmod and the install-kernel steps on five nodes: ~1 minute.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, build_section) -> Path:
    return bundle_cache(tmp_path_factory.mktemp("bundle"), build_section)


@pytest.fixture
def rig(tmp_path, build_section, bundle_dir) -> FleetRig:
    return FleetRig(tmp_path, build_section, bundle_dir, count=5)


def test_every_node_is_installed_rebooted_and_verified_canary_first(rig):
    report = rig.rollout(canary=1, wave=2)
    assert report.ok and report.verdict == "verified" and report.exit_code == 0
    assert [b["batch"] for b in report.batches] == ["canary", "wave 1", "wave 2"]
    assert [row.batch for row in report.rows] == ["canary", "wave 1", "wave 1", "wave 2", "wave 2"]
    for name in rig.names:
        assert rig.running(name) == rig.release
        assert rig.installkernel_calls(name) == 1
        assert len(rig.boots(name)) == 1
        assert "nohz=off" in rig.path(name, "/proc/cmdline").read_text()
        assert rig.path(name, "/etc/cron.d/toa").is_file()
        state = rig.state(name)
        assert state["status"] == st.VERIFIED and state["release_before"] == RUNNING
        assert state["reboot"]["boot_id_before"] != state["reboot"]["boot_id_after"]
        assert not rig.path(name, "/var/tmp/toa-kernel").exists() or not any(
            rig.path(name, "/var/tmp/toa-kernel").iterdir()
        )
    canary_done = rig.state("node1")["history"][-1][0]
    assert all(rig.state(n)["history"][1][0] >= canary_done for n in rig.names[1:])


def test_a_second_run_touches_no_node(rig):
    rig.rollout(canary=1, wave=5)
    before = {name: tree_digest(rig.roots[name]) for name in rig.names}
    calls = rig.hook_calls()
    report = rig.rollout(canary=1, wave=5)
    assert report.ok and report.batches[0]["ran"] == [] and report.batches[1]["ran"] == []
    assert rig.hook_calls() == calls
    assert {name: tree_digest(rig.roots[name]) for name in rig.names} == before


def test_a_node_failing_preflight_refuses_the_whole_rollout(rig):
    grub = rig.path("node3", "/boot/grub/grub.conf")
    grub.write_text(grub.read_text().replace("default=0", "default=first"))
    before = {name: tree_digest(rig.roots[name]) for name in rig.names}
    report = rig.rollout(canary=1, wave=2)
    assert report.verdict == "refused" and report.exit_code == 1
    assert list(report.preflight) == ["node3"]
    assert "grub.conf" in report.preflight["node3"][0]["message"]
    assert {name: tree_digest(rig.roots[name]) for name in rig.names} == before
    assert rig.hook_calls() == []
    skipped = rig.rollout(canary=1, wave=2, skip_failed_preflight=True)
    assert skipped.verdict == "incomplete" and skipped.exit_code == 1
    assert {row.name: row.status for row in skipped.rows}["node3"] == "preflight-failed"
    assert [row.name for row in skipped.rows if row.ok] == ["node1", "node2", "node4", "node5"]
    assert tree_digest(rig.roots["node3"]) == before["node3"]


def test_a_node_failing_verify_stops_after_its_wave_and_leaves_the_rest_untouched(rig):
    rig.lost = {"node3": [f"/boot/vmlinuz-{rig.release}"]}  # GRUB falls back to the old kernel
    report = rig.rollout(canary=1, wave=2)
    statuses = {row.name: row.status for row in report.rows}
    assert statuses == {
        "node1": st.VERIFIED,
        "node2": st.VERIFIED,
        "node3": st.FAILED,
        "node4": st.PENDING,
        "node5": st.PENDING,
    }
    assert report.verdict == "stopped" and "wave 2 and later batches untouched" in report.stopped
    failed = next(row for row in report.rows if row.name == "node3")
    assert failed.verdict == "FAILED at verify"
    assert [c["check"] for c in failed.failing_checks] == ["running-release", "nohz-off"]  # the old kernel
    assert rig.running("node3") == RUNNING
    for name in ("node4", "node5"):
        assert rig.installkernel_calls(name) == 0 and rig.boots(name) == []
        assert rig.state(name)["status"] == st.PENDING and rig.state(name)["installs"] == 0
    # run again: the failure still counts, nothing more is touched
    again = rig.rollout(canary=1, wave=2)
    assert again.verdict == "stopped" and rig.installkernel_calls("node4") == 0


def test_rollback_failed_puts_the_node_back_on_its_old_kernel(rig):
    original = rig.grub_conf("node3")
    rig.lost = {"node3": [f"/boot/vmlinuz-{rig.release}"]}
    rig.rollout(canary=1, wave=2)
    stopped = rig.rollout(canary=1, wave=2, rollback_failed=True)  # the budget (0) is spent: no wave 2
    assert {row.name: row.status for row in stopped.rows}["node3"] == st.ROLLED_BACK
    assert stopped.verdict == "stopped" and rig.installkernel_calls("node4") == 0
    assert [b["batch"] for b in stopped.batches] == ["rollback"]
    report = rig.rollout(canary=1, wave=2, max_failures="1")
    rows = {row.name: row for row in report.rows}
    assert rows["node3"].status == st.ROLLED_BACK and rows["node3"].verdict == "rolled back (verify failed)"
    assert rig.grub_conf("node3") == original
    assert not rig.path("node3", "/etc/cron.d/toa").exists()
    assert rig.running("node3") == RUNNING
    state = rig.state("node3")
    assert state["rollbacks"] == 1 and state["rollback_reboot"]["boot_id_after"]
    assert [rows[n].status for n in ("node4", "node5")] == [st.VERIFIED, st.VERIFIED]
    assert report.exit_code == 1  # the fleet is not all verified


def test_max_failures_lets_the_rollout_go_on_past_a_failure(rig):
    rig.lost = {"node2": [f"/boot/vmlinuz-{rig.release}"]}
    report = rig.rollout(canary=1, wave=2, max_failures="20%")  # 1 of 5
    assert {row.name: row.status for row in report.rows}["node2"] == st.FAILED
    assert sum(row.ok for row in report.rows) == 4 and report.verdict == "failed"


def test_a_failed_canary_stops_everything(rig):
    rig.lost = {"node1": [f"/boot/vmlinuz-{rig.release}"]}
    report = rig.rollout(canary=1, wave=2, max_failures="3")
    assert report.verdict == "stopped" and "canary failed" in report.stopped
    assert [row.status for row in report.rows[1:]] == [st.PENDING] * 4


def test_a_host_that_cannot_be_reached_fails_preflight(rig, tmp_path):
    from sshd_support import free_port

    text = rig.inventory.read_text() + f"gone host=127.0.0.1 port={free_port()} root=/\n"
    rig.inventory.write_text(text)
    report = rig.rollout(canary=1, wave=5)
    assert report.verdict == "refused" and list(report.preflight) == ["gone"]
    assert "connection refused" in report.preflight["gone"][0]["message"]
    assert all(rig.installkernel_calls(name) == 0 for name in rig.names)


def test_a_root_prefix_is_not_rebooted_with_the_reboot_command(rig):
    report = rig.rollout(canary=1, wave=5, settings={"reboot_hook": ""})
    assert report.verdict == "refused"
    assert "would reboot that whole machine" in report.preflight["node1"][0]["message"]


# --- killed at any instant, run again --------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
def test_killed_while_a_wave_reboots_a_rerun_converges_without_doing_a_node_twice(rig, when):
    rig.kill_parent = {"node3": when}
    first = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--json"))
    assert first.returncode == -9  # SIGKILL
    assert rig.state("node3")["status"] == st.REBOOTING
    second = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--json"))
    assert second.returncode == 0, second.stderr
    document = json.loads(second.stdout)
    assert document["ok"] and document["verdict"] == "verified"
    for name in rig.names:
        assert rig.installkernel_calls(name) == 1, name
        assert len(rig.boots(name)) == 1, name  # one completed reboot each
        assert rig.state(name)["status"] == st.VERIFIED
    calls = rig.hook_calls()
    assert calls.count("node3 install") == (2 if when == "before" else 1)


def test_killed_in_the_middle_of_an_install_a_rerun_finishes_it_once(rig):
    # node2's own installkernel does its work, then the rollout dies (once): grub.conf and the
    # hooks are not done yet. The rerun must finish them without running installkernel again.
    installer = rig.path("node2", "/sbin/installkernel")
    installer.rename(installer.with_name("installkernel.real"))
    marker = rig.base / "installkernel-killed"
    installer.write_text(
        "#!/bin/sh\n"
        f'"$(dirname "$0")/installkernel.real" "$@" || exit $?\n'
        f"[ -e {marker} ] || {{ touch {marker}; kill -9 $PPID; }}\n"
    )
    installer.chmod(0o755)
    first = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "4"))
    assert first.returncode == -9 and marker.exists()
    assert rig.state("node2")["status"] == st.INSTALLING
    assert not rig.path("node2", "/etc/cron.d/toa").exists()
    second = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "4"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert rig.installkernel_calls("node2") == 1 and len(rig.boots("node2")) == 1
    assert rig.state("node2")["status"] == st.VERIFIED and rig.state("node2")["installs"] == 2
    assert rig.path("node2", "/etc/cron.d/toa").is_file()


# --- the task ---------------------------------------------------------------------------------------


def test_the_task_prints_a_table_and_json(rig):
    done = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "3", "--hosts", "node2,node1"))
    assert done.returncode == 0, done.stderr
    table = [line.split() for line in done.stdout.splitlines() if line.startswith("  node")]
    assert [row[:3] for row in table] == [["node2", "canary", "verify"], ["node1", "wave", "1"]]
    assert "rollout: verified" in done.stdout
    document = json.loads(rig.invoke(*rig.rollout_args("--json")).stdout)
    assert [host["status"] for host in document["hosts"]] == [st.VERIFIED, st.VERIFIED] + [st.VERIFIED] * 3
    assert document["bundle"]["release"] == rig.release and document["exit_code"] == 0
    assert len(document["bundle"]["sha256"]) == 64


def test_dry_run_preflights_and_changes_nothing(rig):
    before = {name: tree_digest(rig.roots[name]) for name in rig.names}
    done = rig.invoke(*rig.rollout_args("--dry-run", "--json"))
    document = json.loads(done.stdout)
    assert document["verdict"] == "dry run" and document["preflight"] == {}
    shown = done.stderr  # with --json, the plans go to stderr
    assert shown.count("would run the host's installkernel") == 5
    assert shown.count(f"+title CentOS ({rig.release})") == 5 and shown.count("+fallback=1") == 5  # diffs
    assert done.returncode == 0
    assert "/etc/cron.d/toa" in shown
    assert {name: tree_digest(rig.roots[name]) for name in rig.names} == before
    assert not (rig.work / "fleet").exists() or not list((rig.work / "fleet").glob("*/hosts/*.json"))


def test_fleet_verify_judges_every_node_in_one_table(rig):
    rig.rollout(hosts="node1,node2", canary=1, wave=5)
    done = rig.invoke(
        "fleet-verify", "--inventory", str(rig.inventory), "--workdir", str(rig.work), "--checks", "boot"
    )
    assert done.returncode == 1
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  node")}
    assert "PASS" in rows["node1"] and "PASS" in rows["node2"]
    assert "FAIL" in rows["node3"] and RUNNING in rows["node3"]
    assert "fleet-verify: FAIL" in done.stdout
    good = rig.invoke(
        "fleet-verify", "--inventory", str(rig.inventory), "--workdir", str(rig.work), "--checks", "boot",
        "--hosts", "node1,node2", "--json",
    )  # fmt: skip
    assert good.returncode == 0 and json.loads(good.stdout)["ok"]


def test_environment_of_the_hook_names_the_node(rig, tmp_path):
    seen = tmp_path / "env.txt"
    script = tmp_path / "hook.sh"
    script.write_text(
        f'#!/bin/sh\necho "$TOA_FLEET_HOST $TOA_FLEET_ROOT $TOA_FLEET_PHASE" >> {seen}\n'
        f"exec {rig.hook_command()}\n"
    )
    os.chmod(script, 0o755)
    rig.rollout(hosts="node2", canary=1, wave=1, settings={"reboot_hook": str(script)})
    assert seen.read_text() == f"node2 {rig.roots['node2']} install\n"


def test_an_install_that_fails_half_way_is_rolled_back_without_a_reboot(rig):
    # node2's installkernel copies the kernel and edits grub.conf (grubby), then fails.
    original = rig.grub_conf("node2")
    installer = rig.path("node2", "/sbin/installkernel")
    installer.rename(installer.with_name("installkernel.real"))
    installer.write_text(
        '#!/bin/sh\n"$(dirname "$0")/installkernel.real" "$@"\necho "dracut: out of space" >&2\nexit 1\n'
    )
    installer.chmod(0o755)
    report = rig.rollout(canary=1, wave=4, rollback_failed=True)
    rows = {row.name: row for row in report.rows}
    assert rows["node2"].status == st.ROLLED_BACK and rows["node2"].verdict == "rolled back (install failed)"
    assert "dracut: out of space" in rows["node2"].error["message"]
    # grubby's entry goes too: grub.conf comes back from the backup taken before installkernel ran
    assert rig.grub_conf("node2") == original
    grub = grub_facts_from_text(rig.grub_conf("node2"))
    assert grub.default_entry.release == RUNNING
    backups = sorted(rig.path("node2", "/boot/grub").glob("grub.conf.toa-backup-*"))
    assert backups[0].read_text() == original  # taken before grubby's edit
    for leftover in (
        f"/boot/vmlinuz-{rig.release}",
        f"/boot/initramfs-{rig.release}.img",
        f"/lib/modules/{rig.release}",
    ):
        assert not rig.path("node2", leftover).exists(), leftover
    assert rig.boots("node2") == [] and rig.running("node2") == RUNNING  # never rebooted
    assert [rows[n].status for n in ("node3", "node4", "node5")] == [st.VERIFIED] * 3  # same wave


def test_a_node_that_does_not_come_back_fails_with_the_time_it_was_given(rig):
    rig.hang = ["node2"]
    report = rig.rollout(canary=1, wave=2, settings={"boot_timeout": 3.0})
    row = {r.name: r for r in report.rows}["node2"]
    assert row.status == st.FAILED and row.verdict == "FAILED at reboot"
    assert "did not come back with a new boot within 3 s" in row.error["message"]
    assert rig.state("node2")["reboot"]["sent_at"] and rig.boots("node2") == []


def test_ctrl_c_while_a_wave_waits_stops_at_once_and_keeps_each_hosts_state(rig):
    rig.hang = ["node2", "node3"]
    command = [sys.executable, "-m", "invoke", "-r", str(Path(__file__).parent.parent)]
    process = subprocess.Popen(
        [*command, *rig.rollout_args("--canary", "1", "--wave", "2")],
        env={**os.environ, **rig.env()},
        cwd=rig.base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "node3 install" not in rig.hook_calls():
            time.sleep(0.2)
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _out, err = process.communicate(timeout=20)
        assert time.monotonic() - started < 10  # not the 30 s boot timeout
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "interrupted" in err
    assert [rig.state(n)["status"] for n in ("node2", "node3")] == [st.REBOOTING, st.REBOOTING]
    assert rig.state("node4")["status"] == st.PENDING and rig.installkernel_calls("node4") == 0
