"""Syntax errors in the vendor's TOA sources, fixed when (and only when) they are there.

The LVS tree's TOA module has never compiled as published (its ``net/Makefile``
does not even build it), with any compiler:

- ``net/toa/toa.h``: ``DEFINE_TOA_STAT(type, name)`` expands to the declaration
  ``(__typeof__(type) *name)``; a declaration in parentheses is a syntax error;
- ``net/toa/toa.c``, the IPv6 hooks (compiled under ``CONFIG_IP_VS_IPV6``, which
  the tree's own RHEL config sets): ``tcp_v6_syn_recv_sock_toa`` opens a brace
  after ``if (...)`` that is never closed before its ``else``, and
  ``hook_toa_functions`` casts with ``struct proto_ops *)&inet6_stream_ops``,
  missing the opening parenthesis.

Each fix is a text edit found by its pattern (blanks tolerated), so a copy of
the source without the defect is left alone; the build reports each one like
the option-code change, shows its diff in a dry run and records it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toa_kernel.core.layout import TOA_HEADER
from toa_kernel.core.plan import Change, file_edit, unified_diff
from toa_kernel.kernel.tree import read_tree_file

TOA_SOURCE = "net/toa/toa.c"


@dataclass(frozen=True)
class Defect:
    """One defect: where, how to find it, how to fix it, and what to tell the user."""

    name: str
    path: str
    pattern: re.Pattern[str]
    fix: Callable[[re.Match[str]], str]
    summary: str

    def found(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def fixed(self, text: str) -> str:
        return self.pattern.sub(self.fix, text)


DEFECTS = (
    Defect(
        name="toa-stat-declaration",
        path=TOA_HEADER,
        pattern=re.compile(
            r"(?P<head>^[ \t]*#[ \t]*define[ \t]+DEFINE_TOA_STAT[ \t]*\([ \t]*(?P<type>\w+)[ \t]*,[ \t]*"
            r"(?P<name>\w+)[ \t]*\)[ \t]*(?:\\\n[ \t]*)?)"
            r"\([ \t]*(?P<declaration>__typeof__[ \t]*\([ \t]*(?P=type)[ \t]*\)"
            r"[ \t]*\*[ \t]*(?P=name))[ \t]*\)",
            re.MULTILINE,
        ),
        fix=lambda m: m.group("head") + m.group("declaration"),
        summary="toa.h: DEFINE_TOA_STAT declares '__typeof__(type) *name', not '(__typeof__(type) *name)' "
        "(a parenthesised declaration does not compile with any compiler)",
    ),
    Defect(
        name="toa-v6-unclosed-brace",
        path=TOA_SOURCE,
        pattern=re.compile(
            r"(?P<if>if[ \t]*\([ \t]*NULL[ \t]*!=[ \t]*newsock->sk_user_data[ \t]*\))[ \t]*\{"
            r"(?P<rest>[ \t]*\n[ \t]*TOA_INC_STATS\([^\n]*\);[ \t]*\n[ \t]*else\b)"
        ),
        fix=lambda m: m.group("if") + m.group("rest"),
        summary="toa.c: tcp_v6_syn_recv_sock_toa: no '{' after 'if (NULL != newsock->sk_user_data)' "
        "(it was never closed before the 'else': a syntax error in the IPv6 hooks, CONFIG_IP_VS_IPV6)",
    ),
    Defect(
        name="toa-v6-cast-parenthesis",
        path=TOA_SOURCE,
        pattern=re.compile(r"(?P<assign>=[ \t\n]*)(?P<cast>struct[ \t]+\w+[ \t]*\*[ \t]*\)[ \t]*&)"),
        fix=lambda m: m.group("assign") + "(" + m.group("cast"),
        summary="toa.c: hook_toa_functions: '(struct proto_ops *)&inet6_stream_ops', the cast lacked its '(' "
        "(a syntax error in the IPv6 hooks, CONFIG_IP_VS_IPV6)",
    ),
)


def present(tree: Path) -> Iterator[Defect]:
    """The defects the tree's files have now (files that are missing have none)."""
    for defect in DEFECTS:
        if (tree / defect.path).is_file() and defect.found(read_tree_file(tree, defect.path)):
            yield defect


def fix_changes(tree: Path) -> list[tuple[Defect, Change]]:
    """One edit per defect present, each applied on top of the ones before it in the same file."""
    texts: dict[str, str] = {}
    changes = []
    for defect in present(tree):
        before = texts.get(defect.path) or read_tree_file(tree, defect.path)
        after = defect.fixed(before)
        texts[defect.path] = after
        change = file_edit(tree / defect.path, after, defect.summary, label=defect.path)
        if change is not None:
            change.diff = unified_diff(before, after, defect.path)  # this fix alone
            changes.append((defect, change))
    return changes
