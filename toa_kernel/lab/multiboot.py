"""Several boots of one lab disk, keeping what GRUB writes on it between boots.

A trial boot relies on GRUB writing to the disk while it boots (``savedefault``
rewrites ``/boot/grub/default`` in place), so proving it takes the SAME image
booted again and again. ``LabDisk.build`` stages ``ROOT/boot`` and writes the image
once; ``LabDisk.boot`` powers it on once (QEMU may reboot inside that run: a panic
with ``panic=N`` restarts the machine as a server does, and each GRUB start on the
console counts as a boot); ``read``/``write`` open files inside the image with
``debugfs`` between runs, so a step run on the root (a commit, a rollback) reaches
the image the way it reaches a server's disk, and what GRUB wrote reaches the root.

The lab appends only ``console=ttyS0`` to kernel lines here: ``panic=`` is the
trial's own, so a panic reboots only when the trial asked for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.errors import EnvironmentFailure
from toa_kernel.core.fileops import atomic_write
from toa_kernel.core.layout import BOOT_DIR, GRUB_CONF
from toa_kernel.core.state import Workdir
from toa_kernel.lab.bootconf import read_boot_conf
from toa_kernel.lab.console import ConsoleReport, boot_is_over, panic_reason, parse_console, split_boots
from toa_kernel.lab.grub import install_grub
from toa_kernel.lab.image import PARTITION_SECTORS, SECTOR, lab_grub_conf, make_image, stage_boot
from toa_kernel.lab.kernel import chosen_kernel
from toa_kernel.lab.qemu import run_qemu
from toa_kernel.lab.run import read_grub_conf, write_facts
from toa_kernel.lab.tools import program, require_lab_tools
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.facts import Facts, grub_facts_from_text

MULTIBOOT_KERNEL_ARGS = ("console=ttyS0",)
SAVED_DEFAULT = "/boot/grub/default"


@dataclass
class BootRecord:
    """One GRUB start and what followed: the entry booted, a panic, GRUB's saved default."""

    number: int
    run: int  # the QEMU run (power-on) it happened in
    report: ConsoleReport
    panic: str | None = None
    saved_before: str | None = None  # the default file as this boot found it (None: unknown/absent)
    saved_after: str | None = None  # after the run ended (last boot of a run only)
    facts: str | None = None

    @property
    def title(self) -> str | None:
        """The entry whose kernel ran (its initramfs reported), else the last entry GRUB tried."""
        return self.report.booted_title or (self.report.tried[-1] if self.report.tried else None)

    @property
    def release(self) -> str | None:
        return self.report.release

    def as_dict(self) -> dict[str, Any]:
        return {
            "boot": self.number,
            "run": self.run,
            "entry": self.title,
            "release": self.release,
            "cmdline": self.report.cmdline,
            "tried": self.report.tried,
            "grub_errors": self.report.grub_errors,
            "panic": self.panic,
            "saved_default_before": self.saved_before,
            "saved_default_after": self.saved_after,
            "facts": self.facts,
        }


def saved_entry(text: str | None) -> str | None:
    """The default file's first line as GRUB leaves it (``1`` for ``1\\0\\n...``), for reports."""
    if text is None:
        return None
    return text.split("\n", 1)[0].replace("\0", "")


@dataclass
class LabDisk:
    """A lab image booted several times; files inside it read and written between boots."""

    base: Path
    image: Path
    offset: int
    boot_on_root: bool
    timeout: float = 120.0
    boots: list[BootRecord] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)  # seconds of each QEMU run

    @classmethod
    def build(
        cls,
        root: Root,
        base: Path,
        kernel: Path,
        *,
        as_is: Iterable[str] = (),
        omit: Iterable[str] = (),
        timeout: float = 120.0,
    ) -> LabDisk:
        """Stage ``root``'s /boot (``as_is``: initramfs kept unbootable; ``omit``: files left out
        of the image, as a disk that lost them) and write the image once."""
        require_lab_tools()
        conf_text = read_grub_conf(root)
        conf = read_boot_conf(conf_text)
        base.mkdir(parents=True, exist_ok=True)
        image = base / "disk.img"
        with tempfile.TemporaryDirectory(prefix="lab-", dir=base) as scratch:
            staged = stage_boot(
                root, Path(scratch) / "stage", conf, conf_text, kernel, scratch=Path(scratch),
                kernel_args=MULTIBOOT_KERNEL_ARGS, as_is=as_is, omit=omit,
            )  # fmt: skip
            offset = make_image(staged.stage, image, staged.partition)
            install_grub(image, staged.partition, Path(scratch), base / "grub-setup.log")
        assert offset == PARTITION_SECTORS * (staged.partition + 1) * SECTOR
        return cls(base, image, offset, staged.boot_on_root, timeout)

    # ---------------------------------------------------------------- files inside the image

    def inside(self, system_path: str) -> str:
        """Where a system path under /boot lives in the partition (``/grub/default`` or itself)."""
        if self.boot_on_root:
            return system_path
        return system_path.removeprefix(BOOT_DIR) or "/"

    def debugfs(self, *arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[bytes]:
        """``debugfs ARGUMENTS IMAGE?offset=N`` (``-R REQUEST`` to read, ``-w -f -`` to write)."""
        command = [program("debugfs"), *arguments, f"{self.image}?offset={self.offset}"]
        done = subprocess.run(command, input=(stdin or "").encode(), capture_output=True, check=False)
        if done.returncode != 0:
            raise EnvironmentFailure(
                f"debugfs failed on {self.image}: {done.stderr.decode(errors='replace').strip()}",
                "check that e2fsprogs is installed (debugfs)",
            )
        return done

    def read(self, system_path: str) -> bytes | None:
        """A file of the image's /boot (None when it is not there)."""
        path = self.inside(system_path)
        if b"Inode:" not in self.debugfs("-R", f"stat {path}").stdout:
            return None
        return self.debugfs("-R", f"cat {path}").stdout

    def write(self, system_path: str, data: bytes | None) -> None:
        """Replace (``None``: remove) a file of the image's /boot."""
        path = self.inside(system_path)
        directory, _, name = path.rpartition("/")
        with tempfile.NamedTemporaryFile(dir=self.base, prefix=".debugfs-") as source:
            source.write(data or b"")
            source.flush()
            commands = f"cd {directory or '/'}\nrm {name}\n"
            if data is not None:
                commands += f"write {source.name} {name}\n"
            self.debugfs("-w", "-f", "-", stdin=commands)
        if self.read(system_path) != data:
            raise EnvironmentFailure(f"writing {system_path} into {self.image} with debugfs did not take")

    def take_saved_default(self, root: Root) -> None:
        """Copy what GRUB left in the image's ``/boot/grub/default`` into the root (as the server sees it)."""
        data = self.read(SAVED_DEFAULT)
        target = root.path(SAVED_DEFAULT)
        if data is None:
            target.unlink(missing_ok=True)
        else:
            atomic_write(target, data)

    def put_boot_files(self, root: Root) -> None:
        """The root's grub.conf (with the lab's edits) and ``default`` file into the image."""
        text = read_grub_conf(root)
        self.write(GRUB_CONF, lab_grub_conf(text, MULTIBOOT_KERNEL_ARGS).encode(errors="surrogateescape"))
        saved = root.path(SAVED_DEFAULT)
        self.write(SAVED_DEFAULT, saved.read_bytes() if saved.is_file() else None)

    # ---------------------------------------------------------------- booting

    def boot(self, root: Root | None = None, say: Callable[[str], None] = print) -> list[BootRecord]:
        """Power the machine on once; return the boots of that run (several when it rebooted).

        With ``root``, each boot's facts (its release, command line and the root's
        grub.conf) go to ``facts-bootN.json`` for ``invoke verify --facts``.
        """
        run_number = len(self.runs) + 1
        before = self.read(SAVED_DEFAULT)
        log = self.base / f"console-run{run_number}.log"
        say(f"lab: power-on {run_number} of {self.image}")
        run = run_qemu(self.image, log, self.timeout, is_over=last_boot_is_over, reboot=True)
        self.runs.append(run.seconds)
        after = self.read(SAVED_DEFAULT)
        parts = split_boots(run.output)
        records = []
        for position, text in enumerate(parts):
            record = BootRecord(
                number=len(self.boots) + 1,
                run=run_number,
                report=parse_console(text),
                panic=panic_reason(text),
                saved_before=(before or b"").decode(errors="replace") if position == 0 and before else None,
            )
            if position == len(parts) - 1:
                record.saved_after = after.decode(errors="replace") if after is not None else None
            if root is not None and record.release:
                record.facts = str(self.write_boot_facts(record, root))
            self.boots.append(record)
            records.append(record)
        if not any(record.report.tried for record in records):
            raise EnvironmentFailure(
                f"power-on {run_number} of {self.image} showed no GRUB boot (timed out: {run.timed_out})",
                f"read {log}",
            )
        return records

    def write_boot_facts(self, record: BootRecord, root: Root) -> Path:
        text = read_grub_conf(root)
        facts = Facts(
            source=f"boot lab: boot {record.number} of {self.image}",
            release=record.release,
            cmdline=record.report.cmdline,
            grub=grub_facts_from_text(text, GRUB_CONF, saved_default_text=record.saved_after),
        )
        path = self.base / f"facts-boot{record.number}.json"
        write_facts(path, facts, record.report, f"boot {record.number}")
        return path

    def boot_until(self, count: int, root: Root | None = None, say: Callable[[str], None] = print) -> None:
        """Power on again and again until ``count`` boots are recorded."""
        while len(self.boots) < count:
            self.boot(root, say)


def last_boot_is_over(text: str) -> bool:
    """The latest boot on the console is over (guest done, or GRUB stuck)."""
    return boot_is_over(split_boots(text)[-1])


@dataclass
class MultiBootResult:
    """``invoke lab --boots N``: what each boot of one image booted."""

    image: str
    boots: list[BootRecord]
    runs: list[float]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(boot.report.guest_ran or boot.panic for boot in self.boots)

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "verdict": "PASS" if self.ok else "FAIL",
            "boots": [boot.as_dict() for boot in self.boots],
            "runs_seconds": self.runs,
            "seconds": self.seconds,
        }

    def rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = []
        for boot in self.boots:
            what = f"'{boot.title}' (release {boot.release or '-'})"
            if boot.panic:
                what += f", kernel panic: {boot.panic}"
            before, after = saved_entry(boot.saved_before) or "?", saved_entry(boot.saved_after) or "?"
            what += f"; saved default {before} -> {after}"
            rows.append((f"boot {boot.number} (power-on {boot.run})", what))
        rows.append(("seconds", f"{self.seconds:g} ({', '.join(f'{s:g}' for s in self.runs)} per power-on)"))
        rows.append(("image", self.image))
        return rows


def boot_several(
    root: Root, workdir: Workdir, count: int, *, kernel: Path | None = None, timeout: float = 120.0,
    say: Callable[[str], None] = print,
) -> MultiBootResult:  # fmt: skip
    """Build one image of ``root``'s /boot and boot it until ``count`` boots are seen."""
    started = time.monotonic()
    lab = workdir.path / "lab"
    real_kernel = chosen_kernel(kernel, lab / "kernel", say)
    base = lab / "boots"
    if base.exists():
        shutil.rmtree(base)
    disk = LabDisk.build(root, base, real_kernel, timeout=timeout)
    disk.boot_until(count, root, say)
    result = MultiBootResult(str(disk.image), disk.boots, disk.runs, round(time.monotonic() - started, 2))
    atomic_write(base / "result.json", json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    return result
