"""Typed settings read from invoke's config, validated in one place.

Defaults live in the project's ``invoke.yaml`` under ``toa:`` (written as text, so
that invoke hands ``INVOKE_TOA_*`` environment variables over as text instead of
casting them itself); invoke layers the environment and ``-f FILE`` over them,
and task flags override the result (``Settings.from_config(config, url=...)``).

Every value, whatever its origin, goes through the checker of its setting
(``CHECKERS``): a bad one is a ``SettingError`` (exit code 2) whose message names
the setting as the user gave it (``--option-code``, ``INVOKE_TOA_OPTION_CODE`` or
``toa.option_code``), the value, and what it should be. The same checkers
validate flags that are not settings (``--release``, ``--branch``, ``--port``).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import KERNEL_VERSION, RELEASE_RE, UTS_LEN
from toa_kernel.core.sshtarget import HOST_FIX, check_user, split_host

VENDOR_URL = "http://kb.linuxvirtualserver.org/images/3/34/Linux-2.6.32-220.23.1.el6.x86_64.rs.src.tar.gz"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
EXTRAVERSION_RE = re.compile(r"^[A-Za-z0-9._+~-]*$")
INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")
# One kernel argument that may go on a grub.conf kernel line.
KERNEL_ARG_RE = re.compile(r"^[A-Za-z0-9_.,:/@+-]+(=[A-Za-z0-9_.,:/@+=-]*)?$")
ENV_PREFIX = "INVOKE_TOA_"
# Flags whose name is not the setting's name with dashes.
FLAG_NAMES = {
    "mirrors": "--mirror",
    "lab_timeout": "--timeout",
    "trial_panic": "--panic-seconds",
    "ssh_sudo": "--sudo",
    "ssh_known_hosts": "--known-hosts",
    "ssh_accept_new_host_key": "--accept-new-host-key",
    "ssh_legacy": "--legacy-ssh",
    "build_host": "--host",
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
MAX_BRANCH = 100
EXTRAVERSION_MAX = UTS_LEN - len(KERNEL_VERSION)
CONFIG_BASES = ("tree", "lab")


@dataclass(frozen=True)
class Settings:
    """Everything a task may need, validated once."""

    url: str = VENDOR_URL
    sha256: str = ""
    mirrors: tuple[str, ...] = ()
    workdir: Path = Path("work")
    root: Path = Path("/")
    extraversion: str = "-toa"
    option_code: int = 254
    jobs: int = 0
    min_free_gib: float = 5.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    # Downloads: the most seconds one may take in all (retries included) and its largest size.
    download_deadline: float = 7200.0
    max_download_gib: float = 2.0
    # Declarative inputs of the pipeline, relative paths taken from project_dir.
    project_dir: Path = Path(".")
    patches_dir: Path = Path("patches")
    configs_dir: Path = Path("configs")
    grub_dir: Path = Path("grub")
    ccache: bool = False
    # Kernel build: the .config to start from, "tree" (the tree's own) or "lab".
    config_base: str = "tree"
    # install-kernel: extra kernel arguments (besides grub/'s), startup style.
    kernel_args: str = ""
    startup: str = "modules"
    # install-kernel --trial: panic=N on the trial entry (a panic reboots after N seconds).
    trial_panic: int = 10
    # Boot lab: seconds one QEMU boot may take.
    lab_timeout: float = 60.0
    # Out-of-tree module (kernels 3.0+): tarball URL template and branch.
    module_url: str = "https://github.com/huaweicloud/elb-toa/archive/refs/heads/{branch}.tar.gz"
    module_branch: str = "master"
    # The system a task acts on: empty host = this machine; else [USER@]HOST[:PORT] over SSH.
    host: str = ""
    ssh_user: str = ""
    ssh_port: int = 0
    ssh_key: str = ""
    ssh_sudo: bool = False
    ssh_known_hosts: Path = Path("~/.config/toa-kernel/known_hosts")
    ssh_accept_new_host_key: bool = False
    ssh_connect_timeout: float = 10.0
    ssh_legacy: bool = False
    # invoke build --host: the machine that compiles the prepared tree, over SSH (empty: here).
    build_host: str = ""
    # Fleet rollouts: the inventory file, how a host is rebooted (a command run on it,
    # or a hook run here instead), and how long a host may take to come back.
    inventory: str = ""
    reboot_command: str = "reboot"
    reboot_hook: str = ""
    boot_timeout: float = 900.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, **overrides: Any) -> Settings:
        """Read the ``toa`` section of an invoke config, then apply non-None overrides (flags)."""
        section: Any = {}
        if config is not None:
            section = config.get("toa", {}) or {}
        if not isinstance(section, Mapping):
            raise UserError(
                f"the 'toa' section of the configuration is {type(section).__name__}, not a mapping",
                "write it as 'toa:' followed by indented 'key: value' lines (see invoke.yaml)",
            )
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        names = {f.name for f in fields(cls)}
        for key, value in dict(section).items():
            if key in names:
                values[key], origins[key] = value, "config"
        for key, value in overrides.items():
            if value is not None:
                if key not in names:
                    raise TypeError(f"unknown setting {key!r}")
                values[key], origins[key] = value, "flag"
        return cls(**coerce(values, origins)).checked_together(origins)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (None means unchanged), checked like flags."""
        changed = {k: v for k, v in changes.items() if v is not None}
        updated = replace(self, **coerce(changed, dict.fromkeys(changed, "flag")))
        return updated.checked_together(dict.fromkeys(changed, "flag"))

    def checked_together(self, origins: Mapping[str, str]) -> Settings:
        """Checks that need two settings: ``root`` is a directory here only without ``host`` and
        ``build_host`` (with one, it is a path on that server, checked when the connection opens)."""
        name = setting_name("root", origins.get("root", "config"))
        if self.host or self.build_host:
            if not self.root.is_absolute():
                raise SettingError(
                    name, self.root, "is not an absolute path", "give the root's path on the server, e.g. /"
                )
            return self
        root_value(self.root, name)
        return self

    @property
    def effective_jobs(self) -> int:
        """``jobs`` with 0 meaning one per CPU."""
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    @property
    def max_download_bytes(self) -> int:
        return int(self.max_download_gib * 1024**3)

    def input_dir(self, name: str) -> Path:
        """``patches_dir``/``configs_dir``/``grub_dir`` resolved against the project."""
        path = Path(getattr(self, f"{name}_dir"))
        return path if path.is_absolute() else self.project_dir / path

    @property
    def urls(self) -> list[str]:
        """The source URL followed by the mirrors, in the order they are tried."""
        return [self.url, *[m for m in self.mirrors if m != self.url]]

    def validated(self) -> Settings:
        """Check every value (for settings built directly rather than read from a config)."""
        for item in fields(self):
            checker_for(item.name)(getattr(self, item.name), setting_name(item.name, "config"))
        return self


# --- naming a setting the way the user gave it ------------------------------------------


def setting_name(key: str, origin: str = "config") -> str:
    """``--flag`` for a flag, the environment variable when one is set, else ``toa.key``."""
    if origin == "flag":
        return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
    env = ENV_PREFIX + key.upper()
    if env in os.environ:
        return f"{env} (toa.{key})"
    return f"toa.{key} (invoke.yaml, -f FILE or {env})"


class SettingError(UserError):
    """A bad value for a setting or flag: names it, shows the value, says what it should be."""

    def __init__(self, name: str, value: Any, problem: str, should: str) -> None:
        super().__init__(f"{name} {shown(value)}: {problem}", should)
        self.setting = name


def shown(value: Any) -> str:
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def coerce(values: dict[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    """Convert config/flag values (often text) into the field types, checking each."""
    return {
        key: checker_for(key)(value, setting_name(key, origins.get(key, "config")))
        for key, value in values.items()
    }


def checker_for(key: str) -> Callable[[Any, str], Any]:
    """The setting's checker; a field that has none in ``CHECKERS`` is checked by its type."""
    if key in CHECKERS:
        return CHECKERS[key]
    return type_checker(next(item.default for item in fields(Settings) if item.name == key))


def type_checker(default: Any) -> Callable[[Any, str], Any]:
    """A checker by the type of a setting's default: numbers finite, text one line."""
    if isinstance(default, bool):
        return flag
    if isinstance(default, int):
        return whole(-(2**31), 2**31, "use a whole number")
    if isinstance(default, float):
        return decimal(-1e12, 1e12, "use a finite number", above_low=False)
    if isinstance(default, Path):
        return path_value
    if isinstance(default, tuple):
        return lambda value, name: tuple(
            text_value(item, name, "give values separated by spaces or commas")
            for item in (value.replace(",", " ").split() if isinstance(value, str) else value or ())
        )
    return lambda value, name: text_value(value, name, "give a single value")


# --- checkers: (value, name) -> the value in its field's type ---------------------------


def text_value(value: Any, name: str, should: str) -> str:
    """A scalar as text (stripped); lists, mappings and control characters are refused."""
    if isinstance(value, (list, tuple, dict, set)) or value is None:
        raise SettingError(name, value, "is not a single value", should)
    text = str(value).strip()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise SettingError(name, value, "holds control characters (a newline, a tab, NUL)", should)
    return text


def number(
    value: Any,
    name: str,
    *,
    whole: bool,
    low: float,
    high: float,
    should: str,
    above_low: bool = False,
) -> Any:
    """An int (``whole``) or a finite float within ``low``..``high``."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool):
        raise SettingError(name, value, f"is true/false, not {kind}", should)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed: Any = value
    else:
        text = text_value(value, name, should)
        try:
            if whole:
                if not INTEGER_RE.match(text):
                    raise ValueError(text)
                parsed = int(text)
            else:
                parsed = float(text)
        except ValueError:
            raise SettingError(name, value, f"is not {kind}", should) from None
    if whole and isinstance(parsed, float):
        if not (math.isfinite(parsed) and parsed.is_integer()):
            raise SettingError(name, value, "is not a whole number", should)
        parsed = int(parsed)
    if not math.isfinite(parsed):
        raise SettingError(name, value, "is not a finite number (NaN and infinities are refused)", should)
    if parsed < low or parsed > high or (above_low and parsed == low):
        raise SettingError(name, value, "is out of range", should)
    return parsed if whole else float(parsed)


def whole(low: int, high: int, should: str) -> Callable[[Any, str], int]:
    return lambda value, name: number(value, name, whole=True, low=low, high=high, should=should)


def decimal(low: float, high: float, should: str, above_low: bool = True) -> Callable[[Any, str], float]:
    return lambda value, name: number(
        value, name, whole=False, low=low, high=high, should=should, above_low=above_low
    )


def flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = text_value(value, name, "use true or false").lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise SettingError(name, value, "is not true or false", "use true/false (also: yes/no, on/off, 1/0)")


def path_value(value: Any, name: str) -> Path:
    text = str(value) if isinstance(value, Path) else text_value(value, name, "give a directory path")
    if not text or "\0" in text:
        raise SettingError(name, value, "is not a path", "give a directory path")
    return Path(text).expanduser()


def directory_to_create(value: Any, name: str) -> Path:
    """A directory that may not exist yet; what exists of it must be directories."""
    path = path_value(value, name)
    existing = path
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is" if existing == path else f"lies under {existing}, which is"
        raise SettingError(
            name,
            value,
            f"{where} a file, not a directory",
            "give a directory (it is created when missing), e.g. work",
        )
    return path


def root_value(value: Any, name: str) -> Path:
    """The root prefix: an existing directory."""
    path = path_value(value, name)
    if not path.is_dir():
        problem = "does not exist" if not path.exists() else "is not a directory"
        raise SettingError(name, value, problem, "give the directory of the system to act on (default /)")
    return path


def kernel_args_value(value: Any, name: str) -> str:
    """Extra kernel arguments: plain words or key=value, separated by spaces or commas."""
    should = "use arguments like nohz=off or console=ttyS0,115200 (no quotes, spaces or #), space-separated"
    text = text_value(value, name, should)
    bad = next((word for word in text.replace(",", " ").split() if not KERNEL_ARG_RE.match(word)), None)
    if bad is not None:
        raise SettingError(name, value, f"{bad!r} is not a plain word or key=value", should)
    return text


def url_value(value: Any, name: str) -> str:
    url = text_value(value, name, "give a full http://, https:// or file:// URL")
    check_url(url, name)
    return url


def check_url(url: str, name: str = "--url") -> None:
    """Accept http, https and file URLs only."""
    try:
        parsed = urlparse(url)
    except ValueError as exc:  # an unclosed [IPv6 address
        raise SettingError(
            name, url, f"is not a URL ({exc})", "pass a full http(s):// or file:// URL"
        ) from None
    if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.netloc):
        raise SettingError(
            name,
            url,
            "is not an http(s):// or file:// URL",
            "pass a full URL, or --tarball PATH for a file already on this machine",
        )
    try:
        parsed.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise SettingError(name, url, "has a bad port number", "use host:PORT with PORT 1..65535") from None


def mirrors_value(value: Any, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise SettingError(name, value, "is not a list of URLs", "separate mirror URLs with spaces or commas")
    return tuple(url_value(item, name) for item in items)


def sha256_value(value: Any, name: str) -> str:
    pin = text_value(value, name, "pass the digest printed by 'sha256sum FILE'").lower()
    if pin and not SHA256_RE.match(pin):
        raise SettingError(
            name,
            value,
            "is not 64 hexadecimal digits",
            "pass the digest printed by 'sha256sum FILE' (or leave the pin empty)",
        )
    return pin


def extraversion_value(value: Any, name: str) -> str:
    should = f"use at most {EXTRAVERSION_MAX} letters, digits and . _ + ~ -, e.g. -toa"
    text = text_value(value, name, should)
    if not EXTRAVERSION_RE.match(text):
        raise SettingError(name, value, "has characters a kernel release cannot hold", should)
    if len(text) > EXTRAVERSION_MAX:
        raise SettingError(
            name,
            value,
            f"is {len(text)} characters long: the release {KERNEL_VERSION}{text[:8]}... would not fit in "
            f"the kernel's {UTS_LEN}-byte UTS_RELEASE",
            should,
        )
    return text


def startup_value(value: Any, name: str) -> str:
    should = "use 'modules' (/etc/sysconfig/modules/toa.modules) or 'rc.local'"
    text = text_value(value, name, should)
    if text not in ("modules", "rc.local"):
        raise SettingError(name, value, "is not a known startup style", should)
    return text


def config_base_value(value: Any, name: str) -> str:
    should = "use 'tree' (the tree's own .config, for servers) or 'lab' (a small config for the boot lab)"
    text = text_value(value, name, should).lower()
    if text not in CONFIG_BASES:
        raise SettingError(name, value, "is not a known config base", should)
    return text


def template_problem(template: str, field: str) -> str | None:
    """Why ``template`` is not text with plain ``{field}`` placeholders only (None: it is)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    for _, name, spec, conversion in parts:
        if name is not None and (name != field or spec or conversion):
            shown_field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return f"has the placeholder {{{shown_field}}}; only a plain {{{field}}} is filled in"
    return None


def module_url_value(value: Any, name: str) -> str:
    should = "use {branch} as the only placeholder, or none"
    template = text_value(value, name, should)
    problem = template_problem(template, "branch")
    if problem:
        raise SettingError(name, value, problem, should)
    check_url(template.format(branch="master"), name)
    return template


def ref_name_problem(ref: str) -> str | None:
    """Why ``ref`` is not a branch name by ``git check-ref-format --branch`` (None: it is)."""
    if not ref:
        return "is empty"
    if ref.startswith("-"):
        return "starts with '-'"
    if ref == "@":
        return "is '@'"
    bad = next((ch for ch in ref if ord(ch) < 0x20 or ord(ch) == 0x7F or ch in " ~^:?*[\\"), None)
    if bad is not None:
        return f"contains {bad!r}"
    for forbidden in ("..", "@{", "//"):
        if forbidden in ref:
            return f"contains {forbidden!r}"
    if ref.startswith("/") or ref.endswith("/"):
        return "starts or ends with '/'"
    if ref.endswith("."):
        return "ends with '.'"
    for part in ref.split("/"):
        if part.startswith("."):
            return f"has a part starting with '.' ({part!r})"
        if part.endswith(".lock"):
            return f"has a part ending in '.lock' ({part!r})"
    if len(ref) > MAX_BRANCH:
        return f"is longer than {MAX_BRANCH} characters"
    return None


def check_branch(value: Any, name: str = "--branch") -> str:
    """A git branch name (the rules of ``git check-ref-format``); SettingError otherwise."""
    should = "give a branch name of the module's repository, e.g. master or IPv6"
    ref = text_value(value, name, should)
    problem = ref_name_problem(ref)
    if problem:
        raise SettingError(name, value, f"is not a git branch name: it {problem}", should)
    return ref


def input_path(value: str | None, name: str, kind: str = "file") -> Path | None:
    """A flag naming an existing input: a regular ``file`` or a ``directory`` (None stays None)."""
    if value is None or value == "":
        return None
    path = path_value(value, name)
    wanted = {"file": path.is_file, "directory": path.is_dir}[kind]
    if not wanted():
        if not path.exists():
            problem = "does not exist"
        elif path.is_dir():
            problem = "is a directory, not a file"
        elif kind == "directory":
            problem = "is not a directory"
        else:
            problem = "is not a regular file (a device, a FIFO or a socket)"
        raise SettingError(name, value, problem, f"give the path of an existing {kind}")
    return path


def check_release(value: Any, name: str = "--release") -> str:
    """A kernel release as ``uname -r`` prints it: safe in a file name, a shell line, grub.conf."""
    should = "give the release as 'uname -r' prints it, e.g. 2.6.32-toa (letters, digits and . _ + ~ -)"
    if not isinstance(value, str):
        raise SettingError(name, value, "is not a kernel release name", should)
    if not RELEASE_RE.fullmatch(value):
        raise SettingError(name, value, "is not a kernel release name", should)
    if len(value) > UTS_LEN:
        raise SettingError(name, value, f"is longer than the kernel's {UTS_LEN}-byte release field", should)
    return value


def parse_int(value: Any, name: str, low: int, high: int, should: str) -> int:
    """A whole-number flag that is not a setting (``--port``, ``--count``)."""
    return int(number(value, name, whole=True, low=low, high=high, should=should))


def parse_float(value: Any, name: str, low: float, high: float, should: str) -> float:
    """A number flag that is not a setting (``--timeout`` of serve)."""
    return float(number(value, name, whole=False, low=low, high=high, should=should))


def host_value(value: Any, name: str) -> str:
    """``[USER@]HOST[:PORT]`` of the server to drive over SSH (empty: this machine)."""
    text = text_value(value, name, HOST_FIX)
    if text:
        try:
            split_host(text)
        except UserError as exc:
            raise SettingError(name, value, exc.message, exc.fix or HOST_FIX) from None
    return text


def ssh_user_value(value: Any, name: str) -> str:
    """A login name (empty: the user running the tool)."""
    text = text_value(value, name, "use a login name such as root or admin")
    if text:
        try:
            check_user(text, name)
        except UserError as exc:
            raise SettingError(name, value, "is not a valid user name", exc.fix) from None
    return text


def ssh_port_value(value: Any, name: str) -> int:
    """A TCP port; empty or 0 means the one ``host`` names, else 22."""
    if isinstance(value, str) and not value.strip():
        return 0
    return whole(0, 65535, "use a TCP port from 1 to 65535 (0 or empty: the host's, else 22)")(value, name)


def command_value(value: Any, name: str, required: bool = True) -> str:
    """A command line (words split like a shell's, no shell syntax needed)."""
    should = "give a command and its arguments, e.g. 'reboot' or 'shutdown -r now'"
    text = text_value(value, name, should)
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise SettingError(name, value, f"cannot be split into words ({exc})", should) from None
    if required and not words:
        raise SettingError(name, value, "is empty", should)
    return text


CHECKERS: dict[str, Callable[[Any, str], Any]] = {
    "url": url_value,
    "sha256": sha256_value,
    "mirrors": mirrors_value,
    "workdir": directory_to_create,
    "root": path_value,  # a directory here, or with ``host`` on that server (checked_together)
    "extraversion": extraversion_value,
    "option_code": whole(
        1, 255, "use the TCP option kind your balancer sends, 1..255 (254 for Huawei Cloud ELB)"
    ),
    "jobs": whole(0, 1024, "use 0 (one per CPU) or a number of parallel jobs up to 1024"),
    "min_free_gib": decimal(0, 1e9, "use the free disk the build needs in GiB, e.g. 5", above_low=False),
    "connect_timeout": decimal(0, 3600, "use a number of seconds above 0, at most 3600, e.g. 15"),
    "read_timeout": decimal(0, 3600, "use a number of seconds above 0, at most 3600, e.g. 60"),
    "retries": whole(0, 100, "use a number of retries from 0 to 100, e.g. 5"),
    "backoff": decimal(0, 3600, "use a number of seconds from 0 to 3600, e.g. 1", above_low=False),
    "download_deadline": decimal(0, 7 * 86400, "use the seconds a download may take in all, e.g. 7200"),
    "max_download_gib": decimal(0, 1024, "use the largest download in GiB, above 0 and at most 1024, e.g. 2"),
    "project_dir": path_value,
    "patches_dir": path_value,
    "configs_dir": path_value,
    "grub_dir": path_value,
    "ccache": flag,
    "kernel_args": kernel_args_value,
    "startup": startup_value,
    "config_base": config_base_value,
    "lab_timeout": decimal(0, 86400, "use a number of seconds above 0, at most 86400, e.g. 60"),
    "module_url": module_url_value,
    "module_branch": check_branch,
    "host": host_value,
    "build_host": host_value,
    "ssh_user": ssh_user_value,
    "ssh_port": ssh_port_value,
    "ssh_key": lambda value, name: text_value(value, name, "give the path of a private key file"),
    "ssh_sudo": flag,
    "ssh_known_hosts": path_value,
    "ssh_accept_new_host_key": flag,
    "ssh_connect_timeout": decimal(0, 3600, "use a number of seconds above 0, at most 3600, e.g. 10"),
    "ssh_legacy": flag,
    "trial_panic": whole(1, 3600, "use the seconds a panicking trial kernel waits to reboot, 1..3600"),
    "inventory": lambda value, name: text_value(value, name, "give the path of the inventory file"),
    "reboot_command": command_value,
    "reboot_hook": lambda value, name: command_value(value, name, required=False),
    "boot_timeout": decimal(0, 86400, "use the seconds a host may take to come back, above 0, e.g. 900"),
}
