"""``invoke lab --probe``: boot a kernel with the TOA module and send it real TCP option packets.

The target is a kernel image, the TOA module built for it and a root:

- the kernel: ``--kernel`` (e.g. the bzImage ``invoke build`` compiled), else
  Debian's kernel the lab downloads (with its e1000 driver);
- the module: ``--module``, else the ``toa.ko`` under the root's
  ``/lib/modules/RELEASE/`` (where ``install-module`` or ``make
  modules_install`` put it), for the release the kernel image says it is;
- the root: when it has ``/boot/grub/grub.conf`` the lab boots it with GRUB
  legacy as ``invoke lab`` does (the probe's initramfs standing in for the
  default entry's); otherwise QEMU boots the kernel directly.

QEMU's ``-netdev dgram`` joins the guest's e1000 NIC to a UDP socket on
127.0.0.1 (``link``); the probe (``probe``) runs in a thread while the
console is read, and the result goes to ``WORKDIR/lab/probe/``.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import atomic_write
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, WorkLock
from toa_kernel.kernel.modinfo import check_vermagic, read_module_info
from toa_kernel.lab.bootconf import read_boot_conf
from toa_kernel.lab.console import ConsoleReport, boot_is_over, last_lines, parse_console
from toa_kernel.lab.grub import install_grub
from toa_kernel.lab.guest import READY, build_guest_initramfs
from toa_kernel.lab.image import LAB_KERNEL_ARGS, make_image, stage_boot
from toa_kernel.lab.kernel import NIC_MODULE, bzimage_release, chosen_kernel, nic_modules
from toa_kernel.lab.link import LOOPBACK, VirtualLink, pcap_bytes
from toa_kernel.lab.probe import (
    BALANCER_IP,
    GUEST,
    GUEST_MAC,
    HOST_MAC,
    Case,
    GuestReport,
    ProbeOutcome,
    Prober,
    plan_cases,
)
from toa_kernel.lab.qemu import BootRun, machine_args, qemu_command, run_qemu
from toa_kernel.lab.run import LabPaths, read_grub_conf
from toa_kernel.lab.tools import require_lab_tools
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.serve import describe_stats, stats_change

SCENARIO = "probe"
PCAP_NAME = "link.pcap"
MODULE_NAME = "toa.ko"
MODULE_DIRS = ("extra", "updates", "kernel/net/toa", "")
IPV6_HOOK_SYMBOL = b"inet6_getname_toa\0"
PROBE_EXTRA_SECONDS = 60.0
JOIN_SECONDS = 10.0


@dataclass(frozen=True)
class ProbeTarget:
    """What boots and what the probe loads into it."""

    kernel: Path
    release: str
    module: Path
    nic: list[Path]
    ipv6_hooks: bool
    boot: str  # grub or direct

    def as_dict(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel),
            "release": self.release,
            "module": str(self.module),
            "nic_modules": [str(p) for p in self.nic],
            "module_hooks_ipv6": self.ipv6_hooks,
            "boot": self.boot,
        }


def kernel_release(kernel: Path) -> str:
    release = bzimage_release(kernel)
    if not release:
        raise UserError(
            f"{kernel} does not say which kernel release it is (no version string in its setup header)",
            "pass a bzImage built by the kernel's own make (arch/x86/boot/bzImage)",
        )
    return release


def find_module(root: Root, release: str, given: Path | None) -> Path:
    """``given``, else ``toa.ko`` under ``ROOT/lib/modules/RELEASE``; its vermagic must be ``release``."""
    if given is not None:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"module file {path} does not exist", "pass --module with a built toa.ko")
    else:
        base = root.resolve(f"{MODULES_DIR}/{release}")
        found = [base / sub / MODULE_NAME for sub in MODULE_DIRS if (base / sub / MODULE_NAME).is_file()]
        if not found and base.is_dir():
            found = sorted(base.rglob(MODULE_NAME))
        if not found:
            raise UserError(
                f"no {MODULE_NAME} for kernel {release} under {root.path(f'{MODULES_DIR}/{release}')}",
                f"install one ('invoke build-module install-module --release {release} --root {root.base}') "
                "or pass --module PATH",
            )
        path = found[0]
    check_vermagic(read_module_info(path), release)
    return path


def find_nic(root: Root, release: str, *caches: Path) -> list[Path]:
    """The e1000 driver for ``release``: the root's, else a lab cache's; none means built in.

    A kernel the lab downloaded keeps its driver in ``modules/RELEASE/`` beside
    it, so ``--kernel CACHE/vmlinuz-R`` finds it too.
    """
    base = root.resolve(f"{MODULES_DIR}/{release}")
    found = sorted(base.rglob(NIC_MODULE)) if base.is_dir() else []
    for cache in caches:
        found = found or nic_modules(cache, release)
    return found[:1]


def module_hooks_ipv6(module: Path) -> bool:
    """The module hooks IPv6 sockets too (it has an inet6_getname_toa function)."""
    return IPV6_HOOK_SYMBOL in module.read_bytes()


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody holds right now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def network_args(qemu_port: int, link_port: int) -> list[str]:
    """An e1000 NIC whose frames travel as UDP datagrams between QEMU and the probe."""
    netdev = (
        f"dgram,id=probe,local.type=inet,local.host={LOOPBACK},local.port={qemu_port},"
        f"remote.type=inet,remote.host={LOOPBACK},remote.port={link_port}"
    )
    return ["-netdev", netdev, "-device", f"e1000,netdev=probe,mac={GUEST_MAC}"]


def probe_is_over(text: str) -> bool:
    """The guest is done, GRUB is stuck, or the guest said it cannot serve."""
    return boot_is_over(text) or "error" in parse_console(text).markers


@dataclass
class ProbeResult:
    target: ProbeTarget
    report: ConsoleReport
    outcome: ProbeOutcome
    seconds: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"

    @property
    def dmesg(self) -> list[str]:
        last = self.outcome.after or self.outcome.before or self.outcome.first
        return last.dmesg if last else []

    def lines(self) -> list[str]:
        """One line per case, then the counters and the kernel's TOA lines."""
        lines = [case.line() for case in self.outcome.cases]
        if self.outcome.error:
            lines.append(f"error: {self.outcome.error}")
        lines.append(f"toa_stats before: {describe_report_stats(self.outcome.before)}")
        lines.append(f"toa_stats after:  {describe_report_stats(self.outcome.after)}")
        lines.extend(f"dmesg: {line}" for line in self.dmesg)
        return lines

    def summary_rows(self) -> list[tuple[str, Any]]:
        first = self.outcome.first
        rows: list[tuple[str, Any]] = [
            ("kernel", f"{self.target.kernel} (release {self.target.release})"),
            ("module", self.target.module),
            ("booted", f"{self.target.boot}: {self.report.booted_title or 'kernel and initramfs directly'}"),
            ("guest", first.release if first else "did not answer"),
            ("link", f"balancer {BALANCER_IP} -> guest {GUEST.address} (QEMU dgram on {LOOPBACK})"),
            ("seconds", ", ".join(f"{k} {v:g}" for k, v in self.seconds.items())),
        ]
        rows.extend((name, path) for name, path in self.artifacts.items())
        return rows

    def as_dict(self) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "verdict": self.verdict,
            "target": self.target.as_dict(),
            "cases": [case.as_dict() for case in outcome.cases],
            "error": outcome.error or None,
            "module_load": {"status": outcome.load_status, "output": outcome.load_output},
            "toa_stats_before": report_stats(outcome.before),
            "toa_stats_after": report_stats(outcome.after),
            "toa_stats_change": stats_change(
                outcome.before.stats if outcome.before else None,
                outcome.after.stats if outcome.after else None,
            ),
            "dmesg": self.dmesg,
            "guest_kernel": outcome.first.release if outcome.first else None,
            "booted_entry": self.report.booted_title,
            "cmdline": self.report.cmdline,
            "seconds": self.seconds,
            "artifacts": self.artifacts,
        }


def report_stats(report: GuestReport | None) -> dict[str, int] | None:
    return dict(report.stats.counters) if report and report.stats else None


def describe_report_stats(report: GuestReport | None) -> str:
    return describe_stats(report.stats if report else None)


def resolve_target(
    root: Root, cache: Path, kernel: Path | None, module: Path | None, say: Callable[[str], None]
) -> ProbeTarget:
    """The kernel (downloaded when not given), its release, its TOA module and NIC driver, the boot."""
    real_kernel = chosen_kernel(kernel, cache, say, with_nic=True)
    release = kernel_release(real_kernel)
    ko = find_module(root, release, module)
    boot = "grub" if root.resolve("/boot/grub/grub.conf").is_file() else "direct"
    nic = find_nic(root, release, cache, real_kernel.parent)
    return ProbeTarget(real_kernel, release, ko, nic, module_hooks_ipv6(ko), boot)


def boot_command(
    root: Root, target: ProbeTarget, paths: LabPaths, network: list[str]
) -> tuple[list[str], str]:
    """The QEMU command (through GRUB when the root has grub.conf) and the release its initramfs marks."""

    def initramfs(release: str, output: Path) -> Path:
        return build_guest_initramfs(release, output, GUEST, target.module, target.nic)

    with tempfile.TemporaryDirectory(prefix="probe-", dir=paths.base) as scratch:
        if target.boot == "direct":
            built = initramfs(target.release, paths.base / "initramfs.img")
            command = [
                *machine_args(),
                *network,
                "-kernel",
                str(target.kernel),
                "-initrd",
                str(built),
                "-append",
                " ".join(LAB_KERNEL_ARGS),
            ]
            return command, target.release
        conf_text = read_grub_conf(root)
        conf = read_boot_conf(conf_text)
        entry = conf.default_entry
        if entry is None or not entry.initrd_path:
            raise UserError(
                "the default grub.conf entry has no initrd line: the probe's guest lives in the initramfs",
                "make the default entry load an initramfs (install-kernel writes one), or boot a root "
                "without grub.conf (the kernel then boots directly)",
            )
        staged = stage_boot(
            root, paths.stage, conf, conf_text, target.kernel, scratch=Path(scratch), make_initramfs=initramfs
        )
        make_image(paths.stage, paths.image, staged.partition)
        shutil.rmtree(paths.stage, ignore_errors=True)
        install_grub(paths.image, staged.partition, Path(scratch), paths.grub_log)
        return qemu_command(paths.image, network=network), entry.release or target.release


def run_probe(
    root: Root,
    workdir: Workdir,
    *,
    option_code: int = 254,
    kernel: Path | None = None,
    module: Path | None = None,
    timeout: float = 120.0,
    say: Callable[[str], None] = print,
) -> ProbeResult:
    """Boot the target, run the probe's cases against it, and judge them."""
    started = time.monotonic()
    require_lab_tools()
    paths = LabPaths.of(workdir, SCENARIO)
    paths.base.mkdir(parents=True, exist_ok=True)
    target = resolve_target(root, paths.kernel_cache, kernel, module, say)
    cases = plan_cases(option_code, target.ipv6_hooks)
    seconds: dict[str, float] = {"prepare": round(time.monotonic() - started, 2)}
    link = VirtualLink(HOST_MAC, {BALANCER_IP}, GUEST_MAC)
    try:
        qemu_port = free_udp_port()
        link.connect(qemu_port)
        command, _ = boot_command(root, target, paths, network_args(qemu_port, link.port))
        say(f"probe: booting {target.kernel.name} ({target.boot}) with {target.module}")
        run, outcome = boot_and_probe(command, paths, link, cases, timeout, say)
    finally:
        link.close()
        atomic_write(paths.base / PCAP_NAME, pcap_bytes(link.captured))
    seconds["boot_and_probe"] = run.seconds
    if outcome.ready_seconds is not None:
        seconds["guest_ready"] = outcome.ready_seconds
    seconds["cases"] = round(sum(case.seconds for case in outcome.cases), 2)
    seconds["total"] = round(time.monotonic() - started, 2)
    report = parse_console(run.output)
    if not outcome.error and not outcome.cases:
        outcome.error = "the probe did not run"
    if outcome.first is None:
        outcome.error = boot_failure(report, run.output, outcome.error, paths.console_log)
    result = ProbeResult(target, report, outcome, seconds, artifacts(paths, target))
    atomic_write(paths.result, json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    return result


def boot_and_probe(
    command: list[str],
    paths: LabPaths,
    link: VirtualLink,
    cases: list[Case],
    timeout: float,
    say: Callable[[str], None],
) -> tuple[BootRun, ProbeOutcome]:
    """QEMU in this thread (reading the console), the probe in another; both end together."""
    done = threading.Event()
    holder: dict[str, ProbeOutcome] = {}
    prober = Prober(link, say)
    started = time.monotonic()

    def probe() -> None:
        try:
            holder["outcome"] = prober.run(cases, started)
            prober.power_off()
        finally:
            done.set()

    thread = threading.Thread(target=probe, name="toa-probe", daemon=True)
    thread.start()
    run = run_qemu(
        paths.image, paths.console_log, timeout, probe_is_over, command=command, stop_when=done.is_set
    )
    link.close()  # a probe still waiting for a dead guest stops now
    thread.join(JOIN_SECONDS)
    if thread.is_alive():
        raise EnvironmentFailure("the probe thread did not stop after QEMU ended")
    return run, holder.get("outcome", ProbeOutcome(error="the probe stopped unexpectedly"))


def boot_failure(report: ConsoleReport, output: str, error: str, log: Path) -> str:
    """Why the guest never answered, in words, with the console's last lines."""
    if "error" in report.markers:
        why = f"the guest could not serve: {report.markers['error']}"
    elif report.stuck:
        why = f"GRUB stopped ({'; '.join(report.grub_errors) or 'grub>'})"
    elif not report.guest_ran:
        why = "the kernel never reached the probe's /init"
    elif READY not in report.markers:
        why = "the guest's /init did not get the network up"
    else:
        why = error or "the guest did not answer"
    return f"{why}; console {log}, last lines:\n{last_lines(output, 15)}"


def artifacts(paths: LabPaths, target: ProbeTarget) -> dict[str, str]:
    found = {
        "console_log": str(paths.console_log),
        "link_pcap": str(paths.base / PCAP_NAME),
        "result": str(paths.result),
    }
    if target.boot == "grub":
        found.update(image=str(paths.image), grub_log=str(paths.grub_log))
    return found


def probe_for_settings(
    settings: Settings,
    *,
    kernel: Path | None = None,
    module: Path | None = None,
    timeout: float | None = None,
    say: Callable[[str], None] = print,
) -> ProbeResult:
    """``invoke lab --probe``: the probe on ``settings.root`` with the work directory locked."""
    work = Workdir(Path(settings.workdir))
    with WorkLock(work, echo=say):
        return run_probe(
            Root.of(settings.root),
            work,
            option_code=settings.option_code,
            kernel=kernel,
            module=module,
            timeout=timeout or settings.lab_timeout + PROBE_EXTRA_SECONDS,
            say=say,
        )
