"""Fast checks of the SSH layer's pure parts: host syntax, SSH settings, the
batched in-root resolver, remote command lines, known_hosts parsing."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest

from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.sshtarget import SshTarget, resolve_target, split_host
from toa_kernel.system import hostkeys
from toa_kernel.system.api import RunResult, missing_program
from toa_kernel.system.inroot import resolve_inside
from toa_kernel.system.ssh import SshSystem
from toa_kernel.system.sshconnect import LEGACY_DISABLED, SshOptions, connect_kwargs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web1", ("", "web1", 0)),
        ("root@10.0.0.5", ("root", "10.0.0.5", 0)),
        ("admin@web1.example.com:2222", ("admin", "web1.example.com", 2222)),
        ("[::1]:2200", ("", "::1", 2200)),
        ("ops@[fe80::1]", ("ops", "fe80::1", 0)),
        ("::1", ("", "::1", 0)),
    ],
)
def test_host_syntax(text, expected):
    assert split_host(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("root@", "not a host name"),
        ("web1:0", "port"),
        ("web1:99999", "port"),
        ("web1:ssh", "port"),
        ("bad host", "not a host name"),
        ("-oProxyCommand=x", "not a host name"),
        ("r;m@web1", "not a valid user name"),
        ("[::1", "unbalanced"),
    ],
)
def test_bad_hosts_are_user_errors(text, complaint):
    with pytest.raises(UserError, match=complaint) as caught:
        split_host(text)
    assert caught.value.fix


def test_user_and_port_come_from_host_or_settings_but_never_disagree():
    assert resolve_target("web1", "admin", 2222) == SshTarget("admin", "web1", 2222)
    assert resolve_target("root@web1:22", "root", 22) == SshTarget("root", "web1", 22)
    assert resolve_target("root@web1").port == 22
    with pytest.raises(UserError, match="names user 'root' but ssh_user is 'admin'"):
        resolve_target("root@web1", "admin")
    with pytest.raises(UserError, match="names port 2222 but ssh_port is 22"):
        resolve_target("web1:2222", "", 22)
    assert SshTarget("u", "web1", 22).known_hosts_name == "web1"
    assert SshTarget("u", "::1", 2200).known_hosts_name == "[::1]:2200"


def test_ssh_settings_from_config_strings():
    settings = Settings.from_config(
        {
            "toa": {
                "host": " root@web1:2222 ",
                "ssh_sudo": "yes",
                "ssh_legacy": "1",
                "ssh_accept_new_host_key": "false",
                "ssh_port": "",
                "ssh_connect_timeout": "2.5",
                "ssh_known_hosts": "~/kh",
            }
        }
    )
    assert settings.host == "root@web1:2222"
    assert (settings.ssh_sudo, settings.ssh_legacy, settings.ssh_accept_new_host_key) == (True, True, False)
    assert (settings.ssh_port, settings.ssh_connect_timeout) == (0, 2.5)
    assert settings.ssh_known_hosts == Path("~/kh").expanduser()
    options = SshOptions.from_settings(settings)
    assert (options.sudo, options.legacy, options.connect_timeout) == (True, True, 2.5)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"host": "web 1"}, "not a host name"),
        ({"ssh_port": 70000}, "port"),
        ({"ssh_port": "x"}, "ssh-port .x.: is not a whole number"),
        ({"ssh_user": "bad user"}, "not a valid user name"),
        ({"ssh_connect_timeout": 0}, "ssh-connect-timeout"),
    ],
)
def test_bad_ssh_settings_are_user_errors(changes, complaint):
    with pytest.raises(UserError, match=complaint):
        Settings.from_config(None, **changes)


def test_legacy_disables_rsa_sha2_login_signatures(tmp_path: Path):
    assert connect_kwargs(SshOptions(legacy=True))["disabled_algorithms"] == LEGACY_DISABLED
    assert LEGACY_DISABLED == {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}
    assert "disabled_algorithms" not in connect_kwargs(SshOptions())
    assert connect_kwargs(SshOptions())["banner_timeout"] == 10.0


class FakeTree:
    """A link oracle over a dict of symlinks; counts the round trips asked for."""

    def __init__(self, links: dict[str, str]) -> None:
        self.links = links
        self.calls: list[list[str]] = []

    def __call__(self, candidates: list[str]):
        self.calls.append(candidates)
        for index, path in enumerate(candidates):
            if path in self.links:
                return index, self.links[path]
        return None


def test_resolver_asks_once_per_link_followed():
    tree = FakeTree({"/etc/grub.conf": "../boot/grub/grub.conf"})
    assert resolve_inside("/etc/grub.conf", tree) == "/boot/grub/grub.conf"
    assert len(tree.calls) == 2  # the link, then the rest of the target in one batch
    plain = FakeTree({})
    assert resolve_inside("/a/b/c/d/e", plain) == "/a/b/c/d/e"
    assert plain.calls == [["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/b/c/d/e"]]


@pytest.mark.parametrize(
    ("links", "path", "expected"),
    [
        ({"/lib": "usr/lib"}, "/lib/modules", "/usr/lib/modules"),
        ({"/etc/x": "/../../../etc/passwd"}, "/etc/x", "/etc/passwd"),
        ({"/etc/x": "../../../../etc/passwd"}, "/etc/x", "/etc/passwd"),
        ({"/boot/up": "../.."}, "/boot/up/etc/passwd", "/etc/passwd"),
        ({"/a": "/b", "/b": "/c/d"}, "/a/e", "/c/d/e"),
        ({}, "/a/./b/../c", "/a/c"),
    ],
)
def test_resolver_rules_match_root_resolve(links, path, expected, tmp_path: Path):
    assert resolve_inside(path, FakeTree(links)) == expected
    # The same tree on disk, through the local Root.resolve: same answer.
    from toa_kernel.system.rootfs import Root

    for link, target in links.items():
        (tmp_path / link[1:]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link[1:]).symlink_to(target)
    assert Root(tmp_path).system_path(Root(tmp_path).resolve(path)) == expected


def test_resolver_stops_a_loop():
    with pytest.raises(UserError, match="form a loop"):
        resolve_inside("/a", FakeTree({"/a": "/b", "/b": "/a"}))


def remote(sudo: bool) -> SshSystem:
    return SshSystem(None, SshTarget("ops", "web1"), SshOptions(sudo=sudo), "/srv/node 1")  # type: ignore[arg-type]


def test_command_line_quotes_every_word_and_adds_sudo_timeout_env_cwd():
    argv = ["printf", "%s", "a b", "$(reboot)", "x;y", "it's"]
    assert shlex.split(remote(False).command_line(argv)) == argv
    line = remote(True).command_line(argv, timeout=2.5, env={"LC_ALL": "C"}, cwd="/srv/node 1/boot")
    words = shlex.split(line)
    assert words[:6] == ["sudo", "-n", "--", "timeout", "3", "env"]
    assert words[6] == "LC_ALL=C"
    assert words[-len(argv) :] == argv
    assert "/srv/node 1/boot" in words
    with pytest.raises(UserError, match="not valid"):
        remote(False).command_line(["true"], env={"A;B": "x"})


def test_host_paths_and_labels_under_a_remote_root():
    system = remote(False)
    assert system.host_path("/boot/grub/grub.conf") == "/srv/node 1/boot/grub/grub.conf"
    assert system.host_path("/") == "/srv/node 1"
    assert system.system_path("/srv/node 1/boot") == "/boot"
    assert system.label == "ssh://ops@web1:22:/srv/node 1"
    with pytest.raises(UserError, match="absolute"):
        SshSystem(None, SshTarget("ops", "web1"), SshOptions(), "relative")  # type: ignore[arg-type]


def test_missing_program_names_come_from_either_shell():
    assert missing_program("bash: line 1: flock: command not found\n") == "flock"
    assert missing_program("sh: 1: tar: not found\n") == "tar"
    with pytest.raises(Exception, match="'flock'"):
        RunResult(("sh", "-c", "x"), 127, b"", b"sh: flock: command not found\n").check()


def make_key(path: Path) -> paramiko.PKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return paramiko.PKey.from_path(path)


def test_known_hosts_plain_hashed_and_changed(tmp_path: Path):
    key, other = make_key(tmp_path / "k"), make_key(tmp_path / "o")
    plain = tmp_path / "plain"
    hostkeys.record_key(plain, "[10.0.0.5]:2222", key)
    assert plain.stat().st_mode & 0o777 == 0o600
    hostkeys.record_key(plain, "web1", other)
    found = hostkeys.read_known(plain, "[10.0.0.5]:2222")
    assert [(k.key, k.lineno) for k in found] == [(key, 1)]
    hashed = tmp_path / "hashed"
    hashed.write_text("# comment\n\n" + plain.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    hashed.write_text("@revoked * ssh-ed25519 AAAA\ngarbage line\n" + hashed.read_text())
    assert "web1" not in hashed.read_text()
    assert [k.lineno for k in hostkeys.read_known(hashed, "web1")] == [6]
    error = hostkeys.changed_key_error("web1", key, hostkeys.read_known(hashed, "web1"))
    assert hostkeys.fingerprint(key) in error.message and hostkeys.fingerprint(other) in error.message
    assert f"{hashed} line 6" in error.message and "remove line 6" in error.fix
