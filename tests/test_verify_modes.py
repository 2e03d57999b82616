"""verify picks its check set by what the system runs: the TOA kernel's checks on
2.6.32, the out-of-tree module's checks on 3.0 and later."""

from __future__ import annotations

import io
import json
from pathlib import Path

from module_support import make_root

from toa_kernel.core.console import Console
from toa_kernel.core.settings import Settings
from toa_kernel.verify.run import run


def verify(root: Path, tmp_path: Path, checks: str | None = None) -> int:
    settings = Settings.from_config(None, root=root, workdir=tmp_path / "work")
    return run(settings, Console(json_mode=True, stream=io.StringIO()), checks=checks, as_json=True)


def running(root: Path, release: str) -> None:
    proc = root / "proc/sys/kernel"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "osrelease").write_text(release + "\n")
    (root / "proc/cmdline").write_text("ro root=/dev/sda1\n")
    (root / "proc/modules").write_text("")


def names(capsys) -> list[str]:
    return [check["check"] for check in json.loads(capsys.readouterr().out)["checks"]]


def test_a_3x_kernel_without_the_module_gets_the_module_checks(tmp_path, capsys):
    root = make_root(tmp_path, "centos7", releases=("3.10.0-1160.el7.x86_64",))
    running(root, "3.10.0-1160.el7.x86_64")
    code = verify(root, tmp_path)
    checks = names(capsys)
    assert checks[:3] == ["module-fits", "module-indexed", "module-boot"]
    assert "running-release" not in checks and "nohz-off" not in checks
    assert code == 1  # no toa.ko for the running kernel


def test_a_2632_kernel_gets_the_kernel_checks(tmp_path, capsys):
    root = make_root(tmp_path, "centos6", releases=("2.6.32-431.el6.x86_64",))
    running(root, "2.6.32-431.el6.x86_64")
    verify(root, tmp_path)
    checks = names(capsys)
    assert "running-release" in checks and "module-fits" not in checks


def test_checks_module_asks_for_module_mode_on_any_kernel(tmp_path, capsys):
    root = make_root(tmp_path, "centos6", releases=("2.6.32-431.el6.x86_64",))
    running(root, "2.6.32-431.el6.x86_64")
    verify(root, tmp_path, checks="module")
    assert names(capsys)[0] == "module-fits"
