"""Hardening of the build's preflight: a release too long for the kernel and a .config
that is not a file are refused up front with a message that helps (sample tree)."""

from __future__ import annotations

import shutil

import pytest
from build_support import build_settings, fetched_tree, quiet_console

from toa_kernel.core.errors import UserError
from toa_kernel.core.state import Workdir
from toa_kernel.kernel.build import run_build


def test_a_release_too_long_with_the_config_localversion_is_refused_before_make(tmp_path):
    settings = build_settings(tmp_path, extraversion="-" + "t" * 30)
    tree = fetched_tree(settings)
    config = tree / ".config"
    config.write_text(config.read_text() + 'CONFIG_LOCALVERSION="-' + "l" * 40 + '"\n')
    console, _ = quiet_console()
    with pytest.raises(UserError) as caught:
        run_build(settings, console=console)
    assert "64-byte UTS_RELEASE" in caught.value.message and "CONFIG_LOCALVERSION 41" in caught.value.message
    assert "--extraversion" in caught.value.fix and "at most 17" in caught.value.fix
    assert not (tree / "include" / "config" / "kernel.release").exists()  # make never ran
    assert Workdir(settings.workdir).section("build") == {}


def test_a_config_that_is_a_directory_is_called_one_and_the_fix_works(tmp_path):
    settings = build_settings(tmp_path)
    tree = fetched_tree(settings)
    (tree / ".config").unlink()
    (tree / ".config").mkdir()
    console, _ = quiet_console()
    with pytest.raises(UserError) as caught:
        run_build(settings, console=console)
    assert f"{tree / '.config'} is a directory" in caught.value.message
    assert "has no .config" not in caught.value.message
    assert caught.value.fix.startswith(f"move it aside (mv {tree / '.config'} ")
    shutil.rmtree(tree / ".config")  # what the fix says, in short
