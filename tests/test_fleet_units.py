"""Small parts of the fleet rollout: host state files, arch matching, free space, the table."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from toa_kernel.boot.preflight import SpaceNeed, free_space
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.fleet import hostops
from toa_kernel.fleet import state as st
from toa_kernel.fleet.report import HostRow, table
from toa_kernel.fleet.rollout import verdict_of
from toa_kernel.fleet.state import HostState, RebootRecord, RolloutDir
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root

SHA = "ab" * 32


def test_a_host_state_survives_a_save_and_load(tmp_path):
    rollout = RolloutDir(tmp_path, SHA[:12])
    state = rollout.load("web1", SHA)
    assert state.status == st.PENDING and not rollout.state_path("web1").exists()
    state.reboot = RebootRecord(boot_id_before="a", requested_at=1.0)
    rollout.save(state, st.REBOOTING, "reboot")
    again = rollout.load("web1", SHA)
    assert again.status == st.REBOOTING and again.step == "reboot"
    assert again.reboot == RebootRecord(boot_id_before="a", requested_at=1.0)
    assert [entry[1:] for entry in again.history] == [[st.REBOOTING, "reboot"]]
    assert not list(rollout.hosts_dir.glob(".*"))  # no temporary file left behind


def test_a_state_of_another_bundle_or_a_broken_file_is_refused(tmp_path):
    rollout = RolloutDir(tmp_path, SHA[:12])
    rollout.save(HostState(host="web1", bundle=SHA))
    with pytest.raises(UserError, match="it is for bundle abababababab, not cdcdcdcdcdcd"):
        rollout.load("web1", "cd" * 32)
    rollout.state_path("web2").write_text("{not json")
    with pytest.raises(UserError, match=r"web2\.json cannot be read"):
        rollout.load("web2", SHA)
    rollout.state_path("web3").write_text(json.dumps({"host": "web3", "bundle": SHA, "status": "dancing"}))
    with pytest.raises(UserError, match="unknown status 'dancing'"):
        rollout.load("web3", SHA)


@pytest.mark.parametrize(
    ("bundle", "host", "ok"),
    [
        ("x86_64", "x86_64", True),
        ("x86_64", "i686", False),
        ("i686", "i686", True),
        ("i686", "x86_64", False),
    ],
)
def test_the_kernel_must_be_for_the_hosts_architecture(bundle, host, ok):
    assert hostops.arch_matches(bundle, host) is ok


def sandbox(tmp_path: Path) -> LocalSystem:
    (tmp_path / "boot").mkdir()
    (tmp_path / "lib" / "modules").mkdir(parents=True)
    return LocalSystem(Root.of(tmp_path))


def test_free_space_needs_of_a_node_on_one_filesystem_are_added_together(tmp_path):
    system = sandbox(tmp_path)
    free = system.free_bytes("/boot")
    part = free * 6 // 10  # one fits, two do not (with room for what other processes write meanwhile)
    alone = [SpaceNeed("/boot", "/boot", part)]
    assert free_space(system, alone) == []
    both = [*alone, SpaceNeed("/lib/modules/2.6.32-toa", "/lib/modules", part)]
    problems = free_space(system, both)
    assert len(problems) == 1 and "/boot and /lib/modules" in problems[0].message
    assert isinstance(problems[0], EnvironmentFailure)


def test_boot_id_and_running_release_come_from_the_roots_proc(tmp_path):
    system = sandbox(tmp_path)
    assert hostops.boot_id(system) is None and hostops.running_release(system) is None
    boot_id = str(uuid.uuid4())
    (tmp_path / "proc" / "sys" / "kernel" / "random").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "random" / "boot_id").write_text(boot_id + "\n")
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text("2.6.32-431.el6.x86_64\n")
    assert hostops.boot_id(system) == boot_id
    assert hostops.running_release(system) == "2.6.32-431.el6.x86_64"


def test_sha256_on_the_host_and_missing_tools(tmp_path):
    system = sandbox(tmp_path)
    (tmp_path / "boot" / "f").write_bytes(b"abc")
    assert (
        hostops.sha256(system, "/boot/f")
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert hostops.sha256(system, "/boot/missing") is None
    assert hostops.sha256_many(system, ["/boot/f", "/boot/missing"]) == {
        "/boot/f": hostops.sha256(system, "/boot/f")
    }
    assert hostops.missing_tools(system, ["sh", "no-such-tool-here"]) == ["no-such-tool-here"]


def test_the_final_table_shows_step_release_verdict_and_why():
    rows = [
        HostRow("web1", "root@a:22", "canary", status=st.VERIFIED, step="verify", release="2.6.32-toa",
                verdict="verified", seconds=12.3),
        HostRow("web2", "root@b:22", "wave 1", status=st.FAILED, step="verify", release="2.6.32-431",
                verdict="FAILED at verify", seconds=20.0, error={"message": "verify failed", "fix": ""},
                failing_checks=[{"check": "running-release", "status": "FAIL", "reason": "fell back"}]),
    ]  # fmt: skip
    lines = table(rows)
    assert lines[0].split() == ["host", "batch", "step", "release", "verdict", "seconds"]
    assert lines[1].split() == ["web1", "canary", "verify", "2.6.32-toa", "verified", "12.3"]
    assert lines[2].split()[:4] == ["web2", "wave", "1", "verify"]
    assert lines[-1].strip() == "FAIL running-release: fell back"


@pytest.mark.parametrize(
    ("status", "failed", "installs", "verdict"),
    [
        (st.VERIFIED, None, 1, "verified"),
        (st.FAILED, {"step": "reboot"}, 1, "FAILED at reboot"),
        (st.ROLLED_BACK, {"step": "verify"}, 1, "rolled back (verify failed)"),
        (st.PENDING, None, 0, "untouched"),
        (st.INSTALLED, None, 1, "stopped at installed"),
    ],
)
def test_each_state_has_its_verdict(status, failed, installs, verdict):
    state = HostState(host="h", bundle=SHA, status=status, failed=failed, installs=installs)
    assert verdict_of(state) == verdict
