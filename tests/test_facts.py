"""Facts gathered from sandbox roots (a ``proc/`` tree each), and facts files."""

from __future__ import annotations

import gzip
import json
import os
import platform

import pytest
from verify_support import CMDLINE, OLD, TOA, grub_conf, make_root, write

from toa_kernel.core.errors import UserError
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import read_kernel_log
from toa_kernel.verify.facts import (
    SCHEMA_VERSION,
    Facts,
    gather,
    grub_facts_from_text,
    parse_toa_stats,
    read_ipv6,
)
from toa_kernel.verify.factsfile import load_facts, loads_facts


def test_gather_reads_every_fact_of_a_good_system(tmp_path, node):
    facts = gather(node.open(make_root(tmp_path)))

    assert facts.schema == SCHEMA_VERSION
    assert facts.release == TOA
    assert facts.cmdline == CMDLINE
    assert "toa" in facts.loaded_modules
    assert facts.toa_stats.present and facts.toa_stats.cpus == 2
    assert facts.toa_stats.counters["syn_recv_sock_toa"] == 17
    assert facts.toa_stats.per_cpu["getname_toa_ok"] == [10, 4]
    assert any("TOA: toa loaded" in line for line in facts.kernel_log.lines)
    assert facts.kernel_log.sources == ["/var/log/messages"]
    assert facts.grub.path == "/boot/grub/grub.conf"
    assert facts.grub.default_entry.release == TOA
    assert facts.grub.fallback == [1]
    assert facts.grub.index_for_release(OLD) == 1
    assert facts.module.files == [f"/lib/modules/{TOA}/kernel/net/toa/toa.ko"]
    assert facts.module.in_modules_dep is True
    assert (facts.ipv6.mode, facts.ipv6.source) == ("builtin", f"/boot/config-{TOA}")
    assert facts.boot_hooks.modules_script.mode == "0755"
    assert facts.boot_hooks.cron.mode == "0644" and facts.boot_hooks.cron.uid == 0


def test_toa_stats_table_as_the_module_prints_it_is_summed_per_row():
    text = (
        "                                  CPU0       CPU1       CPU2       \n"
        "syn_recv_sock_toa        :         1          2          3 \n"
        "syn_recv_sock_no_toa     :         0          0          7 \n"
        "getname_toa_ok           :         4          0          0 \n"
        "getname_toa_mismatch     :         0          0          0 \n"
        "getname_toa_bypass       :         0          0          0 \n"
        "getname_toa_empty        :         0          9          0 \n"
    )
    stats = parse_toa_stats(text)
    assert stats.cpus == 3
    assert stats.counters == {
        "syn_recv_sock_toa": 6,
        "syn_recv_sock_no_toa": 7,
        "getname_toa_ok": 4,
        "getname_toa_mismatch": 0,
        "getname_toa_bypass": 0,
        "getname_toa_empty": 9,
    }
    assert stats.problem == ""


def test_toa_stats_with_a_broken_row_names_it():
    stats = parse_toa_stats("CPU0 CPU1\nsyn_recv_sock_toa: 1\ngetname_toa_ok: 2 3\n")
    assert stats.counters == {"getname_toa_ok": 5}
    assert "syn_recv_sock_toa" in stats.problem
    assert "missing rows" in stats.problem
    assert parse_toa_stats("garbage\n").problem.startswith("unexpected header")


def test_missing_toa_stats_is_a_fact_not_an_unknown(tmp_path, node):
    facts = gather(node.open(make_root(tmp_path, toa_loaded=False)))
    assert facts.toa_stats.present is False
    assert "toa" not in facts.loaded_modules


def test_root_without_proc_leaves_running_facts_unknown(tmp_path, node):
    root = make_root(tmp_path)
    for path in sorted(root.joinpath("proc").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    root.joinpath("proc").rmdir()
    facts = gather(node.open(root))
    assert facts.release is None and facts.cmdline is None and facts.loaded_modules is None
    assert facts.toa_stats is None and facts.module is None
    assert facts.grub.default_entry.release == TOA  # files on disk are still read


def test_grub_conf_found_through_the_etc_link_only(tmp_path, node):
    root = make_root(tmp_path)
    (root / "boot/grub/menu.lst").unlink()
    (root / "boot/grub/grub.conf").rename(root / "boot/grub/real.conf")
    (root / "etc/grub.conf").unlink()
    (root / "etc/grub.conf").symlink_to("/boot/grub/real.conf")  # absolute: inside the root
    grub = gather(node.open(root)).grub
    assert grub.found and grub.path == "/boot/grub/real.conf"
    assert len(grub.entries) == 2


def test_no_grub_conf_is_reported(tmp_path, node):
    root = make_root(tmp_path)
    for name in ("etc/grub.conf", "boot/grub/menu.lst", "boot/grub/grub.conf"):
        (root / name).unlink()
    grub = gather(node.open(root)).grub
    assert not grub.found and "no /boot/grub/grub.conf" in grub.problem


def test_grub_default_saved_reads_boot_grub_default(tmp_path, node):
    root = make_root(tmp_path, grub_default="saved")
    assert gather(node.open(root)).grub.default_index is None
    write(root, "/boot/grub/default", "1\n")
    grub = gather(node.open(root)).grub
    assert (grub.default, grub.default_index) == ("saved", 1)


def test_grub_default_past_the_last_entry_is_what_grub_boots():
    grub = grub_facts_from_text(grub_conf(default=7, fallback=1))
    assert grub.default == 7
    assert grub.default_index == 1  # GRUB 0.97 takes the fallback entry


def test_ipv6_decision_order(tmp_path, node):
    root = make_root(tmp_path, ipv6="")  # no /boot/config-R for the TOA release
    r = node.open(root)
    assert read_ipv6(r, TOA).mode == "unknown"

    write(root, "/proc/net/if_inet6", "00000000000000000000000000000001 01 80 10 80       lo\n")
    assert read_ipv6(r, TOA).mode == "builtin"  # IPv6 up, no ipv6.ko in modules.dep

    dep = root / f"lib/modules/{TOA}/modules.dep"
    dep.write_text(dep.read_text() + "kernel/net/ipv6/ipv6.ko:\n")
    assert read_ipv6(r, TOA).mode == "module"

    write(root, f"/lib/modules/{TOA}/modules.builtin", "kernel/net/ipv6/ipv6.ko\n")
    assert read_ipv6(r, TOA).mode == "builtin"

    with gzip.open(root / "proc/config.gz", "wt") as handle:
        handle.write("CONFIG_IPV6=m\n")
    assert read_ipv6(r, TOA).source == "/proc/config.gz"
    assert read_ipv6(r, TOA).mode == "module"

    write(root, f"/boot/config-{TOA}", "# CONFIG_IPV6 is not set\n")
    assert (read_ipv6(r, TOA).mode, read_ipv6(r, TOA).source) == ("absent", f"/boot/config-{TOA}")


def test_ipv6_module_loaded_on_a_kernel_without_config(tmp_path, node):
    root = make_root(tmp_path, running=OLD, ipv6="")
    os.unlink(root / f"boot/config-{OLD}")
    dep = root / f"lib/modules/{OLD}/modules.dep"
    dep.write_text("kernel/fs/ext4/ext4.ko:\n")
    (root / "proc/modules").write_text("ipv6 322899 30 - Live 0xffffffffa0070000\n")
    assert read_ipv6(node.open(root), OLD).mode == "module"


def test_old_style_absolute_modules_dep(tmp_path, node):
    facts = gather(node.open(make_root(tmp_path, dep_style="absolute")))
    assert facts.module.in_modules_dep is True


def test_module_file_without_modules_dep(tmp_path, node):
    root = make_root(tmp_path)
    (root / f"lib/modules/{TOA}/modules.dep").unlink()
    module = gather(node.open(root)).module
    assert module.files and module.in_modules_dep is None


def test_kernel_log_on_the_live_system_uses_dmesg_only():
    log = read_kernel_log(
        LocalSystem(Root.of("/")), dmesg=lambda: "[    4.1] TOA: toa loaded\n[    4.2] eth0: link up\n"
    )
    assert log.sources == ["dmesg"]
    assert log.lines == ["[    4.1] TOA: toa loaded"]


def test_kernel_log_reads_dmesg_and_messages_files_under_a_root(tmp_path, node):
    root = make_root(tmp_path, messages=None)
    write(root, "/var/log/dmesg", "TOA: toa loaded\nOther line\n")
    log = read_kernel_log(node.open(root))
    assert log.sources == ["/var/log/dmesg"]
    assert log.lines == ["TOA: toa loaded"]


def test_kernel_log_missing_everywhere(tmp_path, node):
    log = read_kernel_log(node.open(make_root(tmp_path, messages=None)))
    assert log.sources == [] and "no kernel log" in log.problem


def test_gather_on_the_live_system_reads_without_failing():
    facts = gather(LocalSystem(Root.of("/")), dmesg=lambda: "")
    assert facts.release == platform.release()
    assert facts.cmdline is not None
    json.loads(facts.to_json())


def test_facts_round_trip_through_json(tmp_path, node):
    facts = gather(node.open(make_root(tmp_path)))
    path = tmp_path / "facts.json"
    path.write_text(facts.to_json())
    assert load_facts(path) == facts


def test_partial_facts_file_loads_with_the_rest_unknown():
    facts = loads_facts(
        json.dumps({"schema": 1, "release": TOA, "cmdline": CMDLINE, "grub": {"default": 0, "entries": []}})
    )
    assert facts.release == TOA and facts.grub.default_index == 0
    assert facts.module is None and facts.boot_hooks is None and facts.toa_stats is None


def test_unknown_fields_are_ignored():
    assert loads_facts(json.dumps({"schema": 1, "lab": {"scenario": "x"}})) == Facts(schema=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": 1, "release": ', "is not valid JSON: Expecting value at line 1 column 26"),
        ("[1, 2]", "facts.json: the document must be an object, not [1, 2]"),
        ('{"release": "x"}', "facts.json: no 'schema' field"),
        ('{"schema": 99}', "facts schema 99; this version reads schema 1"),
        ('{"schema": 1, "release": 7}', "facts.json: field release must be a string, not 7"),
        ('{"schema": 1, "loaded_modules": "toa"}', "loaded_modules must be a list of strings"),
        ('{"schema": 1, "grub": {"entries": [{"title": 3}]}}', "grub.entries[0].title must be a string"),
        ('{"schema": 1, "toa_stats": {"counters": {"getname_toa_ok": "x"}}}', "counters.getname_toa_ok"),
        ('{"schema": 1, "boot_hooks": {"cron": {"mode": "rwx"}}}', "boot_hooks.cron.mode must be octal"),
        ('{"schema": 1, "ipv6": {"mode": "maybe"}}', "ipv6.mode must be one of builtin"),
        ('{"schema": 1, "grub": {"default": true}}', 'grub.default must be a number or "saved"'),
    ],
)
def test_malformed_facts_file_names_the_problem(tmp_path, text, message):
    path = tmp_path / "facts.json"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_facts(path)
    assert message in caught.value.message
    assert caught.value.fix


def test_missing_facts_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_facts(tmp_path / "nope.json")
