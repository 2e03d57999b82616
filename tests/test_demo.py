"""``invoke demo``: the whole pipeline on the sample tree into a sandbox root,
through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toa_kernel.boot import grubconf
from toa_kernel.lab import lab_available


def invoke(project_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(project_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.skipif(not lab_available(), reason="the boot lab's packages are not installed")
def test_demo_runs_fetch_build_install_and_boots_the_toa_entry(project_dir, tmp_path):
    base = tmp_path / "demo"
    done = invoke(project_dir, "demo", "--workdir", str(base), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    where = json.loads(done.stdout)["where"]
    assert where["kernel release"] == "2.6.32-toa"
    assert where["boot lab"].startswith("PASS: booted 'CentOS (2.6.32-toa)'")
    assert "nohz=off" in where["boot lab"]
    # The sandbox root was really installed into: kernel, modules, hooks, grub default.
    root = base / "root"
    assert (root / "boot/vmlinuz-2.6.32-toa").is_file()
    assert list((root / "lib/modules/2.6.32-toa").rglob("toa.ko"))
    assert (root / "etc/sysconfig/modules/toa.modules").stat().st_mode & 0o111
    assert (root / "etc/cron.d/toa").is_file()
    config = grubconf.parse((root / "boot/grub/grub.conf").read_text())
    assert config.entries[config.default].release == "2.6.32-toa"
    # The demo's own HTTP server served the tarball: the manifest says so.
    manifest = json.loads((base / "work/manifest.json").read_text())
    assert manifest["fetch"]["url"].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_demo_without_the_lab_says_where_everything_went(project_dir, tmp_path):
    base = tmp_path / "demo"
    done = invoke(project_dir, "demo", "--workdir", str(base), "--no-lab")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "where everything went" in done.stdout
    assert "skipped (--no-lab)" in done.stdout
    assert str(base / "root") in done.stdout
    # A second demo starts from scratch and succeeds again.
    again = invoke(project_dir, "demo", "--workdir", str(base), "--no-lab")
    assert again.returncode == 0, again.stderr[-3000:]


def test_the_labs_downloaded_kernel_survives_the_demo_starting_over(tmp_path):
    from toa_kernel.demo.run import keep_lab_kernel, lab_kernel_cache

    base = tmp_path / "demo"
    assert keep_lab_kernel(base) is None  # nothing cached yet
    cache = lab_kernel_cache(base)
    cache.mkdir(parents=True)
    (cache / "vmlinuz-6.1.0-test").write_bytes(b"kernel")
    aside = keep_lab_kernel(base)
    assert aside is not None and not aside.is_relative_to(base)
    assert (aside / "vmlinuz-6.1.0-test").read_bytes() == b"kernel"
