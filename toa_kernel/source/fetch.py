"""``invoke fetch``: get the kernel source tarball and unpack it, as facts -> plan -> apply.

Facts: what the manifest's ``fetch`` section records, whether the tarball it
names is still there with the recorded size and sha256, whether the tree is
there, whether a partial download waits to be resumed. The plan holds only what
is missing (download, unpack, record), so a second run does nothing but say so;
``--force`` downloads and unpacks again from scratch, but the tarball and tree in
place are replaced only once the new download passed its checks (a failed
``--force`` leaves a usable fetch). An archive refused as unsafe or damaged is
removed and forgotten.

The manifest section is cleared just before a new tarball takes the place of
the recorded one (a failed download leaves the previous record and files alone)
and rewritten after each finished stage (the tarball, then the tree), so a later
step never trusts a half-done fetch: ``section("fetch")["tree"]`` is set only
once the whole tree is in place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import file_kind, remove_tree
from toa_kernel.core.layout import TARBALL_NAME
from toa_kernel.core.plan import Change, Plan
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.source.archive import Damaged, Unsafe, identify, top_directory, unpack
from toa_kernel.source.download import (
    Downloader,
    discard_partial,
    file_name_of,
    part_path,
    read_meta,
    sha256_of,
)

SECTION = "fetch"


@dataclass
class FetchResult:
    """What ``fetch_source`` did (or, in a dry run, would do)."""

    url: str
    tarball: Path
    tree: Path | None
    sha256: str
    size: int
    nothing_to_do: bool
    actions: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    pinned: bool = False
    dry_run: bool = False
    transferred: int = 0
    resumed_from: int = 0

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["tarball"] = str(self.tarball)
        document["tree"] = str(self.tree) if self.tree else ""
        return document


@dataclass
class FetchFacts:
    """What is there before the run."""

    workdir: Workdir
    urls: list[str]
    pin: str
    tarball: Path
    recorded: dict[str, Any]
    tarball_verified: bool
    tree_present: bool
    partial: int

    @property
    def source(self) -> str:
        return self.urls[0]

    @property
    def recorded_tree(self) -> Path | None:
        tree = self.recorded.get("tree")
        return Path(tree) if tree else None


def source_urls(settings: Settings, tarball: Path | None) -> list[str]:
    """The URLs to try: a local ``--tarball`` alone, or the source URL then the mirrors."""
    if tarball is None:
        return settings.urls
    path = Path(tarball).expanduser()
    if not path.is_file():
        what = "no such file" if not path.exists() else f"is {file_kind(path.stat().st_mode)}, not a file"
        raise UserError(
            f"--tarball {tarball}: {what}",
            "give the path of the source tarball you downloaded (or use --url)",
        )
    return [path.resolve().as_uri()]


def gather_facts(settings: Settings, tarball: Path | None, console: Console) -> FetchFacts:
    """Look at the work directory and the manifest; change nothing."""
    workdir = Workdir(Path(settings.workdir).expanduser().absolute())
    urls = source_urls(settings, tarball)
    dest = workdir.downloads / file_name_of(urls[0], TARBALL_NAME)
    recorded = workdir.section(SECTION)
    verified = tarball_matches(recorded, dest, urls[0], settings.sha256, console)
    tree = recorded.get("tree")
    tree_present = bool(
        verified
        and tree
        and recorded.get("unpacked_at")
        and Path(tree).is_dir()
        and not Path(tree).is_symlink()
    )
    partial = part_path(dest).stat().st_size if part_path(dest).is_file() else 0
    if partial and read_meta(dest).get("url") not in urls:
        partial = 0
    return FetchFacts(workdir, urls, settings.sha256, dest, recorded, verified, tree_present, partial)


def tarball_matches(recorded: dict[str, Any], dest: Path, source: str, pin: str, console: Console) -> bool:
    """True when the recorded tarball is present, from this source, and hashes as recorded."""
    if recorded.get("tarball") != str(dest) or recorded.get("source") != source:
        return False
    if pin and recorded.get("sha256") != pin:
        return False
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        return False
    if size != recorded.get("size"):
        return False
    with console.progress(size, f"verify {dest.name}") as bar:
        if sha256_of(dest, progress=bar) != recorded.get("sha256"):
            return False
    if urlparse(source).scheme == "file":  # a local source replaced by another file
        local = Path(unquote(urlparse(source).path))
        return local.stat().st_size == size and sha256_of(local) == recorded.get("sha256")
    return True


class FetchRun:
    """Applies the plan's changes, sharing what one change produced with the next."""

    def __init__(self, settings: Settings, facts: FetchFacts, console: Console) -> None:
        self.settings = settings
        self.facts = facts
        self.console = console
        self.record: dict[str, Any] = dict(facts.recorded) if facts.tarball_verified else {}
        self.download: Any = None
        self.unpacked: Any = None

    def start_over(self) -> None:
        """``--force``: the download starts from nothing. The tarball and tree in place stay
        until a new tarball passed its checks (a failed download keeps them usable)."""
        discard_partial(self.facts.tarball)

    def fetch_tarball(self) -> None:
        self.facts.workdir.ensure()
        downloader = Downloader.from_settings(self.settings, self.console)
        result = downloader.fetch_any(
            self.facts.urls, self.facts.tarball, sha256=self.facts.pin, check=self.check_and_forget
        )
        self.download = result
        self.record = {
            "url": result.url,
            "source": self.facts.source,
            "tarball": str(self.facts.tarball),
            "size": result.size,
            "sha256": result.sha256,
            "pinned": bool(self.facts.pin),
            "downloaded_at": now_iso(),
            "tree": "",
            "unpacked_at": "",
        }
        self.facts.workdir.update_manifest(SECTION, self.record)

    def check_and_forget(self, part: Path) -> None:
        """Check the downloaded file; once it passed, and just before it replaces the
        recorded tarball, forget the old record (nothing is trusted half-way)."""
        identify(part)
        self.facts.workdir.update_manifest(SECTION, None)

    def unpack_tree(self) -> None:
        self.facts.workdir.ensure()
        try:
            self.unpacked = unpack(self.facts.tarball, self.facts.workdir.src, self.console)
        except Damaged as exc:
            # A damaged tarball is never used again: the next run downloads it afresh.
            self.forget_tarball()
            raise Damaged(
                f"{self.facts.tarball.name}: {exc.message}; the file was removed",
                "run 'invoke fetch' again to download it afresh; if it fails the same way, "
                "the source itself is damaged: try a mirror (--mirror) or another copy (--tarball)",
            ) from None
        except Unsafe as exc:
            # Neither kept nor recorded: nothing may take it for the source later.
            self.forget_tarball()
            raise Unsafe(f"{self.facts.tarball.name}: {exc.message}; the file was removed", exc.fix) from None
        self.record.update(
            tree=str(self.unpacked.tree),
            unpacked_at=now_iso(),
            skipped_links=self.unpacked.skipped_links,
            files=self.unpacked.files,
        )
        self.facts.workdir.update_manifest(SECTION, self.record)

    def forget_tarball(self) -> None:
        self.facts.workdir.update_manifest(SECTION, None)
        remove_tree(self.facts.tarball)


def describe_source(facts: FetchFacts) -> str:
    url = facts.source
    if urlparse(url).scheme == "file":
        return f"copy {unquote(urlparse(url).path)}"
    more = f" (then {len(facts.urls) - 1} mirror(s))" if len(facts.urls) > 1 else ""
    resume = f", resuming at {facts.partial} bytes" if facts.partial else ""
    return f"download {url}{more}{resume}"


def tree_destination(facts: FetchFacts) -> str:
    """Where the tree will go, as far as can be known before the download."""
    if facts.tarball_verified:
        try:
            return str(facts.workdir.src / top_directory(facts.tarball, identify(facts.tarball)))
        except UserError:
            pass
    return f"{facts.workdir.src}/<top directory of the archive>"


def plan_fetch(facts: FetchFacts, run: FetchRun, force: bool) -> Plan:
    """The changes needed: only what the facts say is missing (everything with ``force``)."""
    plan = Plan("fetch")
    if force and facts.partial:
        plan.add(Change("start over (--force): remove the partial download", run.start_over))
    download_needed = force or not facts.tarball_verified
    if download_needed:
        pin = f"sha256 must be {facts.pin}" if facts.pin else "sha256 not pinned"
        plan.add(
            Change(
                f"{describe_source(facts)} -> {facts.tarball} (content checked, {pin})",
                run.fetch_tarball,
            )
        )
    if download_needed or not facts.tree_present:
        plan.add(
            Change(
                f"unpack {facts.tarball.name} -> {tree_destination(facts)} "
                "(into a temporary directory, renamed into place when complete)",
                run.unpack_tree,
            )
        )
    return plan


def fetch_source(
    settings: Settings,
    *,
    tarball: Path | None = None,
    force: bool = False,
    dry_run: bool = False,
    console: Console,
) -> FetchResult:
    """Make sure the source tarball is downloaded, verified and unpacked in the work directory."""
    facts = gather_facts(settings, tarball, console)
    run = FetchRun(settings, facts, console)
    plan = plan_fetch(facts, run, force)
    if not plan:
        return nothing_to_do(facts, console)
    actions = plan.apply(dry_run, echo=console.say)
    if dry_run:
        return FetchResult(
            url=facts.source,
            tarball=facts.tarball,
            tree=facts.recorded_tree if facts.tree_present else None,
            sha256=facts.recorded.get("sha256", "") if facts.tarball_verified else "",
            size=facts.recorded.get("size", 0) if facts.tarball_verified else 0,
            nothing_to_do=False,
            actions=actions,
            pinned=bool(facts.pin),
            dry_run=True,
        )
    record = run.record
    if not facts.pin:
        console.say(
            f"sha256 {record['sha256']} (not pinned: pin it with --sha256 {record['sha256']} "
            "or toa.sha256 in invoke.yaml)"
        )
    return FetchResult(
        url=record["url"],
        tarball=facts.tarball,
        tree=Path(record["tree"]),
        sha256=record["sha256"],
        size=record["size"],
        nothing_to_do=False,
        actions=actions,
        skipped_links=list(record.get("skipped_links", [])),
        pinned=bool(facts.pin),
        transferred=run.download.transferred if run.download else 0,
        resumed_from=run.download.resumed_from if run.download else 0,
    )


def nothing_to_do(facts: FetchFacts, console: Console) -> FetchResult:
    recorded = facts.recorded
    console.say(
        f"fetch: nothing to do: {facts.tarball.name} verified (sha256 {recorded['sha256']}), "
        f"tree at {recorded['tree']}"
    )
    return FetchResult(
        url=recorded.get("url", facts.source),
        tarball=facts.tarball,
        tree=Path(recorded["tree"]),
        sha256=recorded["sha256"],
        size=recorded["size"],
        nothing_to_do=True,
        skipped_links=list(recorded.get("skipped_links", [])),
        pinned=bool(facts.pin),
    )
