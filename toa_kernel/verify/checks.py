"""What ``invoke verify`` judges: pure checks over ``Facts``.

Each check is a ``Check`` (name, title, the facts it needs, a judge function).
A judge returns a ``Result``: PASS, WARN or FAIL with a one-line reason and a
fix. A check whose facts are not known (a partial facts file, such as the boot
lab's) reports ``n/a`` instead of guessing. Checks are grouped into named sets
(``CHECK_SETS``); ``--checks boot`` runs the boot set, ``--checks nohz-off,cron``
single checks. Another kind of install (an out-of-tree module on a 3.x kernel)
adds its own checks and set without touching these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Callable

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import CRON_FILE, MODULES_SCRIPT, RC_LOCAL
from toa_kernel.verify.facts import Facts, FileFact, GrubFacts

MODPROBE_TOA = re.compile(r"modprobe(\s+-\S+)*\s+toa(\s|;|$)")
LOADED_LINE = "TOA: toa loaded"
UNLOADED_LINE = "TOA: toa unloaded"
CRON_SPECIAL = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,-]+$")
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    NA = "n/a"


@dataclass(frozen=True)
class Result:
    """The verdict of one check."""

    status: Status
    reason: str
    fix: str = ""
    name: str = ""
    title: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.name,
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Expectation:
    """What the system should be: the TOA release and the kernel arguments it needs."""

    release: str | None = None
    release_source: str = ""
    extraversion: str = "-toa"
    kernel_args: tuple[str, ...] = ("nohz=off",)
    option_code: int = 254  # the TCP option kind the balancer sends (toa.option_code)


Judge = Callable[[Facts, Expectation], Result]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    needs: tuple[str, ...]  # dotted Facts fields that must be known
    judge: Judge


def passed(reason: str) -> Result:
    return Result(Status.PASS, reason)


def warned(reason: str, fix: str = "") -> Result:
    return Result(Status.WARN, reason, fix)


def failed(reason: str, fix: str = "") -> Result:
    return Result(Status.FAIL, reason, fix)


def not_known(reason: str) -> Result:
    return Result(Status.NA, reason)


# --- helpers over facts ---------------------------------------------------------


def toa_release(facts: Facts, expect: Expectation) -> str | None:
    """The release that should run: the expected one, else one named by EXTRAVERSION."""
    if expect.release:
        return expect.release
    suffix = expect.extraversion
    if not suffix:
        return None
    if facts.release and facts.release.endswith(suffix):
        return facts.release
    if facts.grub is not None:
        named = {e.release for e in facts.grub.entries if e.release and e.release.endswith(suffix)}
        if len(named) == 1:
            return named.pop()
    return None


def release_origin(expect: Expectation) -> str:
    if expect.release:
        return f" (from {expect.release_source})" if expect.release_source else ""
    return f" (no build recorded; chosen by EXTRAVERSION {expect.extraversion})"


def entry_name(grub: GrubFacts, index: int | None) -> str:
    entry = grub.entry(index)
    if entry is None:
        return f"entry {index}"
    return f"entry {index} '{entry.title}'"


def missing_args(cmdline: str, wanted: Iterable[str]) -> list[str]:
    """Arguments of ``wanted`` not in effect on ``cmdline`` (the last ``key=`` wins)."""
    words = cmdline.split()
    missing = []
    for arg in wanted:
        key, equals, _ = arg.partition("=")
        if equals:
            values = [w for w in words if w.partition("=")[0] == key]
            if not values or values[-1] != arg:
                missing.append(arg)
        elif arg not in words:
            missing.append(arg)
    return missing


def permission_problems(fact: FileFact, executable: bool) -> list[str]:
    """Why a boot-time file would be ignored or unsafe (empty: none)."""
    found = []
    if fact.kind != "file":
        found.append(f"is a {fact.kind}, not a file")
        return found
    bits = fact.mode_bits
    if executable and bits is not None and not bits & 0o100:
        found.append(f"is not executable (mode {fact.mode})")
    if fact.uid is not None and fact.uid != 0:
        found.append(f"is owned by uid {fact.uid}, not root")
    if bits is not None and bits & 0o002:
        found.append(f"is world-writable (mode {fact.mode})")
    elif bits is not None and bits & 0o020:
        found.append(f"is group-writable (mode {fact.mode})")
    return found


def loads_toa(text: str | None) -> bool:
    """True when a shell text runs ``modprobe toa`` on a line that is not a comment."""
    for line in (text or "").splitlines():
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
        if MODPROBE_TOA.search(code):
            return True
    return False


def cron_problems(text: str) -> tuple[list[str], int]:
    """Syntax problems of an ``/etc/cron.d`` file and the number of jobs loading toa."""
    problems = []
    jobs = 0
    if text and not text.endswith("\n"):
        problems.append("the last line has no newline, so cron ignores it")
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ENV_LINE.match(stripped):
            continue
        words = stripped.split()
        times = 1 if words[0] in CRON_SPECIAL else 5
        if len(words) < times + 2 or not all(CRON_FIELD.match(w) for w in words[:times] if times == 5):
            problems.append(f"line {number} is not 'MIN HOUR DAY MONTH WEEKDAY USER COMMAND'")
            continue
        command = stripped.split(None, times + 1)[-1]
        if re.search(r"(?<!\\)%", command):
            problems.append(f"line {number} has an unescaped % (cron turns it into a newline)")
        if MODPROBE_TOA.search(command):
            jobs += 1
    return problems, jobs


# --- the checks -------------------------------------------------------------------


def check_running_release(facts: Facts, expect: Expectation) -> Result:
    running = facts.release or ""
    toa = toa_release(facts, expect)
    if toa is None:
        return failed(
            f"running {running}, and no TOA release is known (no build in the work directory; "
            f"{running} does not end with {expect.extraversion})",
            "pass --release with the release 'invoke build' printed, or --workdir of that build",
        )
    if running == toa:
        return passed(f"running {running}, the TOA release{release_origin(expect)}")
    return failed(
        f"running {running}, not the TOA release {toa}: {why_not_toa(facts, toa)}", fix_not_toa(facts, toa)
    )


def why_not_toa(facts: Facts, toa: str) -> str:
    grub = facts.grub
    if grub is None or not grub.found:
        return "grub.conf is not known, so it cannot tell why"
    toa_index = grub.index_for_release(toa)
    if toa_index is None:
        return f"{grub.path} has no entry for {toa}"
    if grub.default_index == toa_index:
        return (
            f"grub's default is the TOA {entry_name(grub, toa_index)}, so this boot fell back "
            "(the TOA kernel failed to boot, fallback= took over) or another entry was picked at the console"
        )
    if grub.default_index is None:
        return f"default={grub.default}: grub.conf does not say which entry boots"
    return (
        f"grub's default={grub.default} boots {entry_name(grub, grub.default_index)}, "
        f"not the TOA {entry_name(grub, toa_index)}: the default was never switched"
    )


def fix_not_toa(facts: Facts, toa: str) -> str:
    grub = facts.grub
    if grub is None or not grub.found:
        return "check grub.conf's default= and the console log of the last boot"
    toa_index = grub.index_for_release(toa)
    if toa_index is None:
        return "run 'invoke install-kernel' (it adds the TOA entry), then reboot"
    if grub.default_index == toa_index:
        return (
            "read the console or /var/log/messages of the failed boot (panic? missing initramfs?) and "
            "reboot once more; if it keeps falling back, 'invoke rollback'"
        )
    return f"run 'invoke grub' (sets default={toa_index}), then reboot"


def check_kernel_args(facts: Facts, expect: Expectation) -> Result:
    missing = missing_args(facts.cmdline or "", expect.kernel_args)
    wanted = " ".join(expect.kernel_args)
    if not missing:
        return passed(f"{wanted} is on the running command line")
    grub = facts.grub
    toa = toa_release(facts, expect)
    entry = grub.entry(grub.index_for_release(toa)) if grub is not None and toa else None
    if entry is not None and not missing_args(entry.kernel_args, missing):
        fix = f"grub.conf's TOA entry already has {' '.join(missing)}: reboot into it"
    else:
        fix = f"run 'invoke grub' (adds {' '.join(missing)} to the TOA entry), then reboot"
    return failed(f"{' '.join(missing)} is not on the running command line (/proc/cmdline)", fix)


def check_grub_default(facts: Facts, expect: Expectation) -> Result:
    grub = facts.grub
    assert grub is not None
    if not grub.found:
        return failed(
            f"no grub.conf: {grub.problem or grub.path}", "check --root; CentOS 6 keeps it in /boot/grub"
        )
    if grub.problem:
        return failed(f"{grub.path}: {grub.problem}", f"fix {grub.path} (its backups sit beside it)")
    toa = toa_release(facts, expect)
    if toa is None:
        return warned("no TOA release is known, so no entry can be called the TOA entry", "pass --release")
    toa_index = grub.index_for_release(toa)
    if toa_index is None:
        return failed(f"{grub.path} has no entry for {toa}", "run 'invoke install-kernel', then reboot")
    if grub.default_index is None:
        return warned(
            f"default={grub.default}: GRUB boots the entry it saved last, which grub.conf does not show",
            f"run 'invoke grub' (sets default={toa_index})",
        )
    if grub.default_index != toa_index:
        entries = len(grub.entries)
        if grub.default_index >= entries:
            reason = f"default={grub.default_index} but {grub.path} has only {entries} entries"
        else:
            reason = f"default={grub.default_index} boots {entry_name(grub, grub.default_index)}"
        fix = f"run 'invoke grub' (sets default={toa_index})"
        if grub.default == "saved":  # a trial boot: GRUB already wrote the old entry back
            fix = f"a trial boot: 'invoke verify --commit' keeps the TOA kernel (sets default={toa_index})"
        return failed(f"{reason}, not the TOA {entry_name(grub, toa_index)}: the next reboot leaves TOA", fix)
    entry = grub.entry(toa_index)
    missing = missing_args(entry.kernel_args if entry else "", expect.kernel_args)
    if missing:
        return warned(
            f"default={toa_index} is the TOA entry but it lacks {' '.join(missing)}",
            "run 'invoke grub' (adds the kernel arguments)",
        )
    return passed(f"default={toa_index} boots the TOA {entry_name(grub, toa_index)}")


def check_ipv6(facts: Facts, expect: Expectation) -> Result:
    ipv6 = facts.ipv6
    assert ipv6 is not None
    why = (
        "the 2.6.32 toa module hooks IPv6 TCP functions (inet6_stream_ops, ipv6_specific) that only a "
        "kernel with CONFIG_IPV6=y has"
    )
    kernel = f" {ipv6.release}" if ipv6.release else ""
    if ipv6.mode == "builtin":
        return passed(f"IPv6 is built into{kernel or ' the kernel'} ({ipv6.source})")
    if ipv6.mode == "module":
        return failed(
            f"IPv6 is a module in{kernel or ' the kernel'} ({ipv6.source}): {why}",
            "rebuild with CONFIG_IPV6=y ('invoke build' sets it), reinstall and reboot",
        )
    if ipv6.mode == "absent":
        return failed(f"IPv6 is not configured ({ipv6.source}): {why}", "rebuild with CONFIG_IPV6=y")
    return warned(
        f"cannot tell whether IPv6 is built in ({ipv6.source})",
        "look at 'grep CONFIG_IPV6= /boot/config-$(uname -r)': it must say =y",
    )


def check_module_installed(facts: Facts, expect: Expectation) -> Result:
    module = facts.module
    assert module is not None
    release = module.release
    other = ""
    toa = toa_release(facts, expect)
    if toa and release != toa:
        other = f" (not the TOA release {toa})"
    if not module.files:
        fix = "run 'invoke install-kernel' (make modules_install) and 'depmod -a'"
        if other:
            fix = f"boot the TOA release {toa}: the module belongs to it"
        return failed(f"no toa.ko under /lib/modules/{release}{other}", fix)
    if module.in_modules_dep is None:
        return failed(
            f"{module.modules_dep} is missing: modprobe cannot find toa", f"run 'depmod -a {release}'"
        )
    if not module.in_modules_dep:
        return failed(
            f"{module.files[0]} exists but {module.modules_dep} does not list it: modprobe toa fails",
            f"run 'depmod -a {release}'",
        )
    return passed(f"{module.files[0]}, listed in modules.dep")


def check_module_loaded(facts: Facts, expect: Expectation) -> Result:
    if "toa" in (facts.loaded_modules or []):
        return passed("toa is loaded (/proc/modules)")
    toa = toa_release(facts, expect)
    cause = "modprobe toa fails with 'Module toa not found' when modules.dep lacks it"
    if toa and facts.release and facts.release != toa:
        cause = (
            f"the running kernel {facts.release} is not the TOA release, so there is no toa module to load"
        )
    return failed(
        "toa is not loaded (not in /proc/modules)",
        f"run 'modprobe toa', read 'dmesg | grep TOA'; {cause}; 'Unknown symbol' means IPv6 is a module",
    )


def check_toa_stats(facts: Facts, expect: Expectation) -> Result:
    stats = facts.toa_stats
    assert stats is not None
    if not stats.present:
        return failed(
            "/proc/net/toa_stats is missing: the toa module is not loaded or failed to start",
            "run 'modprobe toa' and read 'dmesg | grep TOA'",
        )
    if stats.problem:
        return warned(f"/proc/net/toa_stats: {stats.problem}", "read it with 'cat /proc/net/toa_stats'")
    shown = " ".join(f"{name}={value}" for name, value in stats.counters.items())
    if not stats.counters.get("syn_recv_sock_toa"):
        shown += "; no TOA option seen yet (send traffic through the balancer, e.g. to 'invoke serve')"
    return passed(shown)


def check_kernel_log(facts: Facts, expect: Expectation) -> Result:
    log = facts.kernel_log
    assert log is not None
    where = ", ".join(log.sources) or "no log"
    events = [line for line in log.lines if LOADED_LINE in line or UNLOADED_LINE in line]
    if events and LOADED_LINE in events[-1]:
        if facts.loaded_modules is not None and "toa" not in facts.loaded_modules:
            return warned(
                f"'{LOADED_LINE}' in {where}, but toa is not loaded now (unloaded since, or an earlier boot)",
                "see the module-loaded check",
            )
        return passed(f"'{LOADED_LINE}' in {where}")
    if events:
        return warned(f"the last TOA event in {where} is '{UNLOADED_LINE}'", "run 'modprobe toa'")
    if not log.sources:
        return warned(f"no kernel log to read: {log.problem}", "run 'dmesg | grep TOA' by hand")
    return warned(
        f"no '{LOADED_LINE}' in {where} (the module rate-limits it, so absence alone proves nothing)",
        "rely on the module and toa_stats checks; 'dmesg | grep TOA' shows what the module said",
    )


def check_startup(facts: Facts, expect: Expectation) -> Result:
    hooks = facts.boot_hooks
    assert hooks is not None
    script, rc_local = hooks.modules_script, hooks.rc_local
    if script is None and rc_local is None:
        return not_known("the facts hold neither the startup script nor rc.local")
    if script is not None and script.exists:
        problems = permission_problems(script, executable=True)
        if not loads_toa(script.text):
            problems.append("does not run 'modprobe toa'")
        if problems:
            return failed(
                f"{MODULES_SCRIPT} " + "; ".join(problems),
                f"chown root:root {MODULES_SCRIPT}; chmod 755 {MODULES_SCRIPT} (or 'invoke install-kernel')",
            )
        return passed(f"{MODULES_SCRIPT} loads toa at boot (mode {script.mode}, root)")
    if rc_local is not None and rc_local.exists and loads_toa(rc_local.text):
        problems = permission_problems(rc_local, executable=True)
        if problems:
            return failed(
                f"{RC_LOCAL} " + "; ".join(problems), f"chown root:root {RC_LOCAL}; chmod 755 {RC_LOCAL}"
            )
        return passed(f"{RC_LOCAL} loads toa at boot")
    return failed(
        f"nothing loads toa at boot: no {MODULES_SCRIPT} and no 'modprobe toa' in {RC_LOCAL}",
        "run 'invoke install-kernel' (it writes the startup script)",
    )


def check_cron(facts: Facts, expect: Expectation) -> Result:
    hooks = facts.boot_hooks
    assert hooks is not None and hooks.cron is not None
    cron = hooks.cron
    if not cron.exists:
        return failed(
            f"no {CRON_FILE}: nothing reloads toa if it is unloaded",
            "run 'invoke install-kernel' (it writes it)",
        )
    problems = permission_problems(cron, executable=False)
    if problems:
        return failed(
            f"{CRON_FILE} " + "; ".join(problems) + ": cron refuses it, and a writable root job is a hole",
            f"chown root:root {CRON_FILE}; chmod 644 {CRON_FILE}",
        )
    syntax, jobs = cron_problems(cron.text or "")
    if syntax:
        return failed(f"{CRON_FILE}: " + "; ".join(syntax), "run 'invoke install-kernel' to rewrite it")
    if not jobs:
        return failed(f"{CRON_FILE} has no job that runs 'modprobe toa'", "run 'invoke install-kernel'")
    return passed(f"{CRON_FILE} (mode {cron.mode}, root) has {jobs} job(s) loading toa")


# --- registry, sets and running -------------------------------------------------------

KERNEL_CHECKS: tuple[Check, ...] = (
    Check("running-release", "running kernel is the TOA release", ("release",), check_running_release),
    Check("nohz-off", "nohz=off on the kernel command line", ("cmdline",), check_kernel_args),
    Check("ipv6-builtin", "IPv6 built into the kernel", ("ipv6",), check_ipv6),
    Check("module-installed", "toa module installed and in modules.dep", ("module",), check_module_installed),
    Check("module-loaded", "toa module loaded", ("loaded_modules",), check_module_loaded),
    Check("toa-stats", "/proc/net/toa_stats and its counters", ("toa_stats",), check_toa_stats),
    Check("kernel-log", "kernel log says 'TOA: toa loaded'", ("kernel_log",), check_kernel_log),
    Check("startup", "toa loaded at boot", ("boot_hooks",), check_startup),
    Check("cron", "cron job keeps toa loaded", ("boot_hooks.cron",), check_cron),
    Check("grub-default", "grub.conf default is the TOA entry", ("grub",), check_grub_default),
)

REGISTRY: dict[str, Check] = {check.name: check for check in KERNEL_CHECKS}

CHECK_SETS: dict[str, tuple[str, ...]] = {
    "kernel": tuple(check.name for check in KERNEL_CHECKS),
    "boot": ("running-release", "nohz-off", "grub-default"),
    "runtime": ("module-installed", "module-loaded", "toa-stats", "kernel-log"),
    "hooks": ("startup", "cron"),
}
CHECK_SETS["all"] = CHECK_SETS["kernel"]
DEFAULT_SET = "kernel"


def select(spec: str | Sequence[str] | None = None) -> list[Check]:
    """Checks named by ``spec``: set and check names, comma-separated (default: all kernel checks)."""
    if spec is None or spec == "" or spec == []:
        names: Sequence[str] = [DEFAULT_SET]
    elif isinstance(spec, str):
        names = [word.strip() for word in spec.replace(" ", ",").split(",") if word.strip()]
    else:
        names = list(spec)
    chosen: list[str] = []
    for name in names:
        if name in CHECK_SETS:
            chosen.extend(CHECK_SETS[name])
        elif name in REGISTRY:
            chosen.append(name)
        else:
            raise UserError(
                f"--checks: unknown check or check set {name!r}",
                f"use sets {', '.join(CHECK_SETS)} or checks {', '.join(REGISTRY)}",
            )
    return [REGISTRY[name] for name in dict.fromkeys(chosen)]


def known(facts: Facts, dotted: str) -> bool:
    """True when the (dotted) field of ``facts`` is not None."""
    value: Any = facts
    for part in dotted.split("."):
        value = getattr(value, part, None)
        if value is None:
            return False
    return True


def run_checks(checks: Iterable[Check], facts: Facts, expect: Expectation) -> list[Result]:
    """Judge ``facts`` with each check; ``n/a`` for checks whose facts are unknown."""
    results = []
    for check in checks:
        unknown = [need for need in check.needs if not known(facts, need)]
        if unknown:
            result = not_known("not in the facts: " + ", ".join(unknown))
        else:
            result = check.judge(facts, expect)
        results.append(replace(result, name=check.name, title=check.title))
    return results


def overall(results: Iterable[Result]) -> Status:
    """FAIL if any check failed, else WARN if any warned, else PASS (n/a when nothing was judged)."""
    statuses = {result.status for result in results}
    for status in (Status.FAIL, Status.WARN, Status.PASS):
        if status in statuses:
            return status
    return Status.NA
