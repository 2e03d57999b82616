"""Checks over facts from sandbox roots in every state an operator meets."""

from __future__ import annotations

import os

import pytest
from verify_support import CMDLINE, OLD, ROOT_ARGS, TOA, TOA_STATS, grub_conf, make_root

from toa_kernel.boot import hooks as boothooks
from toa_kernel.core.errors import UserError
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.checks import (
    CHECK_SETS,
    REGISTRY,
    Expectation,
    Status,
    cron_problems,
    overall,
    run_checks,
    select,
)
from toa_kernel.verify.facts import BootHooks, Facts, FileFact, gather, grub_facts_from_text

EXPECT = Expectation(release=TOA, release_source="test")


def local(root) -> LocalSystem:
    """The checks are pure: their facts come from this machine (gathering over SSH: test_facts)."""
    return LocalSystem(Root.of(root))


def judge(tmp_path, expect=EXPECT, checks=None, **state):
    facts = gather(local(make_root(tmp_path, **state)))
    return {r.name: r for r in run_checks(select(checks), facts, expect)}


def statuses(results):
    return {name: r.status for name, r in results.items()}


def test_all_good_passes_every_check(tmp_path):
    results = judge(tmp_path)
    assert set(results) == set(CHECK_SETS["kernel"])
    assert statuses(results) == {name: Status.PASS for name in results}, results
    assert overall(results.values()) is Status.PASS


def test_fallback_boot_is_told_apart_from_a_forgotten_default(tmp_path):
    fallback = judge(tmp_path / "a", running=OLD, grub_default=0)
    forgotten = judge(tmp_path / "b", running=OLD, grub_default=1)

    assert fallback["running-release"].status is Status.FAIL
    assert "fell back" in fallback["running-release"].reason
    assert "invoke rollback" in fallback["running-release"].fix
    assert fallback["grub-default"].status is Status.PASS

    assert forgotten["running-release"].status is Status.FAIL
    assert "never switched" in forgotten["running-release"].reason
    assert forgotten["running-release"].fix == "run 'invoke grub' (sets default=0), then reboot"
    assert forgotten["grub-default"].status is Status.FAIL
    assert "next reboot leaves TOA" in forgotten["grub-default"].reason


def test_old_kernel_running_explains_the_missing_module(tmp_path):
    results = judge(tmp_path, running=OLD, grub_default=1, toa_loaded=False)
    assert results["module-installed"].status is Status.FAIL
    assert f"not the TOA release {TOA}" in results["module-installed"].reason
    assert "is not the TOA release" in results["module-loaded"].fix


def test_toa_not_loaded(tmp_path):
    results = judge(tmp_path, toa_loaded=False)
    assert results["module-loaded"].status is Status.FAIL
    assert "modprobe toa" in results["module-loaded"].fix
    assert results["toa-stats"].status is Status.FAIL
    assert results["module-installed"].status is Status.PASS
    assert results["kernel-log"].status is Status.WARN  # the log line is from before
    assert "not loaded now" in results["kernel-log"].reason
    assert overall(results.values()) is Status.FAIL


def test_toa_stats_missing_while_module_listed(tmp_path):
    results = judge(tmp_path, toa_stats=None)
    assert results["module-loaded"].status is Status.PASS
    assert results["toa-stats"].status is Status.FAIL
    assert "/proc/net/toa_stats is missing" in results["toa-stats"].reason


def test_toa_stats_counters_are_shown_and_zero_counts_noted(tmp_path):
    good = judge(tmp_path / "a")["toa-stats"]
    assert "syn_recv_sock_toa=17" in good.reason and "getname_toa_ok=14" in good.reason
    zero = judge(tmp_path / "b", toa_stats=TOA_STATS.replace("12          5", " 0          0"))["toa-stats"]
    assert zero.status is Status.PASS
    assert "no TOA option seen yet" in zero.reason


def test_no_nohz_off(tmp_path):
    results = judge(tmp_path, cmdline=ROOT_ARGS, toa_args=ROOT_ARGS)
    assert results["nohz-off"].status is Status.FAIL
    assert "invoke grub" in results["nohz-off"].fix
    assert results["grub-default"].status is Status.WARN  # the next boot lacks it too


def test_no_nohz_off_while_grub_already_has_it(tmp_path):
    result = judge(tmp_path, cmdline=ROOT_ARGS)["nohz-off"]
    assert result.status is Status.FAIL
    assert "already has nohz=off: reboot" in result.fix


def test_a_later_nohz_value_wins(tmp_path):
    result = judge(tmp_path, cmdline=CMDLINE + " nohz=on")["nohz-off"]
    assert result.status is Status.FAIL


def test_ipv6_modular(tmp_path):
    result = judge(tmp_path, ipv6="m")["ipv6-builtin"]
    assert result.status is Status.FAIL
    assert "IPv6 is a module" in result.reason and "CONFIG_IPV6=y" in result.fix


def test_ipv6_unknown_is_a_warning(tmp_path):
    assert judge(tmp_path, ipv6="")["ipv6-builtin"].status is Status.WARN


def test_cron_world_writable(tmp_path):
    result = judge(tmp_path, cron_mode=0o666)["cron"]
    assert result.status is Status.FAIL
    assert "world-writable (mode 0666)" in result.reason
    assert result.fix == "chown root:root /etc/cron.d/toa; chmod 644 /etc/cron.d/toa"


def test_cron_group_writable_and_not_root_owned(tmp_path):
    root = make_root(tmp_path, cron_mode=0o664)
    os.chown(root / "etc/cron.d/toa", 1000, 1000)
    cron = {r.name: r for r in run_checks(select("cron"), gather(local(root)), EXPECT)}["cron"]
    assert cron.status is Status.FAIL
    assert "owned by uid 1000, not root" in cron.reason and "group-writable" in cron.reason


def test_cron_missing(tmp_path):
    root = make_root(tmp_path)
    (root / "etc/cron.d/toa").unlink()
    result = run_checks(select("cron"), gather(local(root)), EXPECT)[0]
    assert result.status is Status.FAIL and "no /etc/cron.d/toa" in result.reason


def test_cron_syntax_problems():
    good = boothooks.cron_file(TOA)
    assert cron_problems(good) == ([], 1)
    assert "no newline" in cron_problems(good.rstrip("\n"))[0][0]
    assert "not 'MIN HOUR" in cron_problems("* * * * modprobe toa\n")[0][0]
    assert "unescaped %" in cron_problems("* * * * * root modprobe toa; date +%s\n")[0][0]
    assert cron_problems("@reboot root /sbin/modprobe toa\n") == ([], 1)
    assert cron_problems("* * * * * root echo\n") == ([], 0)


def test_cron_without_a_toa_job(tmp_path):
    result = judge(tmp_path, cron_text="* * * * * root /bin/true\n")["cron"]
    assert result.status is Status.FAIL and "no job" in result.reason


def test_startup_script_must_be_executable(tmp_path):
    result = judge(tmp_path, modules_mode=0o644)["startup"]
    assert result.status is Status.FAIL
    assert "not executable (mode 0644)" in result.reason


def test_startup_by_rc_local(tmp_path):
    result = judge(tmp_path, startup="rc.local")["startup"]
    assert result.status is Status.PASS and "rc.local" in result.reason


def test_nothing_loads_toa_at_boot(tmp_path):
    root = make_root(tmp_path)
    (root / "etc/sysconfig/modules/toa.modules").unlink()
    result = run_checks(select("startup"), gather(local(root)), EXPECT)[0]
    assert result.status is Status.FAIL and "nothing loads toa at boot" in result.reason


def test_commented_modprobe_does_not_count(tmp_path):
    root = make_root(tmp_path, startup="rc.local")
    (root / "etc/rc.d/rc.local").write_text("#!/bin/sh\n# modprobe toa\n")
    result = run_checks(select("startup"), gather(local(root)), EXPECT)[0]
    assert result.status is Status.FAIL


def test_kernel_log_without_the_load_line_is_only_a_warning(tmp_path):
    results = judge(tmp_path, messages="Jul  1 host kernel: eth0 up\n")
    assert results["kernel-log"].status is Status.WARN
    assert "rate-limits" in results["kernel-log"].reason
    assert overall(results.values()) is Status.WARN


def test_kernel_log_ending_with_unload(tmp_path):
    text = "k: TOA: toa loaded\nk: TOA: toa unloaded\n"
    assert judge(tmp_path, messages=text)["kernel-log"].status is Status.WARN


def test_module_not_in_modules_dep(tmp_path):
    root = make_root(tmp_path)
    (root / f"lib/modules/{TOA}/modules.dep").write_text("kernel/fs/ext4/ext4.ko:\n")
    result = run_checks(select("module-installed"), gather(local(root)), EXPECT)[0]
    assert result.status is Status.FAIL and result.fix == f"run 'depmod -a {TOA}'"


def test_grub_without_a_toa_entry(tmp_path):
    facts = gather(local(make_root(tmp_path, running=OLD)))
    results = run_checks(select("boot"), facts, Expectation(release="2.6.32-other"))
    assert [r.status for r in results] == [Status.FAIL, Status.PASS, Status.FAIL]
    assert "has no entry for 2.6.32-other" in results[0].reason
    assert "install-kernel" in results[2].fix


def test_grub_default_saved_is_a_warning(tmp_path):
    result = judge(tmp_path, grub_default="saved")["grub-default"]
    assert result.status is Status.WARN and "default=saved" in result.reason


def test_release_chosen_by_extraversion_without_a_build(tmp_path):
    results = judge(tmp_path, expect=Expectation(), checks="boot")
    assert results["running-release"].status is Status.PASS
    assert "EXTRAVERSION -toa" in results["running-release"].reason
    nothing = judge(tmp_path / "b", expect=Expectation(extraversion="-lvs"), running=OLD, checks="boot")
    assert nothing["running-release"].status is Status.FAIL
    assert "--release" in nothing["running-release"].fix


def test_partial_facts_are_not_applicable_not_a_crash():
    facts = Facts(release=TOA, cmdline=CMDLINE, grub=grub_facts_from_text(grub_conf()))
    results = run_checks(select(None), facts, EXPECT)
    by_name = {r.name: r.status for r in results}
    assert by_name["running-release"] is Status.PASS
    assert by_name["nohz-off"] is Status.PASS
    assert by_name["grub-default"] is Status.PASS
    assert by_name["cron"] is Status.NA and by_name["toa-stats"] is Status.NA
    assert next(r for r in results if r.name == "module-loaded").reason == "not in the facts: loaded_modules"


def test_partial_hooks_judge_what_is_there():
    cron = FileFact(
        path="/etc/cron.d/toa", kind="file", mode="0644", uid=0, gid=0, text=boothooks.cron_file(TOA)
    )
    facts = Facts(boot_hooks=BootHooks(cron=cron))
    results = {r.name: r.status for r in run_checks(select("hooks"), facts, EXPECT)}
    assert results == {"startup": Status.NA, "cron": Status.PASS}


def test_select_sets_and_names():
    assert [c.name for c in select("boot")] == ["running-release", "nohz-off", "grub-default"]
    assert [c.name for c in select("nohz-off, cron,nohz-off")] == ["nohz-off", "cron"]
    assert [c.name for c in select("runtime")][:2] == ["module-installed", "module-loaded"]
    assert [c.name for c in select(None)] == list(REGISTRY)
    with pytest.raises(UserError, match="unknown check or check set 'bogus'"):
        select("boot,bogus")


def test_overall_verdict_order():
    from toa_kernel.verify.checks import Result

    assert overall([Result(Status.PASS, ""), Result(Status.WARN, "")]) is Status.WARN
    assert overall([Result(Status.WARN, ""), Result(Status.FAIL, "")]) is Status.FAIL
    assert overall([Result(Status.NA, "")]) is Status.NA
