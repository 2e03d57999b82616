"""Facts as a JSON document: ``--facts FILE`` in, ``--collect`` out.

Loading validates every field it reads and names the field in the error
(``facts field grub.entries[1].title must be a string, not 3``), so a malformed
snapshot stops with a clear message instead of a traceback deep inside a check.
Unknown fields are ignored; missing ones are "not known".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import atomic_write, read_bytes
from toa_kernel.core.layout import CRON_FILE, GRUB_CONF, MODULES_SCRIPT, RC_LOCAL
from toa_kernel.system.runtime import KernelLog
from toa_kernel.verify.facts import (
    IPV6_MODES,
    SCHEMA_VERSION,
    BootHooks,
    Facts,
    FileFact,
    GrubEntryFact,
    GrubFacts,
    Ipv6Facts,
    ModuleFacts,
    ToaStats,
    release_of_kernel,
)

HOOK_PATHS = {"modules_script": MODULES_SCRIPT, "rc_local": RC_LOCAL, "cron": CRON_FILE}


# A facts document is a few KiB, four levels deep: these bounds leave room and stop a
# hostile or mistaken file (``/dev/zero``, a 100,000-deep nesting) before it costs much.
MAX_FACTS_BYTES = 4 * 1024 * 1024
MAX_FACTS_DEPTH = 32
JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def load_facts(path: Path | str, what: str = "facts file") -> Facts:
    """Facts from a JSON file (``--facts FILE``); a clear error for a bad one, naming ``what``."""
    path = Path(path)
    try:
        data = read_bytes(path, limit=MAX_FACTS_BYTES)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist", "pass --facts with an existing file") from None
    except UserError as exc:
        raise UserError(f"cannot use {what} {path}: {exc.message}", FACTS_FIX) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text: {exc}", FACTS_FIX) from None
    return loads_facts(text, f"{what} {path}")


FACTS_FIX = "pass a JSON file written by 'invoke verify --collect > FILE'"


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    for match in JSON_TOKEN_RE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def loads_facts(text: str, name: str = "facts") -> Facts:
    if len(text) > MAX_FACTS_BYTES:
        raise UserError(f"{name} is larger than {MAX_FACTS_BYTES // (1024 * 1024)} MiB", FACTS_FIX)
    depth = nesting_depth(text)
    if depth > MAX_FACTS_DEPTH:
        raise UserError(
            f"{name} nests arrays and objects {depth} levels deep; a facts document has a few "
            f"(at most {MAX_FACTS_DEPTH} are read)",
            FACTS_FIX,
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            "write it with 'invoke verify --collect > FILE' or fix the JSON",
        ) from None
    return facts_from_dict(data, name)


def dump_facts(facts: Facts, path: Path) -> None:
    """Write facts as JSON, atomically."""
    atomic_write(path, facts.to_json())


class Reader:
    """Typed access to one JSON object with error messages naming the field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise bad_field(where, "an object", data)
        self.data = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kinds: tuple[type, ...], what: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) and bool not in kinds:
            raise bad_field(self.at(key), what, value)
        if not isinstance(value, kinds):
            raise bad_field(self.at(key), what, value)
        return value

    def text(self, key: str, default: str | None = None) -> Any:
        return self.get(key, (str,), "a string", default)

    def integer(self, key: str, default: int | None = None) -> Any:
        return self.get(key, (int,), "an integer", default)

    def flag(self, key: str, default: bool | None = None) -> Any:
        return self.get(key, (bool,), "true or false", default)

    def strings(self, key: str, default: list[str] | None = None) -> Any:
        value = self.get(key, (list,), "a list of strings", default)
        if value is not None and not all(isinstance(v, str) for v in value):
            raise bad_field(self.at(key), "a list of strings", value)
        return value

    def ints(self, key: str) -> list[int]:
        value = self.get(key, (list,), "a list of integers", [])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad_field(self.at(key), "a list of integers", value)
        return list(value)

    def child(self, key: str) -> Reader | None:
        value = self.data.get(key)
        return None if value is None else Reader(value, self.at(key))


def bad_field(where: str, what: str, value: Any) -> UserError:
    shown = json.dumps(value)[:60]
    subject = f"field {where}" if where else "the document"
    return UserError(
        f"{subject} must be {what}, not {shown}",
        "write facts with 'invoke verify --collect' or fix that field",
    )


def facts_from_dict(data: Any, name: str = "facts") -> Facts:
    """Validate and convert a facts document (unknown fields are ignored)."""
    try:
        return convert(data)
    except UserError as exc:
        raise UserError(f"{name}: {exc.message}", exc.fix) from None


def convert(data: Any) -> Facts:
    top = Reader(data, "")
    schema = top.integer("schema")
    if schema is None:
        raise UserError(
            "no 'schema' field: it is not a toa-kernel facts document",
            f"add \"schema\": {SCHEMA_VERSION} or write it with 'invoke verify --collect'",
        )
    if schema != SCHEMA_VERSION:
        raise UserError(
            f"facts schema {schema}; this version reads schema {SCHEMA_VERSION}",
            "collect the facts again with this version of toa-kernel",
        )
    return Facts(
        schema=schema,
        source=top.text("source", ""),
        collected_at=top.text("collected_at", ""),
        release=top.text("release"),
        cmdline=top.text("cmdline"),
        loaded_modules=top.strings("loaded_modules"),
        toa_stats=optional(top.child("toa_stats"), toa_stats_from),
        kernel_log=optional(top.child("kernel_log"), kernel_log_from),
        grub=optional(top.child("grub"), grub_from),
        module=optional(top.child("module"), module_from),
        ipv6=optional(top.child("ipv6"), ipv6_from),
        boot_hooks=optional(top.child("boot_hooks"), boot_hooks_from),
    )


def optional(reader: Reader | None, convert: Callable[[Reader], Any]) -> Any:
    return None if reader is None else convert(reader)


def toa_stats_from(r: Reader) -> ToaStats:
    counters = r.get("counters", (dict,), "an object of counters", {})
    for name, value in counters.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_field(f"{r.at('counters')}.{name}", "an integer", value)
    per_cpu = r.get("per_cpu", (dict,), "an object of lists", {})
    for name in per_cpu:
        Reader(per_cpu, r.at("per_cpu")).ints(name)
    present = r.flag("present")
    if present is None:
        present = bool(counters)
    return ToaStats(
        present=present,
        cpus=r.integer("cpus", 0),
        counters=dict(counters),
        per_cpu={k: list(v) for k, v in per_cpu.items()},
        problem=r.text("problem", ""),
    )


def kernel_log_from(r: Reader) -> KernelLog:
    return KernelLog(
        sources=r.strings("sources", []), lines=r.strings("lines", []), problem=r.text("problem", "")
    )


def grub_from(r: Reader) -> GrubFacts:
    default = r.get("default", (int, str), 'a number or "saved"')
    entries = []
    for i, item in enumerate(r.get("entries", (list,), "a list of entries", [])):
        e = Reader(item, f"{r.at('entries')}[{i}]")
        kernel = e.text("kernel", "")
        entries.append(
            GrubEntryFact(
                index=e.integer("index", i),
                title=e.text("title", ""),
                kernel=kernel,
                kernel_args=e.text("kernel_args", ""),
                initrd=e.text("initrd", ""),
                release=e.text("release") or release_of_kernel(kernel),
            )
        )
    default_index = r.integer("default_index")
    if default_index is None and "default_index" not in r.data:
        default_index = default if isinstance(default, int) else None
    return GrubFacts(
        path=r.text("path", GRUB_CONF),
        found=r.flag("found", True),
        default=default,
        default_index=default_index,
        fallback=r.ints("fallback"),
        entries=entries,
        problem=r.text("problem", ""),
    )


def module_from(r: Reader) -> ModuleFacts:
    return ModuleFacts(
        release=r.text("release", ""),
        files=r.strings("files", []),
        modules_dep=r.text("modules_dep", ""),
        in_modules_dep=r.flag("in_modules_dep"),
    )


def ipv6_from(r: Reader) -> Ipv6Facts:
    mode = r.text("mode", "unknown")
    if mode not in IPV6_MODES:
        raise bad_field(r.at("mode"), "one of " + ", ".join(IPV6_MODES), mode)
    return Ipv6Facts(mode=mode, source=r.text("source", ""), release=r.text("release", ""))


def boot_hooks_from(r: Reader) -> BootHooks:
    def file_from(key: str) -> FileFact | None:
        child = r.child(key)
        if child is None:
            return None
        mode = child.text("mode")
        if mode is not None and not re.fullmatch(r"[0-7]{1,5}", mode):
            raise bad_field(child.at("mode"), 'octal permission bits such as "0644"', mode)
        kind = child.text("kind", "missing")
        if kind not in ("file", "dir", "other", "missing"):
            raise bad_field(child.at("kind"), "file, dir, other or missing", kind)
        return FileFact(
            path=child.text("path", HOOK_PATHS[key]),
            kind=kind,
            mode=mode,
            uid=child.integer("uid"),
            gid=child.integer("gid"),
            text=child.text("text"),
        )

    return BootHooks(
        modules_script=file_from("modules_script"), rc_local=file_from("rc_local"), cron=file_from("cron")
    )
