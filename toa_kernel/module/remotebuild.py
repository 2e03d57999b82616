"""``invoke build-module --host SERVER``: the module compiled on the server it is for.

The kernel development files and the compiler that fit a server's kernel are on
that server (``kernel-devel-R``, its gcc), so the module is compiled there: the
facts (``/lib/modules/R/build``, ``UTS_RELEASE``, gcc and make) are read through
the System, the compatibility patches are chosen from the server's headers and
applied here to the staged source, which is then shipped to
``/var/tmp/toa-kernel-module/module-R`` on the server, built with Kbuild there
(the log streamed back line by line), and brought back with its ``.ko``, which is
checked here like a local build's (ELF relocatable, vermagic of R).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.kernel.modinfo import ModuleInfo
from toa_kernel.module.build import (
    BUILD_TOOLS,
    MAKE_VARIABLES,
    UTSRELEASE_HEADERS,
    KbuildFacts,
    check_built,
    check_prereqs,
    classify_failure,
)
from toa_kernel.module.compat import HEADER_LIMIT, MAKEFILE_INCLUDE_RE, HeaderTree
from toa_kernel.module.distro import Distro
from toa_kernel.system.api import NOT_FOUND_STATUS, System

STAGE_DIR = "/var/tmp/toa-kernel-module"


class RemoteHeaderTree(HeaderTree):
    """The kernel development files on the server, read through the System (system paths)."""

    def __init__(self, system: System, dirs: list[str]) -> None:
        super().__init__([Path(d) for d in dirs])
        self.system = system

    def find(self, relative: str) -> Path | None:
        for directory in self.dirs:
            path = f"{directory}/{relative}"
            found = self.system.stat(path)
            if found is not None and found.kind == "file":
                return Path(path)
        return None

    def read(self, relative: str) -> str | None:
        path = self.find(relative)
        return None if path is None else self.system.read_text(str(path), HEADER_LIMIT)


class RemoteKbuild:
    """The module compiled on the server, against its headers, with its gcc."""

    def __init__(self, system: System, release: str, distro: Distro) -> None:
        self.system, self.release, self.distro = system, release, distro
        self.gcc: str | None = None
        self.facts = self.refresh()

    @property
    def link(self) -> str:
        return f"{MODULES_DIR}/{self.release}/build"

    def refresh(self) -> KbuildFacts:
        system = self.system
        kdir = system.resolve(self.link)
        makefile = system.stat(f"{kdir}/Makefile")
        usable = makefile is not None and makefile.kind == "file"
        answers = {tool: system.run([tool, "--version"]) for tool in BUILD_TOOLS}
        missing = [tool for tool, answer in answers.items() if answer.returncode == NOT_FOUND_STATUS]
        self.gcc = next(iter(answers["gcc"].out.splitlines()), None) if "gcc" not in missing else None
        self.facts = KbuildFacts(
            release=self.release,
            distro=self.distro,
            build_link=Path(system.host_path(self.link)),
            kdir=Path(kdir) if usable else None,
            headers_release=self.headers_release(kdir) if usable else None,
            missing_tools=missing,
        )
        return self.facts

    def headers_release(self, kdir: str) -> str | None:
        for name in UTSRELEASE_HEADERS:
            text = self.system.read_text(f"{kdir}/{name}", 64 * 1024)
            match = re.search(r'#define\s+UTS_RELEASE\s+"([^"]+)"', text or "")
            if match:
                return match.group(1)
        return None

    def headers(self) -> HeaderTree:
        """``build``, then ``source`` of /lib/modules/R, then what the build Makefile includes."""
        assert self.facts.kdir is not None
        kdir = str(self.facts.kdir)
        dirs = [kdir, self.system.resolve(f"{MODULES_DIR}/{self.release}/source")]
        text = self.system.read_text(f"{kdir}/Makefile", HEADER_LIMIT) or ""
        dirs += [self.system.resolve(m.group("path")) for m in MAKEFILE_INCLUDE_RE.finditer(text)]
        found = [
            d for d in dict.fromkeys(dirs) if (st := self.system.stat(d)) is not None and st.kind == "dir"
        ]
        return RemoteHeaderTree(self.system, found)

    def compile(self, staged: Path, log: Path, jobs: int, console: Console) -> list[ModuleInfo]:
        """Ship ``staged`` to the server, make there, bring it back; the checked modules."""
        check_prereqs(self.facts)
        assert self.facts.kdir is not None
        system = self.system
        where = f"{STAGE_DIR}/module-{self.release}"
        system.remove(where, recursive=True)
        system.makedirs(where)
        for stale in staged.rglob("*.ko"):
            stale.unlink()
        system.put_tree(staged, where)
        host_dir = system.host_path(where)
        if jobs <= 0:
            answer = system.run(["getconf", "_NPROCESSORS_ONLN"]).out.strip()
            jobs = int(answer) if answer.isdigit() else 1
        argv = ["make", f"-j{jobs}", "-C", system.host_path(str(self.facts.kdir)), f"M={host_dir}"]
        argv += [*MAKE_VARIABLES, "modules"]
        console.say(f"build-module: $ {shlex.join(argv)}   [on {system.host}]")
        console.say(f"build-module: log {log}")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as sink, console.progress(None, f"kbuild on {system.host}", unit="line") as bar:
            sink.write(f"$ {shlex.join(argv)}   [on {system.host}]\n")

            def line_in(line: str) -> None:
                sink.write(line + "\n")
                bar.update(1)

            status = system.stream(argv, line_in, env={"LC_ALL": "C", "LANG": "C"})
        if status != 0:
            raise classify_failure(log.read_text(errors="replace"), log, self.release)
        system.get_tree(where, staged)
        system.remove(where, recursive=True)
        if not list(staged.rglob("*.ko")):
            raise UserError(f"the build on {system.host} finished but brought back no .ko", f"read {log}")
        return check_built(staged, self.release, log)

    def describe(self) -> dict[str, Any]:
        return {"host": self.system.host, "gcc": self.gcc, "kdir": str(PurePosixPath(str(self.facts.kdir)))}
