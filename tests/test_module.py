"""Kernels 3.0+: build-module / install-module / rollback-module.

Fast tests judge the pure parts with data (distributions, Kbuild logs, ELF
files, boot styles). Slow tests build the project's own test module with the
real Kbuild against Debian's installed linux-headers, install it into sandbox
roots with the real depmod, run the boot-time loader, and roll back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from module_support import (
    HELLO_SRC,
    copy_source,
    installed_headers,
    make_root,
    pack_like_elb_toa,
    stub_bin,
)

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.kernel.modinfo import check_vermagic, parse_modinfo, read_module_info
from toa_kernel.module.boot import boot_style, loader_script
from toa_kernel.module.build import (
    KbuildFacts,
    check_prereqs,
    classify_failure,
    find_module_source,
    first_error_line,
    gather_kbuild_facts,
)
from toa_kernel.module.distro import Distro, detect_distro, headers_command
from toa_kernel.module.steps import SourceRequest, build_module, install_module, rollback_module
from toa_kernel.source.loopback import serve_directory
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.checks import Status, run_checks
from toa_kernel.verify.facts import gather
from toa_kernel.verify.module_checks import applies, gather_module_mode, module_mode_checks

HEADERS = installed_headers()
needs_headers = pytest.mark.skipif(HEADERS is None, reason="no linux-headers package installed")
PROJECT = Path(__file__).resolve().parent.parent

RETPOLINE_LOG = """make: Entering directory '/usr/src/kernels/3.10.0-862.el7.x86_64'
arch/x86/Makefile:166: *** CONFIG_RETPOLINE=y, but not supported by the compiler. \
Compiler update recommended.. Stop.
make: *** [sub-make] Error 2
"""
COMPILE_ERROR_LOG = """  CC [M]  /w/src/toa.o
/w/src/toa.c: In function 'toa_init':
/w/src/toa.c:52:9: error: implicit declaration of function 'kallsyms_lookup_name' [-Werror=implicit-fu]
/w/src/toa.c:60:3: error: 'struct proto_ops' has no member named 'getname_old'
make[1]: *** [scripts/Makefile.build:250: /w/src/toa.o] Error 1
"""


def local(root) -> LocalSystem:
    return LocalSystem(Root.of(root))


def quiet() -> Console:
    return Console(quiet=True)


def settings_for(tmp_path: Path, root: Path | str = "/", **more: object) -> Settings:
    return Settings(workdir=tmp_path / "work", root=Path(root), **more)  # type: ignore[arg-type]


# --- distributions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distro", "family", "command"),
    [
        ("centos6", "redhat", "yum install -y kernel-devel-R"),
        ("centos7", "redhat", "yum install -y kernel-devel-R"),
        ("ubuntu1804", "debian", "apt-get install -y linux-headers-R"),
        ("debian8", "debian", "apt-get install -y linux-headers-R"),
        ("opensuse42", "suse", "zypper --non-interactive install kernel-default-devel"),
        ("sles11", "suse", "zypper --non-interactive install kernel-default-devel"),
        ("coreos", "coreos", None),
    ],
)
def test_distribution_and_headers_command(tmp_path, distro, family, command):
    found = detect_distro(local(make_root(tmp_path, distro)))
    assert found.family == family
    argv = headers_command(found, "R")
    assert (" ".join(argv) if argv else None) == command


def test_suse_headers_follow_the_kernel_flavour():
    assert headers_command(Distro("sles", "suse"), "4.4.21-69-xen")[-1] == "kernel-xen-devel"


def test_distribution_versions_are_read(tmp_path):
    assert detect_distro(local(make_root(tmp_path, "centos6"))).version == "6.10"
    assert detect_distro(local(make_root(tmp_path, "sles11"))).version == "11.3"


@pytest.mark.parametrize(
    ("distro", "systemd", "style"),
    [
        ("centos6", False, "modules"),
        ("centos7", True, "modules"),
        ("rhel8", True, "systemd"),
        ("ubuntu1804", True, "systemd"),
        ("sles11", False, "none"),
    ],
)
def test_boot_style_follows_the_distribution(tmp_path, distro, systemd, style):
    root = local(make_root(tmp_path, distro, systemd=systemd))
    assert boot_style(detect_distro(root), systemd) == style


# --- prerequisites -----------------------------------------------------------------------


def test_missing_headers_name_the_exact_package(tmp_path):
    root = local(make_root(tmp_path, "centos7"))
    facts = gather_kbuild_facts(root.fs, "3.10.0-1160.el7.x86_64", detect_distro(root))
    with pytest.raises(EnvironmentFailure) as caught:
        check_prereqs(facts)
    assert "/lib/modules/3.10.0-1160.el7.x86_64/build" in caught.value.message
    assert "yum install -y kernel-devel-3.10.0-1160.el7.x86_64" in caught.value.fix


def test_missing_headers_on_coreos_point_at_the_dev_container(tmp_path):
    root = local(make_root(tmp_path, "coreos"))
    with pytest.raises(EnvironmentFailure) as caught:
        check_prereqs(gather_kbuild_facts(root.fs, "4.14.11-coreos", detect_distro(root)))
    assert "development container" in caught.value.fix


def test_missing_compiler_names_the_install_command():
    facts = KbuildFacts("4.15.0-20-generic", Distro("ubuntu", "debian"), Path("/x"), None, None, ["gcc"])
    with pytest.raises(ToolMissing) as caught:
        check_prereqs(facts)
    assert caught.value.tool == "gcc"
    assert "apt-get install -y gcc" in caught.value.fix


def test_install_deps_refuses_a_root_prefix(tmp_path):
    root = make_root(tmp_path, "ubuntu1804")
    with pytest.raises(UserError, match="only with --root /"):
        build_module(
            settings_for(tmp_path, root),
            SourceRequest(src=HELLO_SRC),
            quiet(),
            release="4.15.0-20-generic",
            install_deps=True,
        )


@needs_headers
def test_headers_of_another_release_are_refused_before_building(tmp_path):
    root = make_root(tmp_path, "debian8", releases=("3.16.0-4-amd64",))
    real, fake = Path(f"/lib/modules/{HEADERS}/build").resolve(), root / "lib/modules/3.16.0-4-amd64/build"
    for name in ("Makefile", "include/generated/utsrelease.h"):  # what the preflight reads
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / name, fake / name)
    with pytest.raises(UserError) as caught:
        build_module(
            settings_for(tmp_path, root), SourceRequest(src=HELLO_SRC), quiet(), release="3.16.0-4-amd64"
        )
    assert f"development files of {HEADERS}" in caught.value.message
    assert "linux-headers-3.16.0-4-amd64" in caught.value.fix


# --- source -------------------------------------------------------------------------------


def test_source_without_makefile_is_refused(tmp_path):
    source = copy_source(tmp_path / "mod", makefile=False)
    with pytest.raises(UserError, match="has no Makefile"):
        find_module_source(source)


def test_source_makefile_is_found_in_src_of_the_top_directory(tmp_path):
    top = tmp_path / "unpacked" / "elb-toa-master"
    copy_source(top / "src")
    assert find_module_source(tmp_path / "unpacked") == top / "src"
    assert find_module_source(top) == top / "src"


def test_nat64_picks_the_ipv6_branch():
    settings = Settings()
    assert SourceRequest(nat64=True).chosen_url(settings).endswith("/IPv6.tar.gz")
    assert SourceRequest().chosen_url(settings).endswith("/master.tar.gz")
    with pytest.raises(UserError, match="--nat64"):
        SourceRequest(nat64=True, branch="master").chosen_branch(settings)


def test_bad_sha256_pin_is_refused_before_anything(tmp_path):
    with pytest.raises(UserError, match="64 hexadecimal"):
        build_module(settings_for(tmp_path), SourceRequest(sha256="abc"), quiet(), release="4.15.0")


# --- Kbuild failures -------------------------------------------------------------------------


def test_retpoline_failure_says_upgrade_gcc(tmp_path):
    error = classify_failure(RETPOLINE_LOG, tmp_path / "log", "3.10.0-862.el7.x86_64")
    assert isinstance(error, EnvironmentFailure)
    assert "compiler is too old" in error.message
    assert "upgrade gcc" in error.fix


def test_compile_error_shows_the_first_error_line(tmp_path):
    error = classify_failure(COMPILE_ERROR_LOG, tmp_path / "log", "6.1.0-56-amd64")
    assert "kallsyms_lookup_name" in error.message
    assert "getname_old" not in error.message


def test_make_stop_line_is_shown_when_no_compiler_error():
    log = "make: *** No rule to make target 'modules'.  Stop.\n"
    assert first_error_line(log) == "make: *** No rule to make target 'modules'.  Stop."


# --- ELF and vermagic ----------------------------------------------------------------------------


def test_modinfo_fields_are_split_on_nul():
    fields = parse_modinfo(b"license=GPL\0alias=a\0alias=b\0vermagic=4.15.0-20-generic SMP mod_unload \0\0")
    assert fields["alias"] == ["a", "b"]
    assert fields["vermagic"] == ["4.15.0-20-generic SMP mod_unload "]


def test_a_program_is_not_a_module():
    with pytest.raises(UserError, match="not relocatable"):
        read_module_info(Path(sys.executable).resolve())


def test_a_text_file_is_not_a_module(tmp_path):
    fake = tmp_path / "toa.ko"
    fake.write_text("<html>not found</html>")
    with pytest.raises(UserError, match="no ELF header"):
        read_module_info(fake)


# --- the boot-time loader (real sh, real modinfo on a sandbox) ------------------------------------


def run_loader(script: Path, bin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "TOA_KMSG": str(tmp_path / "kmsg"),
        "TOA_PROC_MODULES": str(tmp_path / "proc-modules"),
    }
    (tmp_path / "kmsg").touch()
    (tmp_path / "proc-modules").write_text("ext4 1 0 - Live 0x0\n")
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)


def test_loader_reports_a_missing_module_after_a_kernel_upgrade(tmp_path):
    root = make_root(tmp_path, "centos7", releases=("3.10.0-1160.el7.x86_64",))
    script = tmp_path / "toa.modules"
    script.write_text(loader_script("toa"))
    done = run_loader(script, stub_bin(tmp_path / "bin", root, "3.10.0-1160.el7.x86_64"), tmp_path)
    assert done.returncode == 1
    kmsg = (tmp_path / "kmsg").read_text()
    assert kmsg.startswith("<3>toa: no toa module for the running kernel 3.10.0-1160.el7.x86_64")
    assert "invoke build-module install-module" in kmsg
    assert not (tmp_path / "bin" / "calls").exists()


def test_loader_skips_a_module_already_loaded(tmp_path):
    script = tmp_path / "toa.modules"
    script.write_text(loader_script("toa"))
    bin_dir = stub_bin(tmp_path / "bin", tmp_path, "4.15.0")
    env_modules = tmp_path / "proc-modules"
    done = run_loader(script, bin_dir, tmp_path)
    assert done.returncode == 1  # not loaded, no module: reported
    env_modules.write_text("toa 16384 0 - Live 0x0\n")
    done = subprocess.run(
        ["sh", str(script)],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "TOA_PROC_MODULES": str(env_modules),
            "TOA_KMSG": "/nonexistent",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stderr == ""


# --- real Kbuild, real depmod --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The test module built once with the production code path (--src)."""
    if HEADERS is None:
        pytest.skip("no linux-headers package installed")
    base = tmp_path_factory.mktemp("built")
    settings = settings_for(base)
    record = build_module(settings, SourceRequest(src=HELLO_SRC), quiet(), release=HEADERS)
    return settings, record


@pytest.mark.slow
def test_build_records_a_relocatable_with_matching_vermagic(built):
    settings, record = built
    info = read_module_info(Path(record["ko"]))
    assert info.name == "hello" and info.release == HEADERS and info.machine == "x86-64"
    assert record["vermagic"].split()[0] == HEADERS
    assert Path(record["log"]).read_text().startswith("$ make -j")
    assert Workdir(settings.workdir).section("module")["builds"][HEADERS]["ko"] == record["ko"]


@pytest.mark.slow
def test_build_twice_reuses_the_first(built, capsys):
    settings, record = built
    ko = Path(record["ko"])
    before = ko.stat().st_mtime_ns
    again = build_module(settings, SourceRequest(src=HELLO_SRC), Console(), release=HEADERS)
    assert again == record and ko.stat().st_mtime_ns == before
    assert "up to date" in capsys.readouterr().out


@pytest.mark.slow
def test_module_for_another_release_is_refused(built, tmp_path):
    _, record = built
    with pytest.raises(UserError, match="built for kernel"):
        check_vermagic(read_module_info(Path(record["ko"])), "3.10.0-1160.el7.x86_64")
    root = make_root(tmp_path, "centos7", releases=("3.10.0-1160.el7.x86_64",))
    with pytest.raises(UserError, match="the kernel would refuse to load it"):
        install_module(
            settings_for(tmp_path, root), quiet(), release="3.10.0-1160.el7.x86_64", ko=Path(record["ko"])
        )
    assert not (root / "lib/modules/3.10.0-1160.el7.x86_64/extra").exists()


@pytest.mark.slow
@needs_headers
def test_compile_error_stops_with_the_first_error_line(tmp_path):
    source = copy_source(tmp_path / "broken", extra_c="\nint broken(void) { return no_such_symbol; }\n")
    with pytest.raises(UserError) as caught:
        build_module(settings_for(tmp_path), SourceRequest(src=source), quiet(), release=HEADERS)
    assert "error:" in caught.value.message and "no_such_symbol" in caught.value.message
    assert "module-" in caught.value.fix  # names the log file


@pytest.mark.slow
@needs_headers
def test_build_from_a_tarball_over_http_with_a_sha256_pin(tmp_path):
    import hashlib

    tarball = pack_like_elb_toa(tmp_path / "served" / "master.tar.gz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    with serve_directory(tmp_path / "served") as base:
        url = base + "{branch}.tar.gz"
        with pytest.raises(UserError, match="pin says"):
            build_module(
                settings_for(tmp_path), SourceRequest(url=url, sha256="0" * 64), quiet(), release=HEADERS
            )
        record = build_module(
            settings_for(tmp_path), SourceRequest(url=url, sha256=digest), quiet(), release=HEADERS
        )
    assert record["source"]["sha256"] == digest and record["source"]["branch"] == "master"
    assert read_module_info(Path(record["ko"])).release == HEADERS
    # The server is gone: the recorded download is reused, and the build is up to date.
    again = build_module(settings_for(tmp_path), SourceRequest(url=url), quiet(), release=HEADERS)
    assert again == record


@pytest.mark.slow
@needs_headers
def test_build_from_a_local_tarball_for_offline_hosts(tmp_path):
    tarball = pack_like_elb_toa(tmp_path / "IPv6.tar.gz", branch="IPv6")
    record = build_module(
        settings_for(tmp_path), SourceRequest(tarball=tarball, nat64=True), quiet(), release=HEADERS
    )
    assert record["source"]["branch"] == "IPv6" and record["source"]["url"] == tarball.as_uri()
    assert (tmp_path / "work/src/module-IPv6/elb-toa-IPv6/src/Makefile").is_file()


def test_a_web_page_instead_of_a_tarball_is_refused(tmp_path):
    page = tmp_path / "master.tar.gz"
    page.write_text("<html><head><title>Sign in</title></head></html>")
    with pytest.raises(UserError, match="Sign in"):
        build_module(settings_for(tmp_path), SourceRequest(tarball=page), quiet(), release=HEADERS or "6.1.0")


def test_dry_run_with_install_deps_shows_the_package_command(tmp_path, capsys):
    if detect_distro(local("/")).family != "debian":
        pytest.skip("the command asserted is Debian's")
    result = build_module(
        settings_for(tmp_path),
        SourceRequest(src=HELLO_SRC),
        Console(),
        release="9.9.9-nope",
        install_deps=True,
        dry_run=True,
    )
    out = capsys.readouterr().out
    assert "would install linux-headers-9.9.9-nope" in out
    assert "$ apt-get install -y linux-headers-9.9.9-nope" in out
    assert "M=" in out and result["dry_run"]
    assert not (tmp_path / "work").exists()


def installed_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("modules.")}


@pytest.mark.slow
def test_install_on_centos7_then_again_then_rollback(built, tmp_path, node):
    _, record = built
    root = make_root(tmp_path, "centos7", releases=(HEADERS,))
    before = installed_files(root)
    settings = settings_for(tmp_path, root)
    system = node.open(root)
    shutil.copytree(Path(record["ko"]).parent.parent.parent, settings.workdir)  # the build's workdir

    dry = install_module(settings, quiet(), dry_run=True, system=system)
    assert dry["changes"] and installed_files(root) == before

    result = install_module(settings, quiet(), system=system)
    assert result["release"] == HEADERS and result["startup"] == "modules"
    assert (root / f"lib/modules/{HEADERS}/extra/hello.ko").read_bytes() == Path(record["ko"]).read_bytes()
    assert "extra/hello.ko:" in (root / f"lib/modules/{HEADERS}/modules.dep").read_text()
    script = root / "etc/sysconfig/modules/hello.modules"
    assert script.stat().st_mode & 0o777 == 0o755
    assert "modprobe hello" in script.read_text()

    assert install_module(settings, quiet(), system=system)["changes"] == []

    bin_dir = stub_bin(tmp_path / "bin", root, HEADERS)
    done = run_loader(script, bin_dir, tmp_path)
    assert done.returncode == 0 and (bin_dir / "calls").read_text() == "modprobe hello\n"
    upgraded = run_loader(script, stub_bin(tmp_path / "bin2", root, "9.9.9-new"), tmp_path)
    assert upgraded.returncode == 1 and "no hello module for the running kernel 9.9.9-new" in upgraded.stderr

    assert rollback_module(settings, quiet(), system=system)
    assert installed_files(root) == before
    assert "hello.ko" not in (root / f"lib/modules/{HEADERS}/modules.dep").read_text()
    assert rollback_module(settings, quiet(), system=system) == []


@pytest.mark.slow
def test_install_on_ubuntu_writes_systemd_files_and_restores_a_replaced_one(built, tmp_path, node):
    _, record = built
    root = make_root(tmp_path, "ubuntu1804", releases=(HEADERS,))
    conf = root / "etc/modules-load.d/hello.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# the admin's own file\nhello\n")
    settings, system = settings_for(tmp_path, root), node.open(root)
    result = install_module(settings, quiet(), release=HEADERS, ko=Path(record["ko"]), system=system)
    assert result["startup"] == "systemd"
    assert conf.read_text().endswith("\nhello\n") and "toa-kernel" in conf.read_text()
    unit = root / "etc/systemd/system/hello-module.service"
    assert "ExecStart=/usr/local/sbin/hello-load-module" in unit.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/hello-module.service"
    assert os.readlink(wants) == "/etc/systemd/system/hello-module.service"
    assert os.access(root / "usr/local/sbin/hello-load-module", os.X_OK)

    rollback_module(settings, quiet(), system=system)
    assert conf.read_text() == "# the admin's own file\nhello\n"
    assert not unit.exists() and not wants.is_symlink()
    assert not list(conf.parent.glob("*toa-backup*"))


@pytest.mark.slow
def test_rollback_keeps_a_file_changed_after_install(built, tmp_path, capsys, node):
    _, record = built
    root = make_root(tmp_path, "centos6", releases=(HEADERS,))
    settings, system = settings_for(tmp_path, root), node.open(root)
    install_module(settings, quiet(), release=HEADERS, ko=Path(record["ko"]), system=system)
    script = root / "etc/sysconfig/modules/hello.modules"
    script.write_text(script.read_text() + "# local change\n")
    rollback_module(settings, Console(), system=system)
    assert script.exists()
    assert "changed since install-module" in capsys.readouterr().err
    assert not (root / f"lib/modules/{HEADERS}/extra/hello.ko").exists()


@pytest.mark.slow
def test_verify_module_checks_on_the_installed_sandbox(built, tmp_path, node):
    _, record = built
    root = make_root(tmp_path, "centos7", releases=(HEADERS,))
    system = node.open(root)
    install_module(
        settings_for(tmp_path, root), quiet(), release=HEADERS, ko=Path(record["ko"]), system=system
    )
    proc = root / "proc/sys/kernel"
    proc.mkdir(parents=True)
    (proc / "osrelease").write_text(HEADERS + "\n")
    facts = gather(system, dmesg=lambda: "")
    mode = gather_module_mode(system, facts.release, name="hello")
    assert applies(facts, mode)
    from toa_kernel.verify.checks import Expectation

    results = {r.name: r for r in run_checks(module_mode_checks(mode), facts, Expectation())}
    assert results["module-fits"].status is Status.PASS
    assert results["module-fits"].reason.endswith("TCP option kind 254")  # the test module's modinfo says so
    assert results["module-boot"].status is Status.PASS
    (proc / "osrelease").write_text("3.10.0-1160.99.1.el7.x86_64\n")
    facts = gather(system, dmesg=lambda: "")
    mode = gather_module_mode(system, facts.release, name="hello")
    result = run_checks(module_mode_checks(mode), facts, Expectation())[0]
    assert result.status is Status.FAIL and "upgraded" in result.reason


@pytest.mark.slow
@needs_headers
def test_tasks_from_the_command_line(tmp_path):
    root = make_root(tmp_path, "debian8", releases=(HEADERS,))
    common = ["--workdir", str(tmp_path / "work")]

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=240,
        )

    done = invoke("build-module", "--src", str(HELLO_SRC), "--release", HEADERS, "--json", *common)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["release"] == HEADERS
    done = invoke("install-module", "--root", str(root), "--dry-run", *common)
    assert done.returncode == 0 and "would install hello.ko" in done.stdout
    assert not (root / f"lib/modules/{HEADERS}/extra").exists()
    done = invoke("install-module", "--root", str(root), "--release", "4.99.0-none", *common)
    assert done.returncode == 2 and "no module was built for 4.99.0-none" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_2_6_32_kernel_is_sent_to_the_kernel_pipeline(tmp_path):
    with pytest.raises(UserError, match=r"older than 3\.0") as caught:
        build_module(
            settings_for(tmp_path), SourceRequest(src=HELLO_SRC), quiet(), release="2.6.32-754.el6.x86_64"
        )
    assert "install-kernel" in caught.value.fix


def test_unknown_startup_style_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"--startup 'rc\.local' is not a known startup style"):
        install_module(settings_for(tmp_path), quiet(), startup="rc.local")


@pytest.mark.slow
def test_one_workdir_records_one_root(built, tmp_path, node):
    _, record = built
    first = make_root(tmp_path / "a", "centos7", releases=(HEADERS,))
    second = make_root(tmp_path / "b", "centos7", releases=(HEADERS,))
    one, two = node.open(first), node.open(second)
    install_module(settings_for(tmp_path, first), quiet(), release=HEADERS, ko=Path(record["ko"]), system=one)
    with pytest.raises(UserError, match="records a module install on") as caught:
        install_module(
            settings_for(tmp_path, second), quiet(), release=HEADERS, ko=Path(record["ko"]), system=two
        )
    assert str(first) in caught.value.message and f"rollback-module {one.flags}'" in caught.value.fix
    assert not (second / f"lib/modules/{HEADERS}/extra/hello.ko").exists()
