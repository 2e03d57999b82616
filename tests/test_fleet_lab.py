"""Fleet scenarios with real parts: five real sshd on 127.0.0.1 (one with CentOS 6's legacy
algorithms), each node a sandbox CentOS 6 root reached over SSH, and the reboot of a node =
the boot lab booting that node's /boot with the real GRUB legacy under QEMU (the node's
proc/ then holds the release, command line and boot id that boot printed).

Each test says how many lab boots it costs (about 15-25 s each on 2 cores).
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
from lab_support import kernel_cache_dir
from sshd_support import forbidden_commands, needs_sshd, start_sshd

from toa_kernel.fleet import state as st
from toa_kernel.lab import tools
from toa_kernel.lab.kernel import chosen_kernel
from toa_kernel.system import hostkeys

needs_lab = pytest.mark.skipif(not tools.lab_available(), reason="boot lab packages missing (setup.sh)")
pytestmark = [pytest.mark.slow, pytest.mark.ssh, needs_sshd]


@pytest.fixture(scope="module")
def servers():
    started = []
    try:
        for profile in ("modern", "modern", "modern", "modern", "legacy"):
            started.append(start_sshd(profile))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(autouse=True)
def no_user_known_hosts(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(hostkeys, "USER_KNOWN_HOSTS", tmp_path / "user_known_hosts")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, build_section) -> Path:
    return bundle_cache(tmp_path_factory.mktemp("bundle"), build_section)


@pytest.fixture(scope="module")
def real_kernel() -> Path:
    return chosen_kernel(None, kernel_cache_dir(), say=lambda text: None)


def make_rig(tmp_path, build_section, bundle_dir, servers, count=5, mode="lab", kernel=None) -> FleetRig:
    return FleetRig(
        tmp_path, build_section, bundle_dir, count=count, mode=mode, kernel=kernel, servers=servers
    )


def commands_of(servers) -> list[tuple[str, str]]:
    return [pair for server in servers for pair in server.commands()]


@needs_lab
@pytest.mark.lab
def test_five_nodes_over_ssh_are_verified_after_a_real_grub_boot(
    tmp_path, build_section, bundle_dir, servers, real_kernel
):
    """5 lab boots: the canary, then waves of 2."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers, kernel=real_kernel)
    logged_before = len(commands_of(servers))
    done = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--json"))
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert document["verdict"] == "verified" and [b["batch"] for b in document["batches"]] == [
        "canary", "wave 1", "wave 2",
    ]  # fmt: skip
    for name in rig.names:
        boots = rig.boots(name)
        assert len(boots) == 1 and boots[0]["release"] == rig.release  # what the real GRUB booted
        assert "nohz=off" in rig.path(name, "/proc/cmdline").read_text().split()
        assert rig.installkernel_calls(name) == 1
        state = rig.state(name)
        assert state["status"] == st.VERIFIED
        assert state["reboot"]["boot_id_after"] == boots[0]["boot_id"] != state["reboot"]["boot_id_before"]
    new_commands = commands_of(servers)[logged_before:]
    assert new_commands and forbidden_commands(new_commands) == []  # no python, no realpath, no sync FILE
    assert any("sha256sum" in command for _user, command in new_commands)


def mount_small_boot(root: Path) -> Path:
    """Give a node a /boot of its own, a 1 MiB filesystem: too small for the new kernel's files."""
    boot = root / "boot"
    saved = root / "boot.saved"
    boot.rename(saved)
    boot.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(boot)], check=True)
    subprocess.run(["cp", "-a", f"{saved}/.", str(boot)], check=True)
    return boot


def test_node3_with_a_full_boot_fails_preflight_and_nothing_is_installed_anywhere(
    tmp_path, build_section, bundle_dir, servers
):
    """No boot: the rollout is refused before anything is written."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers, mode="quick")
    boot = mount_small_boot(rig.roots["node3"])
    try:
        before = {name: tree_digest(rig.roots[name]) for name in rig.names}
        done = rig.invoke(*rig.rollout_args("--json"))
        document = json.loads(done.stdout)
        assert done.returncode == 1 and document["verdict"] == "refused"
        assert list(document["preflight"]) == ["node3"]
        message = document["preflight"]["node3"][0]["message"]
        assert "not enough free space for /boot" in message and str(boot) in message
        assert {name: tree_digest(rig.roots[name]) for name in rig.names} == before
        assert rig.hook_calls() == []
        assert all(row["status"] in (st.PENDING, "preflight-failed") for row in document["hosts"])
    finally:
        subprocess.run(["umount", str(boot)], check=False)


@needs_lab
@pytest.mark.lab
def test_node2_of_the_first_wave_fails_verify_the_rollout_stops_and_rollback_failed_puts_it_back(
    tmp_path, build_section, bundle_dir, servers, real_kernel
):
    """4 lab boots: canary, wave 1 (node2 falls back to its old kernel), node2 again after the rollback."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers, kernel=real_kernel)
    rig.lost = {"node2": [f"/boot/vmlinuz-{rig.release}"]}  # node2's disk lost the new kernel file
    original = rig.grub_conf("node2")
    first = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--json"))
    document = json.loads(first.stdout)
    status = {host["name"]: host["status"] for host in document["hosts"]}
    assert first.returncode == 1 and document["verdict"] == "stopped"
    assert status == {"node1": "verified", "node2": "failed", "node3": "verified", "node4": "pending",
                      "node5": "pending"}  # fmt: skip
    node2 = next(host for host in document["hosts"] if host["name"] == "node2")
    assert {c["check"] for c in node2["failing_checks"]} == {"running-release", "nohz-off"}
    assert rig.boots("node2")[0]["release"] == RUNNING  # the real GRUB fell back (Error 15)
    for name in ("node4", "node5"):
        assert rig.installkernel_calls(name) == 0 and rig.boots(name) == []

    second = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--rollback-failed", "--json"))
    document = json.loads(second.stdout)
    node2 = next(host for host in document["hosts"] if host["name"] == "node2")
    assert node2["status"] == st.ROLLED_BACK and node2["release"] == RUNNING
    assert rig.grub_conf("node2") == original
    assert not rig.path("node2", "/etc/cron.d/toa").exists()
    assert [boot["release"] for boot in rig.boots("node2")] == [RUNNING, RUNNING]
    assert second.returncode == 1 and document["verdict"] == "stopped"  # one failure: budget 0
    for name in ("node4", "node5"):
        assert rig.installkernel_calls(name) == 0 and rig.boots(name) == []


def test_a_node_whose_sshd_is_down_is_named_and_the_rest_go_on_only_when_told(
    tmp_path, build_section, bundle_dir, servers
):
    """No boot (quick reboots)."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers[:3], count=3, mode="quick")
    servers[1].stop_listener()
    try:
        refused = json.loads(rig.invoke(*rig.rollout_args("--json")).stdout)
        assert refused["verdict"] == "refused" and list(refused["preflight"]) == ["node2"]
        assert "connection refused" in refused["preflight"]["node2"][0]["message"]
        assert all(rig.installkernel_calls(name) == 0 for name in rig.names)
        done = rig.invoke(*rig.rollout_args("--skip-failed-preflight", "--json"))
        document = json.loads(done.stdout)
        assert done.returncode == 1 and document["verdict"] == "incomplete"
        assert {h["name"]: h["status"] for h in document["hosts"]} == {
            "node1": "verified", "node2": "preflight-failed", "node3": "verified",
        }  # fmt: skip
    finally:
        servers[1].start()


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@needs_lab
@pytest.mark.lab
def test_sigkill_of_the_rollout_mid_wave_then_a_rerun_converges_with_no_node_done_twice(
    tmp_path, build_section, bundle_dir, servers, real_kernel
):
    """3 or 4 lab boots: the canary, the wave killed while its nodes reboot, the wave again."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers[:3], count=3, kernel=real_kernel)
    command = [sys.executable, "-m", "invoke", "-r", str(Path(__file__).parent.parent)]
    process = subprocess.Popen(
        [*command, *rig.rollout_args("--canary", "1", "--wave", "2")],
        env={**os.environ, **rig.env()},
        cwd=rig.base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the rollout, its hooks and their QEMU: one process group
    )
    try:
        rebooting = lambda: rig.state("node2").get("status") == st.REBOOTING  # noqa: E731
        assert wait_for(rebooting, 240), "the wave never reached its reboot"
        time.sleep(2)  # in the middle of the lab boot
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    interrupted = {name: rig.state(name).get("status") for name in rig.names}
    assert interrupted["node1"] == st.VERIFIED and interrupted["node2"] == st.REBOOTING
    done = rig.invoke(*rig.rollout_args("--canary", "1", "--wave", "2", "--json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["verdict"] == "verified"
    for name in rig.names:
        assert rig.installkernel_calls(name) == 1, name  # installed once
        assert len(rig.boots(name)) == 1, name  # one completed boot: rebooted once
        assert rig.state(name)["status"] == st.VERIFIED


def test_an_unknown_host_key_refuses_the_rollout_until_it_is_accepted(
    tmp_path, build_section, bundle_dir, servers
):
    """No boot."""
    rig = make_rig(tmp_path, build_section, bundle_dir, servers[:2], count=2, mode="quick")
    rig.known_hosts.write_text(servers[0].host_key_line())  # node2's key was never recorded
    done = rig.invoke(*rig.rollout_args("--json"))
    document = json.loads(done.stdout)
    assert done.returncode == 1 and document["verdict"] == "refused"
    problem = document["preflight"]["node2"][0]
    assert "SHA256:" in problem["message"] and "accept-new-host-key" in problem["fix"]
    assert rig.installkernel_calls("node1") == 0
    accepted = rig.invoke(*rig.rollout_args("--dry-run", "--accept-new-host-key", "--json"))
    assert json.loads(accepted.stdout)["verdict"] == "dry run"
    assert f"[127.0.0.1]:{servers[1].port}" in rig.known_hosts.read_text()
    assert rig.installkernel_calls("node1") == 0 and rig.installkernel_calls("node2") == 0
