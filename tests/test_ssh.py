"""SSH done safely, against real sshd instances: host keys, logins, legacy servers,
sudo, and the faults an operator meets (wrong port, no answer, wrong key, a host
that drops in the middle of a write, tools missing on the server)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paramiko
import pytest
from sshd_support import (
    PASSWORD_USER,
    SUDO_USER,
    TTY_USER,
    ensure_sudo_users,
    forbidden_commands,
    free_port,
    keygen,
    needs_sshd,
    remove_sudo_rules,
    start_sshd,
)

from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.sshtarget import SshTarget
from toa_kernel.system import hostkeys
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.opener import open_system
from toa_kernel.system.ssh import SshSystem
from toa_kernel.system.sshconnect import ConnectionLost, HostUnreachable, SshOptions

pytestmark = [pytest.mark.slow, pytest.mark.ssh, needs_sshd]


@pytest.fixture(scope="module")
def sshd():
    server = start_sshd()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_user_known_hosts(tmp_path: Path, monkeypatch):
    """The tests never read (or depend on) the real ~/.ssh/known_hosts."""
    monkeypatch.setattr(hostkeys, "USER_KNOWN_HOSTS", tmp_path / "user_known_hosts")


def paramiko_target(port: int) -> SshTarget:
    return SshTarget("root", "127.0.0.1", port)


def options_without_server(tmp_path: Path, timeout: float = 5.0) -> SshOptions:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        keygen(key, "ed25519")
    return SshOptions(key=str(key), known_hosts=tmp_path / "known_hosts", connect_timeout=timeout)


def host_fingerprint(server) -> str:
    public = str(server.host_key) + ".pub"
    listed = subprocess.run(["ssh-keygen", "-l", "-f", public], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


# Host keys.


def test_an_unknown_host_key_is_refused_with_its_fingerprint(sshd, tmp_path: Path):
    tool_file = tmp_path / "known_hosts"
    with pytest.raises(UserError) as caught:
        SshSystem.connect(sshd.target(), sshd.options(tool_file))
    assert "is not known: ssh-ed25519 " + host_fingerprint(sshd) in caught.value.message
    assert "--accept-new-host-key" in caught.value.fix
    assert not tool_file.exists()


def test_accept_new_records_the_key_then_it_is_trusted(sshd, tmp_path: Path):
    tool_file = tmp_path / "config/known_hosts"
    with SshSystem.connect(sshd.target(), sshd.options(tool_file, accept_new_host_key=True)) as remote:
        assert remote.run(["true"]).ok
    assert tool_file.read_text() == sshd.host_key_line()
    assert tool_file.stat().st_mode & 0o777 == 0o600
    with SshSystem.connect(sshd.target(), sshd.options(tool_file)) as again:
        assert again.run(["true"]).ok
    assert tool_file.read_text() == sshd.host_key_line()  # recorded once


def test_a_hashed_entry_in_the_users_known_hosts_is_honoured_and_left_alone(sshd, tmp_path: Path):
    user_file = tmp_path / "user_known_hosts"
    user_file.write_text(sshd.host_key_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(user_file)], check=True, capture_output=True)
    before = user_file.read_bytes()
    assert b"|1|" in before
    with SshSystem.connect(sshd.target(), sshd.options(tmp_path / "tool_known_hosts")) as remote:
        assert remote.run(["true"]).ok
    assert user_file.read_bytes() == before
    assert not (tmp_path / "tool_known_hosts").exists()


def test_a_changed_host_key_is_always_refused(tmp_path: Path):
    server = start_sshd()
    try:
        tool_file = tmp_path / "known_hosts"
        tool_file.write_text("# header\n")
        SshSystem.connect(server.target(), server.options(tool_file, accept_new_host_key=True)).close()
        old = host_fingerprint(server)
        server.restart(new_host_key=True)
        new = host_fingerprint(server)
        for accept in (False, True):
            with pytest.raises(UserError) as caught:
                SshSystem.connect(server.target(), server.options(tool_file, accept_new_host_key=accept))
            assert "CHANGED" in caught.value.message
            assert old in caught.value.message and new in caught.value.message
            assert f"{tool_file} line 2" in caught.value.message
            assert "remove line 2" in caught.value.fix
    finally:
        server.stop()


# Logins and legacy servers.


def test_connection_refused_on_a_wrong_port(tmp_path: Path):
    target = paramiko_target(free_port())
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="connection refused") as caught:
        SshSystem.connect(target, options_without_server(tmp_path))
    assert "--host USER@HOST:PORT" in caught.value.fix
    assert time.monotonic() - started < 5


def test_a_port_that_never_greets_times_out(tmp_path: Path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="no SSH server answered"):
            SshSystem.connect(paramiko_target(silent.getsockname()[1]), options_without_server(tmp_path, 1.0))
        assert time.monotonic() - started < 10


def test_a_wrong_key_is_an_auth_error(sshd, tmp_path: Path):
    other = keygen(tmp_path / "id_other", "ed25519")
    options = sshd.options(sshd.trust(tmp_path / "known_hosts"), key=str(other))
    with pytest.raises(UserError, match="refused the login of root") as caught:
        SshSystem.connect(sshd.target(), options)
    assert "authorized_keys" in caught.value.fix
    assert "ssh_legacy" not in caught.value.fix  # not an RSA key: the hint would mislead


def test_a_missing_or_encrypted_key_file_is_a_user_error(sshd, tmp_path: Path):
    known = sshd.trust(tmp_path / "known_hosts")
    with pytest.raises(UserError, match="does not exist"):
        SshSystem.connect(sshd.target(), sshd.options(known, key=str(tmp_path / "nope")))
    locked = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    with pytest.raises(UserError, match="passphrase"):
        SshSystem.connect(sshd.target(), sshd.options(known, key=str(locked)))


@pytest.fixture(scope="module")
def legacy_sshd():
    server = start_sshd("legacy")
    yield server
    server.stop()


def test_legacy_server_needs_the_legacy_setting_and_says_so(legacy_sshd, tmp_path: Path):
    known = legacy_sshd.trust(tmp_path / "known_hosts")
    with pytest.raises(UserError, match="refused the login") as caught:
        SshSystem.connect(legacy_sshd.target(), legacy_sshd.options(known, legacy=False))
    assert "ssh_legacy" in caught.value.fix and "--legacy-ssh" in caught.value.fix


def test_legacy_server_works_with_centos6_algorithms(legacy_sshd, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/grub.conf").symlink_to("../boot/grub/grub.conf")
    known = legacy_sshd.trust(tmp_path / "known_hosts")
    options = legacy_sshd.options(known, legacy=True)
    with SshSystem.connect(legacy_sshd.target(), options, str(root)) as remote:
        transport = remote.connection.transport
        assert transport.host_key_type == "ssh-rsa"
        assert (transport.remote_cipher, transport.remote_mac) == ("aes128-ctr", "hmac-sha1")
        written = remote.write_bytes_atomic("/etc/grub.conf", b"default=0\r\n", backup=True)
        assert written.path == "/boot/grub/grub.conf"
        assert remote.read_bytes("/etc/grub.conf") == b"default=0\r\n"
        with remote.lock("toa-kernel.lock"):
            pass
    assert "Kex: diffie-hellman-group14-sha1" in caplog.text
    assert forbidden_commands(legacy_sshd.commands()) == []


# sudo.


@pytest.fixture(scope="module")
def sudo_users():
    ensure_sudo_users()
    yield
    remove_sudo_rules()


def test_sudo_runs_every_command_as_root(sshd, sudo_users, tmp_path: Path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    known = sshd.trust(tmp_path / "known_hosts")
    with SshSystem.connect(sshd.target(SUDO_USER), sshd.options(known, sudo=True), str(root)) as remote:
        assert remote.run(["id", "-u"]).out.strip() == "0"
        remote.write_bytes_atomic("/etc/owned-by-root", b"x")
        with remote.lock("toa-kernel.lock"):
            pass
    assert (root / "etc/owned-by-root").stat().st_uid == 0
    sudo_lines = [c for user, c in sshd.commands() if user == SUDO_USER]
    assert sudo_lines and all(c.startswith("sudo -n -- ") for c in sudo_lines)


def test_without_sudo_a_plain_user_gets_a_clear_write_error(sshd, sudo_users, tmp_path: Path):
    root = Path(tempfile.mkdtemp(prefix="toa-root-"))  # reachable by the plain user (not under 0700 dirs)
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        known = sshd.trust(tmp_path / "known_hosts")
        remote = SshSystem.connect(sshd.target(SUDO_USER), sshd.options(known), str(root))
        with remote, pytest.raises(EnvironmentFailure, match="cannot write") as caught:
            remote.write_bytes_atomic("/etc/x", b"x")
        assert "ssh_sudo" in caught.value.fix
        assert list((root / "etc").iterdir()) == []
    finally:
        shutil.rmtree(root)


def test_sudo_with_requiretty_says_which_sudoers_line_fixes_it(sshd, sudo_users, tmp_path: Path):
    known = sshd.trust(tmp_path / "known_hosts")
    with pytest.raises(UserError, match="requires a tty") as caught:
        SshSystem.connect(sshd.target(TTY_USER), sshd.options(known, sudo=True))
    assert f"Defaults:{TTY_USER} !requiretty" in caught.value.fix


def test_sudo_that_wants_a_password_fails_at_once(sshd, sudo_users, tmp_path: Path):
    known = sshd.trust(tmp_path / "known_hosts")
    started = time.monotonic()
    with pytest.raises(UserError, match="password") as caught:
        SshSystem.connect(sshd.target(PASSWORD_USER), sshd.options(known, sudo=True))
    assert "NOPASSWD" in caught.value.fix
    assert time.monotonic() - started < 10


# A host that drops in the middle of a write; tools missing on the server.


def test_a_host_dropping_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path):
    """The server's sshd is killed during the transfer (after a given share of the bytes
    was sent) or later (during sync/rename, after a given time): never a partial file."""
    server = start_sshd()
    try:
        root = tmp_path / "root"
        grub = root / "boot/grub"
        grub.mkdir(parents=True)
        source = tmp_path / "new"
        old, new = os.urandom(16 << 20), os.urandom(16 << 20)
        source.write_bytes(new)
        known = server.trust(tmp_path / "known_hosts")
        started = time.monotonic()
        with SshSystem.connect(server.target(), server.options(known), str(root)) as remote:
            remote.write_bytes_atomic("/boot/grub/grub.conf", old)
        full = time.monotonic() - started
        drops = [("sent", share) for share in (0.05, 0.3, 0.6, 0.9, 0.99)]
        drops += [("time", share * full) for share in (0.5, 0.8, 1.0)]
        outcomes = []
        for round_, (when, value) in enumerate(drops):
            (grub / "grub.conf").write_bytes(old)
            backup = round_ % 2 == 0
            outcomes.append(copy_and_drop(server, known, root, source, when, value, backup))
            content = (grub / "grub.conf").read_bytes()
            assert content in (old, new), f"partial file after a drop at {when} {value}"
            if when == "sent":  # the rest of the bytes was never sent
                assert content == old
            if outcomes[-1] == "written":
                assert content == new
            if content == new and backup:  # renamed (the answer may still have been lost)
                backups = sorted(grub.glob("grub.conf.toa-backup-*"))
                assert backups and backups[-1].read_bytes() == old
            for saved in grub.glob("grub.conf.toa-backup-*"):
                saved.unlink()
            assert wait_for_no_temporary_files(grub)
        assert outcomes[:5] == ["dropped"] * 5, outcomes
    finally:
        server.stop()


def copy_and_drop(server, known: Path, root: Path, source: Path, when: str, value: float, backup: bool):
    """Copy ``source`` over SSH; kill the server's connections once ``value`` of the bytes
    were sent (``when="sent"``) or after ``value`` seconds (``when="time"``)."""
    remote = SshSystem.connect(server.target(), server.options(known), str(root))
    size, sent, killed = source.stat().st_size, [0], []

    def progress(count: int) -> None:
        sent[0] += count
        if when == "sent" and not killed and sent[0] >= value * size:
            killed.append(server.kill_connections())

    killer = threading.Timer(value if when == "time" else 3600, server.kill_connections)
    killer.start()
    try:
        remote.copy_file_in(source, "/boot/grub/grub.conf", backup=backup, progress=progress)
        return "written"
    except ConnectionLost:
        return "dropped"
    finally:
        killer.cancel()
        remote.close()


def wait_for_no_temporary_files(directory: Path, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in directory.iterdir() if p.name.startswith(".")]:
            return True
        time.sleep(0.1)
    return False


def test_missing_tools_on_the_server_are_named(tmp_path: Path):
    server = start_sshd(missing_tools=("flock", "tar"))
    try:
        root = tmp_path / "root"
        (root / "var/lock").mkdir(parents=True)
        (tmp_path / "tree").mkdir()
        known = server.trust(tmp_path / "known_hosts")
        with SshSystem.connect(server.target(), server.options(known), str(root)) as remote:
            with pytest.raises(ToolMissing, match="'flock'"), remote.lock("toa-kernel.lock"):
                pass
            with pytest.raises(ToolMissing, match="'tar'"):
                remote.put_tree(tmp_path / "tree", "/lib/modules/x")
    finally:
        server.stop()


# Settings and the factory.


def test_open_system_picks_local_or_ssh_from_the_settings(sshd, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    local = open_system(Settings(root=root))
    assert isinstance(local, LocalSystem) and local.root == str(root)
    settings = Settings(
        root=root,
        host=f"root@127.0.0.1:{sshd.port}",
        ssh_key=str(sshd.client_key),
        ssh_known_hosts=sshd.trust(tmp_path / "known_hosts"),
    )
    with open_system(settings) as remote:
        assert isinstance(remote, SshSystem)
        assert remote.label == f"ssh://root@127.0.0.1:{sshd.port}:{root}"
        assert remote.run(["id", "-u"]).out.strip() == "0"
    with pytest.raises(UserError, match="does not exist on"):
        open_system(settings.with_(root=tmp_path / "missing"))


def test_sha256_fingerprint_matches_ssh_keygen(sshd):
    assert hostkeys.fingerprint(paramiko.PKey.from_path(sshd.host_key)) == host_fingerprint(sshd)


def test_several_servers_at_once_each_log_their_own_commands(tmp_path: Path):
    servers = []
    try:
        for _ in range(5):
            servers.append(start_sshd())
        assert len({server.port for server in servers}) == 5
        for number, server in enumerate(servers):
            known = server.trust(tmp_path / f"known_hosts_{number}")
            with SshSystem.connect(server.target(), server.options(known)) as remote:
                assert remote.run(["echo", f"node {number}"]).out == f"node {number}\n"
        for number, server in enumerate(servers):
            echoed = [command for _user, command in server.commands() if command.startswith("echo")]
            assert echoed == [f"echo 'node {number}'"]
    finally:
        for server in servers:
            server.stop()
