"""The tasks driving a node over SSH end to end, through the real ``invoke`` command line
and the real sshd on 127.0.0.1 (the node's system is a CentOS 6 sandbox root there):

- a CentOS 6 server (the legacy profile: OpenSSH 5.3's algorithms, an RSA user key):
  install-kernel, verify and rollback work, and the server never ran python,
  ``realpath`` or ``sync FILE`` (its ForceCommand log);
- a dry run over SSH changes no byte of the node (sha256 of every file);
- sshd killed in the middle of the grub.conf write: old or new file, never a part;
- the login faults: wrong key, wrong port, sudo under ``requiretty``; a sudo login works;
- ``serve --host``: the server's own busybox httpd reports the client's address.

The same steps are held to every check of the local tests by the parametrized
sandbox tests (test_install, test_rollback, test_trial, ...); these add what only
a remote system has.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from centos6_root import GRUB, Sandbox
from cli_support import run_invoke
from node_support import Node
from sshd_support import (
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
from verify_support import TOA_STATS

from toa_kernel.boot import grubconf
from toa_kernel.boot.install import configure_grub
from toa_kernel.core.console import Console
from toa_kernel.core.errors import ToaError
from toa_kernel.core.fileops import BACKUP_TAG
from toa_kernel.system.ssh import SshSystem
from toa_kernel.verify.facts import gather

pytestmark = [pytest.mark.slow, pytest.mark.ssh, needs_sshd]


def digests(base: Path) -> dict[str, str]:
    """sha256 of every file under ``base`` (links by their text), by relative path."""
    found = {}
    for path in sorted(base.rglob("*")):
        key = str(path.relative_to(base))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def invoke(sandbox: Sandbox, *args: str):
    return run_invoke(*args, *sandbox.flags, "--workdir", str(sandbox.workdir.path), timeout=300)


def booted(sandbox: Sandbox) -> None:
    """The node as it comes up on the TOA kernel (the sandbox cannot reboot)."""
    config = sandbox.grub_config()
    entry = config.entries[config.default]
    sandbox.path("/proc/sys/kernel/osrelease").write_text(sandbox.release + "\n")
    sandbox.path("/proc/cmdline").write_text(" ".join(entry.kernel_args) + "\n")
    sandbox.path("/proc/modules").write_text("toa 12345 0 - Live 0xffffffffa0000000\n")
    sandbox.path("/var/log/messages").write_text("kernel: TOA: toa loaded\n")
    sandbox.path("/proc/net").mkdir(parents=True, exist_ok=True)
    sandbox.path("/proc/net/toa_stats").write_text(TOA_STATS)


# --- a CentOS 6 server: legacy algorithms, RSA key, nothing but its userland -----------------


@pytest.fixture(scope="module")
def legacy_sshd():
    server = start_sshd("legacy")
    yield server
    server.stop()


def test_install_verify_rollback_on_a_centos6_server_run_nothing_it_lacks(
    tmp_path, build_section, legacy_sshd
):
    sandbox = Sandbox(tmp_path, build_section, Node("ssh", legacy_sshd, tmp_path / "known_hosts"))
    original = sandbox.path(GRUB).read_bytes()
    logged_before = len(legacy_sshd.commands())
    installed = invoke(sandbox, "install-kernel", "--json")
    assert installed.returncode == 0, installed.stderr
    assert json.loads(installed.stdout)["default_entry"] == 0
    assert sandbox.grub_config().entries[0].release == sandbox.release
    booted(sandbox)
    verified = invoke(sandbox, "verify", "--json")
    document = json.loads(verified.stdout)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert document["verdict"] in ("PASS", "WARN") and document["facts_source"].endswith(
        f"on {sandbox.system.host}"
    )
    rolled = invoke(sandbox, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert sandbox.path(GRUB).read_bytes() == original
    commands = legacy_sshd.commands()[logged_before:]
    assert len(commands) > 50 and all(user == "root" for user, _ in commands)
    assert forbidden_commands(commands) == []
    assert any("installkernel" in command for _, command in commands)  # the server's own


# --- a dry run over SSH changes nothing -------------------------------------------------------


def test_dry_runs_over_ssh_change_no_byte_of_the_node(tmp_path, build_section, node_sshd):
    sandbox = Sandbox(tmp_path, build_section, Node("ssh", node_sshd, tmp_path / "known_hosts"))
    before = digests(sandbox.root.base)
    manifest = sandbox.workdir.load_manifest()
    done = invoke(sandbox, "install-kernel", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "+++ b/boot/grub/grub.conf" in done.stdout and "nohz=off" in done.stdout
    assert "+++ b/etc/cron.d/toa" in done.stdout and "installkernel" in done.stdout
    trial = invoke(sandbox, "install-kernel", "--trial", "--dry-run")
    assert trial.returncode == 0 and "+++ b/boot/grub/default" in trial.stdout
    assert invoke(sandbox, "rollback", "--dry-run").returncode == 0
    assert digests(sandbox.root.base) == before
    assert sandbox.workdir.load_manifest() == manifest


# --- sshd killed in the middle of the grub.conf write -------------------------------------------

WRITE_MARK = "target=$1 mode=$2 size=$3 backup=$4"


def kill_when_written(server, delay: float, stop: threading.Event) -> threading.Thread:
    """Kill the server's connections ``delay`` s after the grub.conf write starts on it."""
    logged = len(server.commands())

    def watch() -> None:
        while not stop.is_set():
            commands = server.commands()[logged:]
            if any(WRITE_MARK in command for _, command in commands):
                time.sleep(delay)
                server.kill_connections()
                return
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_sshd_killed_during_the_grub_conf_write_leaves_old_or_new_with_its_backup(tmp_path, build_section):
    server = start_sshd()  # its own: the test drops every connection to it
    try:
        node = Node("ssh", server, tmp_path / "known_hosts")
        sandbox = Sandbox(tmp_path, build_section, node)
        release = sandbox.release
        grub_dir = sandbox.path("/boot/grub")
        old = sandbox.path(GRUB).read_bytes()
        (grub_dir.parent / f"vmlinuz-{release}").write_bytes(b"kernel")
        new = grubconf.edit_for_release(old.decode(), release, kernel_args=("nohz=off",), initrd_name="").text
        rng = random.Random(11)
        outcomes = []
        for _ in range(12):
            sandbox.path(GRUB).write_bytes(old)
            for saved in grub_dir.glob("grub.conf" + BACKUP_TAG + "*"):
                saved.unlink()
            sandbox.workdir.update_manifest("install", None)
            stop = threading.Event()
            watcher = kill_when_written(server, rng.uniform(0, 0.03), stop)
            system = SshSystem.connect(
                server.target(), server.options(node.known_hosts), str(sandbox.root.base)
            )
            try:
                configure_grub(
                    sandbox.settings, release, console=Console(stream=io.StringIO()), system=system
                )
                outcomes.append("written")
            except ToaError:
                outcomes.append("dropped")
            finally:
                stop.set()
                watcher.join(5)
                system.close()
            # a script the drop left running on the server ends by itself (its write completes, or
            # its trap removes the temporary file): wait for it before looking
            deadline = time.monotonic() + 10
            while [p for p in grub_dir.iterdir() if p.name.startswith(".")] and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert not [p for p in grub_dir.iterdir() if p.name.startswith(".")]
            content = sandbox.path(GRUB).read_bytes()
            assert content in (old, new.encode()), "a partial grub.conf"
            assert sandbox.path("/etc/grub.conf").is_symlink()
            assert oct(sandbox.path(GRUB).stat().st_mode & 0o777) == "0o600"
            backups = sorted(grub_dir.glob("grub.conf" + BACKUP_TAG + "*"))
            if content != old:
                assert backups and backups[-1].read_bytes() == old  # the backup came first
        assert "dropped" in outcomes, outcomes
        # after a drop, running the step again finishes it
        sandbox.path(GRUB).write_bytes(old)
        sandbox.grub()
        assert sandbox.grub_config().entries[0].release == release
    finally:
        server.stop()


# --- the login faults -----------------------------------------------------------------------


def test_a_wrong_key_or_port_stops_before_anything_with_the_reason(tmp_path, build_section, node_sshd):
    sandbox = Sandbox(tmp_path, build_section, Node("ssh", node_sshd, tmp_path / "known_hosts"))
    before = digests(sandbox.root.base)
    other_key = keygen(tmp_path / "other_key", "ed25519")
    flags = sandbox.flags[:]
    flags[flags.index("--ssh-key") + 1] = str(other_key)
    done = run_invoke("install-kernel", *flags, "--workdir", str(sandbox.workdir.path))
    assert done.returncode == 2 and "refused the login" in done.stderr and "Traceback" not in done.stderr
    flags = sandbox.flags[:]
    host = flags.index("--host") + 1
    flags[host] = flags[host].rsplit(":", 1)[0] + f":{free_port()}"
    done = run_invoke("install-kernel", *flags, "--workdir", str(sandbox.workdir.path))
    assert done.returncode == 3 and "connection refused" in done.stderr and "--host" in done.stderr
    assert digests(sandbox.root.base) == before
    assert sandbox.workdir.section("install") == {}


@pytest.fixture(scope="module")
def sudo_users():
    ensure_sudo_users()
    yield
    remove_sudo_rules()


def test_sudo_under_requiretty_names_the_sudoers_line_and_a_nopasswd_login_installs(
    tmp_path, build_section, node_sshd, sudo_users
):
    tty = Sandbox(tmp_path / "tty", build_section)  # reached over SSH by the command line only
    tty.flags = Node("ssh", node_sshd, tmp_path / "kh", TTY_USER, sudo=True).flags(tty.root.base)
    done = invoke(tty, "install-kernel")
    assert done.returncode == 2, done.stderr
    assert "requires a tty" in done.stderr and f"Defaults:{TTY_USER} !requiretty" in done.stderr
    sudo = Sandbox(
        tmp_path / "sudo", build_section, Node("ssh", node_sshd, tmp_path / "kh", SUDO_USER, sudo=True)
    )
    done = invoke(sudo, "install-kernel")
    assert done.returncode == 0, done.stderr
    assert sudo.grub_config().entries[0].release == sudo.release
    assert sudo.path("/etc/cron.d/toa").stat().st_uid == 0
    ran = [command for user, command in node_sshd.commands() if user == SUDO_USER]
    assert ran and all(command.startswith("sudo -n -- ") for command in ran)


# --- serve --host -----------------------------------------------------------------------------


def test_serve_on_the_server_reports_the_client_address_its_kernel_gives(tmp_path, node_sshd):
    root = tmp_path / "root"
    (root / "proc/net").mkdir(parents=True)
    node = Node("ssh", node_sshd, tmp_path / "known_hosts")
    port = free_port()
    seen: list[tuple[str, int]] = []

    def client() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    seen.append(sock.getsockname())
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(4096):
                        answer += chunk
                    seen.append(answer.decode())  # type: ignore[arg-type]
                    return
            except OSError:
                time.sleep(0.2)

    worker = threading.Thread(target=client)
    worker.start()
    limits = ["--count", "1", "--timeout", "40", "--json"]
    done = run_invoke("serve", *node.flags(root), "--bind", "127.0.0.1", "--port", str(port), *limits)
    worker.join(10)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (address, client_port), answer = seen
    assert report["stopped"] == "count reached" and len(report["requests"]) == 1
    assert report["requests"][0]["peer"] == f"{address}:{client_port}"
    assert f"peer {address} port {client_port}" in answer
    assert gather(node.open(root)).toa_stats.present is False
