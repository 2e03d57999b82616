"""toa-kernel: Invoke tasks to build, install and verify a TOA kernel on CentOS 6.

Each task is thin: it reads settings (invoke.yaml, INVOKE_TOA_* variables, its
flags), calls one function of the ``toa_kernel`` package and prints the result.
``invoke --list`` shows the tasks, ``invoke --help TASK`` their flags.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

import invoke
from invoke import Context
from invoke.exceptions import Exit

from toa_kernel.core.cli import is_dry, reports_errors, settings_for
from toa_kernel.core.console import Console
from toa_kernel.core.layout import SYSTEM_LOCK_NAME
from toa_kernel.core.settings import (
    Settings,
    check_branch,
    check_release,
    directory_to_create,
    input_path,
    module_url_value,
    parse_float,
    parse_int,
    sha256_value,
)
from toa_kernel.core.state import Workdir, WorkLock
from toa_kernel.system.api import System

PROJECT_DIR = Path(__file__).resolve().parent


class Task(invoke.Task):
    """invoke's Task, but the SSH flags never take the short name ``-h`` (invoke's own help)."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        if name in SSH_HELP:
            taken_names = taken_names | {"h"}
        return super().arg_opts(name, default, taken_names)


def task(*args: Any, **kwargs: Any) -> Any:
    """``invoke.task`` with the project's Task class."""
    return invoke.task(*args, klass=Task, **kwargs)


# Help texts shared by every task that takes these flags.
WORKDIR_HELP = "work directory for downloads, trees, logs and manifests (default: toa.workdir, 'work')"
ROOT_HELP = "root prefix of the system to act on, like DESTDIR (default /)"
DRY_RUN_HELP = "print the commands and unified diffs this would apply, change nothing (also: invoke --dry)"
JSON_HELP = "print the result as JSON on stdout (messages go to stderr)"
QUIET_HELP = "no progress bars or notes, only warnings, errors and the result"
HOST_HELP = (
    "drive this server over SSH: [USER@]HOST[:PORT] (default: toa.host; empty: this machine). The tool "
    "runs here; the server needs only its own CentOS 6 userland (sh, coreutils, tar), no Python"
)
# Help texts of the SSH flags every task that acts on a system takes.
SSH_HELP = {
    "host": HOST_HELP,
    "ssh_key": "private key file for the SSH login (default: toa.ssh_key; empty: ssh-agent, ~/.ssh/id_*)",
    "ssh_port": "SSH port when --host names none (default: toa.ssh_port, else 22)",
    "ssh_user": "SSH login when --host names none (default: toa.ssh_user, else your user name)",
    "sudo": "run every command on the server through 'sudo -n' (a login with NOPASSWD sudo; RHEL 6's "
    "'Defaults requiretty' also needs 'Defaults:USER !requiretty')",
    "known_hosts": "the tool's known-hosts file (default: toa.ssh_known_hosts, "
    "~/.config/toa-kernel/known_hosts; ~/.ssh/known_hosts is read too, never written)",
    "accept_new_host_key": "record the host key of a server seen for the first time (trust on first use, "
    "after checking its fingerprint); a changed key is always refused",
    "legacy_ssh": "sign an RSA login with ssh-rsa: CentOS 6's OpenSSH 5.3 knows no rsa-sha2",
}


SSH_DEFAULTS: dict[str, Any] = {
    "host": None,
    "ssh_key": None,
    "ssh_port": None,
    "ssh_user": None,
    "sudo": False,
    "known_hosts": None,
    "accept_new_host_key": False,
    "legacy_ssh": False,
}


def remote_flags(function: Any) -> Any:
    """Give a task the SSH flags (``--host``, ``--ssh-key``, ...); they reach it as one ``ssh``
    dict of settings (a flag left out keeps the configured value)."""
    signature = inspect.signature(function)
    own = [parameter for name, parameter in signature.parameters.items() if name != "ssh"]
    added = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for name, default in SSH_DEFAULTS.items()
    ]

    @functools.wraps(function)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name, default) for name, default in SSH_DEFAULTS.items()}
        return function(c, *args, ssh=ssh_settings(**flags), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    return wrapper


def ssh_settings(
    host: str | None,
    ssh_key: str | None,
    ssh_port: str | None,
    ssh_user: str | None,
    sudo: bool,
    known_hosts: str | None,
    accept_new_host_key: bool,
    legacy_ssh: bool,
) -> dict[str, Any]:
    """The SSH flags as settings."""
    return {
        "host": host,
        "ssh_key": ssh_key,
        "ssh_port": ssh_port,
        "ssh_user": ssh_user,
        "ssh_sudo": True if sudo else None,
        "ssh_known_hosts": known_hosts,
        "ssh_accept_new_host_key": True if accept_new_host_key else None,
        "ssh_legacy": True if legacy_ssh else None,
    }


def settings(c: Context, **flags: Any) -> Settings:
    """Settings for a task: invoke's config, then the task's flags."""
    return settings_for(c, project_dir=PROJECT_DIR, **flags)


def console(quiet: bool = False, json: bool = False) -> Console:
    return Console(quiet=quiet, json_mode=json)


def locked_unless_dry(
    s: Settings, dry: bool, out: Console, system: System | None = None
) -> AbstractContextManager[object]:
    """The work-directory lock for a run that changes things (a dry run changes nothing);
    with ``system``, also that system's own lock (ROOT/var/lock/toa-kernel.lock, held there)."""
    if dry:
        return nullcontext()
    stack = ExitStack()
    try:
        stack.enter_context(WorkLock(Workdir(s.workdir), echo=out.say))
        if system is not None:
            stack.enter_context(system.lock(SYSTEM_LOCK_NAME))
    except BaseException:
        stack.close()  # the work lock is not kept when the system lock is refused
        raise
    return stack


def system_of(s: Settings) -> System:
    """The system the settings name: this machine under --root, or --host over SSH."""
    from toa_kernel.system.opener import open_system

    return open_system(s)


def release_flag(release: str | None) -> str | None:
    """``--release``, checked like every setting (None when not given)."""
    return check_release(release) if release is not None else None


# === fetch ===================================================================


@task(
    help={
        "url": "URL of the kernel source tarball, http(s):// or file:// (default: toa.url, the vendor's)",
        "sha256": "expected sha256 of the tarball: a mismatch is an error and the file is removed "
        "(default: toa.sha256)",
        "tarball": "use this local tarball instead of downloading (machines without internet)",
        "mirror": "a mirror URL tried in order after --url fails; repeat for several (replaces toa.mirrors)",
        "force": "remove the downloaded tarball, partial download and tree, and start over",
        "workdir": WORKDIR_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    },
    iterable=["mirror"],
)
@reports_errors
def fetch(
    c: Context,
    url: str | None = None,
    sha256: str | None = None,
    tarball: str | None = None,
    mirror: list[str] | None = None,
    force: bool = False,
    workdir: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
) -> None:
    """Download the kernel source (resume, retries, sha256, content check) and unpack it safely."""
    from toa_kernel.source.fetch import fetch_source

    s = settings(c, url=url, sha256=sha256, workdir=workdir, mirrors=tuple(mirror) if mirror else None)
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    source = Path(tarball) if tarball else None
    with locked_unless_dry(s, dry, out):
        result = fetch_source(s, tarball=source, force=force, dry_run=dry, console=out)
    if json:
        out.emit_json(result.as_dict())
        return
    if result.nothing_to_do:
        title = "fetch: nothing to do"
    elif result.dry_run:
        title = "fetch: dry run, nothing changed"
    else:
        title = "fetch: done"
    pin_note = "" if result.pinned or not result.sha256 else " (not pinned)"
    out.summary(
        title,
        [
            ("source", result.url),
            ("tarball", result.tarball),
            ("size", f"{result.size} bytes" if result.size else "(not downloaded yet)"),
            ("sha256", f"{result.sha256 or '-'}{pin_note}"),
            ("tree", result.tree or "(not unpacked yet)"),
            ("skipped links", len(result.skipped_links)),
        ],
    )


# === build ===================================================================

BUILD_STEPS_HELP = "preflight, patch, configure, release, compile, artifacts"


@task(
    help={
        "until": f"stop after this step ({BUILD_STEPS_HELP}); e.g. --until release to inspect the tree",
        "only": f"run only this step ({BUILD_STEPS_HELP}) after the preflight checks",
        "jobs": "make -j N (default: toa.jobs; 0 = one per CPU)",
        "ccache": "compile with CC='ccache gcc' (only when ccache is installed)",
        "option_code": "TCP option kind of TOA set in toa.h (default 254; other balancers use 200 or 252)",
        "extraversion": "EXTRAVERSION of the top Makefile, the release's suffix (default -toa; "
        "write --extraversion=-x)",
        "min_free_gib": "free disk the build needs, in GiB (default: toa.min_free_gib, 5)",
        "config_base": "the .config to start from: tree (the tree's own, for servers; default) or lab "
        "(make x86_64_defconfig + configs/lab/: a small kernel for the boot lab, minutes not half an hour)",
        "tree": "build this kernel tree instead of the one 'invoke fetch' unpacked",
        "workdir": WORKDIR_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
        "host": "compile on this BUILD HOST over SSH, [USER@]HOST[:PORT] (default: toa.build_host; empty: "
        "here): the tree is prepared here, shipped (only what changed on a re-run), compiled with the build "
        "host's own make and gcc, the log streamed back, the artifacts fetched into the build record",
        "root": "with --host: root prefix on the build host; the tree is compiled in "
        "ROOT/var/tmp/toa-kernel-build/ (default /)",
    }
)
@reports_errors
@remote_flags
def build(
    c: Context,
    until: str | None = None,
    only: str | None = None,
    jobs: str | None = None,
    ccache: bool = False,
    option_code: str | None = None,
    extraversion: str | None = None,
    min_free_gib: str | None = None,
    config_base: str | None = None,
    tree: str | None = None,
    workdir: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
    root: str | None = None,
) -> None:
    """Build the TOA kernel: patch, set TCPOPT_TOA, configure, EXTRAVERSION, make, check artifacts."""
    from toa_kernel.core.errors import ToaError
    from toa_kernel.kernel.build import run_build

    s = settings(
        c,
        workdir=workdir,
        jobs=jobs,
        ccache=True if ccache else None,
        option_code=option_code,
        extraversion=extraversion,
        min_free_gib=min_free_gib,
        config_base=config_base,
        root=root,
        **{**(ssh or {}), "host": None, "build_host": (ssh or {}).get("host")},
    )
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    options: dict[str, Any] = {"until": until, "only": only, "tree": Path(tree) if tree else None}
    try:
        with locked_unless_dry(s, dry, out):
            result = run_build(s, console=out, dry_run=dry, **options)
    except ToaError as exc:
        failed = getattr(exc, "build_result", None)
        if failed is not None and json:
            out.emit_json(failed.as_dict())
            exc.reported_as_json = True  # type: ignore[attr-defined]
        elif failed is not None:
            out.summary(f"build {failed.build_id}: {failed.status}", failed.summary_rows())
        raise
    if json:
        out.emit_json(result.as_dict())
        return
    titles = {"ok": "build {}: ok", "partial": "build {}: stopped as asked (--until/--only)"}
    title = "build: dry run, nothing changed" if dry else titles.get(result.status, "build {}: {}")
    out.summary(title.format(result.build_id, result.status), result.summary_rows())


# === install-kernel, grub, rollback ==========================================

INSTALL_RELEASE_HELP = "the kernel release to install (default: the one 'invoke build' recorded)"
TRIAL_HELP = (
    "boot the new kernel ONCE: GRUB writes the old entry back as the default while booting it, so any "
    "later reboot (a panic, a reset, a power cycle) returns to the old kernel; keep it with "
    "'invoke verify --commit'"
)
PANIC_SECONDS_HELP = (
    "with --trial: panic=N on the new kernel's line, a panic reboots after N s (default: toa.trial_panic, "
    "10); a hang still needs a power cycle unless a hardware watchdog resets the server"
)


def show_install(out: Console, title: str, report: Any, json: bool) -> None:
    if json:
        out.emit_json(report.as_dict())
    else:
        out.summary(title, report.rows())


@task(
    help={
        "release": INSTALL_RELEASE_HELP,
        "force": "also reinstall over the running kernel's release",
        "no_initramfs": "install without an initramfs (no installkernel/dracut; must boot without one)",
        "startup": "how toa is loaded at boot: modules (/etc/sysconfig/modules/toa.modules) or rc.local",
        "kernel_args": "more kernel arguments for the TOA entry, besides grub/kernel-args (e.g. 'quiet')",
        "take_over_hooks": "overwrite /etc/cron.d/toa or /etc/sysconfig/modules/toa.modules even when "
        "toa-kernel did not write them: each is backed up first, and rollback restores it exactly",
        "trial": TRIAL_HELP,
        "panic_seconds": PANIC_SECONDS_HELP,
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    }
)
@reports_errors
@remote_flags
def install_kernel(
    c: Context,
    release: str | None = None,
    force: bool = False,
    no_initramfs: bool = False,
    startup: str | None = None,
    kernel_args: str | None = None,
    take_over_hooks: bool = False,
    trial: bool = False,
    panic_seconds: str | None = None,
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Install the built TOA kernel, make it GRUB's default (nohz=off), load toa at boot and by cron."""
    from toa_kernel.boot.install import InstallRequest
    from toa_kernel.boot.install import install_kernel as run_install

    s = settings(
        c,
        workdir=workdir,
        root=root,
        startup=startup,
        kernel_args=kernel_args,
        trial_panic=panic_seconds,
        **(ssh or {}),
    )
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    request = InstallRequest(
        release=release_flag(release),
        force=force,
        initramfs=not no_initramfs,
        dry_run=dry,
        take_over_hooks=take_over_hooks,
        trial=trial,
    )
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        report = run_install(s, request, out, system=system)
    title = "install-kernel: dry run, nothing changed" if dry else "install-kernel: done (reboot to use it)"
    if trial and not dry:
        title = "install-kernel: done (reboot: the new kernel boots once, then 'invoke verify --commit')"
    show_install(out, title, report, json)


@task(
    help={
        "release": INSTALL_RELEASE_HELP,
        "trial": TRIAL_HELP,
        "panic_seconds": PANIC_SECONDS_HELP,
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    }
)
@reports_errors
@remote_flags
def grub(
    c: Context,
    release: str | None = None,
    trial: bool = False,
    panic_seconds: str | None = None,
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Only the grub.conf step: boot the release by default with nohz=off, old kernel as fallback."""
    from toa_kernel.boot.install import configure_grub

    s = settings(c, workdir=workdir, root=root, trial_panic=panic_seconds, **(ssh or {}))
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        report = configure_grub(
            s, release_flag(release), dry_run=dry, console=out, trial=trial, system=system
        )
    show_install(out, "grub: dry run, nothing changed" if dry else "grub: done", report, json)


@task(
    help={
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    }
)
@reports_errors
@remote_flags
def rollback(
    c: Context,
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Undo install-kernel: grub.conf as before, boot hooks removed; kernel files stay."""
    from toa_kernel.boot.rollback import rollback as run_rollback

    s = settings(
        c,
        workdir=workdir,
        root=root,
        **(ssh or {}),
    )
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        report = run_rollback(s, dry_run=dry, console=out, system=system)
    show_install(out, "rollback: dry run, nothing changed" if dry else "rollback: done", report, json)


# === verify, serve ===========================================================


@task(
    auto_shortflags=False,
    help={
        "root": ROOT_HELP,
        "workdir": WORKDIR_HELP + "; its manifest names the TOA release",
        "release": "the TOA release that should run (default: the one 'invoke build' recorded)",
        "facts": "judge the facts in this JSON file instead of the system under --root",
        "collect": "print the facts as JSON and judge nothing",
        "checks": "check sets or checks, comma-separated: kernel (default), boot, runtime, hooks, "
        "module (kernels 3.0+, chosen by itself there), or names such as nohz-off,cron",
        "commit": "after a trial boot (install-kernel --trial): when the TOA kernel runs and verify passes, "
        "make it GRUB's permanent default (default=N, savedefault removed); refused otherwise",
        "dry_run": "with --commit: print the grub.conf diff, change nothing (also: invoke --dry)",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    },
)
@reports_errors
@remote_flags
def verify(
    c: Context,
    root: str | None = None,
    workdir: str | None = None,
    release: str | None = None,
    facts: str | None = None,
    collect: bool = False,
    checks: str | None = None,
    commit: bool = False,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Check after the reboot that TOA works: kernel, nohz=off, module, toa_stats, boot hooks, grub."""

    from toa_kernel.verify import run as verifying

    s = settings(
        c,
        workdir=workdir,
        root=root,
        **(ssh or {}),
    )
    if commit:
        commit_trial(c, s, release=release, facts=facts, dry_run=dry_run, json=json, quiet=quiet)
        return
    options: dict[str, Any] = {"release": release_flag(release), "facts_file": facts, "collect": collect}
    out = console(quiet, json or collect)
    if facts:  # a facts file is judged as it is: no system is looked at
        code = verifying.run(s, out, checks=checks, as_json=json, **options)
    else:
        with system_of(s) as system:
            code = verifying.run(s, out, checks=checks, as_json=json, system=system, **options)
    if code:
        raise Exit(code=code)


def commit_trial(
    c: Context, s: Settings, *, release: str | None, facts: str | None, dry_run: bool, json: bool, quiet: bool
) -> None:
    """``verify --commit``: the verify report, then the grub.conf change that keeps the TOA kernel."""
    from toa_kernel.verify.commit import commit
    from toa_kernel.verify.run import show

    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        report = commit(s, out, release=release, facts_file=facts, dry_run=dry, system=system)
    if json:
        out.emit_json(report.as_dict())
        return
    show(report.verify, out, False)
    title = "verify --commit: dry run, nothing changed" if dry else "verify --commit: the TOA kernel is kept"
    out.summary(title, report.rows())


@task(
    help={
        "port": "TCP port to listen on (default 8000; 0 picks a free one)",
        "bind": "address to listen on (default 0.0.0.0: the balancer must reach it). Not '::' for IPv4 "
        "clients: they arrive as ::ffff:a.b.c.d, which an IPv4-only TOA module never rewrites",
        "count": "stop after this many requests (default 0: no limit)",
        "timeout": "stop after this many seconds (default 0: no limit)",
        "root": ROOT_HELP + "; toa_stats is read from its /proc",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
        "host": "serve ON this server over SSH ([USER@]HOST[:PORT]): a small POSIX-sh script runs the "
        "server's own busybox httpd there (yum install busybox; no Python), and the client addresses "
        "its accept() returned are shown here",
    }
)
@reports_errors
@remote_flags
def serve(
    c: Context,
    port: str = "8000",
    bind: str = "0.0.0.0",
    count: str = "0",
    timeout: str = "0",
    root: str | None = None,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Answer HTTP requests with the client address the kernel reports (TOA test server)."""
    from toa_kernel.verify import serve as serving
    from toa_kernel.verify.remoteserve import serve_remote

    s = settings(
        c,
        root=root,
        **(ssh or {}),
    )
    out = console(quiet, json)
    with system_of(s) as system:
        report = (serve_remote if system.host else serving.serve)(
            system,
            out,
            bind=bind,
            port=parse_int(port, "--port", 0, 65535, "use a TCP port 1..65535 (0 picks a free one)"),
            count=parse_int(count, "--count", 0, 10**9, "use 0 (no limit) or a number of requests"),
            timeout=parse_float(timeout, "--timeout", 0, 10**7, "use 0 (no limit) or a number of seconds"),
        )
    serving.show(report, out, json)


# === lab =====================================================================


@task(
    help={
        "root": ROOT_HELP + "; its /boot is what the lab boots",
        "workdir": WORKDIR_HELP + "; artifacts go to WORKDIR/lab/SCENARIO/",
        "timeout": "seconds one QEMU boot may take (default: toa.lab_timeout)",
        "scenario": "default: boot /boot as it is; fallback: leave the default entry's kernel out "
        "of the image, so GRUB's fallback= entry must boot",
        "release": "the TOA release to expect (default: the one the work directory's manifest records)",
        "kernel": "a bzImage to boot in place of every kernel (default: Debian's, downloaded once)",
        "own_kernel": "boot /boot's real kernel files as they are (the one 'invoke build' compiled), with "
        "/lib/modules and the boot hooks of ROOT in their initramfs: proves toa loads at boot",
        "keep": "keep the staging copy of /boot (WORKDIR/lab/SCENARIO/stage)",
        "probe": "boot with the TOA module and send it TCP packets with and without the TOA option "
        "(cases a-d and a server on [::]); PASS only when every case shows the expected peer address",
        "module": "with --probe: the toa.ko to load (default: the one under ROOT/lib/modules/RELEASE "
        "for the release of the booted kernel)",
        "option_code": "with --probe: the TOA option kind the module honours (default: toa.option_code, 254)",
        "boots": "boot the SAME image this many times (default 1), keeping what GRUB writes on it between "
        "boots (a trial's saved default); the guest may reboot by itself (panic=N); "
        "artifacts in WORKDIR/lab/boots",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    }
)
@reports_errors
def lab(
    c: Context,
    root: str | None = None,
    workdir: str | None = None,
    timeout: str | None = None,
    scenario: str = "default",
    release: str | None = None,
    kernel: str | None = None,
    own_kernel: bool = False,
    keep: bool = False,
    probe: bool = False,
    module: str | None = None,
    option_code: str | None = None,
    boots: str = "1",
    json: bool = False,
    quiet: bool = False,
) -> None:
    """Boot ROOT's /boot with the real GRUB legacy under QEMU: which entry boots; --probe: does TOA work."""

    from toa_kernel.core.settings import SettingError
    from toa_kernel.lab.run import SCENARIOS, lab_for_settings

    s = settings(c, root=root, workdir=workdir, lab_timeout=timeout, option_code=option_code)
    if scenario not in SCENARIOS:
        raise SettingError(
            "--scenario", scenario, "is not a lab scenario", f"use one of: {', '.join(SCENARIOS)}"
        )
    kernel_path, module_path = input_path(kernel, "--kernel"), input_path(module, "--module")
    out = console(quiet, json)
    if probe:
        lab_probe(s, out, kernel_path, module_path, json)
        return
    count = parse_int(boots, "--boots", 1, 10, "boot the image 1 to 10 times")
    if count > 1:
        lab_boots(s, count, kernel_path, out, json)
        return
    result = lab_for_settings(
        s,
        scenario=scenario,
        release=release_flag(release),
        kernel=kernel_path,
        keep_stage=keep,
        own_kernels=own_kernel,
        say=out.say,
    )
    if json:
        out.emit_json(result.as_dict())
    else:
        for line in result.judged.table():
            print(line, file=out.out, flush=True)
        out.summary(f"lab ({scenario}): {result.verdict}", result.summary_rows())
    if not result.ok:
        raise Exit(code=1)


def lab_probe(s: Settings, out: Console, kernel: Path | None, module: Path | None, json: bool) -> None:
    """``invoke lab --probe``: one line per case, the counters, the TOA kernel lines, the verdict."""
    from toa_kernel.lab.proberun import probe_for_settings

    result = probe_for_settings(s, kernel=kernel, module=module, say=out.say)
    if json:
        out.emit_json(result.as_dict())
    else:
        for line in result.lines():
            print(line, file=out.out, flush=True)
        out.summary(f"lab (probe): {result.verdict}", result.summary_rows())
    if not result.ok:
        raise Exit(code=1)


def lab_boots(s: Settings, boots: int, kernel: Path | None, out: Console, json: bool) -> None:
    """``invoke lab --boots N``: one image, N boots, what each one booted."""
    from toa_kernel.lab.multiboot import boot_several
    from toa_kernel.system.rootfs import Root

    work = Workdir(Path(s.workdir))
    with WorkLock(work, echo=out.say):
        result = boot_several(
            Root.of(s.root), work, boots, kernel=kernel, timeout=max(s.lab_timeout, 120.0), say=out.say
        )
    if json:
        out.emit_json(result.as_dict())
    else:
        out.summary(f"lab ({boots} boots of one image): {'PASS' if result.ok else 'FAIL'}", result.rows())
    if not result.ok:
        raise Exit(code=1)


# === build-module, install-module, rollback-module ===========================

RELEASE_HELP = "kernel release to build/install for, as 'uname -r' prints it (default: the running kernel)"


@task(
    help={
        "release": RELEASE_HELP,
        "src": "build from this local checkout of the module (its Makefile, or src/Makefile)",
        "tarball": "module tarball already on this machine (offline hosts) instead of downloading",
        "url": "module tarball URL ({branch} is filled in; default: toa.module_url)",
        "sha256": "expected sha256 of the module tarball; a mismatch stops the build",
        "nat64": "build the IPv6/NAT64 variant (branch IPv6)",
        "branch": "branch of the module repository (default: toa.module_branch, 'master')",
        "option_code": "TCP option kind of TOA set in the module's toa.h and recorded in its modinfo "
        "(default: toa.option_code, 254; other balancers use 200 or 252)",
        "install_deps": "install missing gcc, make and kernel development files with the package manager "
        "(of the --host server, when one is given)",
        "force": "download and build again even when an up-to-date build exists",
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
        "host": "build ON this server over SSH ([USER@]HOST[:PORT]): against its kernel headers, with its "
        "gcc; the .ko comes back into the work directory for install-module",
    }
)
@reports_errors
@remote_flags
def build_module(
    c: Context,
    release: str | None = None,
    src: str | None = None,
    tarball: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    nat64: bool = False,
    branch: str | None = None,
    option_code: str | None = None,
    install_deps: bool = False,
    force: bool = False,
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Kernels 3.0+: build the out-of-tree TOA module (toa.ko) with Kbuild."""
    from toa_kernel.module.steps import SourceRequest
    from toa_kernel.module.steps import build_module as run_build

    s = settings(c, workdir=workdir, root=root, option_code=option_code, **(ssh or {}))
    out = console(quiet, json)
    request = SourceRequest(
        src=input_path(src, "--src", "directory"),
        tarball=input_path(tarball, "--tarball"),
        url=module_url_value(url, "--url") if url is not None else None,
        sha256=sha256_value(sha256, "--sha256") if sha256 is not None else "",
        branch=check_branch(branch, "--branch") if branch is not None else None,
        nat64=nat64,
    )
    dry = is_dry(c, dry_run)
    options = {"release": release_flag(release), "install_deps": install_deps, "force": force}
    with system_of(s) as system, locked_unless_dry(s, dry, out, system if install_deps else None):
        result = run_build(s, request, out, dry_run=dry, system=system, **options)
    if json:
        out.emit_json(result)
        return
    source = result.get("source")
    if isinstance(source, dict):
        source = source.get("src") or source.get("url")
    rows = [("release", result.get("release")), ("source", source), ("option kind", option_kind(result))]
    if not dry:
        rows += [(key, result.get(key)) for key in ("ko", "vermagic", "log")]
        applied = [p["name"] for p in result.get("patches") or [] if p.get("applies")]
        rows.append(("patches", ", ".join(applied) or "none"))
    out.summary("build-module: dry run, nothing built" if dry else "build-module: done", rows)


def option_kind(result: dict[str, Any]) -> str:
    """``254``, ``200 (toa.h had 254)`` or, for a dry run, the kind the build would set."""
    kind = result.get("option_code")
    if not isinstance(kind, dict):
        return str(kind)
    before, after = kind.get("before"), kind.get("after")
    return f"{after}" + (f" (toa.h had {before})" if before != after else "")


@task(
    help={
        "release": RELEASE_HELP,
        "ko": "install this .ko instead of the one build-module recorded (e.g. built in a container)",
        "startup": "how to load it at boot: auto (from the distribution), modules, systemd or none",
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    }
)
@reports_errors
@remote_flags
def install_module(
    c: Context,
    release: str | None = None,
    ko: str | None = None,
    startup: str = "auto",
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Kernels 3.0+: install toa.ko under /lib/modules/R/extra, depmod, load it now and at boot."""
    from toa_kernel.module.steps import install_module as run_install

    s = settings(
        c,
        workdir=workdir,
        root=root,
        **(ssh or {}),
    )
    out = console(quiet, json)
    dry = is_dry(c, dry_run)
    ko_path = input_path(ko, "--ko")
    options: dict[str, Any] = {"release": release_flag(release), "ko": ko_path, "startup": startup}
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        result = run_install(s, out, dry_run=dry, system=system, **options)
    if json:
        out.emit_json(result)
        return
    loaded = {True: "yes", False: "no", None: "not checked (not the running kernel of this root)"}
    out.summary(
        "install-module: dry run, nothing changed" if dry else "install-module: done",
        [
            ("release", result["release"]),
            ("module", f"{result['module']} ({result['vermagic']})"),
            ("root", result["root"] + (f" on {result['host']}" if result.get("host") else "")),
            ("at boot", f"{result['startup']}: {', '.join(result['boot_files']) or 'nothing'}"),
            ("loaded", loaded[result["loaded"]]),
            ("changes", len(result["changes"]) or "none (already installed)"),
        ],
    )


@task(
    help={
        "workdir": WORKDIR_HELP,
        "root": ROOT_HELP,
        "dry_run": DRY_RUN_HELP,
        "quiet": QUIET_HELP,
        **SSH_HELP,
    }
)
@reports_errors
@remote_flags
def rollback_module(
    c: Context,
    workdir: str | None = None,
    root: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
    ssh: dict[str, Any] | None = None,
) -> None:
    """Kernels 3.0+: remove what install-module added (module file, boot files), unload it."""
    from toa_kernel.module.steps import rollback_module as run_rollback

    s = settings(
        c,
        workdir=workdir,
        root=root,
        **(ssh or {}),
    )
    out = console(quiet)
    dry = is_dry(c, dry_run)
    with system_of(s) as system, locked_unless_dry(s, dry, out, system):
        done = run_rollback(s, out, dry_run=dry, system=system)
    title = "rollback-module: dry run, nothing changed" if dry else "rollback-module: done"
    out.summary(title, [("changes", len(done) or "none")])


# === bundle, rollout, fleet-verify ============================================

INVENTORY_HELP = (
    "the inventory file (INI, like Ansible's; see the README's 'many servers'; default: toa.inventory)"
)
HOSTS_HELP = (
    "hosts and groups of the inventory to act on, comma-separated, in this order (default: all); without "
    "an inventory: the servers themselves, [USER@]HOST[:PORT],..."
)
ACCEPT_NEW_HELP = (
    "record the host key of a host never seen before in toa.ssh_known_hosts (trust on first use); "
    "a changed key is always refused"
)
FLEET_CHECKS_HELP = (
    "verify's check sets or checks, comma-separated (default: kernel, all of them); e.g. boot,hooks"
)


def fleet_hosts(s: Settings, inventory: str | None, hosts: str | None) -> tuple[list[Any], str]:
    """The hosts of a fleet task: ``--inventory`` (or toa.inventory) and ``--hosts``."""
    from toa_kernel.fleet.inventory import choose_hosts

    path = input_path(inventory or s.inventory or None, "--inventory" if inventory else "toa.inventory")
    return choose_hosts(s, path, hosts)


@task(
    help={
        "force": "pack again even when the recorded build has a bundle (a new bundle means a new rollout)",
        "workdir": WORKDIR_HELP + "; the bundle goes to WORKDIR/bundles/BUILD_ID/",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    }
)
@reports_errors
def bundle(
    c: Context, force: bool = False, workdir: str | None = None, json: bool = False, quiet: bool = False
) -> None:
    """Pack the recorded build with Kbuild's 'make targz-pkg' into a bundle for 'invoke rollout'."""
    from toa_kernel.fleet.bundle import make_bundle

    s = settings(c, workdir=workdir)
    out = console(quiet, json)
    with locked_unless_dry(s, False, out):
        made, fresh = make_bundle(s, out, force=force)
    if json:
        out.emit_json(made.summary())
        return
    out.summary(
        f"bundle: {'made' if fresh else 'already made'} ({made.release})",
        [
            ("sha256", made.sha256),
            ("tarball", made.tarball),
            ("size", f"{made.size} bytes, {len(made.files)} files"),
            ("arch", made.arch),
            ("build", made.build_id),
            ("record", made.record),
        ],
    )


@task(
    help={
        "inventory": INVENTORY_HELP,
        "hosts": HOSTS_HELP,
        "canary": "hosts done first, through install, reboot and verify (default 1; 0: none); "
        "any failure there stops the rollout",
        "wave": "hosts done at once, in parallel, after the canary (default 5)",
        "max_failures": "failed hosts tolerated before the rollout stops: a number (default 0) or a "
        "percentage of the hosts selected (10%%); the batches after the one that went past it are untouched",
        "checks": FLEET_CHECKS_HELP,
        "rollback_failed": "put a host that fails back: rollback (grub.conf and hooks as before), reboot, "
        "and check that it runs its old kernel again",
        "skip_failed_preflight": "leave out the hosts that fail preflight instead of refusing the whole "
        "rollout",
        "retry_failed": "run the hosts that failed in an earlier run again (from the step that failed)",
        "boot_timeout": "seconds a host may take to come back with a new boot id (default: toa.boot_timeout)",
        "accept_new_host_key": ACCEPT_NEW_HELP,
        "workdir": WORKDIR_HELP + "; the rollout's state goes to WORKDIR/fleet/BUNDLE/",
        "dry_run": "run the preflight on every host and print the batches; change nothing "
        "(also: invoke --dry)",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    }
)
@reports_errors
def rollout(
    c: Context,
    inventory: str | None = None,
    hosts: str | None = None,
    canary: str = "1",
    wave: str = "5",
    max_failures: str = "0",
    checks: str | None = None,
    rollback_failed: bool = False,
    skip_failed_preflight: bool = False,
    retry_failed: bool = False,
    boot_timeout: str | None = None,
    accept_new_host_key: bool = False,
    workdir: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    quiet: bool = False,
) -> None:
    """Install the bundle on many servers: preflight all, a canary, then waves; reboot, verify, resume."""
    from toa_kernel.fleet.bundle import make_bundle
    from toa_kernel.fleet.report import print_table
    from toa_kernel.fleet.rollout import Rollout, RolloutRequest
    from toa_kernel.fleet.schedule import failure_budget
    from toa_kernel.verify.checks import select

    s = settings(
        c,
        workdir=workdir,
        boot_timeout=boot_timeout,
        ssh_accept_new_host_key=True if accept_new_host_key else None,
    )
    out = console(quiet, json)
    request = RolloutRequest(
        canary=parse_int(canary, "--canary", 0, 10**6, "use a number of hosts, 0 or more (default 1)"),
        wave=parse_int(wave, "--wave", 1, 10**6, "use a number of hosts, 1 or more (default 5)"),
        max_failures=failure_budget(max_failures, 1).text,
        checks=checks,
        rollback_failed=rollback_failed,
        skip_failed_preflight=skip_failed_preflight,
        retry_failed=retry_failed,
        dry_run=is_dry(c, dry_run),
    )
    if checks is not None:
        select(checks)
    chosen, source = fleet_hosts(s, inventory, hosts)
    with locked_unless_dry(s, False, out):
        made, _fresh = make_bundle(s, out)
        report = Rollout(s, chosen, made, request, out, source).run()
    if json:
        out.emit_json(report.as_dict())
    else:
        print_table(report.rows, out.out)
        out.summary(f"rollout: {report.verdict}", report.summary_rows())
    if report.exit_code:
        raise Exit(code=report.exit_code)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "hosts": HOSTS_HELP,
        "release": "the TOA release every host should run (default: the bundle's, else the recorded build's)",
        "checks": FLEET_CHECKS_HELP,
        "accept_new_host_key": ACCEPT_NEW_HELP,
        "workdir": WORKDIR_HELP,
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    }
)
@reports_errors
def fleet_verify(
    c: Context,
    inventory: str | None = None,
    hosts: str | None = None,
    release: str | None = None,
    checks: str | None = None,
    accept_new_host_key: bool = False,
    workdir: str | None = None,
    json: bool = False,
    quiet: bool = False,
) -> None:
    """Verify every host of the fleet in parallel: one table; exit code 0 only when all pass."""
    from toa_kernel.fleet.fleetverify import fleet_expectation, verify_fleet
    from toa_kernel.verify.checks import select

    s = settings(c, workdir=workdir, ssh_accept_new_host_key=True if accept_new_host_key else None)
    out = console(quiet, json)
    if checks is not None:
        select(checks)
    chosen, source = fleet_hosts(s, inventory, hosts)
    expect = fleet_expectation(s, release_flag(release))
    report = verify_fleet(s, chosen, expect, checks, out, source)
    if json:
        out.emit_json(report.as_dict())
    else:
        for line in report.table():
            print(line, file=out.out, flush=True)
        out.summary(f"fleet-verify: {'PASS' if report.ok else 'FAIL'}", report.summary_rows())
    if report.exit_code:
        raise Exit(code=report.exit_code)


# === demo ====================================================================


@task(
    help={
        "workdir": "where the demo puts its served tarball, work directory and sandbox root (WORKDIR/demo)",
        "lab": "end with the boot lab when its packages are installed (default: yes; --no-lab skips it)",
        "json": JSON_HELP,
        "quiet": QUIET_HELP,
    }
)
@reports_errors
def demo(
    c: Context, workdir: str | None = None, lab: bool = True, json: bool = False, quiet: bool = False
) -> None:
    """Run fetch -> build -> install-kernel -> lab on the sample tree into a sandbox root."""
    from toa_kernel.demo.run import run_demo

    s = settings(c)
    base = directory_to_create(workdir, "--workdir") if workdir else Path(s.workdir) / "demo"
    out = console(quiet, json)
    result = run_demo(s, base, out, lab=lab)
    if json:
        out.emit_json({"ok": result.ok, "where": {k: str(v) for k, v in result.rows}})
    else:
        out.summary("demo: where everything went (the sample tree is not a kernel)", result.rows)
    if not result.ok:
        raise Exit(code=1)
