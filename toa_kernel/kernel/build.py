"""``invoke build``: preflight, patch, configure, release, compile, artifacts, record.

Each step looks at the tree, plans only what differs and applies it (or, in a
dry run, prints it), so running the build twice changes nothing the second
time. ``until`` stops after a step; ``only`` runs one step (after the preflight,
which always runs). The record step always runs (except in a dry run): a
``metadata.json`` per build, and the manifest's ``build`` section that
``install-kernel`` reads.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.fileops import backup_file, file_kind
from toa_kernel.core.layout import BZIMAGE, TOA_HEADER, TOA_MODULE_OBJECT, UTS_LEN
from toa_kernel.core.plan import Plan
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.kernel import configbase, defects, kbuild, metadata, toolchain
from toa_kernel.kernel import tree as kernel_tree
from toa_kernel.kernel.patching import PatchOutcome, find_patches, plan_patches
from toa_kernel.kernel.remote import RemoteBuild, build_host

STEPS = ("preflight", "patch", "configure", "release", "compile", "artifacts", "record")
GIB = 1024**3
# What each tool is called in CentOS 6's yum.
PACKAGES = {"gcc": "gcc", "make": "make", "perl": "perl", "patch": "patch"}


@dataclass
class StepReport:
    """How one step went: ``done``, ``nothing to do``, ``would change``, ``checked``, ``failed``."""

    name: str
    status: str = "running"
    seconds: float = 0.0
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "changes": self.changes,
            "notes": self.notes,
        }


@dataclass
class BuildContext:
    """What the steps share while a build runs."""

    settings: Settings
    workdir: Workdir
    tree: Path
    console: Console
    dry_run: bool
    build_id: str
    ccache: bool = False
    tree_arg: Path | None = None
    until: str | None = None
    only: str | None = None
    fragment: dict[str, str | None] = field(default_factory=dict)
    fragment_files: list[dict[str, str]] = field(default_factory=list)
    patches: list[PatchOutcome] = field(default_factory=list)
    compat: toolchain.Compat | None = None
    compat_patches: list[PatchOutcome] = field(default_factory=list)
    defects: dict[str, str] = field(default_factory=dict)
    option_code_before: int | None = None
    config_backup: Path | None = None
    kconfig: str | None = None
    release: str | None = None
    compile_steps: int | None = None
    compile_seconds: float | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    tree_changed: bool = False
    patched: bool = False
    started_at: str = field(default_factory=now_iso)
    remote: RemoteBuild | None = None  # build --host: compiled on that build host

    @property
    def directory(self) -> Path:
        return metadata.build_dir(self.workdir, self.build_id)

    @property
    def log(self) -> Path:
        return metadata.log_path(self.workdir, self.build_id)

    def say(self, text: str) -> None:
        self.console.say(text)

    def apply(self, plan: Plan, report: StepReport) -> None:
        """Apply (or print) a plan and note its changes in the step's report."""
        report.changes += plan.apply(self.dry_run, echo=self.say)
        if plan and not self.dry_run:
            self.tree_changed = True

    def ran(self, run: kbuild.MakeRun) -> kbuild.MakeRun:
        self.commands.append(f"cd {self.tree} && {run.command}")
        return run

    @property
    def compile_args(self) -> list[str]:
        """make's arguments for the compile (``-j N``; ``CC=`` for ccache and the toolchain)."""
        cc = toolchain.cc_variable(self.compat, self.ccache)
        return kbuild.compile_args(self.settings.effective_jobs, cc)


@dataclass
class BuildResult:
    """The outcome of ``run_build``: what a summary or ``--json`` shows."""

    build_id: str
    status: str
    tree: Path | None
    release: str | None = None
    steps: list[StepReport] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    metadata: Path | None = None
    log: Path | None = None
    error: dict[str, str] | None = None
    dry_run: bool = False
    toolchain: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "status": self.status,
            "tree": str(self.tree) if self.tree else None,
            "release": self.release,
            "toolchain": self.toolchain,
            "steps": [s.as_dict() for s in self.steps],
            "artifacts": self.artifacts,
            "metadata": str(self.metadata) if self.metadata else None,
            "log": str(self.log) if self.log else None,
            "error": self.error,
            "dry_run": self.dry_run,
        }

    def summary_rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [("release", self.release or "-"), ("tree", self.tree)]
        if self.toolchain:
            rows.append(("toolchain", self.toolchain))
        for step in self.steps:
            what = "; ".join(step.changes) or "; ".join(step.notes)
            rows.append((step.name, f"{step.status} ({step.seconds:.1f}s)" + (f": {what}" if what else "")))
        for key in ("bzimage", "toa_ko"):
            if self.artifacts.get(key):
                rows.append((key, self.artifacts[key]))
        if self.log and self.log.exists():
            rows.append(("log", self.log))
        if self.metadata:
            rows.append(("metadata", self.metadata))
        if self.error:
            rows.append(("error", self.error["message"].splitlines()[0]))
        return rows


# --- the pipeline ---------------------------------------------------------------


def selected_steps(until: str | None, only: str | None) -> list[str]:
    """The steps a run executes, in order (preflight always, record last)."""
    for name, value in (("until", until), ("only", only)):
        if value is not None and value not in STEPS:
            raise UserError(f"--{name} {value!r} is not a build step", f"use one of: {', '.join(STEPS)}")
    if only is not None:
        return list(dict.fromkeys(["preflight", only, "record"]))
    last = STEPS.index(until) if until else len(STEPS) - 1
    return [*STEPS[: last + 1], *([] if until == "record" or until is None else ["record"])]


def run_build(
    settings: Settings,
    *,
    console: Console,
    until: str | None = None,
    only: str | None = None,
    tree: Path | None = None,
    dry_run: bool = False,
) -> BuildResult:
    """Run the build steps on the fetched tree (fetching it first when it is missing)."""
    steps = selected_steps(until, only)
    workdir = Workdir(Path(settings.workdir))
    located = locate_tree(settings, workdir, tree, dry_run, console)
    build_id = metadata.new_build_id(workdir)
    if located is None:
        return BuildResult(build_id, "would fetch first", None, dry_run=True)
    ctx = BuildContext(
        settings=settings,
        workdir=workdir,
        tree=located,
        console=console,
        dry_run=dry_run,
        build_id=build_id,
        ccache=use_ccache(settings, console),
        tree_arg=tree,
        until=until,
        only=only,
    )
    reports: list[StepReport] = []
    with build_host(settings, workdir, located, dry_run) as ctx.remote:
        return run_steps(ctx, steps, reports)


def run_steps(ctx: BuildContext, steps: list[str], reports: list[StepReport]) -> BuildResult:
    console = ctx.console
    try:
        for name in steps:
            if name != "record":
                run_step(ctx, name, reports)
    except BaseException as exc:
        if isinstance(exc, kbuild.MakeFailed):
            print(exc.details(), file=sys.stderr, flush=True)
        try:
            result = finish(ctx, reports, exc, "record" in steps)
        except ToaError as failure:
            console.warn(f"could not record the failed build: {failure}")
        else:
            if isinstance(exc, ToaError):
                exc.build_result = result  # type: ignore[attr-defined]
        raise
    return finish(ctx, reports, None, "record" in steps)


def run_step(ctx: BuildContext, name: str, reports: list[StepReport]) -> None:
    """Run one step, timing it and settling its status."""
    report = StepReport(name)
    reports.append(report)
    started = time.monotonic()
    try:
        STEP_FUNCTIONS[name](ctx, report)
    except KeyboardInterrupt:
        report.status = "interrupted"
        raise
    except BaseException:
        report.status = "failed"
        raise
    finally:
        report.seconds = time.monotonic() - started
    if report.status == "running":
        report.status = settled(report, ctx.dry_run)


def settled(report: StepReport, dry_run: bool) -> str:
    if not report.changes:
        return "nothing to do"
    return "would change" if dry_run else "done"


def finish(
    ctx: BuildContext, reports: list[StepReport], error: BaseException | None, record: bool
) -> BuildResult:
    """The record step: metadata.json always (also on failure), the manifest when it means something."""
    status = build_status(reports, error)
    result = BuildResult(
        build_id=ctx.build_id,
        status=status,
        tree=ctx.tree,
        release=ctx.release,
        steps=reports,
        artifacts=ctx.artifacts,
        error=error.as_dict() if isinstance(error, ToaError) else None,
        dry_run=ctx.dry_run,
        toolchain=ctx.compat.summary() if ctx.compat else "",
    )
    if isinstance(error, KeyboardInterrupt):
        result.error = {"kind": "interrupted", "message": "stopped by Ctrl-C", "fix": "run the build again"}
    if ctx.dry_run or not record:
        return result
    report = StepReport("record", status="done")
    started = time.monotonic()
    document = metadata_document(ctx, [*reports, report], status, result.error)
    result.metadata = metadata.write_metadata(ctx.directory, document)
    result.log = ctx.log
    if status == "ok" or ctx.tree_changed:
        ctx.workdir.update_manifest("build", manifest_section(ctx, status, result.metadata))
        report.changes.append(f"manifest build section: {status}")
    report.seconds = time.monotonic() - started
    report.notes.append(str(result.metadata))
    reports.append(report)
    return result


def build_status(reports: list[StepReport], error: BaseException | None) -> str:
    """ok (artifacts checked), partial (stopped early), failed or interrupted."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if error is not None:
        return "failed"
    if any(r.name == "artifacts" and r.status == "checked" for r in reports):
        return "ok"
    return "partial"


# --- locating the tree -------------------------------------------------------------


def locate_tree(
    settings: Settings, workdir: Workdir, tree: Path | None, dry_run: bool, console: Console
) -> Path | None:
    """The tree to build: ``--tree``, else the fetched one, else fetch it first."""
    if tree is not None:
        if not Path(tree).is_dir():
            raise UserError(f"--tree {tree} is not a directory", "pass the top directory of a kernel tree")
        return Path(tree).resolve()
    recorded = workdir.section("fetch").get("tree")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    try:
        from toa_kernel.source.fetch import fetch_source
    except ImportError:
        raise UserError(
            f"no kernel source tree in {workdir.path}", "run 'invoke fetch' first, or pass --tree DIR"
        ) from None
    console.say("build: the source tree is missing, fetching it first")
    fetched = fetch_source(settings, dry_run=dry_run, console=console)
    if fetched.tree is not None and Path(fetched.tree).is_dir():
        return Path(fetched.tree)
    if dry_run:
        console.say("build: the later steps need the tree; run without --dry-run to fetch it")
        return None
    raise EnvironmentFailure(
        f"fetching gave no source tree in {workdir.path}", "run 'invoke fetch' and read its output"
    )


def use_ccache(settings: Settings, console: Console) -> bool:
    """ccache is used when asked for and installed."""
    if not settings.ccache:
        return False
    if shutil.which("ccache") is None:
        console.warn("ccache was asked for but is not installed (yum install ccache); compiling without it")
        return False
    return True


# --- step: preflight ---------------------------------------------------------------


def preflight(ctx: BuildContext, report: StepReport) -> None:
    """Check the tree, the tools and the disk; add net/Makefile's toa line when missing."""
    tree = ctx.tree
    check_tree_shape(tree)
    check_toa_sources(tree, ctx.settings)
    ctx.fragment, ctx.fragment_files = configbase.fragments_for(
        ctx.settings.input_dir("configs"), ctx.settings.config_base
    )
    asker = ctx.remote.ask if ctx.remote else toolchain.run_quietly
    ctx.compat = toolchain.plan_compat(tree, compat_dir(ctx.settings), toolchain.detect(asker))
    check_tools(bool(find_patches(ctx.settings.input_dir("patches")) or ctx.compat.patches))
    check_disk(tree, ctx.settings.min_free_gib)
    for line in ctx.compat.banner():
        ctx.console.warn(line)
    report.notes.append(f"toolchain: {ctx.compat.summary()}")
    plan = Plan("preflight")
    plan.add(kernel_tree.wiring_change(tree))
    ctx.apply(plan, report)


def check_tree_shape(tree: Path) -> None:
    makefile = tree / kernel_tree.TOP_MAKEFILE
    if not makefile.is_file() or not kernel_tree.is_kernel_makefile(
        kernel_tree.read_tree_file(tree, kernel_tree.TOP_MAKEFILE)
    ):
        raise UserError(
            f"{tree} is not a kernel source tree (no top Makefile with VERSION, PATCHLEVEL, SUBLEVEL)",
            "pass the tree's top directory, or run 'invoke fetch --force' to unpack the vendor's source",
        )
    config = tree / kernel_tree.DOT_CONFIG
    if config.exists() and not config.is_file():
        raise UserError(
            f"{config} is {file_kind(config.stat().st_mode)}, not the kernel's .config file",
            f"move it aside (mv {config} {config}.not-a-config), then copy a 2.6.32 config into place: "
            f"cp /boot/config-$(uname -r) {config}",
        )
    if not config.is_file():
        raise UserError(
            f"{tree} has no .config (the vendor's source ships one)",
            f"copy a 2.6.32 config into place: cp /boot/config-$(uname -r) {config}",
        )


def check_toa_sources(tree: Path, settings: Settings) -> None:
    """toa.h with its define, net/Kconfig sourcing net/toa/Kconfig, and an EXTRAVERSION line."""
    if not (tree / TOA_HEADER).is_file():
        raise UserError(
            f"{TOA_HEADER} is missing: {tree} is not the LVS real-server source with TOA",
            "download the real-server kernel source (invoke fetch), not a stock kernel",
        )
    kernel_tree.set_option_code(kernel_tree.read_tree_file(tree, TOA_HEADER), settings.option_code)
    if not kernel_tree.sources_toa_kconfig(kernel_tree.read_tree_file(tree, kernel_tree.NET_KCONFIG)):
        raise UserError(
            'net/Kconfig does not source "net/toa/Kconfig", so CONFIG_TOA cannot be set',
            'add the line  source "net/toa/Kconfig"  to net/Kconfig, or unpack the vendor\'s source again',
        )
    makefile = kernel_tree.read_tree_file(tree, kernel_tree.TOP_MAKEFILE)
    kernel_tree.set_extraversion(makefile, settings.extraversion)
    check_release_length(tree, makefile, settings.extraversion)


def check_release_length(tree: Path, makefile: str, extraversion: str) -> None:
    """The release (VERSION.PATCHLEVEL.SUBLEVEL, EXTRAVERSION, CONFIG_LOCALVERSION) must fit the
    kernel's UTS_RELEASE, or the build fails late with a message that cannot help."""
    version = kernel_tree.kernel_version(makefile) or ""
    config = kernel_tree.config_values(kernel_tree.read_tree_file(tree, kernel_tree.DOT_CONFIG))
    local = (config.get("CONFIG_LOCALVERSION") or "").strip('"')
    release = f"{version}{extraversion}{local}"
    if len(release) > UTS_LEN:
        raise UserError(
            f"the release {release[:40]}... would be {len(release)} characters: more than the kernel's "
            f"{UTS_LEN}-byte UTS_RELEASE (EXTRAVERSION {len(extraversion)}, "
            f"CONFIG_LOCALVERSION {len(local)})",
            f"use a shorter --extraversion (toa.extraversion), at most {UTS_LEN - len(version) - len(local)} "
            "characters here",
        )


def check_tools(need_patch: bool) -> None:
    tools = ["gcc", "make", "perl", *(["patch"] if need_patch else [])]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(PACKAGES[tool] for tool in missing)
        raise EnvironmentFailure(
            f"the build needs {', '.join(missing)}, not found on PATH",
            f"yum install {packages}   (CentOS 6; on Debian: apt-get install {packages})",
        )


def check_disk(tree: Path, min_free_gib: float) -> None:
    free = shutil.disk_usage(tree).free
    if free < min_free_gib * GIB:
        raise EnvironmentFailure(
            f"only {free / GIB:.1f} GiB free on the filesystem of {tree}; "
            f"the build needs {min_free_gib:g} GiB",
            f"free space there (df -h {tree}), use another --workdir, or lower toa.min_free_gib",
        )


def compat_dir(settings: Settings) -> Path:
    """The toolchain compatibility patches: ``patches/toolchain/``."""
    return settings.input_dir("patches") / toolchain.COMPAT_DIR


# --- step: patch -------------------------------------------------------------------


def patch(ctx: BuildContext, report: StepReport) -> None:
    """Apply patches/*.patch and the toolchain set (all or nothing), fix toa.h, set TCPOPT_TOA."""
    patches = find_patches(ctx.settings.input_dir("patches"))
    ctx.patches = apply_patches(ctx, report, patches, "patch")
    if not patches:
        report.notes.append(f"no patches in {ctx.settings.input_dir('patches')}")
    compat = ctx.compat.patches if ctx.compat else []
    ctx.compat_patches = apply_patches(ctx, report, [p.path for p in compat], "toolchain")
    fix_defects(ctx, report)
    header = kernel_tree.read_tree_file(ctx.tree, TOA_HEADER)
    ctx.option_code_before = kernel_tree.read_option_code(header)
    plan = Plan("patch")
    plan.add(kernel_tree.option_code_change(ctx.tree, ctx.settings.option_code))
    ctx.apply(plan, report)
    if not plan:
        report.notes.append(f"TCPOPT_TOA is {ctx.settings.option_code}")


def fix_defects(ctx: BuildContext, report: StepReport) -> None:
    """Fix the vendor's syntax errors in net/toa that this tree has (``defects``)."""
    found = defects.fix_changes(ctx.tree)
    fixes = Plan("patch")
    for _, change in found:
        fixes.add(change)
    ctx.apply(fixes, report)
    fixed = {defect.name for defect, _ in found}
    for defect in defects.DEFECTS:
        status = ("would fix" if ctx.dry_run else "fixed") if defect.name in fixed else "not present"
        ctx.defects[f"{defect.path}: {defect.name}"] = status


def apply_patches(
    ctx: BuildContext, report: StepReport, patches: list[Path], name: str
) -> list[PatchOutcome]:
    """Apply ``patches`` in order (those already in the tree are skipped); their outcomes."""
    scratch = ctx.workdir.path if ctx.workdir.path.is_dir() else None
    planned = plan_patches(ctx.tree, patches, scratch_parent=scratch)
    planned.plan.name = name
    for outcome in planned.outcomes:
        if outcome.status == "already applied":
            ctx.say(f"{name}: {outcome.name} is already applied")
    if planned.plan:
        ctx.apply(planned.plan, report)
        ctx.patched = True  # a patch may change Kconfig files: kconfig must run
    return planned.outcomes


# --- step: configure ---------------------------------------------------------------


def configure(ctx: BuildContext, report: StepReport) -> None:
    """Start from the config base, merge the fragments, run kconfig when needed, check the values."""
    if not ctx.fragment:
        ctx.fragment, ctx.fragment_files = configbase.fragments_for(
            ctx.settings.input_dir("configs"), ctx.settings.config_base
        )
    base = configbase.base_plan(ctx.tree, ctx.settings.config_base, lambda args: make_checked(ctx, args))
    ctx.apply(base, report)
    if ctx.dry_run and base:
        report.notes.append("the merge below is shown against the current .config, not the new base")
    dot_config = ctx.tree / kernel_tree.DOT_CONFIG

    def keep_original() -> None:
        ctx.config_backup = backup_file(dot_config)

    change, _ = kernel_tree.config_change(ctx.tree, ctx.fragment, before=keep_original)
    plan = Plan("configure")
    plan.add(change)
    ctx.apply(plan, report)
    if ctx.config_backup:
        report.notes.append(f"original .config kept as {ctx.config_backup.name}")
    target = kbuild.kconfig_target(ctx.tree)
    if not (base or plan or ctx.patched or kconfig_stale(ctx.tree)):
        report.notes.append("kconfig is up to date")
    elif ctx.dry_run:
        ctx.say(f"configure: would run $ make {target}  (then check {', '.join(ctx.fragment)})")
        report.changes.append(f"make {target}")
        return
    else:
        ctx.say(f"configure: $ make {target}")
        run = kbuild.run_kconfig(ctx.tree, ctx.log)
        for one in run.runs:
            ctx.ran(one)
        ctx.kconfig = f"make oldconfig + {run.target}" if run.fallback else run.target
        ctx.tree_changed = True
        report.changes.append(f"kconfig: {ctx.kconfig}")
        if run.fallback:
            report.notes.append("new options were set to their defaults (yes '' | make oldconfig)")
    if ctx.dry_run:
        return
    check_fragment_survived(ctx)


def make_checked(ctx: BuildContext, args: Sequence[str]) -> None:
    """Run one make of a step (output to the build log); ``MakeFailed`` when it fails."""
    ctx.say(f"configure: $ make {' '.join(args)}")
    ctx.ran(kbuild.checked(f"make {' '.join(args)}", kbuild.run_make(ctx.tree, args, ctx.log), ctx.log))


def kconfig_stale(tree: Path) -> bool:
    """True when include/config/auto.conf is missing or older than .config."""
    auto_conf = tree / "include" / "config" / "auto.conf"
    dot_config = tree / kernel_tree.DOT_CONFIG
    return not auto_conf.is_file() or auto_conf.stat().st_mtime < dot_config.stat().st_mtime


def check_fragment_survived(ctx: BuildContext) -> None:
    text = kernel_tree.read_tree_file(ctx.tree, kernel_tree.DOT_CONFIG)
    lost = kernel_tree.lost_values(text, ctx.fragment)
    if lost:
        described = ", ".join(
            f"{kernel_tree.config_line(option, wanted)} (now: {'not set' if got is None else got})"
            for option, wanted, got in lost
        )
        raise UserError(
            f"kconfig did not keep {described}",
            "the option depends on something the .config disables (see its Kconfig 'depends on'); "
            "set that in a fragment under configs/ too",
        )


# --- step: release -----------------------------------------------------------------


def release(ctx: BuildContext, report: StepReport) -> None:
    """Set EXTRAVERSION in the top Makefile and ask the kernel for its release."""
    extraversion = ctx.settings.extraversion
    plan = Plan("release")
    plan.add(kernel_tree.extraversion_change(ctx.tree, extraversion))
    ctx.apply(plan, report)
    if ctx.dry_run:
        expected = kbuild.expected_release(ctx.tree, extraversion)
        ctx.say("release: would run $ make include/config/kernel.release && make -s kernelrelease")
        report.notes.append(f"expected release {expected or 'unknown'} (make -s kernelversion)")
        ctx.release = expected
        return
    ctx.release = kbuild.kernelrelease(ctx.tree, ctx.log)
    ctx.commands += [
        f"cd {ctx.tree} && make include/config/kernel.release",
        f"cd {ctx.tree} && make -s kernelrelease",
    ]
    if extraversion and extraversion not in ctx.release:
        raise EnvironmentFailure(
            f"the kernel reports release {ctx.release!r}, without EXTRAVERSION {extraversion!r}",
            f"check the top Makefile of {ctx.tree} and {ctx.log}",
        )
    ctx.say(f"release: {ctx.release}")
    report.notes.append(ctx.release)


# --- step: compile -----------------------------------------------------------------


def compile_(ctx: BuildContext, report: StepReport) -> None:
    """make -j N with a progress bar; a one-line summary."""
    argv = ["make", *ctx.compile_args]
    where = f"{ctx.settings.build_host}:{ctx.remote.host_directory}" if ctx.remote else str(ctx.tree)
    if ctx.dry_run:
        shipped = f"ship the tree to {ctx.settings.build_host}, " if ctx.settings.build_host else ""
        ctx.say(f"compile: would {shipped}run $ cd {where} && {shlex.join(argv)}  (log: {ctx.log})")
        report.changes.append(shlex.join(argv))
        return
    ctx.tree_changed = True  # make writes into the tree, even when it fails
    previous = ctx.workdir.section("build")
    expected = previous.get("compile_steps") if previous.get("tree") == str(ctx.tree) else None
    if ctx.remote is not None:
        run = ctx.remote.compile(
            ctx.log,
            jobs=ctx.settings.jobs,
            ccache=ctx.ccache,
            compat=ctx.compat,
            console=ctx.console,
            expected_steps=expected,
        )
        ctx.commands.append(f"ssh {ctx.remote.system.host} 'cd {ctx.remote.host_directory} && {run.command}'")
    else:
        run = ctx.ran(
            kbuild.compile_tree(
                ctx.tree, ctx.log, args=ctx.compile_args, console=ctx.console, expected_steps=expected
            )
        )
    ctx.compile_seconds = run.seconds
    if run.steps:
        ctx.compile_steps = run.steps
        report.changes.append(f"{run.steps} compile steps in {format_seconds(run.seconds)}")
    else:
        ctx.compile_steps = expected or 0
        report.notes.append("up to date")
    ctx.say(f"compile: {'; '.join(report.changes or report.notes)} ({shlex.join(run.argv)}, log {ctx.log})")


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


# --- step: artifacts ---------------------------------------------------------------


def artifacts(ctx: BuildContext, report: StepReport) -> None:
    """bzImage and toa.ko exist and belong to the release."""
    if ctx.dry_run:
        ctx.say(f"artifacts: would check {BZIMAGE} and {TOA_MODULE_OBJECT} against the release")
        report.status = "would check"
        return
    if ctx.release is None:
        ctx.release = kbuild.kernelrelease(ctx.tree, ctx.log, regenerate=False)
    bzimage, module, system_map = ctx.tree / BZIMAGE, ctx.tree / TOA_MODULE_OBJECT, ctx.tree / "System.map"
    if ctx.remote is not None:
        fetched = ctx.remote.fetch(ctx.release, ctx.directory / "remote", ctx.log)
        bzimage, module, system_map = fetched["bzimage"], fetched["toa_ko"], fetched["system_map"]
        ctx.artifacts["modules_tree"] = str(fetched["modules_tree"])
    description = kbuild.check_bzimage(bzimage, ctx.release)
    info = kbuild.check_module(module, ctx.release)
    system_map = kbuild.check_system_map(system_map)
    ctx.artifacts = {
        **ctx.artifacts,
        "bzimage": str(bzimage),
        "bzimage_type": description,
        "toa_ko": str(module),
        "vermagic": info.vermagic.strip(),
        "system_map": str(system_map),
    }
    report.notes.append(f"bzImage and toa.ko are for {ctx.release}")
    report.status = "checked"
    ctx.say(f"artifacts: {BZIMAGE} ({description.split(',')[0]}); toa.ko vermagic {info.vermagic.strip()!r}")


STEP_FUNCTIONS: dict[str, Callable[[BuildContext, StepReport], None]] = {
    "preflight": preflight,
    "patch": patch,
    "configure": configure,
    "release": release,
    "compile": compile_,
    "artifacts": artifacts,
}


# --- record ------------------------------------------------------------------------


def metadata_document(
    ctx: BuildContext, reports: list[StepReport], status: str, error: dict[str, str] | None
) -> dict[str, Any]:
    """Everything needed to understand and reproduce this build."""
    fetch = ctx.workdir.section("fetch")
    same_tree = fetch.get("tree") == str(ctx.tree)
    return {
        "build_id": ctx.build_id,
        "status": status,
        "started_at": ctx.started_at,
        "finished_at": now_iso(),
        "tree": str(ctx.tree),
        "source": {
            "sha256": fetch.get("sha256") if same_tree else None,
            "url": fetch.get("url") if same_tree else None,
            "tarball": fetch.get("tarball") if same_tree else None,
        },
        "release": ctx.release,
        "extraversion": ctx.settings.extraversion,
        "option_code": {"before": ctx.option_code_before, "after": ctx.settings.option_code},
        "patches": [p.as_dict() for p in ctx.patches],
        "vendor_defects": ctx.defects,
        "toolchain": toolchain_record(ctx),
        "tools": ctx.compat.toolchain.descriptions if ctx.compat else {},
        "config_base": ctx.settings.config_base,
        "fragments": {
            "files": ctx.fragment_files,
            "values": {option: kernel_tree.config_line(option, v) for option, v in ctx.fragment.items()},
        },
        "config_backup": str(ctx.config_backup) if ctx.config_backup else None,
        "kconfig": ctx.kconfig,
        "jobs": (ctx.remote.jobs if ctx.remote else None) or ctx.settings.effective_jobs,
        "ccache": ctx.ccache,
        "compile": {"steps": ctx.compile_steps, "seconds": ctx.compile_seconds},
        "steps": [r.as_dict() for r in reports],
        "build_host": ctx.remote.describe() if ctx.remote else None,
        "commands": ctx.commands,
        "reproduce": metadata.reproduce_command(ctx.settings, ctx.tree_arg, ctx.until, ctx.only),
        "artifacts": ctx.artifacts,
        "log": str(ctx.log) if ctx.log.exists() else None,
        "error": error,
    }


def toolchain_record(ctx: BuildContext) -> dict[str, Any]:
    """The toolchain, whether it is newer than the tree, and what was done for it."""
    if ctx.compat is None:
        return {}
    outcomes = {p.name: p.status for p in ctx.compat_patches}
    record = ctx.compat.as_dict()
    for entry in record["patches"]:
        entry["status"] = outcomes.get(entry["name"], "not reached")
    record["summary"] = ctx.compat.summary()
    record["compile_command"] = shlex.join(["make", *ctx.compile_args])
    return record


def manifest_section(ctx: BuildContext, status: str, metadata_path: Path) -> dict[str, Any]:
    """The manifest's ``build`` section; install-kernel installs only status ``ok``."""
    return {
        "build_id": ctx.build_id,
        "status": status,
        "release": ctx.release,
        "tree": str(ctx.tree),
        "bzimage": ctx.artifacts.get("bzimage"),
        "toa_ko": ctx.artifacts.get("toa_ko"),
        "system_map": ctx.artifacts.get("system_map"),
        "modules_tree": ctx.artifacts.get("modules_tree"),
        "build_host": ctx.remote.system.host if ctx.remote else None,
        "metadata": str(metadata_path),
        "option_code": ctx.settings.option_code,
        "compile_steps": ctx.compile_steps,
        "finished_at": now_iso(),
    }
