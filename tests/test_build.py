"""invoke build on the sample tree, with the real make, gcc, patch and kconfig program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from build_support import TOA_C, build_settings, fetched_tree, make_patch, quiet_console, tree_digest
from conftest import PROJECT_DIR, have

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import backups_of
from toa_kernel.core.state import Workdir
from toa_kernel.kernel import kbuild
from toa_kernel.kernel.build import STEPS, run_build, selected_steps
from toa_kernel.kernel.patching import PatchRejected
from toa_kernel.kernel.tree import read_option_code

needs_tools = pytest.mark.skipif(
    not have("make", "gcc", "perl", "patch"), reason="make, gcc, perl, patch needed"
)


def build(settings, **options):
    console, buffer = quiet_console()
    result = run_build(settings, console=console, **options)
    return result, buffer.getvalue()


def failed_build(settings, error, **options):
    console, buffer = quiet_console()
    with pytest.raises(error) as caught:
        run_build(settings, console=console, **options)
    return caught.value, buffer.getvalue()


def statuses(result):
    return {step.name: step.status for step in result.steps}


# --- step selection ---------------------------------------------------------------


def test_until_and_only_select_steps():
    assert selected_steps(None, None) == list(STEPS)
    assert selected_steps("release", None) == ["preflight", "patch", "configure", "release", "record"]
    assert selected_steps(None, "artifacts") == ["preflight", "artifacts", "record"]
    assert selected_steps(None, "preflight") == ["preflight", "record"]
    with pytest.raises(UserError, match="not a build step"):
        selected_steps("link", None)


# --- preflight: each bad input is named, nothing is changed ------------------------


def broken_tree(tmp_path, edit):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    edit(tree)
    return settings, tree


@pytest.mark.parametrize(
    "edit, error, words",
    [
        (lambda t: (t / "Makefile").unlink(), UserError, "not a kernel source tree"),
        (lambda t: (t / ".config").unlink(), UserError, "has no .config"),
        (lambda t: (t / "net/toa/toa.h").unlink(), UserError, "net/toa/toa.h is missing"),
        (
            lambda t: (t / "net/toa/toa.h").write_text("#define TCPOLEN_TOA 8\n"),
            UserError,
            "no '#define TCPOPT_TOA",
        ),
        (
            lambda t: (t / "Makefile").write_text(
                (t / "Makefile").read_text().replace("EXTRAVERSION =", "EXTRA = ")
            ),
            UserError,
            "no 'EXTRAVERSION =' line",
        ),
        (
            lambda t: (t / "net/Kconfig").write_text(
                (t / "net/Kconfig").read_text().replace('source "net/toa/Kconfig"', "")
            ),
            UserError,
            'does not source "net/toa/Kconfig"',
        ),
    ],
    ids=["no-makefile", "no-config", "no-toa-h", "no-define", "no-extraversion", "no-kconfig-source"],
)
def test_preflight_names_a_bad_tree_and_changes_nothing(tmp_path, edit, error, words):
    settings, tree = broken_tree(tmp_path, edit)
    before = tree_digest(tree)
    caught, _ = failed_build(settings, error)
    assert words in caught.message and caught.fix
    assert tree_digest(tree) == before
    record = json.loads(Path(caught.build_result.metadata).read_text())
    assert record["status"] == "failed" and record["steps"][0]["status"] == "failed"
    assert words in record["error"]["message"]
    assert Workdir(settings.workdir).section("build") == {}  # nothing changed, no build recorded


def test_preflight_fails_on_too_little_disk(tmp_path):
    settings = build_settings(tmp_path, min_free_gib=10**9)
    tree = fetched_tree(settings)
    before = tree_digest(tree)
    caught, _ = failed_build(settings, EnvironmentFailure)
    assert "GiB free" in caught.message and "the build needs 1e+09 GiB" in caught.message
    assert "df -h" in caught.fix
    assert tree_digest(tree) == before


def test_preflight_names_missing_tools_with_the_yum_command(tmp_path, monkeypatch):
    settings = build_settings(tmp_path)
    fetched_tree(settings)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    caught, _ = failed_build(settings, EnvironmentFailure)
    assert "gcc, make, perl" in caught.message
    assert "yum install gcc make perl" in caught.fix


def test_preflight_adds_the_missing_net_makefile_line_and_says_so(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings, "no-toa-wiring")
    result, output = build(settings, until="preflight")
    assert "net/Makefile: add 'obj-$(CONFIG_TOA) += toa/'" in output
    assert "+obj-$(CONFIG_TOA)\t\t+= toa/" in output
    assert (tree / "net/Makefile").read_text().endswith("obj-$(CONFIG_TOA)\t\t+= toa/\n")
    assert statuses(result)["preflight"] == "done"
    again, _ = build(settings, until="preflight")
    assert statuses(again)["preflight"] == "nothing to do"


def test_missing_fragments_are_a_user_error(tmp_path):
    settings = build_settings(tmp_path, configs_dir=tmp_path / "no-configs")
    fetched_tree(settings)
    caught, _ = failed_build(settings, UserError, until="preflight")
    assert "no config fragments" in caught.message and "toa.config" in caught.fix


# --- dry run ----------------------------------------------------------------------------


@needs_tools
def test_dry_run_prints_every_edit_and_changes_nothing(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings, "no-toa-wiring")
    workdir_files = sorted(p.name for p in Path(settings.workdir).rglob("*"))
    before = tree_digest(tree)
    result, output = build(settings, dry_run=True)
    assert tree_digest(tree) == before
    assert sorted(p.name for p in Path(settings.workdir).rglob("*")) == workdir_files
    assert result.metadata is None and result.dry_run
    for expected in (
        "preflight: would net/Makefile: add",
        "patch: would toa.h: TCPOPT_TOA 200 -> 254",
        "-#define TCPOPT_TOA  200",
        "+#define TCPOPT_TOA  254",
        "configure: would .config: CONFIG_IPV6 m -> y",
        "+CONFIG_IPV6=y",
        "would run $ make silentoldconfig",
        "release: would Makefile: EXTRAVERSION (empty) -> -toa",
        "+EXTRAVERSION = -toa",
        "compile: would run $ cd",
        "make -j2",
    ):
        assert expected in output
    assert result.release == "2.6.32-toa"  # from the read-only 'make -s kernelversion'


@pytest.mark.slow
@needs_tools
def test_invoke_dry_build_changes_nothing(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    before = tree_digest(tree)
    env = {**os.environ, "INVOKE_TOA_PATCHES_DIR": str(tmp_path / "patches")}
    for argv in (["--dry", "build"], ["build", "--dry-run"]):
        done = subprocess.run(
            [sys.executable, "-m", "invoke", *argv, "--workdir", str(settings.workdir)],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "build: dry run, nothing changed" in done.stdout
        assert "would toa.h: TCPOPT_TOA 200 -> 254" in done.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "invoke", "build", "--dry-run", "--json", "--workdir", str(settings.workdir)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    document = json.loads(as_json.stdout)
    assert document["dry_run"] is True and document["release"] == "2.6.32-toa"
    assert {s["name"]: s["status"] for s in document["steps"]}["patch"] == "would change"
    assert tree_digest(tree) == before
    assert not Workdir(settings.workdir).builds.exists() or not any(
        Workdir(settings.workdir).builds.iterdir()
    )


# --- the whole build on the sample tree ------------------------------------------------


@pytest.mark.slow
@needs_tools
def test_full_build_then_a_second_run_changes_no_byte(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings, "no-toa-wiring")
    original_config = (tree / ".config").read_text()
    result, output = build(settings)
    assert result.status == "ok", output
    assert result.release == "2.6.32-toa"
    assert set(statuses(result)) == set(STEPS)
    assert read_option_code((tree / "net/toa/toa.h").read_text()) == 254
    config = (tree / ".config").read_text()
    assert "CONFIG_IPV6=y" in config and config.count("CONFIG_TOA=") == 1
    (backup,) = backups_of(tree / ".config")
    assert backup.read_text() == original_config
    assert "compile:" in output and "compile steps in" in output

    manifest = Workdir(settings.workdir).section("build")
    assert manifest["status"] == "ok" and manifest["release"] == "2.6.32-toa"
    assert manifest["tree"] == str(tree)
    for key in ("bzimage", "toa_ko", "system_map", "metadata"):
        assert Path(manifest[key]).is_file(), key
    assert manifest["compile_steps"] > 0

    meta = json.loads(Path(manifest["metadata"]).read_text())
    assert meta["status"] == "ok" and meta["release"] == "2.6.32-toa"
    assert meta["source"]["sha256"] == "0" * 64
    assert meta["option_code"] == {"before": 200, "after": 254}
    assert meta["fragments"]["values"] == {"CONFIG_IPV6": "CONFIG_IPV6=y", "CONFIG_TOA": "CONFIG_TOA=m"}
    assert meta["jobs"] == 2 and meta["patches"] == []
    assert meta["tools"]["gcc"] and meta["tools"]["make"] and meta["tools"]["ld"]
    assert [s["name"] for s in meta["steps"]] == list(STEPS)
    assert all(s["status"] in ("done", "checked") and s["seconds"] >= 0 for s in meta["steps"])
    assert "invoke build" in meta["reproduce"] and "--option-code 254" in meta["reproduce"]
    assert any(c.endswith("make -j2") for c in meta["commands"])
    assert meta["artifacts"]["vermagic"].startswith("2.6.32-toa ")
    log = Path(meta["log"]).read_text()
    assert "make silentoldconfig" in log and "LD [M]  net/toa/toa.ko" in log

    before = tree_digest(tree)
    again, output = build(settings)
    assert again.status == "ok"
    assert tree_digest(tree) == before
    changed = {s.name: s.changes for s in again.steps if s.changes and s.name != "record"}
    assert changed == {}, output
    assert "nothing to do" in output and "up to date" in output
    assert len(backups_of(tree / ".config")) == 1


@pytest.mark.slow
@needs_tools
def test_until_release_stops_before_the_compile(tmp_path):
    settings = build_settings(tmp_path, extraversion="-lab", option_code=252)
    tree = fetched_tree(settings)
    result, output = build(settings, until="release")
    assert result.status == "partial" and result.release == "2.6.32-lab"
    assert "release: 2.6.32-lab" in output
    assert "toa.h: TCPOPT_TOA 200 -> 252" in output
    assert not (tree / "arch/x86/boot/bzImage").exists()
    assert (tree / "include/config/kernel.release").read_text().strip() == "2.6.32-lab"
    recorded = Workdir(settings.workdir).section("build")
    assert recorded["status"] == "partial"  # install-kernel refuses anything but "ok"
    only, _ = build(settings, only="compile")
    assert statuses(only) == {"preflight": "nothing to do", "compile": "done", "record": "done"}
    checked, _ = build(settings, only="artifacts")
    assert checked.status == "ok" and checked.artifacts["vermagic"].startswith("2.6.32-lab ")


@pytest.mark.slow
@needs_tools
def test_fetches_first_when_the_tree_is_missing(tmp_path, sample_tarball):
    settings = build_settings(tmp_path, url=sample_tarball.as_uri())
    result, _ = build(settings, until="release")
    assert result.release == "2.6.32-toa"
    fetch = Workdir(settings.workdir).section("fetch")
    assert Path(fetch["tree"]) == result.tree
    meta = json.loads(Path(result.metadata).read_text())
    assert meta["source"]["sha256"] == fetch["sha256"]


# --- bad inputs in later steps ----------------------------------------------------------


@pytest.mark.slow
@needs_tools
def test_patches_are_applied_recorded_and_skipped_the_second_time(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    old = (tree / TOA_C).read_text()
    make_patch(tmp_path / "patches", "0001-comment.patch", {TOA_C: (old, "/* patched */\n" + old)})
    result, output = build(settings, until="patch")
    assert "apply 0001-comment.patch (net/toa/toa.c)" in output
    assert (tree / TOA_C).read_text().startswith("/* patched */\n")
    meta = json.loads(Path(result.metadata).read_text())
    assert meta["patches"][0]["name"] == "0001-comment.patch"
    assert meta["patches"][0]["status"] == "applied" and len(meta["patches"][0]["sha256"]) == 64
    again, output = build(settings, until="patch")
    assert "0001-comment.patch is already applied" in output
    assert statuses(again)["patch"] == "nothing to do"


@needs_tools
def test_a_patch_that_does_not_apply_stops_with_the_tree_unchanged(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    old = (tree / TOA_C).read_text()
    make_patch(tmp_path / "patches", "0001-good.patch", {TOA_C: (old, "/* good */\n" + old)})
    make_patch(tmp_path / "patches", "0002-stale.patch", {TOA_C: ("int gone;\n", "int gone = 1;\n")})
    before = tree_digest(tree)
    caught, _ = failed_build(settings, PatchRejected)
    assert "0002-stale.patch does not apply" in caught.message and "+int gone = 1;" in caught.message
    assert tree_digest(tree) == before
    assert json.loads(Path(caught.build_result.metadata).read_text())["status"] == "failed"


@pytest.mark.slow
@needs_tools
def test_kconfig_dropping_an_option_fails_naming_it(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toa.config").write_text((PROJECT_DIR / "configs/toa.config").read_text())
    (configs / "zz-extra.config").write_text("CONFIG_NOT_IN_ANY_KCONFIG=y\n")
    settings = build_settings(tmp_path, configs_dir=configs)
    fetched_tree(settings)
    caught, _ = failed_build(settings, UserError, until="configure")
    assert "CONFIG_NOT_IN_ANY_KCONFIG=y (now: not set)" in caught.message
    assert "CONFIG_TOA" not in caught.message


@pytest.mark.slow
@needs_tools
def test_a_compile_error_is_named_in_the_summary(tmp_path, capsys):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    with open(tree / TOA_C, "a") as handle:
        handle.write("\nint broken( {\n")
    caught, _ = failed_build(settings, kbuild.MakeFailed)
    assert "compile failed" in caught.message and "error:" in caught.message
    assert "net/toa/toa.c" in caught.message
    assert str(caught.log) in caught.fix
    assert "last " in capsys.readouterr().err  # the tail of the output is shown
    result = caught.build_result
    assert result.status == "failed"
    assert any(
        "net/toa/toa.c" in value for _, value in map(lambda r: (r[0], str(r[1])), result.summary_rows())
    )
    recorded = Workdir(settings.workdir).section("build")
    assert recorded["status"] == "failed"


@pytest.mark.slow
@needs_tools
@pytest.mark.skipif(not have("ccache"), reason="ccache not installed")
def test_ccache_is_used_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    settings = build_settings(tmp_path, ccache=True)
    fetched_tree(settings)
    result, _ = build(settings)
    assert result.status == "ok"
    meta = json.loads(Path(result.metadata).read_text())
    assert meta["ccache"] is True and "--ccache" in meta["reproduce"]
    assert any(c.endswith("make -j2 'CC=ccache gcc'") for c in meta["commands"])
    assert any((tmp_path / "ccache").rglob("*"))


# --- make runs in its own process group and stops on Ctrl-C -----------------------------


@pytest.mark.slow
@needs_tools
def test_ctrl_c_stops_make_and_its_children(tmp_path):
    (tmp_path / "Makefile").write_text(
        "all: slow\nslow:\n\t@echo started; sh -c 'echo $$$$ > child.pid; exec sleep 60'; touch $@\n"
    )
    log = tmp_path / "make.log"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        kbuild.run_make(tmp_path, [], log)
    assert time.monotonic() - started < 20
    child = int((tmp_path / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert not (tmp_path / "slow").exists()
    assert "[stopped by the user]" in log.read_text()


# --- kbuild pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, counted",
    [
        ("  CC      init/main.o", True),
        ("  CC [M]  net/toa/toa.o", True),
        ("  LD [M]  net/toa/toa.ko", True),
        ("  HOSTCC  scripts/basic/fixdep", True),
        ("  CHK     include/linux/version.h", False),
        ("  CALL    scripts/checksyscalls.sh", False),
        ("  MODPOST 1 modules", False),
        ("  Building modules, stage 2.", False),
        ("make[1]: Nothing to be done for 'all'.", False),
    ],
)
def test_compile_steps_are_kbuild_quiet_lines(line, counted):
    assert kbuild.is_step(line) is counted


def test_kconfig_target_follows_what_the_tree_has(tmp_path):
    (tmp_path / "scripts/kconfig").mkdir(parents=True)
    makefile = tmp_path / "scripts/kconfig/Makefile"
    makefile.write_text("silentoldconfig: $(obj)/conf\n\t$< -s $(Kconfig)\n")
    assert kbuild.kconfig_target(tmp_path) == "silentoldconfig"
    makefile.write_text(makefile.read_text() + "olddefconfig: $(obj)/conf\n\t$< --olddefconfig $(Kconfig)\n")
    assert kbuild.kconfig_target(tmp_path) == "olddefconfig"


@pytest.mark.slow
@needs_tools
def test_kernelrelease_is_regenerated_not_guessed(tmp_path):
    tree = fetched_tree(build_settings(tmp_path))
    log = tmp_path / "make.log"
    with pytest.raises(kbuild.MakeFailed, match="kernelrelease not valid"):
        kbuild.kernelrelease(tree, log, regenerate=False)
    assert kbuild.kernelrelease(tree, log) == "2.6.32"
    makefile = tree / "Makefile"
    makefile.write_text(makefile.read_text().replace("EXTRAVERSION =\n", "EXTRAVERSION = -toa\n"))
    assert kbuild.kernelrelease(tree, log, regenerate=False) == "2.6.32"  # stale until regenerated
    assert kbuild.kernelrelease(tree, log) == "2.6.32-toa"


def compile_object(tmp_path, source, name="toa.ko", flags=("-c",)):
    (tmp_path / "m.c").write_text(source)
    target = tmp_path / name
    subprocess.run(["gcc", *flags, "-o", str(target), str(tmp_path / "m.c")], check=True)
    return target


MODINFO = (
    '__attribute__((section(".modinfo"), used)) '
    'static const char v[] = "vermagic=2.6.32-toa SMP mod_unload ";\n'
)


@needs_tools
def test_module_vermagic_must_match_the_release(tmp_path):
    module = compile_object(tmp_path, MODINFO)
    assert kbuild.check_module(module, "2.6.32-toa").vermagic.startswith("2.6.32-toa ")
    with pytest.raises(kbuild.ArtifactMismatch, match=r"not for release 2\.6\.32-other"):
        kbuild.check_module(module, "2.6.32-other")
    with pytest.raises(kbuild.ArtifactMismatch, match="was not built"):
        kbuild.check_module(tmp_path / "missing.ko", "2.6.32-toa")


@needs_tools
def test_an_executable_is_not_a_module(tmp_path):
    program = compile_object(tmp_path, MODINFO + "int main(void) { return 0; }\n", "prog", flags=())
    with pytest.raises(kbuild.ArtifactMismatch, match="not relocatable"):
        kbuild.check_module(program, "2.6.32-toa")


def test_a_bzimage_that_is_not_a_kernel_is_refused(tmp_path):
    fake = tmp_path / "bzImage"
    fake.write_text("not a kernel\n")
    with pytest.raises(kbuild.ArtifactMismatch, match="not a Linux kernel image"):
        kbuild.check_bzimage(fake, "2.6.32-toa")
    with pytest.raises(kbuild.ArtifactMismatch, match="was not built"):
        kbuild.check_bzimage(tmp_path / "none", "2.6.32-toa")
