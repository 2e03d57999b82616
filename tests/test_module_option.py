"""build-module sets the TCP option kind (toa.option_code, --option-code) in the module's
toa.h, shows the edit in --dry-run, records it, and the built .ko carries it in its modinfo
(tcpopt_toa), which invoke verify reports for the installed module.

The test module (tests/data/hello_module) defines TCPOPT_TOA in its toa.h as elb-toa does
and records it with MODULE_INFO as our patch 0006 makes elb-toa do. The real elb-toa
built with kind 200 and probed in a booted 6.1 kernel is in test_probe_lab.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from module_support import HELLO_SRC, copy_source, installed_headers, pack_like_elb_toa

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.kernel.modinfo import ModuleInfo, read_module_info
from toa_kernel.module.optioncode import check_built_kind, set_option_code, source_option_code
from toa_kernel.module.steps import SourceRequest, build_module
from toa_kernel.verify.checks import Status
from toa_kernel.verify.module_checks import ModuleModeFacts, check_build_fits

HEADERS = installed_headers()
needs_headers = pytest.mark.skipif(HEADERS is None, reason="no linux-headers package installed")
PROJECT = Path(__file__).resolve().parent.parent
DIFF_LINES = ("-#define TCPOPT_TOA  254", "+#define TCPOPT_TOA  200")


def settings_for(tmp_path: Path, option_code: int = 254) -> Settings:
    return Settings(workdir=tmp_path / "work", root=Path("/"), option_code=option_code)  # type: ignore[arg-type]


# --- the edit of toa.h ------------------------------------------------------------------


def test_the_kind_is_set_once_and_a_second_run_finds_nothing_to_do(tmp_path, capsys):
    moddir = copy_source(tmp_path / "src")
    assert set_option_code(moddir, 200, Console()) == {"before": 254, "after": 200}
    first = capsys.readouterr().out
    assert "build-module: toa.h: TCPOPT_TOA 254 -> 200" in first and all(line in first for line in DIFF_LINES)
    text = (moddir / "toa.h").read_text()
    assert source_option_code(moddir) == 200 and "#define TCPOPT_TOA  200\n" in text
    assert set_option_code(moddir, 200, Console()) == {"before": 200, "after": 200}
    assert "TCPOPT_TOA is 200 in toa.h (as the source has it)" in capsys.readouterr().out
    assert (moddir / "toa.h").read_text() == text


def test_a_source_without_toa_h_or_its_define_is_refused(tmp_path):
    moddir = copy_source(tmp_path / "src")
    (moddir / "toa.h").unlink()
    with pytest.raises(UserError, match=r"has no toa\.h: cannot set the option kind") as caught:
        set_option_code(moddir, 200, Console(quiet=True))
    assert "--src" in caught.value.fix
    (moddir / "toa.h").write_text("#define TCPOPT_TOA_V6 253\n")
    with pytest.raises(UserError, match=r"toa\.h has no '#define TCPOPT_TOA <number>' line"):
        set_option_code(moddir, 200, Console(quiet=True))
    assert (moddir / "toa.h").read_text() == "#define TCPOPT_TOA_V6 253\n"


def module_info(kind: str | None) -> ModuleInfo:
    fields = {"name": ["toa"], **({"tcpopt_toa": [kind]} if kind is not None else {})}
    return ModuleInfo(Path("toa.ko"), 1, "x86-64", fields)


def test_a_built_module_recording_another_kind_is_refused():
    check_built_kind(module_info("200"), 200)
    check_built_kind(module_info(None), 200)  # a module that does not record it: nothing to compare
    with pytest.raises(UserError, match="records TCP option kind 254 \\(tcpopt_toa\\), not 200"):
        check_built_kind(module_info("254"), 200)


# --- dry run -------------------------------------------------------------------------------


@needs_headers
def test_dry_run_shows_the_diff_of_toa_h_from_a_tarball_and_changes_nothing(tmp_path, capsys):
    tarball = pack_like_elb_toa(tmp_path / "master.tar.gz")
    result = build_module(
        settings_for(tmp_path, 200), SourceRequest(tarball=tarball), Console(), release=HEADERS, dry_run=True
    )
    out = capsys.readouterr().out
    assert "build-module: would set toa.h: TCPOPT_TOA 254 -> 200" in out
    assert all(line in out for line in DIFF_LINES) and result["option_code"] == 200
    assert not (tmp_path / "work").exists()


@needs_headers
def test_dry_run_for_a_url_not_downloaded_yet_says_the_diff_needs_the_source(tmp_path, capsys):
    request = SourceRequest(url="http://127.0.0.1:9/{branch}.tar.gz")
    build_module(settings_for(tmp_path, 200), request, Console(), release=HEADERS, dry_run=True)
    out = capsys.readouterr().out
    assert "would set TCPOPT_TOA to 200 in toa.h of the downloaded source" in out and "--tarball" in out
    assert not (tmp_path / "work").exists()


@needs_headers
def test_option_code_flag_from_the_command_line(tmp_path):
    src = copy_source(tmp_path / "src")
    command = [sys.executable, "-m", "invoke", "build-module", "--src", str(src), "--release", HEADERS]
    command += ["--workdir", str(tmp_path / "work"), "--option-code", "200", "--dry-run"]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(line in done.stdout for line in DIFF_LINES)
    assert "option kind  200" in done.stdout
    assert (src / "toa.h").read_text() == (HELLO_SRC / "toa.h").read_text()  # the checkout is untouched
    done = subprocess.run(
        [*command[:-2], "300", "--dry-run"], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "--option-code" in done.stderr


# --- real Kbuild ---------------------------------------------------------------------------


@pytest.mark.slow
@needs_headers
def test_the_kind_reaches_the_built_module_and_another_kind_rebuilds(tmp_path, capsys):
    src = copy_source(tmp_path / "src")
    record = build_module(settings_for(tmp_path, 200), SourceRequest(src=src), Console(), release=HEADERS)
    assert record["option_code"] == {"before": 254, "after": 200} and record["recorded_option_code"] == 200
    assert read_module_info(Path(record["ko"])).get("tcpopt_toa") == "200"
    assert "build-module: toa.h: TCPOPT_TOA 254 -> 200" in capsys.readouterr().out
    same = build_module(settings_for(tmp_path, 200), SourceRequest(src=src), Console(), release=HEADERS)
    assert same == record and "up to date" in capsys.readouterr().out
    back = build_module(settings_for(tmp_path, 254), SourceRequest(src=src), Console(), release=HEADERS)
    assert back["built"] != record["built"] and back["option_code"] == {"before": 254, "after": 254}
    assert read_module_info(Path(back["ko"])).get("tcpopt_toa") == "254"
    assert "TCPOPT_TOA is 254 in toa.h (as the source has it)" in capsys.readouterr().out
    assert (src / "toa.h").read_text() == (HELLO_SRC / "toa.h").read_text()
    shutil.rmtree(src)


# --- verify --------------------------------------------------------------------------------


def installed(kind: int | None) -> ModuleModeFacts:
    release = "6.1.0-57-amd64"
    return ModuleModeFacts(
        release=release,
        path=f"/lib/modules/{release}/extra/toa.ko",
        vermagic=f"{release} SMP preempt mod_unload modversions",
        option_kind=kind,
    )


def test_verify_reports_the_kind_of_the_installed_module_and_warns_when_it_is_not_the_setting():
    same = check_build_fits(installed(200), option_code=200)
    assert same.status is Status.PASS and same.reason.endswith("TCP option kind 200")
    other = check_build_fits(installed(254), option_code=200)
    assert other.status is Status.WARN
    assert "honours TCP option kind 254, toa.option_code says 200" in other.reason
    assert "--option-code" in other.fix
    unknown = check_build_fits(installed(None), option_code=200)
    assert unknown.status is Status.PASS and "TCP option kind not recorded (tcpopt_toa)" in unknown.reason
