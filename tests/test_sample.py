"""The sample tree: its files and variants, and its make behaving like 2.6.32's Kbuild.

Every make here is the real make with the host's gcc, ld, objcopy and depmod,
run on a sample tree written under tmp_path. ``make install`` always gets
``INSTALLKERNEL`` on make's command line and ``HOME`` in tmp_path, so the
host's own /sbin/installkernel never runs.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import magic
import pytest
from conftest import have

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import TARBALL_NAME, TREE_NAME
from toa_kernel.demo.sample import NO_INSTALLKERNEL, VARIANTS, pack_sample_tarball, write_sample_tree

needs_toolchain = pytest.mark.skipif(not have("make", "gcc", "ld", "objcopy", "nm"), reason="needs make/gcc")

REDIRECTED = "Console input/output is redirected. Run 'make oldconfig' to update configuration."
VERMAGIC_TAIL = " SMP mod_unload modversions "


# --- helpers ------------------------------------------------------------------------


def make(tree: Path, *args: str, stdin: str | None = None, home: Path | None = None):
    """Run the real make in ``tree``; stdout and stderr together in ``.out``."""
    env = dict(os.environ, LC_ALL="C")
    env.pop("INSTALLKERNEL", None)
    env.pop("MAKEFLAGS", None)
    if home is not None:
        env["HOME"] = str(home)
    result = subprocess.run(
        ["make", *args],
        cwd=tree,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    result.out = result.stdout
    return result


def ok(tree: Path, *args: str, **kwargs: object) -> str:
    result = make(tree, *args, **kwargs)
    assert result.returncode == 0, result.out
    return result.out


def set_extraversion(tree: Path, value: str) -> None:
    makefile = tree / "Makefile"
    text = makefile.read_text()
    assert "\nEXTRAVERSION =\n" in text
    makefile.write_text(text.replace("\nEXTRAVERSION =\n", f"\nEXTRAVERSION = {value}\n", 1))


def set_config(tree: Path, **values: str) -> None:
    """Set options in .config the way the pipeline does (replace, else append)."""
    config = tree / ".config"
    lines = config.read_text().splitlines()
    for name, value in values.items():
        option = f"CONFIG_{name}"
        wanted = f"{option}={value}" if value != "n" else f"# {option} is not set"
        hits = [
            i
            for i, line in enumerate(lines)
            if line.startswith(f"{option}=") or line == f"# {option} is not set"
        ]
        if hits:
            lines[hits[0]] = wanted
        else:
            lines.append(wanted)
    config.write_text("\n".join(lines) + "\n")


def quiet_lines(output: str, verb: str) -> list[str]:
    """The Kbuild quiet lines of one kind: 'CC' gives both '  CC      x.o' and '  CC [M]  y.o'."""
    return [line for line in output.splitlines() if line.startswith(f"  {verb} ")]


def elf_sections(path: Path) -> dict[str, bytes]:
    """Section name -> content of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is not ELF64 LSB"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = []
    for index in range(shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + index * shentsize
        )
        headers.append((name, offset, size))
    names_offset = headers[shstrndx][1]

    def name_at(offset: int) -> str:
        end = data.index(b"\0", names_offset + offset)
        return data[names_offset + offset : end].decode()

    return {name_at(name): data[offset : offset + size] for name, offset, size in headers}


def elf_type(path: Path) -> int:
    return struct.unpack_from("<H", path.read_bytes(), 16)[0]


def modinfo(path: Path) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section."""
    fields = elf_sections(path)[".modinfo"].split(b"\0")
    return dict(field.decode().split("=", 1) for field in fields if field)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_sample_tree(tmp_path, "vendor")


# --- the files and the variants ---------------------------------------------------------


def test_vendor_variant_has_the_real_trees_shapes(tree: Path):
    makefile = (tree / "Makefile").read_text().splitlines()
    assert makefile[:4] == ["VERSION = 2", "PATCHLEVEL = 6", "SUBLEVEL = 32", "EXTRAVERSION ="]
    assert "#define TCPOPT_TOA  200" in (tree / "net/toa/toa.h").read_text()
    assert "obj-$(CONFIG_TOA)\t\t+= toa/" in (tree / "net/Makefile").read_text()
    assert 'source "net/toa/Kconfig"' in (tree / "net/Kconfig").read_text()
    config = (tree / ".config").read_text()
    assert config.count("CONFIG_TOA=m") == 1 and "CONFIG_IPV6=m" in config
    assert 'CONFIG_LOCALVERSION=""' in config and "# CONFIG_LOCALVERSION_AUTO is not set" in config
    assert os.readlink(tree / "patches").startswith("/home/")
    assert tree.name == TREE_NAME and not (tree / "dot-config").exists()


@pytest.mark.parametrize(
    ("variant", "path", "absent", "present"),
    [
        ("no-toa-wiring", "net/Makefile", "toa/", "ipv6/"),
        ("option-254", "net/toa/toa.h", "TCPOPT_TOA  200", "#define TCPOPT_TOA  254"),
        ("no-toa-config", ".config", "CONFIG_TOA", "CONFIG_IPV6=m"),
    ],
)
def test_each_variant_differs_from_vendor_where_it_says(tmp_path: Path, variant, path, absent, present):
    text = (write_sample_tree(tmp_path, variant) / path).read_text()
    assert absent not in text and present in text


def test_unknown_variant_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        write_sample_tree(tmp_path, "vanilla")
    assert all(variant in caught.value.fix for variant in VARIANTS)


def test_tarball_is_reproducible_and_has_the_vendors_layout(tmp_path: Path):
    first = pack_sample_tarball(tmp_path / "a")
    second = pack_sample_tarball(tmp_path / "b")
    assert first.name == TARBALL_NAME and first.read_bytes() == second.read_bytes()
    with tarfile.open(fileobj=gzip.open(first)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert all(name.split("/")[0] == TREE_NAME for name in members)
    assert f"{TREE_NAME}/.config" in members and f"{TREE_NAME}/scripts/kconfig/conf.c" in members
    assert members[f"{TREE_NAME}/patches"].issym() and members[f"{TREE_NAME}/patches"].linkname.startswith(
        "/"
    )
    assert not list(tmp_path.glob("*/.sample-staging-*"))


# --- kconfig --------------------------------------------------------------------------


@needs_toolchain
def test_silentoldconfig_drops_unknown_options_and_duplicates_last_wins(tree: Path):
    config = tree / ".config"
    original = config.read_text()
    config.write_text(original + "CONFIG_NOT_IN_ANY_KCONFIG=y\nCONFIG_IPV6=y\nCONFIG_TOA=m\n")
    out = ok(tree, "silentoldconfig")
    assert "HOSTCC  scripts/kconfig/conf" in out
    assert "warning: override: reassigning to symbol TOA" in out
    assert "warning: override: reassigning to symbol IPV6" in out
    text = config.read_text()
    assert "NOT_IN_ANY_KCONFIG" not in text
    assert text.count("CONFIG_TOA=") == 1 and "CONFIG_TOA=m" in text
    assert text.count("CONFIG_IPV6=") == 1 and "CONFIG_IPV6=y" in text
    assert (tree / ".config.old").read_text().endswith("CONFIG_TOA=m\n")
    auto = (tree / "include/config/auto.conf").read_text()
    assert "CONFIG_IPV6=y" in auto and "CONFIG_TOA=m" in auto
    assert "#define CONFIG_TOA_MODULE 1" in (tree / "include/linux/autoconf.h").read_text()


@needs_toolchain
def test_silentoldconfig_writes_the_not_set_form_and_drops_values_whose_dependencies_fail(tree: Path):
    set_config(tree, INET="n")
    ok(tree, "silentoldconfig")
    text = (tree / ".config").read_text()
    assert "# CONFIG_INET is not set" in text
    assert "CONFIG_IPV6" not in text  # IPV6 depends on INET: kconfig drops it and its options


@needs_toolchain
def test_silentoldconfig_twice_changes_nothing(tree: Path):
    ok(tree, "silentoldconfig")
    before = (tree / ".config").read_bytes()
    header = (tree / "include/linux/autoconf.h").stat().st_mtime_ns
    out = ok(tree, "silentoldconfig")
    assert "configuration written" not in out
    assert (tree / ".config").read_bytes() == before
    assert (tree / "include/linux/autoconf.h").stat().st_mtime_ns == header


@needs_toolchain
def test_new_option_without_a_terminal_aborts_until_oldconfig_answers_it(tmp_path: Path):
    tree = write_sample_tree(tmp_path, "no-toa-config")
    aborted = make(tree, "silentoldconfig", stdin="\n" * 10)  # as `yes "" | make silentoldconfig`
    assert aborted.returncode != 0
    assert "(TOA) [M/n/y/?] (NEW)" in aborted.out and REDIRECTED in aborted.out
    assert not (tree / "include/config/auto.conf").exists()
    ok(tree, "oldconfig", stdin="\n" * 10)  # `yes "" | make oldconfig`: the default, m
    assert "CONFIG_TOA=m" in (tree / ".config").read_text()
    ok(tree, "silentoldconfig")


@needs_toolchain
def test_there_is_no_olddefconfig(tree: Path):
    result = make(tree, "olddefconfig")
    assert result.returncode != 0
    assert "No rule to make target 'olddefconfig'" in result.out


@needs_toolchain
def test_missing_config_is_refused(tree: Path):
    (tree / ".config").unlink()
    result = make(tree, "silentoldconfig")
    assert result.returncode != 0 and "You have not yet configured your kernel!" in result.out


# --- release ----------------------------------------------------------------------------


@needs_toolchain
def test_kernelrelease_fails_on_a_fresh_tree(tree: Path):
    result = make(tree, "-s", "kernelrelease")
    assert result.returncode != 0
    assert "kernelrelease not valid - run 'make prepare' to update it" in result.out


@pytest.mark.slow
@needs_toolchain
def test_kernelrelease_keeps_the_old_value_until_the_release_file_is_regenerated(tree: Path):
    ok(tree, "include/config/kernel.release")
    assert ok(tree, "-s", "kernelrelease") == "2.6.32\n"
    set_extraversion(tree, "-toa")
    assert ok(tree, "-s", "kernelrelease") == "2.6.32\n"
    assert ok(tree, "-s", "kernelversion") == "2.6.32-toa\n"
    ok(tree, "include/config/kernel.release")
    assert ok(tree, "-s", "kernelrelease") == "2.6.32-toa\n"


@pytest.mark.slow
@needs_toolchain
def test_prepare_regenerates_the_release_with_localversion(tree: Path):
    set_extraversion(tree, "-toa")
    set_config(tree, LOCALVERSION='"-lab"')
    out = ok(tree, "prepare")
    assert "UPD     include/linux/utsrelease.h" in out
    assert (tree / "include/config/kernel.release").read_text() == "2.6.32-toa-lab\n"
    assert '#define UTS_RELEASE "2.6.32-toa-lab"' in (tree / "include/linux/utsrelease.h").read_text()


# --- the compile ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sample as the pipeline leaves it (254, IPv6 built in, -toa), built once: (tree, make output)."""
    tree = write_sample_tree(tmp_path_factory.mktemp("built"), "option-254")
    set_config(tree, IPV6="y", TOA="m")
    set_extraversion(tree, "-toa")
    ok(tree, "silentoldconfig")
    ok(tree, "include/config/kernel.release")
    return tree, ok(tree, "-j2")


@pytest.mark.slow
@needs_toolchain
def test_build_prints_kbuild_quiet_lines_and_makes_the_artifacts(built):
    tree, out = built
    assert "  CC      init/main.o" in out and "  CC [M]  net/toa/toa.o" in out
    assert "  LD      vmlinux" in out and "  LD [M]  net/toa/toa.ko" in out
    assert "  BUILD   arch/x86/boot/bzImage" in out
    assert "Kernel: arch/x86/boot/bzImage is ready  (#1)" in out
    assert len(quiet_lines(out, "CC")) >= 8
    assert "ipv6.ko" not in out  # CONFIG_IPV6=y: built in
    assert elf_type(tree / "vmlinux") == 2 and elf_type(tree / "net/toa/toa.ko") == 1
    system_map = (tree / "System.map").read_text()
    assert "ffffffff81000000 T _text" in system_map and " __ksymtab_printk\n" in system_map


@pytest.mark.slow
@needs_toolchain
def test_libmagic_sees_a_bzimage_of_the_release(built):
    tree, _ = built
    image = tree / "arch/x86/boot/bzImage"
    head = image.read_bytes()[:1024]
    assert head[510:512] == b"\x55\xaa" and head[514:518] == b"HdrS"
    description = magic.from_file(str(image))
    assert description.startswith("Linux kernel x86 boot executable bzImage, version 2.6.32-toa ("), (
        description
    )
    assert "#1 SMP" in description


@pytest.mark.slow
@needs_toolchain
def test_toa_ko_carries_vermagic_license_and_the_option_code(built):
    tree, _ = built
    info = modinfo(tree / "net/toa/toa.ko")
    assert info["vermagic"] == "2.6.32-toa" + VERMAGIC_TAIL
    assert info["license"] == "GPL" and info["description"]
    assert info["tcpopt_toa"] == "254"
    assert b"__this_module" in elf_sections(tree / "net/toa/toa.ko")[".strtab"]
    if have("modinfo"):
        shown = subprocess.run(
            ["modinfo", "-F", "vermagic", str(tree / "net/toa/toa.ko")], capture_output=True, text=True
        )
        assert shown.stdout == "2.6.32-toa" + VERMAGIC_TAIL + "\n"


@pytest.mark.slow
@needs_toolchain
def test_second_make_compiles_nothing(built):
    tree, _ = built
    out = ok(tree, "-j2")
    assert quiet_lines(out, "CC") == [] and quiet_lines(out, "LD") == []
    assert "Kernel: arch/x86/boot/bzImage is ready  (#1)" in out


@pytest.mark.slow
@needs_toolchain
def test_v1_shows_the_full_commands(tmp_path: Path):
    tree = write_sample_tree(tmp_path)
    out = ok(tree, "V=1", "init/")
    assert "gcc -Wp,-MD,init/.main.o.d" in out and "-c -o init/main.o init/main.c" in out
    assert "  CC      init/main.o" not in out


@pytest.mark.slow
@needs_toolchain
@pytest.mark.parametrize(
    ("variant", "toa"), [("no-toa-wiring", "m"), ("vendor", "y")], ids=["no-net-makefile-line", "built-in"]
)
def test_toa_ko_needs_config_toa_m_and_the_net_makefile_line(tmp_path: Path, variant, toa):
    tree = write_sample_tree(tmp_path, variant)
    set_config(tree, TOA=toa)
    out = ok(tree, "-j2")
    assert not (tree / "net/toa/toa.ko").exists()
    assert "CC [M]  net/toa/toa.o" not in out
    assert (tree / "arch/x86/boot/bzImage").is_file()


@pytest.mark.slow
@needs_toolchain
def test_a_c_syntax_error_fails_make_with_gccs_error_line(tmp_path: Path):
    tree = write_sample_tree(tmp_path)
    source = tree / "net/toa/toa.c"
    source.write_text(source.read_text().replace("return 1;", "return 1", 1))
    result = make(tree, "-j2")
    assert result.returncode != 0
    errors = [line for line in result.out.splitlines() if "error:" in line]
    assert errors and errors[0].startswith("net/toa/toa.c:")
    assert not (tree / "net/toa/toa.ko").exists()


@pytest.mark.slow
@needs_toolchain
def test_new_extraversion_recompiles_only_what_carries_the_release(tmp_path: Path):
    tree = write_sample_tree(tmp_path)
    ok(tree, "-j2")
    assert modinfo(tree / "net/toa/toa.ko")["vermagic"] == "2.6.32" + VERMAGIC_TAIL
    set_extraversion(tree, "-toa")
    ok(tree, "include/config/kernel.release")
    out = ok(tree, "-j2")
    compiled = {line.split()[-1] for line in quiet_lines(out, "CC")}
    assert "init/version.o" in compiled and "net/toa/toa.mod.o" in compiled
    assert "init/main.o" not in compiled and "net/toa/toa.o" not in compiled
    assert modinfo(tree / "net/toa/toa.ko")["vermagic"] == "2.6.32-toa" + VERMAGIC_TAIL
    assert "Kernel: arch/x86/boot/bzImage is ready  (#2)" in out
    assert "version 2.6.32-toa (" in magic.from_file(str(tree / "arch/x86/boot/bzImage"))


# --- modules_install and install ------------------------------------------------------------


@pytest.mark.slow
@needs_toolchain
@pytest.mark.skipif(not os.access("/sbin/depmod", os.X_OK), reason="needs /sbin/depmod")
def test_modules_install_runs_the_real_depmod_into_the_prefix(built, tmp_path: Path):
    tree, _ = built
    out = ok(tree, "modules_install", f"INSTALL_MOD_PATH={tmp_path}")
    moddir = tmp_path / "lib/modules/2.6.32-toa"
    assert "  INSTALL net/toa/toa.ko" in out and "  DEPMOD  2.6.32-toa" in out
    assert (moddir / "kernel/net/toa/toa.ko").read_bytes() == (tree / "net/toa/toa.ko").read_bytes()
    assert (moddir / "modules.order").read_text() == "kernel/net/toa/toa.ko\n"
    assert os.readlink(moddir / "build") == str(tree)
    assert "kernel/net/toa/toa.ko:" in (moddir / "modules.dep").read_text().splitlines()
    assert "unknown symbol" not in out  # depmod -e found printk & co in System.map


@pytest.mark.slow
@needs_toolchain
def test_modules_install_skips_depmod_when_it_is_not_executable(built, tmp_path: Path):
    tree, _ = built
    ok(tree, "modules_install", f"INSTALL_MOD_PATH={tmp_path}", f"DEPMOD={tmp_path}/no-depmod")
    moddir = tmp_path / "lib/modules/2.6.32-toa"
    assert (moddir / "kernel/net/toa/toa.ko").is_file()
    assert not (moddir / "modules.dep").exists()


@pytest.mark.slow
@needs_toolchain
def test_install_execs_the_installkernel_in_home_bin_with_four_arguments(built, tmp_path: Path):
    tree, _ = built
    home, boot = tmp_path / "home", tmp_path / "boot"
    boot.mkdir()
    script = home / "bin" / "sandbox-installkernel"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$4/args"\ncp "$2" "$4/vmlinuz-$1"\n')
    script.chmod(0o755)
    ok(tree, "install", f"INSTALL_PATH={boot}", "INSTALLKERNEL=sandbox-installkernel", home=home)
    assert (boot / "args").read_text().splitlines() == [
        "2.6.32-toa",
        "arch/x86/boot/bzImage",
        "System.map",
        str(boot),
    ]
    assert (boot / "vmlinuz-2.6.32-toa").read_bytes() == (tree / "arch/x86/boot/bzImage").read_bytes()


@pytest.mark.slow
@needs_toolchain
@pytest.mark.skipif(
    os.path.exists("/sbin/lilo") or os.path.exists("/etc/lilo/install"), reason="would run the host's lilo"
)
def test_install_without_installkernel_copies_and_keeps_the_previous_files(built, tmp_path: Path):
    tree, _ = built
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz").write_text("previous kernel")
    args = ("install", f"INSTALL_PATH={boot}", f"INSTALLKERNEL={NO_INSTALLKERNEL}")
    out = ok(tree, *args, home=tmp_path)
    assert "Cannot find LILO." in out
    assert (boot / "vmlinuz").read_bytes() == (tree / "arch/x86/boot/bzImage").read_bytes()
    assert (boot / "vmlinuz.old").read_text() == "previous kernel"
    assert (boot / "System.map").read_text() == (tree / "System.map").read_text()
    assert stat.S_ISREG((boot / "System.map").stat().st_mode)


@pytest.mark.slow
@needs_toolchain
def test_install_before_make_says_to_run_make_first(tree: Path, tmp_path: Path):
    ok(tree, "include/config/kernel.release")
    result = make(
        tree, "install", f"INSTALL_PATH={tmp_path}", f"INSTALLKERNEL={NO_INSTALLKERNEL}", home=tmp_path
    )
    assert result.returncode != 0
    assert "*** Missing file: arch/x86/boot/bzImage" in result.out
    assert 'You need to run "make" before "make install".' in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == [TREE_NAME]


@pytest.mark.slow
@needs_toolchain
def test_mrproper_leaves_the_shipped_files_but_the_config(tmp_path: Path):
    tree = write_sample_tree(tmp_path)
    shipped = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    ok(tree, "init/")
    ok(tree, "mrproper")
    after = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    assert set(after) == set(shipped) - {".config"}
