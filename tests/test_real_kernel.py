"""The real LVS 2.6.32 tree: ``invoke fetch`` takes its xz tarball, ``invoke build`` compiles it
(lab config base) into a 2.6.32-toa kernel and toa.ko with this host's toolchain, a second build
compiles nothing, ``--option-code 200`` recompiles only net/toa; ``install-kernel`` puts it into a
sandbox CentOS 6 root and the boot lab boots that root's /boot with GRUB legacy: our kernel, our
grub.conf and nohz=off, and the boot hook loads toa (slow, lab).

First, fast tests of the lab's own-kernel mode on a console captured from such a boot."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, have
from lab_support import kernel_cache_dir
from probe_support import REAL_INPUTS, real_input

from toa_kernel.kernel import toolchain
from toa_kernel.kernel.kbuild import is_step
from toa_kernel.lab import tools
from toa_kernel.lab.bootconf import read_boot_conf
from toa_kernel.lab.console import parse_console
from toa_kernel.lab.image import stage_boot
from toa_kernel.lab.ownkernel import (
    build_system_initramfs,
    copy_hooks,
    copy_modules,
    guest_runtime,
    module_closure,
    system_init_script,
)
from toa_kernel.lab.run import lab_facts
from toa_kernel.system.rootfs import Root

RELEASE = "2.6.32-toa"
CONSOLE = Path(__file__).parent / "data" / "lab-console" / "own-kernel.log"
LVS_TARBALL = "lvs-kernel-2.6.32-220.23.1.el6.rs.tar.xz"
LVS_SHA256 = REAL_INPUTS[LVS_TARBALL]
TREE_NAME = "linux-2.6.32-220.23.1.el6.x86_64.rs"
COMPILE_TIMEOUT = 3600
needs_lab = pytest.mark.skipif(
    not tools.lab_available(), reason="lab packages missing: " + tools.install_line(*tools.missing_packages())
)


# --- fast: the own-kernel mode's parts ---------------------------------------------------------


def test_module_closure_follows_modules_dep():
    dep = (
        "kernel/net/toa/toa.ko: kernel/net/ipv6/ipv6.ko\n"
        "kernel/net/ipv6/ipv6.ko:\n"
        "kernel/drivers/net/e1000/e1000.ko:\n"
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n"
    )
    assert module_closure(dep, ["toa"]) == ["kernel/net/toa/toa.ko", "kernel/net/ipv6/ipv6.ko"]
    assert sorted(module_closure(dep, ["toa", "e1000", "absent"])) == [
        "kernel/drivers/net/e1000/e1000.ko",
        "kernel/net/ipv6/ipv6.ko",
        "kernel/net/toa/toa.ko",
    ]


def test_the_init_runs_the_hooks_rc_sysinit_would_find_then_rc_local():
    init = system_init_script(
        RELEASE, ["/etc/sysconfig/modules/z.modules", "/etc/sysconfig/modules/toa.modules"]
    )
    assert "for file in /etc/sysconfig/modules/toa.modules /etc/sysconfig/modules/z.modules ; do" in init
    assert init.index("z.modules ; do") < init.index("/etc/rc.d/rc.local;")
    assert 'echo "TOA-LAB uname=$(uname -r)"' in init and "/proc/net/toa_stats" in init
    assert init.rstrip().endswith("poweroff -f")
    with pytest.raises(Exception, match="not a kernel release"):
        system_init_script("bad release; reboot")


def sandbox_system(base: Path) -> Root:
    """A root with /lib/modules/R (toa.ko needing ipv6.ko, one unrelated module) and boot hooks."""
    modules = base / "lib" / "modules" / RELEASE
    for relative in ("kernel/net/toa/toa.ko", "kernel/net/ipv6/ipv6.ko", "kernel/fs/ext4/ext4.ko"):
        (modules / relative).parent.mkdir(parents=True, exist_ok=True)
        (modules / relative).write_bytes(b"\x7fELF " + relative.encode())
    (modules / "modules.dep").write_text(
        "kernel/net/toa/toa.ko: kernel/net/ipv6/ipv6.ko\nkernel/net/ipv6/ipv6.ko:\nkernel/fs/ext4/ext4.ko:\n"
    )
    (modules / "modules.alias").write_text("")
    hooks = base / "etc" / "sysconfig" / "modules"
    hooks.mkdir(parents=True)
    (hooks / "toa.modules").write_text("#!/bin/sh\n/sbin/modprobe toa\n")
    (hooks / "toa.modules").chmod(0o755)
    (hooks / "README").write_text("not a hook\n")
    (base / "etc" / "rc.d").mkdir(parents=True)
    (base / "etc" / "rc.d" / "rc.local").write_text("#!/bin/sh\ntouch /var/lock/subsys/local\n")
    (base / "etc" / "rc.d" / "rc.local").chmod(0o755)
    return Root.of(base)


def test_the_guest_gets_the_module_index_toa_with_its_dependencies_and_the_hooks(tmp_path):
    root = sandbox_system(tmp_path / "root")
    image = tmp_path / "image"
    assert sorted(copy_modules(root, RELEASE, image)) == ["kernel/net/ipv6/ipv6.ko", "kernel/net/toa/toa.ko"]
    inside = image / "lib" / "modules" / RELEASE
    assert (inside / "modules.dep").is_file() and (inside / "modules.alias").is_file()
    assert not (inside / "kernel" / "fs").exists()
    assert copy_hooks(root, image) == ["/etc/sysconfig/modules/toa.modules", "/etc/rc.d/rc.local"]
    assert (image / "etc" / "sysconfig" / "modules" / "toa.modules").stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(not have("busybox"), reason="busybox-static is not installed")
def test_the_system_initramfs_is_a_newc_archive_with_modules_hooks_and_init(tmp_path):
    root = sandbox_system(tmp_path / "root")
    output = build_system_initramfs(root, RELEASE, tmp_path / "initramfs.img")
    archive = gzip.decompress(output.read_bytes())
    assert archive.startswith(b"070701")
    for name in (
        b"lib/modules/2.6.32-toa/kernel/net/toa/toa.ko",
        b"etc/sysconfig/modules/toa.modules",
        b"init",
    ):
        assert name in archive
    assert b"for file in /etc/sysconfig/modules/toa.modules ; do" in archive


def test_a_captured_own_kernel_boot_gives_release_modules_stats_and_log():
    text = CONSOLE.read_text(errors="replace")
    report = parse_console(text)
    assert report.booted_title == f"CentOS ({RELEASE})" and report.finished
    assert report.markers["uname"] == RELEASE and "nohz=off" in report.cmdline.split()
    assert report.markers["hooks"].split() == ["/etc/sysconfig/modules/toa.modules:0", "/etc/rc.d/rc.local:0"]
    modules, stats, log = guest_runtime(text, report.markers)
    assert modules == ["toa"]
    assert stats.present and stats.cpus == 1 and stats.problem == "" and len(stats.counters) == 6
    assert any("TOA: toa loaded" in line for line in log.lines)
    facts = lab_facts(report, "default=0\n", Path("disk.img"), text, own=True)
    assert facts.release == RELEASE and facts.loaded_modules == ["toa"] and facts.toa_stats.present


def boot_image_header(path: Path, version: str) -> Path:
    """A file with a bzImage's boot header (what libmagic and the lab look at), not a kernel."""
    data = bytearray(4096)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<HH", data, 0x206, 0x020A, 0)
    struct.pack_into("<H", data, 0x20E, 0x200)
    data[0x211] = 1
    data[0x400 : 0x400 + len(version) + 1] = version.encode() + b"\0"
    path.write_bytes(bytes(data))
    return path


@needs_lab
def test_staging_keeps_a_real_boot_image_and_gives_it_the_system_initramfs(tmp_path):
    from lab_support import PREVIOUS, centos_grub_conf, make_boot_root

    conf_text = centos_grub_conf([(RELEASE, "nohz=off"), (PREVIOUS, "")], fallback=1)
    root = make_boot_root(tmp_path / "root", conf_text, [RELEASE, PREVIOUS])
    boot_image_header(root / "boot" / f"vmlinuz-{RELEASE}", RELEASE)
    sandbox_system(root)
    stand_in = boot_image_header(tmp_path / "stand-in", "6.1.0-stand-in")
    (tmp_path / "scratch").mkdir()
    staged = stage_boot(
        Root.of(root),
        tmp_path / "stage",
        read_boot_conf(conf_text),
        conf_text,
        stand_in,
        scratch=tmp_path / "scratch",
        own_kernels=True,
    )
    assert staged.kept == {f"/boot/vmlinuz-{RELEASE}": RELEASE}
    assert staged.kernels == [f"/boot/vmlinuz-{PREVIOUS}"]
    assert (staged.boot / f"vmlinuz-{RELEASE}").read_bytes() == (
        root / "boot" / f"vmlinuz-{RELEASE}"
    ).read_bytes()
    own = gzip.decompress((staged.boot / f"initramfs-{RELEASE}.img").read_bytes())
    other = gzip.decompress((staged.boot / f"initramfs-{PREVIOUS}.img").read_bytes())
    assert b"toa.modules" in own and b"kernel/net/toa/toa.ko" in own
    assert b"toa.modules" not in other


def test_the_lines_every_make_of_the_real_tree_prints_are_not_compile_work():
    noop = [  # a no-op make -j2 of the LVS tree, as its build log shows it
        "  CHK     include/linux/version.h",
        "  SYMLINK include/asm -> include/asm-x86",
        "  CALL    scripts/checksyscalls.sh",
        "  CHK     include/linux/compile.h",
        "  Building modules, stage 2.",
        "  MODPOST 4 modules",
        "Kernel: arch/x86/boot/bzImage is ready  (#1)",
    ]
    assert [line for line in noop if is_step(line)] == []
    assert is_step("  CC [M]  net/toa/toa.o") and is_step("  LD [M]  net/toa/toa.ko")


# --- slow: the real tree ------------------------------------------------------------------------


def invoke(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``invoke ARGS`` from the project directory, as a user runs it; (result, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=PROJECT_DIR, capture_output=True, text=True, env=env
    )
    return result, time.monotonic() - started


def build(workdir: Path, *args: str) -> tuple[dict, str, float]:
    """``invoke build --config-base lab --jobs 2 --json ARGS``: its document, stderr and wall time."""
    result, seconds = invoke(
        "build", "--workdir", str(workdir), "--config-base", "lab", "--jobs", "2", "--json", *args
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return json.loads(result.stdout), result.stderr, seconds


def step(document: dict, name: str) -> dict:
    return next(s for s in document["steps"] if s["name"] == name)


def mtimes(tree: Path) -> dict[str, int]:
    names = ("vmlinux", "arch/x86/boot/bzImage", "net/toa/toa.ko", "net/toa/toa.o")
    return {name: (tree / name).stat().st_mtime_ns for name in names}


def compares_option(ko: Path, code: int) -> bool:
    """toa.ko's machine code compares a TCP option kind with ``code`` (cmp $0x.., %reg)."""
    disassembly = subprocess.run(
        ["objdump", "-d", str(ko)], capture_output=True, text=True, check=True
    ).stdout
    return re.search(rf"\bcmp[bwlq]?\s+\${code:#x},", disassembly) is not None


@pytest.fixture(scope="module")
def lvs(tmp_path_factory) -> dict:
    """The real tree fetched and built once with invoke (lab config base), dry run first."""
    workdir = tmp_path_factory.mktemp("lvs") / "work"
    tarball = real_input(LVS_TARBALL)
    fetched, fetch_seconds = invoke(
        "fetch", "--tarball", str(tarball), "--sha256", LVS_SHA256, "--workdir", str(workdir), "--json"
    )
    assert fetched.returncode == 0, fetched.stderr
    tree = workdir / "src" / TREE_NAME
    pristine = hashlib.sha256(
        (tree / "net/toa/toa.h").read_bytes() + (tree / ".config").read_bytes()
    ).hexdigest()
    dry, _ = invoke("--dry", "build", "--workdir", str(workdir), "--config-base", "lab")
    after_dry = hashlib.sha256(
        (tree / "net/toa/toa.h").read_bytes() + (tree / ".config").read_bytes()
    ).hexdigest()
    document, stderr, seconds = build(workdir)
    return {
        "workdir": workdir,
        "tree": tree,
        "fetch": json.loads(fetched.stdout),
        "fetch_seconds": fetch_seconds,
        "dry": dry,
        "dry_changed_tree": pristine != after_dry,
        "build": document,
        "stderr": stderr,
        "seconds": seconds,
        "metadata": json.loads(Path(document["metadata"]).read_text()),
        "mtimes": mtimes(tree),
        "toa_ko": (tree / "net/toa/toa.ko").read_bytes(),
    }


def install(base: Path, workdir: Path):
    """A CentOS 6 sandbox root with the build of ``workdir`` installed by install-kernel's code."""
    from centos6_root import Sandbox

    from toa_kernel.core.state import Workdir

    sandbox = Sandbox(base, Workdir(workdir).section("build"))
    sandbox.install()
    return sandbox


@pytest.fixture(scope="module")
def lvs_installed(lvs, tmp_path_factory):
    return install(tmp_path_factory.mktemp("root254"), lvs["workdir"])


@pytest.fixture(scope="module")
def lvs_noop(lvs, lvs_installed) -> dict:
    document, _, seconds = build(lvs["workdir"])
    return {"build": document, "seconds": seconds, "mtimes": mtimes(lvs["tree"])}


@pytest.fixture(scope="module")
def lvs_200(lvs, lvs_noop, tmp_path_factory) -> dict:
    document, _, seconds = build(lvs["workdir"], "--option-code", "200")
    log = Path(document["log"]).read_text(errors="replace")
    compile_output = log[log.rindex("make -j2") :]
    return {
        "build": document,
        "seconds": seconds,
        "steps": [line.strip() for line in compile_output.splitlines() if is_step(line)],
        "mtimes": mtimes(lvs["tree"]),
        "metadata": json.loads(Path(document["metadata"]).read_text()),
        "installed": install(tmp_path_factory.mktemp("root200"), lvs["workdir"]),
    }


@pytest.fixture(scope="module")
def stand_in() -> Path:
    """The lab's stand-in for the sandbox's other (placeholder) kernels."""
    from toa_kernel.lab.kernel import chosen_kernel

    return chosen_kernel(None, kernel_cache_dir(), say=lambda text: None)


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_invoke_fetch_takes_the_xz_tarball_as_a_users_download(lvs):
    fetched = lvs["fetch"]
    assert fetched["sha256"] == LVS_SHA256 and Path(fetched["tree"]) == lvs["tree"]
    assert len(fetched["skipped_links"]) == 3  # absolute links into the packager's home
    assert (lvs["tree"] / "net" / "toa" / "toa.c").is_file()


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_dry_run_shows_the_toolchain_patches_and_the_toa_h_fix_and_changes_nothing(lvs):
    out = lvs["dry"].stdout
    assert lvs["dry"].returncode == 0 and not lvs["dry_changed_tree"]
    assert "toa.h: DEFINE_TOA_STAT declares '__typeof__(type) *name'" in out
    assert "-\t(__typeof__(type) *name)" in out
    assert "patch: would toa.c: hook_toa_functions: '(struct proto_ops *)&inet6_stream_ops'" in out
    assert "configure: would start .config from the lab base: make x86_64_defconfig" in out
    for patch in toolchain.plan_compat(
        lvs["tree"], PROJECT_DIR / "patches" / "toolchain", toolchain.detect()
    ).patches:
        assert f"toolchain: would apply {patch.name}" in out


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_invoke_build_compiles_a_2_6_32_toa_kernel_and_toa_ko(lvs):
    document, tree = lvs["build"], lvs["tree"]
    assert document["status"] == "ok" and document["release"] == RELEASE
    assert document["artifacts"]["vermagic"].startswith(f"{RELEASE} SMP mod_unload")
    assert (
        "Linux kernel x86 boot executable bzImage, version 2.6.32-toa"
        in document["artifacts"]["bzimage_type"]
    )
    assert compares_option(tree / "net/toa/toa.ko", 254) and not compares_option(tree / "net/toa/toa.ko", 200)
    assert lvs["metadata"]["option_code"] == {"before": 254, "after": 254}
    config = (tree / ".config").read_text()
    assert (
        "CONFIG_TOA=m" in config and "CONFIG_IPV6=y" in config and "# CONFIG_MICROCODE is not set" in config
    )
    print(f"\nfetch {lvs['fetch_seconds']:.1f} s, invoke build {lvs['seconds']:.1f} s", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_vendors_syntax_errors_are_fixed_and_reported_like_the_option_code(lvs):
    from toa_kernel.kernel import defects

    changes = step(lvs["build"], "patch")["changes"]
    summaries = [defect.summary for defect in defects.DEFECTS]
    assert [change for change in changes if change in summaries] == summaries
    assert set(lvs["metadata"]["vendor_defects"].values()) == {"fixed"}
    assert len(lvs["metadata"]["vendor_defects"]) == len(defects.DEFECTS)
    assert "\t__typeof__(type) *name\n" in (lvs["tree"] / "net/toa/toa.h").read_text()
    assert list(defects.present(lvs["tree"])) == []


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_toolchain_set_this_host_needs_is_applied_loudly_and_recorded(lvs):
    needed = toolchain.plan_compat(lvs["tree"], PROJECT_DIR / "patches" / "toolchain", toolchain.detect())
    record = lvs["metadata"]["toolchain"]
    assert [p["name"] for p in record["patches"]] == [p.name for p in needed.patches]
    assert {p["status"] for p in record["patches"]} <= {"applied"}
    assert record["make_variables"] == needed.variables
    assert record["compile_command"].startswith("make -j2")
    if needed.needed:  # a Debian 12 host: gcc 12, binutils 2.40, make 4.3, perl 5.36, dash
        assert "warning: TOOLCHAIN NEWER THAN THIS 2.6.32 TREE SUPPORTS" in lvs["stderr"]
        assert "gcc 4.4 needs none of it" in lvs["stderr"]
        assert lvs["build"]["toolchain"].startswith(f"compatibility set: {len(needed.patches)} patches")


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_a_second_build_compiles_nothing(lvs, lvs_noop):
    compile_step = step(lvs_noop["build"], "compile")
    assert compile_step["notes"] == ["up to date"] and compile_step["changes"] == []
    assert lvs_noop["mtimes"] == lvs["mtimes"]
    meta = json.loads(Path(lvs_noop["build"]["metadata"]).read_text())
    assert {p["status"] for p in meta["toolchain"]["patches"]} <= {"already applied"}
    assert set(meta["vendor_defects"].values()) == {"not present"}
    assert lvs_noop["seconds"] < 120
    print(f"\nno-op invoke build {lvs_noop['seconds']:.1f} s", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_option_code_200_recompiles_only_net_toa(lvs, lvs_noop, lvs_200):
    assert step(lvs_200["build"], "patch")["changes"] == ["toa.h: TCPOPT_TOA 254 -> 200"]
    assert lvs_200["steps"], "the rebuild compiled nothing"
    assert all(" net/toa/" in line for line in lvs_200["steps"]), lvs_200["steps"]
    before, after = lvs_noop["mtimes"], lvs_200["mtimes"]
    assert (
        after["vmlinux"] == before["vmlinux"]
        and after["arch/x86/boot/bzImage"] == before["arch/x86/boot/bzImage"]
    )
    assert after["net/toa/toa.ko"] != before["net/toa/toa.ko"]
    ko = lvs["tree"] / "net/toa/toa.ko"
    assert compares_option(ko, 200) and not compares_option(ko, 254)
    assert lvs_200["metadata"]["option_code"] == {"before": 254, "after": 200}
    print(f"\n--option-code 200 rebuild {lvs_200['seconds']:.1f} s: {lvs_200['steps']}", file=sys.stderr)


def boot_own_kernel(sandbox, kernel: Path):
    from toa_kernel.lab.run import run_lab
    from toa_kernel.verify.checks import Expectation

    return run_lab(
        sandbox.root,
        sandbox.workdir,
        expect=Expectation(release=RELEASE),
        timeout=120,
        kernel=kernel,
        own_kernels=True,
        say=lambda text: None,
    )


def assert_toa_booted(result) -> None:
    report = result.report
    assert result.verdict == "PASS", (result.judged.table(), report.markers)
    assert report.booted_title == f"CentOS ({RELEASE})"
    assert result.staged.kept == {f"/boot/vmlinuz-{RELEASE}": RELEASE}
    assert report.markers["uname"] == RELEASE
    assert "nohz=off" in report.cmdline.split()
    assert "/etc/sysconfig/modules/toa.modules:0" in report.markers["hooks"].split()
    assert "toa" in report.markers["modules"].split() and report.markers["toastats"] == "present"
    assert [r.status.value for r in result.judged.results] == ["PASS"] * 6


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_grub_boots_our_kernel_with_nohz_off_and_the_boot_hook_loads_toa(lvs_installed, stand_in):
    grub_conf = lvs_installed.path("/boot/grub/grub.conf").read_text()
    assert "default=0" in grub_conf.splitlines()
    result = boot_own_kernel(lvs_installed, stand_in)
    assert_toa_booted(result)
    assert result.seconds["boot"] < 60
    print(f"\nlab boot of 2.6.32-toa: {result.seconds}", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_option_200_kernel_boots_and_loads_its_toa_too(lvs_200, stand_in):
    installed = lvs_200["installed"]
    modules = installed.path(f"/lib/modules/{RELEASE}/kernel/net/toa/toa.ko")
    assert compares_option(modules, 200)
    assert_toa_booted(boot_own_kernel(installed, stand_in))


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_tree_base_puts_the_trees_own_config_back(lvs, lvs_200):
    result, _ = invoke("build", "--workdir", str(lvs["workdir"]), "--until", "configure", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    configure = step(json.loads(result.stdout), "configure")
    assert "put the tree's own .config back from .config.toa-tree" in configure["changes"]
    config = (lvs["tree"] / ".config").read_text()
    assert "CONFIG_TOA=m" in config and "CONFIG_IPV6=y" in config
    assert "CONFIG_MICROCODE=m" in config  # the RHEL config's own value, not the lab's
    assert not (lvs["tree"] / ".toa-config-base").exists()


def probe_own_kernel(sandbox, option_code: int):
    from toa_kernel.lab.proberun import run_probe

    kernel = sandbox.path(f"/boot/vmlinuz-{RELEASE}")
    return run_probe(
        sandbox.root,
        sandbox.workdir,
        option_code=option_code,
        kernel=kernel,
        timeout=180,
        say=lambda text: None,
    )


def assert_probe(result, honoured: int, ignored: int) -> None:
    """Cases a-d (and the [::] server) on our kernel: ``honoured`` rewrites the peer, ``ignored`` does not."""
    lines = result.lines()
    assert result.verdict == "PASS", "\n".join(lines)
    assert result.target.release == RELEASE and result.outcome.first.release == RELEASE
    assert result.report.booted_title == f"CentOS ({RELEASE})" and "nohz=off" in result.report.cmdline.split()
    cases = {case.name: case for case in result.outcome.cases}
    assert cases["b"].title == f"module loaded, kind {honoured}" and cases["b"].seen == "203.0.113.7:41234"
    assert cases["c"].title == f"module loaded, kind {ignored}" and cases["c"].seen.startswith("192.0.2.1:")
    assert cases["a"].seen.startswith("192.0.2.1:") and cases["d"].seen.startswith("192.0.2.1:")
    assert result.outcome.after.stats.counters["getname_toa_ok"] == 1
    print(f"\nprobe, kind {honoured}: {result.seconds}\n" + "\n".join(lines[:7]), file=sys.stderr)


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_the_probe_sees_kind_254_honoured_and_200_ignored_by_our_kernel(lvs_installed):
    assert_probe(probe_own_kernel(lvs_installed, 254), honoured=254, ignored=200)


@pytest.mark.slow
@pytest.mark.lab
@needs_lab
@pytest.mark.timeout(COMPILE_TIMEOUT)
def test_after_option_code_200_the_probe_sees_200_honoured_and_254_ignored(lvs_200):
    assert_probe(probe_own_kernel(lvs_200["installed"], 200), honoured=200, ignored=254)
