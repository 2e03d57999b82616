"""GRUB legacy (0.97) ``grub.conf``: parse without losing a byte, edit only what must change.

The text is kept as its physical lines; GRUB's reading of it is computed on top,
following GRUB 0.97's ``get_line_from_config`` and ``cmain``:

- carriage returns are ignored, a line ending in a backslash continues on the next
  line, a logical line whose first non-blank character is ``#`` is a comment;
- a command is ``keyword`` then a run of blanks and/or ``=``, then its value, so
  ``default=0``, ``default 0`` and ``default = 0`` are the same command;
- commands before the first ``title`` are global (``default``, ``fallback``,
  ``timeout``, ``hiddenmenu``, ``password``, ``splashimage``...); each ``title``
  starts an entry that holds every line up to the next ``title``; a title with no
  command after it is not an entry (GRUB skips it and does not count it; GRUB
  also ignores unknown commands, which here still make a title an entry);
- GRUB reads at most 1500 characters of a line and cuts the rest silently, so no
  line written here may be longer.

``edit_for_release`` makes an installed kernel release the boot default: it finds
(or adds, as grubby does) the entry whose ``kernel`` line boots ``vmlinuz-RELEASE``,
sets ``default=`` to it, appends kernel arguments (``nohz=off``) and points
``fallback=`` at the previous default. Every other byte stays as it was.

Decisions:

- Xen (and other multiboot) entries boot ``vmlinuz`` as a ``module`` under a
  hypervisor. They are never the entry for a release and never copied: when the
  default entry is one (or has no ``kernel`` line, like a chainloader), the first
  plain Linux entry is copied instead, and the note says so.
- ``default=saved`` is replaced by the number of the new entry: the TOA kernel then
  boots every time, whatever ``savedefault`` recorded. The previous default is the
  saved entry the caller read from ``/boot/grub/default`` (``saved_default``), or 0.
- An added entry goes where grubby puts it: index 0, before the first title and the
  comment lines right above it; a blank line follows when entries are separated so.
- ``fallback=`` is set only when the default changes; with several values
  (``fallback 1 2``) the whole value is replaced.
- Lines that end with a backslash are joined into one line when they are edited.
- Line endings: lines keep their own; added lines take their model line's ending,
  or the file's most common one. Files with CRLF endings stay CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import RELEASE_RE

MAX_LINE = 1500  # GRUB 0.97: NEW_HEAPSIZE, the longest config line it reads whole
DEFAULT_KERNEL_ARGS = ("nohz=off",)
ROOT_KEYWORDS = ("root", "rootnoverify")

DefaultValue = Union[int, Literal["saved"], None]

_EOL_RE = re.compile(r"\r*\n\Z")
_COMMAND_RE = re.compile(r"([ \t]*)([^ \t=]*)([ \t=]*)(.*?)([ \t]*)", re.DOTALL)
_TOKEN_RE = re.compile(r"[^ \t]+")
_INDEX_RE = re.compile(r"[ \t]*(0[xX][0-9a-fA-F]+|[0-9]+)")
_ARG_RE = re.compile(r"[^\s\"'\\#=][^\s\"'\\]*")
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9._+~-]+")


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Command:
    """One logical line as GRUB reads it, over physical lines ``first..last``."""

    first: int
    last: int
    indent: str
    keyword: str
    sep: str
    value: str
    trailing: str
    eol: str
    kind: Literal["blank", "comment", "command"]

    @property
    def tokens(self) -> list[str]:
        return _TOKEN_RE.findall(self.value)

    def with_value(self, value: str, eol: str | None = None) -> str:
        """The line rebuilt with another value, as one physical line.

        It keeps its line ending; ``eol`` ends it when it had none (the last line
        of a file without a final newline), else it stays unterminated.
        """
        sep = self.sep or "="
        return f"{self.indent}{self.keyword}{sep}{value}{self.trailing}{self.eol or eol or ''}"


@dataclass(frozen=True)
class Entry:
    """A boot entry: its ``title`` command and the lines up to the next entry."""

    index: int
    commands: tuple[Command, ...]
    first: int
    end: int

    @property
    def span(self) -> tuple[int, int]:
        """Physical lines of the entry: ``lines[first:end]`` (0-based, end excluded)."""
        return (self.first, self.end)

    @property
    def title(self) -> str:
        return self.commands[0].value

    @property
    def body(self) -> list[Command]:
        """The entry's commands after its title (no comments, no blank lines)."""
        return [c for c in self.commands[1:] if c.kind == "command" and c.keyword != "title"]

    def last(self, *keywords: str) -> Command | None:
        """The last command of the entry with one of these keywords (the one GRUB keeps)."""
        found = [c for c in self.body if c.keyword in keywords]
        return found[-1] if found else None

    @property
    def root(self) -> str | None:
        command = self.last(*ROOT_KEYWORDS)
        return command.tokens[0] if command and command.tokens else None

    @property
    def kernel_command(self) -> Command | None:
        return self.last("kernel")

    @property
    def kernel(self) -> str | None:
        """Path of the ``kernel`` line (``/vmlinuz-R``, ``/boot/vmlinuz-R``, ``/xen.gz``)."""
        command = self.kernel_command
        return split_kernel_value(command.value)[1] if command else None

    @property
    def kernel_args(self) -> list[str]:
        """Arguments of the ``kernel`` line after its path."""
        command = self.kernel_command
        return split_kernel_value(command.value)[2] if command else []

    @property
    def initrd(self) -> str | None:
        command = self.last("initrd")
        return command.tokens[0] if command and command.tokens else None

    @property
    def modules(self) -> list[tuple[str, list[str]]]:
        """``module`` lines as (path, arguments), in order."""
        found = [c.tokens for c in self.body if c.keyword == "module" and c.tokens]
        return [(tokens[0], tokens[1:]) for tokens in found]

    @property
    def is_multiboot(self) -> bool:
        """A hypervisor (or tboot) loaded by ``kernel``, Linux loaded as a ``module``."""
        return bool(self.modules) and self.kernel is not None

    @property
    def is_xen(self) -> bool:
        return self.is_multiboot and basename(self.kernel or "").startswith("xen")

    @property
    def is_linux(self) -> bool:
        """A plain Linux entry: ``kernel /…/vmlinuz-RELEASE``, no ``module`` lines."""
        return not self.modules and release_of_image(self.kernel or "") is not None

    @property
    def boot_image(self) -> str | None:
        """The Linux kernel booted: the first module of a multiboot entry, else ``kernel``."""
        return self.modules[0][0] if self.is_multiboot else self.kernel

    @property
    def release(self) -> str | None:
        """``2.6.32-toa`` for ``/boot/vmlinuz-2.6.32-toa``; None when not ``vmlinuz-*``."""
        return release_of_image(self.boot_image or "")


@dataclass(frozen=True)
class GrubConfig:
    """A parsed grub.conf; ``render()`` gives back the exact text."""

    lines: tuple[str, ...]
    commands: tuple[Command, ...]
    globals: tuple[Command, ...]
    entries: list[Entry] = field(default_factory=list)

    def render(self) -> str:
        return "".join(self.lines)

    @property
    def newline(self) -> str:
        """The file's most common line ending (``\\n`` when it has none)."""
        crlf = sum(1 for line in self.lines if line.endswith("\r\n"))
        lf = sum(1 for line in self.lines if line.endswith("\n")) - crlf
        return "\r\n" if crlf > lf else "\n"

    def global_command(self, keyword: str) -> Command | None:
        """The last global command with this keyword (the one GRUB obeys)."""
        found = [c for c in self.globals if c.kind == "command" and c.keyword == keyword]
        return found[-1] if found else None

    @property
    def default(self) -> DefaultValue:
        """``default=``: a number, ``"saved"``, or None when absent (GRUB boots entry 0)."""
        command = self.global_command("default")
        if command is None:
            return None
        if command.value == "saved":
            return "saved"
        number = parse_index(command.value)
        if number is None:
            raise UserError(
                f"grub.conf line {command.first + 1}: "
                f"default={command.value!r} is neither a number nor 'saved'",
                "set 'default=N' to the number of the entry that boots now (0 is the first title)",
            )
        return number

    @property
    def fallbacks(self) -> list[int]:
        """The ``fallback=`` entry numbers, in order (GRUB 0.97 accepts several)."""
        command = self.global_command("fallback")
        return parse_indices(command.value) if command else []

    @property
    def fallback(self) -> int | None:
        """The first ``fallback=`` entry, or None."""
        return self.fallbacks[0] if self.fallbacks else None


def parse(text: str) -> GrubConfig:
    """Parse grub.conf text; never fails and never loses a byte (``render() == text``)."""
    lines = tuple(physical_lines(text))
    commands = tuple(logical_commands(lines))
    first_title = next((i for i, c in enumerate(commands) if c.keyword == "title"), len(commands))
    entries = build_entries(commands[first_title:], len(lines))
    return GrubConfig(lines, commands, commands[:first_title], entries)


def physical_lines(text: str) -> list[str]:
    """Lines with their endings; ``"".join`` gives the text back."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def split_eol(line: str) -> tuple[str, str]:
    match = _EOL_RE.search(line)
    return (line[: match.start()], match.group()) if match else (line, "")


def logical_commands(lines: Sequence[str]) -> list[Command]:
    """Group physical lines into GRUB's logical lines (backslash continuation)."""
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        first, pieces = index, []
        while True:
            body, eol = split_eol(lines[index])
            clean = body.replace("\r", "")
            if clean.endswith("\\") and eol and index + 1 < len(lines):
                pieces.append(clean[:-1] + " ")
                index += 1
                continue
            pieces.append(clean)
            break
        commands.append(make_command(first, index, "".join(pieces), eol))
        index += 1
    return commands


def make_command(first: int, last: int, text: str, eol: str) -> Command:
    match = _COMMAND_RE.fullmatch(text)
    assert match is not None  # the pattern matches any text without a newline
    indent, keyword, sep, value, trailing = match.groups()
    kind: Literal["blank", "comment", "command"] = "command"
    if not text.strip(" \t"):
        kind = "blank"
    elif text.lstrip(" \t").startswith("#"):
        kind = "comment"
    if kind != "command":
        indent, keyword, sep, value, trailing = "", "", "", "", ""
    return Command(first, last, indent, keyword, sep, value, trailing, eol, kind)


def build_entries(commands: Sequence[Command], line_count: int) -> list[Entry]:
    """Entries from the commands that start at the first title.

    A title with no command after it is not an entry: its lines join the entry
    before it (or no entry, before the first one), as GRUB skips it.
    """
    groups: list[list[Command]] = []
    current: list[Command] = []
    for command in commands:
        if command.keyword == "title":
            if has_body(current):
                groups.append(current)
            elif groups:
                groups[-1].extend(current)
            current = [command]
        else:
            current.append(command)
    if has_body(current):
        groups.append(current)
    elif groups:
        groups[-1].extend(current)
    entries = []
    for index, group in enumerate(groups):
        end = groups[index + 1][0].first if index + 1 < len(groups) else line_count
        entries.append(Entry(index, tuple(group), group[0].first, end))
    return entries


def has_body(group: Sequence[Command]) -> bool:
    """True when a title group holds a command after its title."""
    return any(c.kind == "command" for c in group[1:])


# ---------------------------------------------------------------- reading values


def parse_index(value: str) -> int | None:
    """A number as GRUB's ``safe_parse_maxint`` reads it (decimal or 0x hex), or None."""
    match = _INDEX_RE.match(value)
    if match is None:
        return None
    return int(match.group(1), 0) if match.group(1)[:2].lower() == "0x" else int(match.group(1))


def parse_indices(value: str) -> list[int]:
    """The leading numbers of a value like ``1 2``."""
    numbers = []
    for token in _TOKEN_RE.findall(value):
        number = parse_index(token)
        if number is None:
            break
        numbers.append(number)
    return numbers


def parse_saved_default(text: str) -> int | None:
    """The entry number stored in ``/boot/grub/default`` (GRUB reads its first bytes)."""
    return parse_index(text[:10].lstrip("\r\n"))


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def sibling(path: str, name: str) -> str:
    """``/boot/vmlinuz-A`` + ``vmlinuz-B`` -> ``/boot/vmlinuz-B`` (device prefix kept)."""
    head, slash, _ = path.rpartition("/")
    return f"{head}{slash or '/'}{name}"


def release_of_image(path: str) -> str | None:
    name = basename(path)
    return name[len("vmlinuz-") :] if name.startswith("vmlinuz-") and len(name) > 8 else None


def token_spans(value: str) -> list[re.Match[str]]:
    return list(_TOKEN_RE.finditer(value))


def path_position(spans: Sequence[re.Match[str]]) -> int | None:
    """Index of the path token of a ``kernel`` value (options like ``--type=`` come first)."""
    return next((i for i, m in enumerate(spans) if not m.group().startswith("--")), None)


def split_kernel_value(value: str) -> tuple[list[str], str | None, list[str]]:
    """``--no-mem-option /vmlinuz-R ro quiet`` -> (options, path, arguments)."""
    tokens = [m.group() for m in token_spans(value)]
    position = path_position(token_spans(value))
    if position is None:
        return tokens, None, []
    return tokens[:position], tokens[position], tokens[position + 1 :]


# ---------------------------------------------------------------- queries


def entry_index_for_release(config: GrubConfig, release: str, include_multiboot: bool = False) -> int | None:
    """The first entry whose ``kernel`` line boots ``vmlinuz-RELEASE`` (any directory).

    Multiboot (Xen) entries, which boot vmlinuz as a ``module``, count only with
    ``include_multiboot``.
    """
    for entry in config.entries:
        if entry.is_multiboot and not include_multiboot:
            continue
        if entry.release == release:
            return entry.index
    return None


def default_index(config: GrubConfig, saved_default: int | None = None) -> int | None:
    """The entry GRUB 0.97 boots by default, as it decides it; None without entries.

    Unreadable ``default`` lines are skipped, ``saved`` takes ``saved_default`` (0
    when unknown), an index past the last entry falls back to the first valid
    ``fallback`` entry, else to 0.
    """
    count = len(config.entries)
    if not count:
        return None
    chosen = 0
    for command in config.globals:
        if command.kind == "command" and command.keyword == "default":
            number = (saved_default or 0) if command.value == "saved" else parse_index(command.value)
            chosen = chosen if number is None else number
    if chosen < count:
        return chosen
    valid = [n for n in config.fallbacks if n < count]
    return valid[0] if valid else 0


def default_entry(config: GrubConfig, saved_default: int | None = None) -> Entry | None:
    """The entry GRUB boots when nobody touches the keyboard (see ``default_index``)."""
    index = default_index(config, saved_default)
    return None if index is None else config.entries[index]


# ---------------------------------------------------------------- editing


@dataclass(frozen=True)
class GrubEdit:
    """The result of an edit: the new text and what changed.

    ``previous_default`` is the entry that was the default, numbered as in the new
    text; ``previous_fallback`` the raw ``fallback=`` value before the edit (None:
    no such line), for a rollback to restore. ``summary`` lists the changes (empty:
    nothing to do); ``notes`` explains decisions that changed nothing by themselves.
    """

    text: str
    entry_index: int
    added_entry: bool
    previous_default: int
    previous_fallback: str | None
    summary: list[str]
    notes: list[str] = field(default_factory=list)
    original: str = ""
    ended_trial: bool = False  # a trial's ``savedefault N`` was removed from the entry

    @property
    def changed(self) -> bool:
        return self.text != self.original


def edit_for_release(
    text: str,
    release: str,
    kernel_args: Sequence[str] = DEFAULT_KERNEL_ARGS,
    initrd_name: str | None = None,
    saved_default: int | None = None,
    end_trial: bool = True,
) -> GrubEdit:
    """Make ``release`` the default entry with ``kernel_args``, the old default as fallback.

    ``initrd_name``: file name of the initramfs for an added entry (None: derived
    from the copied entry's, e.g. ``initramfs-RELEASE.img``; ``""``: no initrd line).
    ``saved_default``: the entry recorded in ``/boot/grub/default`` when
    ``default=saved``. ``end_trial``: a trial of ``release`` set up in the text ends
    (its ``savedefault N`` goes, its old entry becomes the fallback), which gives
    what ``edit_commit_trial`` gives. Raises ``UserError`` for inputs that cannot be
    edited safely.
    """
    check_release(release)
    args = check_kernel_args(kernel_args)
    check_file_name(initrd_name)
    original = text
    config = parse_for_edit(text)
    armed = armed_return_entry(config, release) if end_trial else None
    previous, notes = previous_default(config, saved_default if armed is None else armed)
    if armed is not None:
        notes = []
    previous_fallback = fallback_value(config)
    summary: list[str] = []
    index = entry_index_for_release(config, release)
    added = index is None
    if index is None:
        text, added_summary, added_notes = add_entry(config, previous, release, initrd_name)
        summary += added_summary
        notes += added_notes
        config, index, previous = parse(text), 0, previous + 1
    text = step(summary, set_kernel_args(config, index, args, force_check=added))
    ended: list[str] = []
    if end_trial:
        text = step(ended, drop_trial_savedefault(parse(text), index))
        summary += ended
    text = step(summary, set_default(parse(text), index))
    if previous != index:
        text = step(summary, set_fallback(parse(text), str(previous)))
    elif parse(text).global_command("fallback") is None:
        notes.append(f"no fallback set: entry {index} was already the default")
    if ended:
        notes.append(trial_end_note(parse(text), index, release))
    return GrubEdit(
        text, index, added, previous, previous_fallback, summary, notes, original, ended_trial=bool(ended)
    )


def trial_end_note(config: GrubConfig, index: int, release: str) -> str:
    """What a plain edit of a trial's text says: the trial is over, the entry boots every time."""
    fallback = config.global_command("fallback")
    back = f", fallback={fallback.value} on the old kernel" if fallback is not None else ""
    return (
        f"the trial boot of {release} ends: entry {index} boots every time now (default={index}{back}, "
        "its savedefault line removed; panic= stays on its kernel line), as 'invoke verify --commit' "
        "leaves it"
    )


def edit_restore_default(
    text: str, index: int, fallback: int | str | None = None, trial_release: str | None = None
) -> GrubEdit:
    """Point ``default=`` back at entry ``index`` (rollback).

    ``fallback``: the value to put back (a number or a raw value like ``"1 2"``);
    None removes the ``fallback=`` line. ``trial_release``: a trial of that release
    was set up; its entry loses the trial's ``savedefault N`` (``default saved``
    becomes the number anyway).
    """
    config = parse_for_edit(text)
    check_index(config, index, "default")
    fallback_text = check_fallback(config, fallback)
    previous = default_index(config) or 0
    previous_fallback = fallback_value(config)
    summary: list[str] = []
    trial_index = entry_index_for_release(config, trial_release) if trial_release else None
    new_text = config.render()
    if trial_index is not None:
        new_text = step(summary, drop_trial_savedefault(config, trial_index))
    new_text = step(summary, set_default(parse(new_text), index))
    if fallback_text is None:
        new_text = step(summary, drop_fallback(parse(new_text)))
    else:
        new_text = step(summary, set_fallback(parse(new_text), fallback_text))
    return GrubEdit(new_text, index, False, previous, previous_fallback, summary, [], text)


Step = tuple[str, list[str]]


def step(summary: list[str], result: Step) -> str:
    """Collect a step's summary lines and return its text."""
    text, lines = result
    summary.extend(lines)
    return text


# ---------------------------------------------------------------- checks


def parse_for_edit(text: str) -> GrubConfig:
    """Parse text that is about to be edited: a text file with at least one entry."""
    if "\0" in text:
        raise UserError(
            "grub.conf holds NUL bytes: it is not a text file",
            "restore grub.conf from a backup (ls /boot/grub/) and run again",
        )
    config = parse(text)
    if not config.entries:
        raise UserError(
            "grub.conf has no boot entries (no 'title' line followed by commands)",
            "check that this is the GRUB legacy configuration the machine boots with (/boot/grub/grub.conf)",
        )
    return config


def check_release(release: str) -> None:
    if not isinstance(release, str) or not RELEASE_RE.fullmatch(release):
        raise UserError(
            f"kernel release {release!r} cannot name a kernel in /boot",
            "pass the release printed by 'make kernelrelease', e.g. 2.6.32-toa",
        )


def check_kernel_args(kernel_args: Sequence[str] | str) -> tuple[str, ...]:
    """Validate kernel arguments (a string is split on blanks); exact repeats are dropped."""
    args = kernel_args.split() if isinstance(kernel_args, str) else list(kernel_args)
    for arg in args:
        if not isinstance(arg, str) or not _ARG_RE.fullmatch(arg) or arg == "--":
            raise UserError(
                f"kernel argument {arg!r} cannot go on a GRUB kernel line",
                "use key=value or a bare word, without blanks, quotes, backslashes or a leading '#'",
            )
    unique = tuple(dict.fromkeys(args))
    keys = [arg_key(arg) for arg in unique]
    clashes = sorted({key for key in keys if keys.count(key) > 1})
    if clashes:
        raise UserError(
            f"kernel arguments give {', '.join(clashes)} more than one value",
            "keep one value per key (for example only nohz=off)",
        )
    return unique


def check_file_name(name: str | None) -> None:
    if name and (not _FILE_NAME_RE.fullmatch(name) or name.startswith(".")):
        raise UserError(
            f"initrd name {name!r} is not a plain file name in /boot",
            "pass a name like initramfs-2.6.32-toa.img (no directory)",
        )


def check_index(config: GrubConfig, number: int, what: str) -> None:
    count = len(config.entries)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < count:
        raise UserError(
            f"{what}={number} points past the entries: grub.conf has {count} (0..{count - 1})",
            f"set '{what}=N' in grub.conf to an existing entry (0 is the first title) and run again",
        )


def check_fallback(config: GrubConfig, fallback: int | str | None) -> str | None:
    """A fallback value to write: numbers of existing entries, blank-separated."""
    if fallback is None:
        return None
    text = str(fallback).strip()
    numbers = parse_indices(text)
    if not numbers or len(numbers) != len(_TOKEN_RE.findall(text)):
        raise UserError(
            f"fallback {fallback!r} is not a list of entry numbers", "pass numbers like 1 or '1 2'"
        )
    for number in numbers:
        check_index(config, number, "fallback")
    return " ".join(str(n) for n in numbers)


def check_length(entry: Entry, length: int) -> None:
    if length > MAX_LINE:
        raise UserError(
            f"the kernel line of {entry.title!r} would be {length} characters; "
            f"GRUB legacy reads {MAX_LINE} and silently cuts the rest",
            "shorten the kernel arguments of that entry (or the extra arguments asked for)",
        )


def previous_default(config: GrubConfig, saved_default: int | None) -> tuple[int, list[str]]:
    """The entry booted by default before the edit, strictly checked."""
    value = config.default
    notes: list[str] = []
    if value is None:
        number = 0
    elif value == "saved":
        number = saved_default if saved_default is not None else 0
        known = "" if saved_default is not None else " (no saved entry known: taken as 0)"
        notes.append(f"default=saved pointed at entry {number}{known}; it becomes a number")
    else:
        number = value
    check_index(config, number, "default")
    return number, notes


def fallback_value(config: GrubConfig) -> str | None:
    command = config.global_command("fallback")
    return command.value if command else None


# ---------------------------------------------------------------- changes


def splice(config: GrubConfig, start: int, end: int, new_lines: Sequence[str]) -> str:
    """The text with physical lines ``start:end`` replaced by ``new_lines``."""
    lines = list(config.lines)
    if start == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += config.newline
    lines[start:end] = new_lines
    return "".join(lines)


def verbatim(config: GrubConfig, command: Command, newline: str) -> str:
    text = "".join(config.lines[command.first : command.last + 1])
    return text if text.endswith("\n") else text + newline


def replace_last(text: str, old: str, new: str) -> str:
    head, _, tail = text.rpartition(old)
    return f"{head}{new}{tail}"


def replace_path(value: str, path: str) -> str:
    """A ``kernel``/``initrd`` value with its path token replaced, the rest untouched."""
    spans = token_spans(value)
    position = path_position(spans)
    if position is None:
        return f"{value} {path}".lstrip()
    match = spans[position]
    return value[: match.start()] + path + value[match.end() :]


def template_entry(config: GrubConfig, previous: int) -> tuple[Entry, list[str]]:
    """The entry a new one is copied from: the default, or the first plain Linux entry."""
    entry = config.entries[previous]
    if entry.is_linux:
        return entry, []
    other = next((e for e in config.entries if e.is_linux), None)
    kind = "not a Linux entry"
    if entry.is_multiboot:
        kind = "a Xen entry" if entry.is_xen else "a multiboot entry"
    if other is None:
        raise UserError(
            f"no entry to copy: the default entry {entry.title!r} is {kind} "
            "and no entry boots a Linux kernel",
            "add the new kernel's entry by hand (title, root (hdX,Y), kernel /vmlinuz-RELEASE ..., "
            "initrd ...) or install with the system's installkernel, then run again",
        )
    return other, [f"the default entry {entry.title!r} is {kind}: the new entry copies {other.title!r}"]


def derived_title(template: Entry, release: str) -> str:
    """``CentOS (2.6.32-754.el6.x86_64)`` -> ``CentOS (RELEASE)``, as grubby names entries."""
    title, old = template.title, template.release
    if old and old in title:
        return replace_last(title, old, release)
    match = re.fullmatch(r"(.*?)[ \t]*\([^()]*\)", title)
    if match and match.group(1):
        return f"{match.group(1)} ({release})"
    return f"{title} ({release})" if title else release


def new_initrd_path(template: Entry, release: str, initrd_name: str | None) -> str | None:
    if initrd_name == "":
        return None
    model = template.initrd
    if initrd_name:
        return sibling(model or template.kernel or "/", initrd_name)
    if model is None:
        return None
    name, old = basename(model), template.release
    name = replace_last(name, old, release) if old and old in name else f"initramfs-{release}.img"
    return sibling(model, name)


def entry_lines(config: GrubConfig, template: Entry, release: str, initrd_name: str | None) -> list[str]:
    """The lines of a new entry for ``release``: a copy of ``template`` with new paths."""
    newline = config.newline
    kernel, initrd = template.kernel_command, template.last("initrd")
    assert kernel is not None and template.kernel is not None
    initrd_path = new_initrd_path(template, release, initrd_name)
    lines = [template.commands[0].with_value(derived_title(template, release), newline)]
    for command in template.body:
        if command is kernel:
            lines.append(
                command.with_value(
                    replace_path(command.value, sibling(template.kernel, f"vmlinuz-{release}")), newline
                )
            )
            if initrd is None and initrd_path:
                lines.append(
                    f"{command.indent}initrd{command.sep or ' '}{initrd_path}{command.eol or newline}"
                )
        elif command is initrd:
            if initrd_path:
                lines.append(command.with_value(replace_path(command.value, initrd_path), newline))
        elif command.keyword not in ("kernel", "initrd"):
            lines.append(verbatim(config, command, newline))
    return lines


def insertion_point(config: GrubConfig) -> int:
    """Where entry 0 goes: before the first title and the comment lines right above it."""
    at = config.entries[0].first
    comments = {c.first for c in config.commands if c.kind == "comment" and c.first == c.last}
    while at - 1 in comments:
        at -= 1
    return at if at > 0 else config.entries[0].first


def blank_between_entries(config: GrubConfig) -> bool:
    """True when a blank line separates the first entry from the next (a style to keep)."""
    if len(config.entries) < 2:
        return False
    first = config.entries[0]
    end_of_commands = max(c.last for c in first.commands if c.kind == "command") + 1
    return any(not line.strip() for line in config.lines[end_of_commands : first.end])


def add_entry(
    config: GrubConfig, previous: int, release: str, initrd_name: str | None
) -> tuple[str, list[str], list[str]]:
    """Insert a copy of the default entry for ``release`` at index 0, as grubby does."""
    template, notes = template_entry(config, previous)
    lines = entry_lines(config, template, release, initrd_name)
    if blank_between_entries(config):
        lines.append(config.newline)
    at = insertion_point(config)
    text = splice(config, at, at, lines)
    title = derived_title(template, release)
    return text, [f"entry 0 {title!r} added (a copy of {template.title!r})"], notes


def arg_key(arg: str) -> str:
    return arg.split("=", 1)[0]


def argument_spans(value: str) -> tuple[list[re.Match[str]], int]:
    """The argument tokens of a kernel value (up to ``--``) and where to append one."""
    spans = token_spans(value)
    position = path_position(spans)
    if position is None:
        return [], len(value)
    args = []
    for match in spans[position + 1 :]:
        if match.group() == "--":
            break
        args.append(match)
    return args, (args[-1] if args else spans[position]).end()


def blank_start(value: str, position: int) -> int:
    while position > 0 and value[position - 1] in " \t":
        position -= 1
    return position


def apply_arg(value: str, arg: str) -> tuple[str, list[str]]:
    """Set one argument: ``key=value`` replaces the key's values, a bare word is added once."""
    spans, append_at = argument_spans(value)
    same = [m for m in spans if arg_key(m.group()) == arg_key(arg)]
    if same and same[-1].group() == arg:
        return value, []
    if not same:
        return f"{value[:append_at]} {arg}{value[append_at:]}", [f"+ {arg}"]
    first, rest = same[0], same[1:]
    changes = [] if first.group() == arg else [f"{first.group()} -> {arg}"]
    changes += [f"- {match.group()}" for match in rest]
    for match in reversed(rest):
        value = value[: blank_start(value, match.start())] + value[match.end() :]
    return value[: first.start()] + arg + value[first.end() :], changes


def set_kernel_args(config: GrubConfig, index: int, args: Sequence[str], force_check: bool) -> Step:
    entry = config.entries[index]
    command = entry.kernel_command
    assert command is not None
    value, changes = command.value, []
    for arg in args:
        value, change = apply_arg(value, arg)
        changes += change
    if changes or force_check:
        check_length(entry, len(command.keyword + (command.sep or "=") + value + command.trailing))
    if not changes:
        return config.render(), []
    text = splice(config, command.first, command.last + 1, [command.with_value(value)])
    return text, [f"kernel line of {entry.title!r}: {', '.join(changes)}"]


def default_position(config: GrubConfig) -> tuple[int, str]:
    """Where a missing ``default`` line goes (before the first global command) and its separator."""
    commands = [c for c in config.globals if c.kind == "command"]
    if commands:
        model = next((c for c in commands if c.sep), commands[0])
        return commands[0].first, model.sep or "="
    return (config.globals[-1].last + 1 if config.globals else 0), "="


def set_default(config: GrubConfig, index: int) -> Step:
    command = config.global_command("default")
    if command is None:
        at, sep = default_position(config)
        return splice(config, at, at, [f"default{sep}{index}{config.newline}"]), [f"default -> {index}"]
    if command.value != "saved" and parse_index(command.value) == index:
        return config.render(), []
    line = command.with_value(str(index))
    return splice(config, command.first, command.last + 1, [line]), [f"default {command.value} -> {index}"]


def set_fallback(config: GrubConfig, value: str) -> Step:
    command = config.global_command("fallback")
    if command is None:
        anchor = config.global_command("default")
        assert anchor is not None
        line = f"{anchor.indent}fallback{anchor.sep or '='}{value}{anchor.eol or config.newline}"
        return splice(config, anchor.last + 1, anchor.last + 1, [line]), [f"fallback -> {value}"]
    if command.tokens == value.split():
        return config.render(), []
    line = command.with_value(value)
    return splice(config, command.first, command.last + 1, [line]), [f"fallback {command.value} -> {value}"]


def drop_fallback(config: GrubConfig) -> Step:
    found = [c for c in config.globals if c.kind == "command" and c.keyword == "fallback"]
    lines = list(config.lines)
    for command in reversed(found):
        del lines[command.first : command.last + 1]
    return "".join(lines), [f"fallback {c.value} removed" for c in found]


# ---------------------------------------------------------------- trial boot (boot the new entry once)
#
# GRUB legacy's "booting once-only" method: ``default saved`` makes GRUB boot the
# entry whose number is stored in ``default`` beside grub.conf (``/boot/grub/default``);
# the trial entry carries ``savedefault N``, so GRUB writes N (the old entry) into
# that file while it boots the trial entry. Whatever happens next (panic and reboot,
# reset, power cycle), the following boot is the old entry's, until a commit makes the
# trial entry the numeric default. ``panic=N`` on the trial entry turns a panic into
# a reboot after N seconds.
#
# The ``default`` file, as GRUB 0.97 reads and writes it (stage2's ``cmain`` and
# ``savedefault``; measured with Debian's grub-legacy in the boot lab):
#
# - at boot GRUB reads its first 10 bytes and takes the leading decimal digits;
#   no digits (or no file) means entry 0;
# - ``savedefault N`` opens the file and overwrites its first 10 bytes in place,
#   through the blocks the file already has, with ``N``, a NUL and newlines. A file
#   shorter than 10 bytes fails with ``Error 18``, a missing one with ``Error 15``,
#   and either error aborts the entry being booted (GRUB falls back);
# - ``grub-set-default N`` writes ``N`` on the first line, padded with ``#`` lines.
#   That shape is read alike by upstream GRUB 0.97 (leading digits; Red Hat's package
#   is built from it) and by Debian's. Debian's GRUB also accepts ``SAVED:ONCE``
#   (``0:1``), written by its grub shell's ``savedefault --default=N --once``, and
#   boots ONCE; upstream's stage2 stops at the colon and boots SAVED. This module
#   never writes that shape.

SAVED_DEFAULT_FILE = "default"  # the file's name, in the directory of the configuration file
SAVED_DEFAULT_MIN = 10  # GRUB reads and rewrites this many bytes
DEFAULT_PANIC_SECONDS = 10
MAX_PANIC_SECONDS = 3600
SAVED_DEFAULT_NOTE = (
    "# GRUB legacy's saved default entry, read when grub.conf says 'default saved'.\n"
    "# GRUB rewrites the first bytes of this file in place ('savedefault'): keep its size.\n"
)


def saved_default_text(index: int) -> str:
    """The ``default`` file that makes ``default saved`` boot entry ``index``.

    The number on the first line, then ``#`` padding lines and a note, as
    ``grub-set-default`` shapes it: longer than the 10 bytes ``savedefault`` rewrites.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise UserError(f"saved default entry {index!r} is not an entry number", "pass 0 or more")
    return f"{index}\n" + "#\n" * 10 + SAVED_DEFAULT_NOTE


def saved_default_usable(text: str | None) -> bool:
    """True when GRUB's ``savedefault`` can rewrite this ``default`` file (10 bytes or more)."""
    return text is not None and len(text.encode(errors="surrogateescape")) >= SAVED_DEFAULT_MIN


def check_panic_seconds(seconds: int | str) -> int:
    """``panic=N`` for the trial entry: whole seconds, 1 to an hour."""
    try:
        value = int(str(seconds).strip())
    except ValueError:
        value = -1
    if isinstance(seconds, bool) or not 0 < value <= MAX_PANIC_SECONDS:
        raise UserError(
            f"panic seconds {seconds!r} is not a whole number of seconds from 1 to {MAX_PANIC_SECONDS}",
            f"pass --panic-seconds N (default {DEFAULT_PANIC_SECONDS}): a panic reboots after N seconds",
        )
    return value


def savedefault_target(entry: Entry) -> int | None:
    """N of the entry's ``savedefault N`` (the entry a trial returns to), or None."""
    command = entry.last("savedefault")
    return parse_index(command.value) if command is not None and command.value else None


@dataclass(frozen=True)
class TrialEdit(GrubEdit):
    """A trial edit: ``entry_index`` boots once, then ``return_entry`` by default again.

    ``saved_default`` is the number the ``default`` file must hold for the trial
    entry to boot next (its index).
    """

    return_entry: int = 0
    panic_seconds: int = DEFAULT_PANIC_SECONDS

    @property
    def saved_default(self) -> int:
        return self.entry_index


def edit_for_trial(
    text: str,
    release: str,
    kernel_args: Sequence[str] = DEFAULT_KERNEL_ARGS,
    initrd_name: str | None = None,
    saved_default: int | None = None,
    panic_seconds: int = DEFAULT_PANIC_SECONDS,
) -> TrialEdit:
    """Set ``release`` up to boot once: the entry (added if needed, with ``kernel_args``
    and ``panic=N``), ``default saved``, ``savedefault OLD`` in the entry, ``fallback=OLD``.

    OLD is the entry that boots by default now (``saved_default`` is what the
    ``default`` file holds when grub.conf says ``default saved``); when the release's
    entry already is the default, the ``fallback=`` entry. A trial already set up
    (``default saved`` and ``savedefault OLD`` in the entry) keeps its OLD, so a second
    run changes nothing. The caller writes ``saved_default_text(edit.saved_default)``.
    """
    panic = check_panic_seconds(panic_seconds)
    args = [arg for arg in check_kernel_args(kernel_args) if arg_key(arg) != "panic"] + [f"panic={panic}"]
    original = text
    config = parse_for_edit(text)
    armed = armed_return_entry(config, release)
    edit = edit_for_release(
        text, release, args, initrd_name, armed if armed is not None else saved_default, end_trial=False
    )
    config = parse(edit.text)
    index = edit.entry_index
    old = return_entry(config, index, edit.previous_default, release)
    summary = [line for line in edit.summary if not line.startswith("default ")]
    text = step(summary, set_savedefault(config, index, old))
    text = set_default_saved(parse(text))
    summary += default_change(parse_for_edit(original), "saved")
    notes = [note for note in edit.notes if not note.startswith(("no fallback set", "default=saved pointed"))]
    if text == original:
        summary = []
    return TrialEdit(
        text,
        index,
        edit.added_entry,
        edit.previous_default,
        edit.previous_fallback,
        summary,
        notes,
        original,
        return_entry=old,
        panic_seconds=panic,
    )


def armed_return_entry(config: GrubConfig, release: str) -> int | None:
    """The OLD entry of a trial already set up for ``release`` (``default saved`` +
    ``savedefault OLD`` in its entry), or None."""
    index = entry_index_for_release(config, release)
    if index is None or config.global_command("default") is None or config.default != "saved":
        return None
    return savedefault_target(config.entries[index])


def return_entry(config: GrubConfig, index: int, previous: int, release: str) -> int:
    """The entry a trial of entry ``index`` goes back to: the previous default, else ``fallback=``."""
    if previous != index:
        return previous
    others = [n for n in config.fallbacks if n != index and n < len(config.entries)]
    if not others:
        raise UserError(
            f"the {release} entry is already the default and no other entry is set to return to: "
            "a trial needs an old entry to go back to",
            "set 'fallback=N' to the old kernel's entry (or run 'invoke rollback'), then run the trial again",
        )
    return others[0]


def default_change(config: GrubConfig, value: str) -> list[str]:
    """The summary line for ``default`` going from what ``config`` says to ``value``."""
    command = config.global_command("default")
    if command is None:
        return [f"default -> {value}"]
    return [] if command.value == value else [f"default {command.value} -> {value}"]


def set_default_saved(config: GrubConfig) -> str:
    """``default saved`` (the separator the line already has); the line must exist."""
    command = config.global_command("default")
    assert command is not None, "edit_for_release always leaves a default line"
    if command.value == "saved":
        return config.render()
    return splice(config, command.first, command.last + 1, [command.with_value("saved")])


def set_savedefault(config: GrubConfig, index: int, value: int) -> Step:
    """Entry ``index`` carries exactly one ``savedefault VALUE``, right after its title."""
    entry = config.entries[index]
    found = [c for c in entry.body if c.keyword == "savedefault"]
    if len(found) == 1 and found[0].tokens == [str(value)]:
        return config.render(), []
    title = entry.commands[0]
    model = entry.body[0]
    line = f"{model.indent}savedefault{model.sep or ' '}{value}{title.eol or config.newline}"
    lines = list(config.lines)
    for command in reversed(found):
        del lines[command.first : command.last + 1]
    lines[title.last + 1 : title.last + 1] = [line]
    return "".join(lines), [f"entry {index} {entry.title!r}: savedefault {value} (GRUB boots it once)"]


def drop_savedefault(config: GrubConfig, index: int, trial_only: bool = False) -> Step:
    """Entry ``index`` without ``savedefault`` lines (``trial_only``: only those naming an entry,
    ``savedefault N`` as a trial writes it; a bare ``savedefault`` stays)."""
    entry = config.entries[index]
    found = [c for c in entry.body if c.keyword == "savedefault"]
    if trial_only:
        found = [c for c in found if parse_index(c.value) is not None]
    lines = list(config.lines)
    for command in reversed(found):
        del lines[command.first : command.last + 1]
    changes = [f"entry {index} {entry.title!r}: {f'savedefault {c.value}'.strip()} removed" for c in found]
    return "".join(lines), changes


def drop_trial_savedefault(config: GrubConfig, index: int) -> Step:
    """Entry ``index`` without a trial's ``savedefault N`` lines."""
    return drop_savedefault(config, index, trial_only=True)


def edit_commit_trial(text: str, release: str) -> GrubEdit:
    """Make a trial permanent: ``default=N`` for the release's entry, its ``savedefault`` gone.

    ``fallback=`` (the old entry) stays, as an ordinary install leaves it. A second
    commit changes nothing.
    """
    check_release(release)
    config = parse_for_edit(text)
    index = entry_index_for_release(config, release)
    if index is None:
        raise UserError(
            f"grub.conf has no entry for {release}: there is no trial to commit",
            "run 'invoke install-kernel --trial' (or 'invoke grub --trial') and reboot first",
        )
    old = savedefault_target(config.entries[index])
    summary: list[str] = []
    new_text = step(summary, drop_savedefault(config, index))
    new_text = step(summary, set_default(parse(new_text), index))
    previous = old if old is not None else index
    return GrubEdit(new_text, index, False, previous, fallback_value(config), summary, [], text)
