"""Boot hooks: the startup script, the rc.local line and the cron job.

The rendered scripts are run for real with busybox's sh inside a chroot whose
``modprobe`` and ``logger`` record their calls.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from centos6_root import RUNNING, centos6_root, snapshot
from conftest import have
from node_support import NodeRoot

from toa_kernel.boot import hooks as boothooks
from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT, RC_LOCAL
from toa_kernel.core.plan import Plan
from toa_kernel.system.rootfs import Root

RELEASE = "2.6.32-toa"


@pytest.fixture
def root(tmp_path, node) -> NodeRoot:
    """A CentOS 6 root; the hooks are planned and written through ``root.system`` (locally and
    over SSH), the test looks at the files here."""
    base = Root.of(centos6_root(tmp_path / "root"))
    return NodeRoot(base, node.open(base.base))


def apply(plan: Plan) -> list[str]:
    return plan.apply(False, echo=lambda text: None)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- rendering ---------------------------------------------------------------------


def test_scripts_are_valid_shell():
    for text in (boothooks.modules_script(), boothooks.rc_local_line(), boothooks.cron_command(RELEASE)):
        result = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr


def test_cron_file_is_one_job_line_for_root_without_percent_signs():
    text = boothooks.cron_file(RELEASE)
    assert text.endswith("\n") and "%" not in text
    jobs = [line for line in text.splitlines() if line and not line.startswith("#") and "=" not in line[:8]]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    assert fields[:6] == ["*", "*", "*", "*", "*", "root"]
    assert f'"$(uname -r)" = "{RELEASE}"' in fields[6]


@pytest.mark.parametrize("bad", ["", "2.6.32 toa", "2.6.32;reboot", "$(id)", "-toa", "a/b"])
def test_a_release_that_could_inject_shell_is_refused(bad):
    with pytest.raises(UserError):
        boothooks.cron_file(bad)


def test_rc_local_line_goes_before_a_final_exit_and_only_once():
    text = "#!/bin/sh\ntouch /var/lock/subsys/local\nexit 0\n"
    once = boothooks.with_rc_local_line(text)
    assert once.splitlines()[-1] == "exit 0"
    assert once.count(boothooks.MARKER) == 1
    assert boothooks.with_rc_local_line(once) == once
    assert boothooks.without_rc_local_line(once) == text


def test_rc_local_without_final_newline_gets_the_line_after_its_last_line_and_back_exactly():
    text = "#!/bin/sh\ntouch /var/lock/subsys/local"
    added = boothooks.with_rc_local_line(text)
    assert added == text + "\n" + boothooks.rc_local_line()
    assert boothooks.without_rc_local_line(added) == text


@pytest.mark.parametrize(
    "text",
    [
        "#!/bin/sh\r\ntouch /var/lock/subsys/local\r\n",
        "#!/bin/sh\r\ntouch /var/lock/subsys/local\r\nexit 0",
        "#!/bin/sh\ntouch x\x0cy \xe9t\xe9\r\n",
        "",
    ],
)
def test_rc_local_line_keeps_every_other_byte_and_comes_out_exactly(text):
    added = boothooks.with_rc_local_line(text)
    assert boothooks.with_rc_local_line(added) == added
    assert added.count(boothooks.MARKER) == 1
    if "\r\n" in text and "\n" not in text.replace("\r\n", ""):
        assert boothooks.rc_local_line() + "\r\n" in added and "\n" not in added.replace("\r\n", "")
    assert boothooks.without_rc_local_line(added) == text


def test_an_old_marked_rc_local_line_is_replaced_not_duplicated():
    text = "#!/bin/sh\n/sbin/modprobe toa  # toa-kernel: old version\n"
    updated = boothooks.with_rc_local_line(text)
    assert "old version" not in updated
    assert updated.count(boothooks.MARKER) == 1


# --- planning and applying ------------------------------------------------------------


def test_install_writes_executable_startup_and_root_owned_cron_then_nothing(root):
    changes = apply(boothooks.plan_install(root.system, RELEASE, "modules"))
    assert len(changes) == 2
    script = root.path(MODULES_SCRIPT)
    cron = root.path(CRON_FILE)
    assert script.read_text() == boothooks.modules_script() and mode_of(script) == 0o755
    assert cron.read_text() == boothooks.cron_file(RELEASE) and mode_of(cron) == 0o644
    assert cron.stat().st_uid == 0 and cron.stat().st_gid == 0
    assert boothooks.installed(root.system) == [MODULES_SCRIPT, CRON_FILE]
    before = snapshot(root.base)
    assert not boothooks.plan_install(root.system, RELEASE, "modules")
    assert snapshot(root.base) == before


def test_a_cron_file_cron_would_ignore_gets_its_mode_fixed(root):
    apply(boothooks.plan_install(root.system, RELEASE, "modules"))
    cron = root.path(CRON_FILE)
    os.chmod(cron, 0o666)
    plan = boothooks.plan_install(root.system, RELEASE, "modules")
    assert [c.summary for c in plan] == [f"{CRON_FILE}: mode 0666 uid 0 -> 0644 root:root"]
    apply(plan)
    assert mode_of(cron) == 0o644


def test_rc_local_style_adds_one_line_through_the_link_and_switching_back_removes_it(root):
    rc_local = root.path("/etc/rc.d/rc.local")
    original = rc_local.read_text()
    apply(boothooks.plan_install(root.system, RELEASE, "rc.local"))
    assert root.path(RC_LOCAL).is_file() and rc_local.read_text().count(boothooks.MARKER) == 1
    assert root.path("/etc/rc.local").is_symlink() and mode_of(rc_local) == 0o755
    assert not root.path(MODULES_SCRIPT).exists()
    assert not boothooks.plan_install(root.system, RELEASE, "rc.local")
    apply(boothooks.plan_install(root.system, RELEASE, "modules"))
    assert rc_local.read_text() == original
    assert root.path(MODULES_SCRIPT).is_file()


def test_remove_takes_only_what_carries_the_marker(root):
    apply(boothooks.plan_install(root.system, RELEASE, "rc.local"))
    foreign = root.path(MODULES_SCRIPT)
    foreign.write_text("#!/bin/sh\n/sbin/modprobe toa\n")
    apply(boothooks.plan_remove(root.system))
    assert foreign.read_text() == "#!/bin/sh\n/sbin/modprobe toa\n"
    assert not root.path(CRON_FILE).exists()
    assert boothooks.MARKER not in root.path(RC_LOCAL).read_text()
    assert root.path("/etc/cron.d/0hourly").is_file()
    assert not boothooks.plan_remove(root.system)


def test_dry_run_shows_the_files_and_writes_nothing(root):
    before = snapshot(root.base)
    lines: list[str] = []
    boothooks.plan_install(root.system, RELEASE, "modules").apply(True, echo=lines.append)
    assert snapshot(root.base) == before
    text = "\n".join(lines)
    assert "+++ b/etc/cron.d/toa" in text and "modprobe toa" in text


def test_problems_name_missing_directories(root):
    shutil.rmtree(root.path("/etc/sysconfig/modules"))
    shutil.rmtree(root.path("/etc/cron.d"))
    messages = [p.message for p in boothooks.problems(root.system, "modules")]
    assert any("/etc/sysconfig/modules" in m for m in messages)
    assert any("/etc/cron.d" in m and "cron" in m for m in messages)
    assert [p.fix for p in boothooks.problems(root.system, "rc.local") if "sysconfig" in p.message] == []


# --- running the scripts ----------------------------------------------------------------


def make_chroot(base: Path, loaded: bool, toa_in_dep: bool) -> Path:
    """A busybox chroot whose modprobe and logger append their arguments to /calls."""
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "dev"):
        (base / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox"), base / "bin" / "busybox")
    for applet in ("sh", "grep", "uname", "cat"):
        (base / "bin" / applet).symlink_to("busybox")
    recorder = '#!/bin/sh\necho "{name} $*" >> /calls\n'
    for name, where in (("modprobe", "sbin"), ("logger", "usr/bin")):
        tool = base / where / name
        tool.write_text(recorder.format(name=name))
        tool.chmod(0o755)
    (base / "proc" / "modules").write_text("toa 6080 0 - Live 0xffffffffa0000000\n" if loaded else "")
    modules = base / "lib" / "modules" / os.uname().release
    modules.mkdir(parents=True)
    dep = "kernel/net/ipv6/ipv6.ko:\n" + (
        "kernel/net/toa/toa.ko: kernel/net/ipv6/ipv6.ko\n" if toa_in_dep else ""
    )
    (modules / "modules.dep").write_text(dep)
    return base


def run_in_chroot(base: Path, script: str) -> tuple[int, list[str]]:
    env = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}
    result = subprocess.run(["chroot", str(base), "/bin/sh", "-c", script], env=env, capture_output=True)
    calls = (base / "calls").read_text().splitlines() if (base / "calls").exists() else []
    return result.returncode, calls


needs_chroot = pytest.mark.skipif(
    not have("busybox", "chroot") or os.geteuid() != 0, reason="needs busybox, chroot and root"
)


@needs_chroot
@pytest.mark.parametrize(("toa_in_dep", "expected"), [(True, ["modprobe toa"]), (False, [])])
def test_startup_script_loads_toa_only_when_the_running_kernel_has_it(tmp_path, toa_in_dep, expected):
    base = make_chroot(tmp_path / "chroot", loaded=False, toa_in_dep=toa_in_dep)
    (base / "toa.modules").write_text(boothooks.modules_script())
    code, calls = run_in_chroot(base, "sh /toa.modules")
    assert code == 0 and calls == expected


@needs_chroot
def test_rc_local_line_loads_toa_when_the_kernel_has_it(tmp_path):
    base = make_chroot(tmp_path / "chroot", loaded=False, toa_in_dep=True)
    _, calls = run_in_chroot(base, boothooks.rc_local_line())
    assert calls == ["modprobe toa"]


@needs_chroot
@pytest.mark.parametrize(
    ("toa_release", "loaded", "expected"),
    [
        (
            True,
            False,
            ["modprobe toa", f"logger -t {boothooks.SYSLOG_TAG} toa was not loaded on {{r}}: loaded it"],
        ),
        (True, True, []),
        (False, False, []),
    ],
    ids=["toa-kernel-not-loaded", "toa-kernel-loaded", "other-kernel"],
)
def test_cron_job_loads_toa_only_on_the_toa_kernel_and_logs_one_line(tmp_path, toa_release, loaded, expected):
    running = os.uname().release
    release = running if toa_release else RUNNING
    base = make_chroot(tmp_path / "chroot", loaded=loaded, toa_in_dep=True)
    code, calls = run_in_chroot(base, boothooks.cron_command(release))
    assert code == 0
    wanted = [line.format(r=release) for line in expected]
    assert [call.replace(" with modprobe", "") for call in calls] == wanted
