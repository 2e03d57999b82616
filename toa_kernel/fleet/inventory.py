"""The inventory: which servers a rollout acts on, and how to reach each one.

An INI file in the shape of Ansible's inventory (the format operators of such
fleets already keep), read line by line so every error names ``FILE:LINE``::

    # toa-kernel inventory
    [all:vars]
    user = root
    key = ~/.ssh/id_rsa
    legacy_ssh = true            # CentOS 6: OpenSSH 5.3, RSA login signed with ssh-rsa

    [web]
    web1 host=10.0.0.11
    web2 host=10.0.0.12 port=2222 user=admin sudo=true
    web3 host=10.0.0.13

    [db]
    db1 host=10.0.1.5

    [prod:children]
    web
    db

- ``[GROUP]``: one host per line, ``NAME [key=value ...]``; a host may be listed
  in several groups, but its own values are given once.
- ``[GROUP:vars]`` / ``[all:vars]``: ``key = value`` lines for the group's hosts.
- ``[GROUP:children]``: groups that belong to GROUP.
- Hosts before the first section belong to ``ungrouped``; every host is in ``all``.

Keys (Ansible's names are accepted too): ``host`` (address; default: the name),
``user``, ``port``, ``key`` (private key file), ``sudo``, ``legacy_ssh``,
``root`` (root prefix on the server, default ``/``) and ``connection``
(``ssh``, or ``local`` for this machine). A host's own value wins over its
groups', a group's over the groups containing it, those over ``[all:vars]``,
and that over the ``ssh_*`` settings. Two groups at the same distance giving a
host different values is an error, as are unknown keys, bad ports and flags,
unknown groups, a host defined twice and two names for one server.

``--hosts a,b,c`` picks hosts and groups of the inventory by name, in that
order; without an inventory it lists the servers themselves
(``[USER@]HOST[:PORT]``) with the settings' SSH values.
"""

from __future__ import annotations

import getpass
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import FALSE_WORDS, TRUE_WORDS, Settings
from toa_kernel.core.sshtarget import SSH_PORT, check_host, check_user, split_host

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
SECTION_RE = re.compile(r"^\[(?P<name>[^\]:]+)(?::(?P<kind>[a-z]+))?\]$")
KEYS = ("host", "user", "port", "key", "sudo", "legacy_ssh", "root", "connection")
ALIASES = {
    "ansible_host": "host",
    "ansible_ssh_host": "host",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_ssh_private_key_file": "key",
    "ansible_become": "sudo",
    "ansible_connection": "connection",
}
CONNECTIONS = ("ssh", "local")
FORMAT_FIX = "see the inventory format in the README ('many servers'): [group], NAME key=value, [group:vars]"


@dataclass(frozen=True)
class Host:
    """One server of the fleet and how to reach it."""

    name: str
    address: str
    user: str = ""
    port: int = SSH_PORT
    key: str = ""
    sudo: bool = False
    legacy_ssh: bool = False
    root: str = "/"
    connection: str = "ssh"
    groups: tuple[str, ...] = ()
    source: str = ""  # FILE:LINE where it is defined (or "--hosts")

    @property
    def is_local(self) -> bool:
        return self.connection == "local"

    @property
    def where(self) -> str:
        """For messages: ``root@10.0.0.11:22`` (and the root prefix when not /)."""
        place = "this machine" if self.is_local else f"{self.user}@{self.address}:{self.port}"
        return place if self.root == "/" else f"{place} (root {self.root})"

    def identity(self) -> tuple[str, str, int, str]:
        """What makes two entries the same server (and root prefix)."""
        address = "local" if self.is_local else self.address.lower()
        return (self.connection, address, 0 if self.is_local else self.port, self.root)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "user": self.user,
            "port": self.port,
            "root": self.root,
            "connection": self.connection,
            "sudo": self.sudo,
            "legacy_ssh": self.legacy_ssh,
            "groups": list(self.groups),
        }


@dataclass
class Inventory:
    """Hosts in file order, and groups (name -> host names)."""

    path: str
    hosts: dict[str, Host] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def select(self, patterns: Iterable[str] | None) -> list[Host]:
        """Hosts named by ``patterns`` (host or group names; ``all``), in that order, once each."""
        chosen: dict[str, Host] = {}
        for pattern in patterns or ["all"]:
            if pattern in self.hosts:
                chosen.setdefault(pattern, self.hosts[pattern])
            elif pattern in self.groups:
                for name in self.groups[pattern]:
                    chosen.setdefault(name, self.hosts[name])
            else:
                known = ", ".join([*self.groups, *self.hosts][:20])
                raise UserError(
                    f"--hosts: {pattern!r} is neither a host nor a group of {self.path}",
                    f"use names from the inventory: {known}",
                )
        if not chosen:
            raise UserError(f"--hosts selects no host of {self.path}", "name hosts or groups that have hosts")
        return list(chosen.values())


# --- reading values ------------------------------------------------------------------------


def where_error(where: str, problem: str, fix: str = FORMAT_FIX) -> UserError:
    return UserError(f"{where}: {problem}", fix)


def key_name(key: str, where: str) -> str:
    name = ALIASES.get(key, key)
    if name not in KEYS:
        raise where_error(
            where,
            f"unknown key {key!r}",
            f"use one of: {', '.join(KEYS)} (or Ansible's ansible_host, ansible_user, ansible_port, "
            "ansible_ssh_private_key_file, ansible_become, ansible_connection)",
        )
    return name


def check_value(name: str, text: str, where: str) -> Any:
    """A key's value in its type, or a UserError naming FILE:LINE."""
    if name == "port":
        try:
            port = int(text)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise where_error(where, f"port {text!r} is not a number from 1 to 65535", "write port=22")
        return port
    if name in ("sudo", "legacy_ssh"):
        lowered = text.lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS and lowered:
            return False
        raise where_error(
            where, f"{name}={text!r} is not true or false", f"write {name}=true or {name}=false"
        )
    if name == "connection":
        if text not in CONNECTIONS:
            raise where_error(where, f"connection {text!r} is unknown", "write connection=ssh (or local)")
        return text
    if name == "root":
        if not text.startswith("/") or "\0" in text:
            raise where_error(
                where, f"root {text!r} is not an absolute path", "write root=/ or root=/srv/node1"
            )
        return str(PurePosixPath(text))
    if name == "host":
        try:
            check_host(text, text)
        except UserError as exc:
            raise where_error(where, exc.message, "write host=ADDRESS (a name or an IP address)") from None
    if name == "user":
        try:
            check_user(text, where)
        except UserError as exc:
            raise where_error(where, exc.message, exc.fix) from None
    if not text:
        raise where_error(where, f"{name} has an empty value")
    return text


def parse_pairs(words: list[str], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for word in words:
        key, eq, text = word.partition("=")
        if not eq:
            raise where_error(where, f"{word!r} is not key=value")
        name = key_name(key.strip(), where)
        if name in values:
            raise where_error(where, f"{name} is given twice")
        values[name] = check_value(name, text.strip(), where)
    return values


def split_line(line: str, where: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise where_error(where, f"cannot read the line ({exc})") from None


# --- the parser ------------------------------------------------------------------------------


@dataclass
class HostLine:
    name: str
    values: dict[str, Any]
    where: str


@dataclass
class Parsed:
    """What the file says, before values are merged."""

    path: str
    order: list[str] = field(default_factory=list)  # host names, first appearance
    defined: dict[str, HostLine] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts
    children: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # group -> (child, where)
    group_vars: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)
    seen_groups: dict[str, str] = field(default_factory=dict)  # group -> where declared

    def add_host(self, group: str, words: list[str], where: str) -> None:
        name = words[0]
        if not NAME_RE.match(name):
            raise where_error(where, f"{name!r} is not a host name (letters, digits, . _ -)")
        values = parse_pairs(words[1:], where)
        if name in self.members.get(group, []):
            raise where_error(where, f"host {name} is listed twice in [{group}]")
        if values:
            if name in self.defined and self.defined[name].values:
                first = self.defined[name].where
                raise where_error(
                    where,
                    f"host {name} is defined twice (first at {first})",
                    "give a host's values on one line; list it by name only in other groups",
                )
            self.defined[name] = HostLine(name, values, where)
        else:
            self.defined.setdefault(name, HostLine(name, {}, where))
        if name not in self.order:
            self.order.append(name)
        self.members.setdefault(group, []).append(name)

    def add_var(self, group: str, line: str, where: str) -> None:
        key, eq, text = line.partition("=")
        if not eq:
            raise where_error(where, f"{line.strip()!r} is not 'key = value'")
        text = " ".join(split_line(text, where))  # quotes removed, a trailing # comment dropped
        name = key_name(key.strip(), where)
        variables = self.group_vars.setdefault(group, {})
        if name in variables:
            raise where_error(where, f"{name} is given twice for [{group}] (first at {variables[name][1]})")
        variables[name] = (check_value(name, text, where), where)


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(
            f"inventory {path} does not exist", "pass --inventory FILE (see the README's 'many servers')"
        ) from None
    except IsADirectoryError:
        raise UserError(f"inventory {path} is a directory", "pass the inventory file itself") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the inventory {path}: {exc}", "check the file") from None


def parse_file(path: Path) -> Parsed:
    parsed = Parsed(str(path))
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(read_lines(path), start=1):
        where = f"{path}:{number}"
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        section = SECTION_RE.match(stripped.split("#", 1)[0].strip())
        if section:
            group, kind = section.group("name").strip(), section.group("kind") or "hosts"
            if not NAME_RE.match(group):
                raise where_error(where, f"{group!r} is not a group name (letters, digits, . _ -)")
            if kind not in ("hosts", "vars", "children"):
                raise where_error(where, f"[{group}:{kind}] is not a section kind (vars or children)")
            if group == "all" and kind != "vars":
                raise where_error(where, "'all' holds every host already: only [all:vars] may be written")
            parsed.seen_groups.setdefault(group, where)
            continue
        if stripped.startswith("["):
            raise where_error(where, f"cannot read the section header {stripped!r}")
        words = split_line(raw, where)
        if not words:
            continue
        if kind == "hosts":
            parsed.add_host(group, words, where)
        elif kind == "vars":
            parsed.add_var(group, raw, where)
        else:
            if len(words) != 1 or not NAME_RE.match(words[0]):
                raise where_error(where, f"[{group}:children] lists group names, one per line")
            parsed.children.setdefault(group, []).append((words[0], where))
    return parsed


# --- merging -------------------------------------------------------------------------------


def group_hosts(parsed: Parsed) -> dict[str, list[str]]:
    """Every group with its hosts (children included), in file order; unknown groups refused."""
    # in the order the file names them, so that every message is the same from run to run
    known = list(dict.fromkeys([*parsed.seen_groups, *parsed.members, *parsed.children, *parsed.group_vars]))
    for group, kids in parsed.children.items():
        for child, where in kids:
            if child not in known or child == "all":
                raise where_error(
                    where,
                    f"[{group}:children] names the group {child!r}, which the inventory does not define",
                    f"add a [{child}] section with its hosts, or remove the line",
                )
    for group in parsed.group_vars:
        if group != "all" and group not in parsed.members and group not in parsed.children:
            where = next(iter(parsed.group_vars[group].values()))[1]
            raise where_error(where, f"[{group}:vars] is for a group that has no hosts and no children")

    def expand(group: str, trail: tuple[str, ...]) -> list[str]:
        if group in trail:
            raise UserError(
                f"{parsed.path}: groups contain each other: {' -> '.join([*trail, group])}",
                "a group may not be its own child",
            )
        names = list(parsed.members.get(group, []))
        for child, _where in parsed.children.get(group, []):
            names += expand(child, (*trail, group))
        return list(dict.fromkeys(names))

    groups = {name: expand(name, ()) for name in known if name != "all"}
    groups["all"] = list(parsed.order)
    return {name: groups[name] for name in sorted(groups, key=lambda g: (g != "all", g))}


def ancestry(parsed: Parsed, host: str) -> list[list[str]]:
    """The host's groups by distance: direct groups, the groups holding those, ..., then ``all``."""
    parents: dict[str, set[str]] = {}
    for group, kids in parsed.children.items():
        for child, _ in kids:
            parents.setdefault(child, set()).add(group)
    levels: list[list[str]] = []
    current = sorted(group for group, names in parsed.members.items() if host in names)
    seen: set[str] = set()
    while current:
        levels.append(current)
        seen |= set(current)
        current = sorted({p for g in current for p in parents.get(g, set())} - seen)
    levels.append(["all"])
    return levels


def merged_values(parsed: Parsed, name: str) -> dict[str, Any]:
    """The host's own values over its groups' (nearest first), conflicts refused."""
    line = parsed.defined[name]
    values = dict(line.values)
    for level in ancestry(parsed, name):
        for key in KEYS:
            if key in values:
                continue
            found = {g: parsed.group_vars[g][key] for g in level if key in parsed.group_vars.get(g, {})}
            distinct = {value for value, _where in found.values()}
            if len(distinct) > 1:
                places = ", ".join(f"[{g}:vars] at {where}" for g, (_v, where) in found.items())
                raise UserError(
                    f"{line.where}: host {name} gets different values of {key} from {places}",
                    f"set {key}= on the host's own line, or make the groups agree",
                )
            if found:
                values[key] = next(iter(found.values()))[0]
    return values


def host_from(
    name: str, values: dict[str, Any], settings: Settings, groups: tuple[str, ...], where: str
) -> Host:
    connection = values.get("connection", "ssh")
    address = values.get("host", "localhost" if connection == "local" else name)
    if connection != "local":
        check_value("host", address, where)
    return Host(
        name=name,
        address=address,
        user=values.get("user") or settings.ssh_user or getpass.getuser(),
        port=values.get("port") or settings.ssh_port or SSH_PORT,
        key=values.get("key", settings.ssh_key),
        sudo=values.get("sudo", settings.ssh_sudo),
        legacy_ssh=values.get("legacy_ssh", settings.ssh_legacy),
        root=values.get("root", "/"),
        connection=connection,
        groups=groups,
        source=where,
    )


def check_distinct(hosts: list[Host]) -> None:
    """Two names for one server (and root prefix) would install on it twice at once."""
    seen: dict[tuple[str, str, int, str], Host] = {}
    for host in hosts:
        other = seen.get(host.identity())
        if other is not None:
            raise UserError(
                f"{host.source}: host {host.name} is the same server as {other.name} "
                f"(defined at {other.source}): {host.where}",
                "list each server once (use groups to give it several roles)",
            )
        seen[host.identity()] = host


def load_inventory(path: Path, settings: Settings) -> Inventory:
    """Read and check an inventory file."""
    parsed = parse_file(Path(path))
    if not parsed.order:
        raise UserError(f"inventory {path} lists no host", FORMAT_FIX)
    groups = group_hosts(parsed)
    inventory = Inventory(str(path), groups=groups)
    for name in parsed.order:
        member_of = tuple(g for g, names in groups.items() if name in names and g != "all")
        values = merged_values(parsed, name)
        inventory.hosts[name] = host_from(name, values, settings, member_of, parsed.defined[name].where)
    check_distinct(list(inventory.hosts.values()))
    return inventory


def hosts_from_flag(specs: list[str], settings: Settings) -> list[Host]:
    """``--hosts`` without an inventory: ``[USER@]HOST[:PORT]`` each, the settings for the rest."""
    hosts = []
    for spec in specs:
        try:
            user, address, port = split_host(spec)
        except UserError as exc:
            raise UserError(f"--hosts: {exc.message}", exc.fix) from None
        name = address if not port else f"{address}:{port}"
        hosts.append(
            Host(
                name=name,
                address=address,
                user=user or settings.ssh_user or getpass.getuser(),
                port=port or settings.ssh_port or SSH_PORT,
                key=settings.ssh_key,
                sudo=settings.ssh_sudo,
                legacy_ssh=settings.ssh_legacy,
                root=settings.root.as_posix(),
                source="--hosts",
            )
        )
    check_distinct(hosts)
    return hosts


def split_patterns(text: str | None) -> list[str]:
    """``a,b c`` -> ``['a', 'b', 'c']``."""
    return [word for word in (text or "").replace(",", " ").split() if word]


def choose_hosts(settings: Settings, inventory: Path | None, hosts: str | None) -> tuple[list[Host], str]:
    """The hosts a fleet task acts on, and where they came from (for reports)."""
    patterns = split_patterns(hosts)
    if inventory is not None:
        return load_inventory(inventory, settings).select(patterns), str(inventory)
    if not patterns:
        raise UserError(
            "which servers? no --inventory and no --hosts",
            "pass --inventory FILE (see the README's 'many servers') or --hosts root@web1,root@web2",
        )
    return hosts_from_flag(patterns, settings), "--hosts"
