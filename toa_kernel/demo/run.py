"""``invoke demo``: the whole pipeline on the sample tree, into a sandbox root.

1. pack the sample tree as the vendor's tarball and serve it on 127.0.0.1;
2. ``fetch`` it over HTTP (download, sha256, content check, safe unpack);
3. ``build`` it (patch, option code, .config fragments, EXTRAVERSION, real make);
4. ``install-kernel`` into a sandbox root shaped like a CentOS 6 server;
5. check the boot hooks with ``verify --checks hooks``;
6. ``lab``: boot the sandbox's /boot with the real GRUB legacy under QEMU, when the
   lab's packages are installed.

The sample tree is not a kernel; the sandbox is a directory, not a server.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.boot.install import InstallRequest, install_kernel
from toa_kernel.core.console import Console
from toa_kernel.core.layout import TARBALL_NAME
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, WorkLock
from toa_kernel.demo.sample import pack_sample_tarball
from toa_kernel.demo.sandbox import centos6_root
from toa_kernel.kernel.build import run_build
from toa_kernel.source.fetch import fetch_source
from toa_kernel.source.loopback import serve_directory
from toa_kernel.system.rootfs import Root

# The sample tree is tiny: the free-disk preflight of a real build (5 GiB) is not needed.
SAMPLE_MIN_FREE_GIB = 0.05


@dataclass
class DemoResult:
    """Where everything went."""

    base: Path
    rows: list[tuple[str, Any]] = field(default_factory=list)
    ok: bool = True

    def add(self, key: str, value: Any) -> None:
        self.rows.append((key, value))


def demo_settings(settings: Settings, base: Path, url: str) -> Settings:
    """The user's settings pointed at the demo's server, work directory and sandbox."""
    return settings.with_(
        url=url,
        mirrors=(),
        sha256="",
        workdir=base / "work",
        root=base / "root",
        min_free_gib=SAMPLE_MIN_FREE_GIB,
    )


def run_demo(settings: Settings, base: Path, console: Console, *, lab: bool = True) -> DemoResult:
    """Run the demo under ``base`` (emptied first) and return where things went."""
    base = Path(base).resolve()
    kept_kernel = keep_lab_kernel(base)
    if base.exists():
        shutil.rmtree(base)
    served = base / "served"
    tarball = pack_sample_tarball(served)
    result = DemoResult(base)
    result.add("sample tarball", tarball)
    centos6_root(base / "root")
    result.add("sandbox root", base / "root")
    with serve_directory(served) as url_base:
        demo = demo_settings(settings, base, f"{url_base.rstrip('/')}/{TARBALL_NAME}")
        console.say(f"demo: serving the sample tarball at {demo.url}")
        with WorkLock(Workdir(demo.workdir).ensure()):
            if kept_kernel:
                lab_kernel_cache(base).parent.mkdir(parents=True, exist_ok=True)
                kept_kernel.rename(lab_kernel_cache(base))
            pipeline(demo, console, result, lab)
    return result


def lab_kernel_cache(base: Path) -> Path:
    """Where the lab caches the real kernel it boots (see ``lab.run.LabPaths``)."""
    return base / "work" / "lab" / "kernel"


def keep_lab_kernel(base: Path) -> Path | None:
    """Set the lab's downloaded kernel aside while the demo starts over, so a
    second demo does not download it again."""
    cache = lab_kernel_cache(base)
    if not cache.is_dir():
        return None
    aside = base.parent / f".{base.name}-lab-kernel"
    if aside.exists():
        shutil.rmtree(aside)
    cache.rename(aside)
    return aside


def pipeline(settings: Settings, console: Console, result: DemoResult, lab: bool) -> None:
    console.say("demo: == fetch ==")
    fetched = fetch_source(settings, console=console)
    result.add("downloaded", f"{fetched.tarball} (sha256 {fetched.sha256[:16]}...)")
    result.add("unpacked tree", fetched.tree)
    console.say("demo: == build ==")
    built = run_build(settings, console=console)
    build = Workdir(settings.workdir).section("build")
    result.add("kernel release", build.get("release"))
    result.add("build metadata", build.get("metadata"))
    result.add("build log", built.log)
    console.say("demo: == install-kernel ==")
    installed = install_kernel(settings, InstallRequest(), console)
    root = Root.of(settings.root)
    for label, path in (("grub.conf", installed.grub_conf), ("grub.conf backup", installed.grub_backup)):
        result.add(label, root.path(path) if path else None)
    result.add("boot hooks", ", ".join(installed.hooks))
    console.say("demo: == verify --checks hooks (the sandbox has not rebooted) ==")
    from toa_kernel.verify.run import run as verify

    if verify(settings, console, checks="hooks") != 0:
        result.ok = False
    console.say("demo: == lab ==")
    run_lab_step(settings, console, result, lab)


def run_lab_step(settings: Settings, console: Console, result: DemoResult, lab: bool) -> None:
    from toa_kernel.lab import lab_available, missing_packages
    from toa_kernel.lab.run import lab_for_settings

    if not lab:
        result.add("boot lab", "skipped (--no-lab)")
        return
    if not lab_available():
        missing = " ".join(missing_packages())
        result.add("boot lab", f"skipped: apt-get install --no-install-recommends {missing}")
        return
    booted = lab_for_settings(settings, say=console.say)
    result.ok = result.ok and booted.ok
    result.add(
        "boot lab", f"{booted.verdict}: booted '{booted.booted_entry}', cmdline {booted.report.cmdline}"
    )
    result.add("lab artifacts", Path(settings.workdir) / "lab")
