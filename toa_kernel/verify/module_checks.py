"""What ``invoke verify`` judges on kernels 3.0+, where TOA is an out-of-tree module.

There the running kernel is the distribution's own (no ``-toa`` release, no grub
change); instead ``toa.ko`` lives in ``/lib/modules/R/extra/``, must carry the
running release in its vermagic, must be in ``modules.dep``, and must be loaded at
boot by the files install-module wrote. The module facts are gathered here
(``gather_module_mode``); the judges are ``checks.Check`` objects over the shared
``Facts`` plus these, so verify runs them with ``checks.run_checks`` like any other:

    mode = gather_module_mode(root, facts.release)
    if applies(facts, mode):
        results = run_checks(module_mode_checks(mode), facts, expect)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.module.boot import boot_files, boot_style, has_systemd
from toa_kernel.module.build import kernel_version
from toa_kernel.module.distro import detect_distro
from toa_kernel.module.install import in_modules_dep, module_dest, module_info_of
from toa_kernel.module.optioncode import MODINFO_KEY, built_kind
from toa_kernel.system.api import System
from toa_kernel.verify.checks import (
    REGISTRY,
    Check,
    Expectation,
    Result,
    failed,
    not_known,
    passed,
    permission_problems,
    warned,
)
from toa_kernel.verify.facts import Facts, FileFact, file_fact

MODULE_NAME = "toa"
REBUILD = "run 'invoke build-module install-module' (after a kernel upgrade the old build does not fit)"
SHARED_CHECKS = ("module-loaded", "toa-stats", "kernel-log")


@dataclass
class ModuleModeFacts:
    """The out-of-tree module as found under a root (JSON-serialisable)."""

    release: str | None
    name: str = MODULE_NAME
    path: str | None = None  # system path of extra/NAME.ko for the release, when present
    vermagic: str | None = None
    option_kind: int | None = None  # the TCP option kind its modinfo records (tcpopt_toa)
    problem: str = ""  # the file is there but is not a usable module
    indexed: bool | None = None  # modules.dep lists it (None: no modules.dep)
    other_releases: list[str] = field(default_factory=list)  # releases that do have extra/NAME.ko
    style: str = "none"  # modules, systemd or none
    boot_files: list[FileFact] = field(default_factory=list)
    boot_links: dict[str, str] = field(default_factory=dict)  # symlink path -> its target (or "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def releases_with_module(system: System, name: str) -> list[str]:
    """Releases that have ``extra/NAME.ko`` (one look over the whole of /lib/modules)."""
    found = []
    for path in system.find(MODULES_DIR, f"{name}.ko"):
        parts = path.split("/")  # "", "lib", "modules", R, "extra", NAME.ko
        if len(parts) == 6 and parts[4] == "extra":
            found.append(parts[3])
    return sorted(set(found))


def is_file(system: System, path: str) -> bool:
    found = system.stat(path)
    return found is not None and found.kind == "file"


def gather_module_mode(system: System, release: str | None, name: str = MODULE_NAME) -> ModuleModeFacts:
    """Module facts for ``release`` (normally the running one) on ``system``."""
    facts = ModuleModeFacts(release=release, name=name)
    facts.other_releases = [r for r in releases_with_module(system, name) if r != release]
    if release:
        system_path = module_dest(release, name)
        dep = f"{MODULES_DIR}/{release}/modules.dep"
        facts.indexed = in_modules_dep(system, release, name) if is_file(system, dep) else None
        if is_file(system, system_path):
            facts.path = system_path
            try:
                info = module_info_of(system, system_path)
                facts.vermagic, facts.option_kind = info.vermagic.strip(), built_kind(info)
            except UserError as exc:
                facts.problem = exc.message
    facts.style = boot_style(detect_distro(system), has_systemd(system))
    for boot_file in boot_files(name, facts.style):
        if boot_file.link_to:
            facts.boot_links[boot_file.path] = system.readlink(boot_file.path) or ""
        else:
            facts.boot_files.append(file_fact(system, boot_file.path))
    return facts


def applies(facts: Facts, mode: ModuleModeFacts) -> bool:
    """Module mode: the running kernel is 3.0 or later, or an extra/toa.ko is installed."""
    version = kernel_version(facts.release or "")
    return bool((version and version >= (3, 0)) or mode.path or mode.other_releases)


# --- judges -------------------------------------------------------------------------


def check_build_fits(mode: ModuleModeFacts, option_code: int = 254) -> Result:
    """extra/toa.ko exists for the running release and its vermagic says so; the TCP option
    kind its modinfo records (build-module writes it) is reported, and warned about when it is
    not ``toa.option_code``."""
    if not mode.release:
        return not_known("the running release is not known")
    where = f"{MODULES_DIR}/{mode.release}/extra/{mode.name}.ko"
    if mode.path is None:
        if mode.other_releases:
            return failed(
                f"no {where}: the module was built for {', '.join(mode.other_releases)} only "
                f"(the kernel was upgraded to {mode.release}?)",
                REBUILD,
            )
        return failed(f"no {where}: the module is not installed", "run 'invoke build-module install-module'")
    if mode.problem:
        return failed(f"{where}: {mode.problem}", REBUILD)
    built_for = (mode.vermagic or "").split()[0] if mode.vermagic else ""
    if built_for != mode.release:
        return failed(
            f"{where} was built for {built_for or 'an unknown kernel'}, the kernel runs {mode.release}: "
            "the kernel refuses it",
            REBUILD,
        )
    if mode.option_kind is None:
        return passed(f"{where}, vermagic {mode.vermagic}, TCP option kind not recorded ({MODINFO_KEY})")
    if mode.option_kind != option_code:
        return warned(
            f"{where} honours TCP option kind {mode.option_kind}, toa.option_code says {option_code}: "
            "the module ignores the option a balancer configured that way sends",
            f"build with the balancer's kind: 'invoke build-module install-module --option-code N' "
            f"(or set toa.option_code to {mode.option_kind} when that is the balancer's kind)",
        )
    return passed(f"{where}, vermagic {mode.vermagic}, TCP option kind {mode.option_kind}")


def check_indexed(mode: ModuleModeFacts) -> Result:
    """modules.dep lists the module, so modprobe finds it."""
    if mode.path is None:
        return not_known("no installed module to look up")
    dep = f"{MODULES_DIR}/{mode.release}/modules.dep"
    if mode.indexed is None:
        return failed(f"{dep} is missing: modprobe cannot find {mode.name}", depmod_fix(mode))
    if not mode.indexed:
        return failed(f"{dep} does not list {mode.name}.ko", depmod_fix(mode))
    return passed(f"{dep} lists {mode.name}.ko")


def depmod_fix(mode: ModuleModeFacts) -> str:
    return f"run 'depmod {mode.release}' (or 'invoke install-module')"


def loads_module(text: str | None, name: str) -> bool:
    """A loader script runs ``modprobe NAME``, or a modules-load.d file lists NAME."""
    pattern = re.compile(rf"\bmodprobe(\s+-\S+)*\s+{re.escape(name)}(\s|;|\)|$)")
    for line in (text or "").splitlines():
        code = line.split("#", 1)[0].strip()
        if code == name or pattern.search(code):
            return True
    return False


def check_boot(mode: ModuleModeFacts) -> Result:
    """The boot-time files install-module writes are there, root-owned and loading the module."""
    if mode.style == "none":
        return warned(
            "this distribution has neither /etc/sysconfig/modules nor systemd: nothing loads toa at boot",
            f"add 'modprobe {mode.name}' to the boot scripts",
        )
    problems = []
    for fact in mode.boot_files:
        if not fact.exists:
            problems.append(f"{fact.path} is missing")
            continue
        executable = fact.path.endswith((".modules", "-load-module"))
        problems += [f"{fact.path} {p}" for p in permission_problems(fact, executable)]
        if not loads_module(fact.text, mode.name):
            problems.append(f"{fact.path} does not load {mode.name}")
    for path, target in mode.boot_links.items():
        if not target:
            problems.append(f"{path} is missing (the unit is not enabled)")
    if problems:
        return failed("; ".join(problems), "run 'invoke install-module' (it writes them)")
    paths = [f.path for f in mode.boot_files] + list(mode.boot_links)
    return passed(f"{mode.style}: {', '.join(paths)}")


def module_mode_checks(mode: ModuleModeFacts | None) -> list[Check]:
    """The checks of module mode: the module's own, then the shared loaded/stats/log ones."""

    def fits(facts: Facts, expect: Expectation) -> Result:
        return check_build_fits(mode, expect.option_code) if mode else not_known("no module facts")

    def indexed(facts: Facts, expect: Expectation) -> Result:
        return check_indexed(mode) if mode else not_known("no module facts")

    def boot(facts: Facts, expect: Expectation) -> Result:
        return check_boot(mode) if mode else not_known("no module facts")

    own = [
        Check("module-fits", "toa.ko built for the running kernel (vermagic)", ("release",), fits),
        Check("module-indexed", "toa.ko listed in modules.dep", (), indexed),
        Check("module-boot", "toa loaded at boot (install-module's files)", (), boot),
    ]
    return own + [REGISTRY[name] for name in SHARED_CHECKS]
