"""The System interface, held to the same checks locally and over a real sshd.

Every test here runs twice: on ``LocalSystem`` (a sandbox root on this machine)
and on ``SshSystem`` (a sandbox root reached through Debian's sshd on 127.0.0.1,
every command logged by the server's ForceCommand wrapper and run the way
CentOS 6 would run it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_support import forbidden_commands, needs_sshd, start_sshd

from toa_kernel.core.errors import EnvironmentFailure, LockHeld, ToolMissing, UserError
from toa_kernel.core.fileops import BACKUP_TAG
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.ssh import SshSystem

TESTS_DIR = Path(__file__).resolve().parent
AWKWARD = ["a b", "it's", 'say "hi"', "x;y", "$(id -u)", "`id`", "*", "back\\slash", "new\nline", "", "-n"]


@pytest.fixture(scope="module")
def sshd():
    server = start_sshd()
    yield server
    server.stop()


@pytest.fixture(params=["local", pytest.param("ssh", marks=[pytest.mark.slow, pytest.mark.ssh, needs_sshd])])
def kind(request) -> str:
    return request.param


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for directory in ("etc", "boot/grub", "var/lock", "lib/modules"):
        (root / directory).mkdir(parents=True)
    return root


@pytest.fixture
def system(kind: str, base: Path, tmp_path: Path, request):
    if kind == "local":
        yield LocalSystem(Root.of(base))
        return
    server = request.getfixturevalue("sshd")
    known_hosts = server.trust(tmp_path / "known_hosts")
    with SshSystem.connect(server.target(), server.options(known_hosts), str(base)) as remote:
        yield remote


def test_label_root_and_host_paths(system, base: Path):
    assert system.root == str(base)
    assert system.label.endswith(str(base))
    assert not system.is_live
    assert system.host_path("/boot/grub/grub.conf") == str(base / "boot/grub/grub.conf")
    assert system.host_path("/") == str(base)


def test_read_and_stat(system, base: Path):
    (base / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (base / "etc/hosts").chmod(0o640)
    assert system.read_bytes("/etc/hosts") == b"127.0.0.1 localhost\n"
    assert system.read_bytes("/etc/hosts", limit=9) == b"127.0.0.1"
    assert system.read_text("/etc/hosts") == "127.0.0.1 localhost\n"
    info = system.stat("/etc/hosts")
    assert (info.kind, info.mode, info.uid, info.gid, info.size) == ("file", 0o640, 0, 0, 20)
    assert system.stat("/boot").kind == "dir"
    assert system.stat("/etc/missing") is None
    assert system.read_text("/etc/missing") is None
    assert system.exists("/etc/hosts") and not system.exists("/etc/missing")
    with pytest.raises(FileNotFoundError):
        system.read_bytes("/etc/missing")
    with pytest.raises(IsADirectoryError):
        system.read_bytes("/etc")


def test_resolve_follows_links_inside_the_root(system, base: Path):
    (base / "boot/grub/grub.conf").write_text("default=0\n")
    (base / "etc/grub.conf").symlink_to("../boot/grub/grub.conf")
    (base / "etc/absolute.conf").symlink_to("/boot/grub/grub.conf")
    (base / "etc/chain").symlink_to("absolute.conf")
    (base / "lib/grub").symlink_to("/boot/grub")
    assert system.resolve("/etc/grub.conf") == "/boot/grub/grub.conf"
    assert system.resolve("/etc/absolute.conf") == "/boot/grub/grub.conf"
    assert system.resolve("/etc/chain") == "/boot/grub/grub.conf"
    assert system.resolve("/lib/grub/grub.conf") == "/boot/grub/grub.conf"
    assert system.resolve("/lib/grub/../grub/./grub.conf") == "/boot/grub/grub.conf"
    assert system.resolve("/etc/new-file") == "/etc/new-file"
    assert system.read_bytes("/etc/chain") == b"default=0\n"
    assert system.readlink("/etc/grub.conf") == "../boot/grub/grub.conf"
    assert system.readlink("/boot/grub/grub.conf") is None
    assert system.stat("/etc/grub.conf", follow_symlinks=False).kind == "link"
    assert system.stat("/etc/grub.conf").kind == "file"


def test_links_that_try_to_leave_the_root_stay_inside(system, base: Path):
    (base / "etc/passwd").write_text("sandbox passwd\n")
    (base / "etc/abs-escape").symlink_to("/etc/passwd")
    (base / "etc/rel-escape").symlink_to("../../../../../../../../etc/passwd")
    (base / "boot/up").symlink_to("../../..")
    assert system.resolve("/etc/abs-escape") == "/etc/passwd"
    assert system.resolve("/etc/rel-escape") == "/etc/passwd"
    assert system.resolve("/boot/up/etc/passwd") == "/etc/passwd"
    assert system.resolve("/../../etc/passwd") == "/etc/passwd"
    assert system.read_bytes("/etc/rel-escape") == b"sandbox passwd\n"
    assert system.read_bytes("/boot/up/etc/passwd") == b"sandbox passwd\n"


def test_a_link_loop_is_a_clear_error(system, base: Path):
    (base / "etc/a").symlink_to("b")
    (base / "etc/b").symlink_to("a")
    with pytest.raises(UserError, match=r"symbolic links at /etc/[ab] form a loop"):
        system.resolve("/etc/a")


BYTES = [
    b"title CentOS\r\n\tkernel /vmlinuz ro\r\n",  # CRLF
    b"no final newline",
    b"\xff\xfe non-UTF-8 \x80\x00 NUL \xc3(",
    b"",
    bytes(range(256)) * 64,
]


@pytest.mark.parametrize("data", BYTES, ids=["crlf", "no-newline", "non-utf8", "empty", "all-bytes"])
def test_write_and_read_back_byte_exact(system, base: Path, data: bytes):
    written = system.write_bytes_atomic("/etc/data.bin", data)
    assert written == ("/etc/data.bin", None)
    assert (base / "etc/data.bin").read_bytes() == data
    assert system.read_bytes("/etc/data.bin") == data
    assert (base / "etc/data.bin").stat().st_mode & 0o7777 == 0o644


def test_atomic_write_keeps_mode_and_owner_and_writes_through_links(system, base: Path):
    target = base / "boot/grub/grub.conf"
    target.write_text("old\n")
    target.chmod(0o640)  # neither mktemp's 0600 nor the 0644 asked for a new file
    os.chown(target, 12345, 23456)
    (base / "etc/grub.conf").symlink_to("../boot/grub/grub.conf")
    written = system.write_bytes_atomic("/etc/grub.conf", b"new\n", mode=0o644)
    assert written.path == "/boot/grub/grub.conf"
    assert (base / "etc/grub.conf").is_symlink()
    st = target.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 12345, 23456)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["grub.conf"]  # no temporary file left


def test_new_file_gets_the_mode_asked_for(system, base: Path):
    system.write_bytes_atomic("/etc/toa.modules", b"#!/bin/sh\n", mode=0o755)
    assert (base / "etc/toa.modules").stat().st_mode & 0o7777 == 0o755


def test_write_into_a_missing_directory_is_a_user_error(system):
    with pytest.raises(UserError, match="does not exist"):
        system.write_bytes_atomic("/nowhere/file", b"x")


def test_backup_keeps_old_content_mode_and_owner(system, base: Path):
    target = base / "boot/grub/grub.conf"
    target.write_bytes(b"v1\r\n")
    target.chmod(0o604)
    os.chown(target, 4321, 0)
    first = system.write_bytes_atomic("/boot/grub/grub.conf", b"v2\n", backup=True)
    second = system.write_bytes_atomic("/boot/grub/grub.conf", b"v3\n", backup=True)
    assert first.backup and second.backup and first.backup != second.backup
    assert first.backup.startswith("/boot/grub/grub.conf" + BACKUP_TAG)
    assert (base / first.backup[1:]).read_bytes() == b"v1\r\n"
    assert (base / second.backup[1:]).read_bytes() == b"v2\n"
    st = (base / first.backup[1:]).stat()
    assert (st.st_mode & 0o7777, st.st_uid) == (0o604, 4321)
    assert system.backups_of("/boot/grub/grub.conf") == sorted([first.backup, second.backup])
    assert target.read_bytes() == b"v3\n"
    assert system.write_bytes_atomic("/boot/grub/new.conf", b"x", backup=True).backup is None


def test_listdir_makedirs_remove(system, base: Path):
    for name in ("plain", ".hidden", "with space", "new\nline", "..dots"):
        (base / "etc" / name).write_text(name)
    (base / "etc/link").symlink_to("missing-target")
    assert system.listdir("/etc") == sorted(["plain", ".hidden", "with space", "new\nline", "..dots", "link"])
    with pytest.raises(FileNotFoundError):
        system.listdir("/nowhere")
    system.makedirs("/var/lib/toa/deep", mode=0o700)
    system.makedirs("/var/lib/toa/deep")  # exists: fine
    assert (base / "var/lib/toa/deep").stat().st_mode & 0o777 == 0o700
    with pytest.raises(UserError, match="not a directory"):
        system.makedirs("/etc/plain")
    assert system.remove("/etc/link") and not (base / "etc/link").is_symlink()
    assert system.remove("/etc/plain") and not (base / "etc/plain").exists()
    assert not system.remove("/etc/plain")
    with pytest.raises(EnvironmentFailure):
        system.remove("/var/lib/toa")  # not empty, not recursive
    assert system.remove("/var/lib/toa", recursive=True) and not (base / "var/lib/toa").exists()


def test_remove_does_not_follow_a_link_out_of_place(system, base: Path):
    (base / "boot/keep").write_text("keep")
    (base / "etc/ptr").symlink_to("/boot/keep")
    assert system.remove("/etc/ptr")
    assert (base / "boot/keep").read_text() == "keep"


def test_copy_file_in_and_put_tree(system, base: Path, tmp_path: Path):
    source = tmp_path / "vmlinuz"
    source.write_bytes(os.urandom(300_000))
    seen: list[int] = []
    written = system.copy_file_in(source, "/boot/vmlinuz-2.6.32-toa", mode=0o644, progress=seen.append)
    assert written.path == "/boot/vmlinuz-2.6.32-toa"
    assert (base / "boot/vmlinuz-2.6.32-toa").read_bytes() == source.read_bytes()
    assert sum(seen) == 300_000
    tree = tmp_path / "modules"
    (tree / "kernel/net/toa").mkdir(parents=True)
    (tree / "kernel/net/toa/toa.ko").write_bytes(b"\x7fELF module")
    (tree / "modules.dep").write_text("kernel/net/toa/toa.ko:\n")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "build").symlink_to("/usr/src/kernels/2.6.32-toa")
    system.put_tree(tree, "/lib/modules/2.6.32-toa")
    shipped = base / "lib/modules/2.6.32-toa"
    assert (shipped / "kernel/net/toa/toa.ko").read_bytes() == b"\x7fELF module"
    assert (shipped / "modules.dep").read_text() == "kernel/net/toa/toa.ko:\n"
    assert (shipped / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(shipped / "build") == "/usr/src/kernels/2.6.32-toa"


def test_run_passes_awkward_arguments_untouched(system):
    result = system.run(["printf", "%s|", *AWKWARD], check=True)
    assert result.stdout.decode() == "".join(f"{word}|" for word in AWKWARD)


def test_run_input_env_cwd_and_exit_status(system, base: Path):
    assert system.run(["cat"], input=b"\x00\xffbytes in\r\n").stdout == b"\x00\xffbytes in\r\n"
    assert system.run(["sh", "-c", 'printf %s "$TOA_VALUE"'], env={"TOA_VALUE": "a b;$(x)"}).out == "a b;$(x)"
    assert system.run(["pwd"], cwd=system.host_path("/boot")).out.strip() == str(base / "boot")
    failed = system.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (failed.returncode, failed.out, failed.err) == (3, "out\n", "err\n")
    with pytest.raises(EnvironmentFailure, match="err"):
        failed.check()


def test_a_missing_program_is_reported_by_name(system):
    result = system.run(["toa-no-such-tool", "--version"])
    assert result.returncode == 127
    with pytest.raises(ToolMissing, match="toa-no-such-tool"):
        system.run(["toa-no-such-tool"], check=True)


def test_a_command_that_overruns_its_timeout_is_stopped(system, base: Path):
    marker = base / "late"
    started = time.monotonic()
    with pytest.raises(EnvironmentFailure, match="timed out"):
        system.run(["sh", "-c", f"sleep 2; touch {marker}"], timeout=1)
    assert time.monotonic() - started < 2
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    assert not marker.exists()  # the command was killed, not left running


def test_free_bytes_matches_statvfs(system, base: Path):
    st = os.statvfs(base)
    expected = st.f_bavail * st.f_frsize
    assert abs(system.free_bytes("/boot") - expected) < max(64 << 20, expected // 50)
    with pytest.raises(FileNotFoundError):
        system.free_bytes("/nowhere")


def holder_process(kind: str, base: Path, tmp_path: Path, request) -> subprocess.Popen:
    """A second real process that takes the lock and holds it until killed."""
    args = [sys.executable, str(TESTS_DIR / "system_lock_holder.py"), str(base), "toa-kernel.lock"]
    if kind == "ssh":
        server = request.getfixturevalue("sshd")
        args += [str(server.port), str(server.client_key), str(server.trust(tmp_path / "holder_known_hosts"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR)])}
    holder = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    assert holder.stdout.readline() == b"held\n"
    return holder


def take_lock_eventually(system, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with system.lock("toa-kernel.lock"):
                return
        except LockHeld:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_lock_refuses_a_second_process_and_frees_when_the_holder_dies(system, kind, base, tmp_path, request):
    holder = holder_process(kind, base, tmp_path, request)
    try:
        expected = rf"holds the lock .*toa-kernel.lock.*pid {holder.pid}"
        with pytest.raises(LockHeld, match=expected), system.lock("toa-kernel.lock"):
            pass
    finally:
        holder.kill()
        holder.wait()
    take_lock_eventually(system)
    with system.lock("toa-kernel.lock"):
        assert (base / "var/lock/toa-kernel.lock").exists()


def test_lock_rejects_a_path_as_name(system):
    with pytest.raises(UserError, match="plain file name"), system.lock("../etc/passwd"):
        pass


@pytest.mark.slow
@pytest.mark.ssh
@needs_sshd
def test_lock_frees_when_the_connection_drops(base: Path, tmp_path: Path):
    server = start_sshd()  # a server of its own: the test drops every connection to it
    try:
        known_hosts = server.trust(tmp_path / "known_hosts")
        first = SshSystem.connect(server.target(), server.options(known_hosts), str(base))
        with first.lock("toa-kernel.lock"):
            with SshSystem.connect(server.target(), server.options(known_hosts), str(base)) as second:
                with pytest.raises(LockHeld):
                    take_lock_eventually(second, seconds=0)
                assert server.kill_connections() >= 2
            with SshSystem.connect(server.target(), server.options(known_hosts), str(base)) as third:
                take_lock_eventually(third)
        first.close()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.ssh
@needs_sshd
def test_server_ran_nothing_centos6_lacks(sshd, base: Path, tmp_path: Path):
    """Every command this module's server ran: no python, no realpath, no ``sync FILE``."""
    (base / "etc/grub.conf").symlink_to("/boot/grub/grub.conf")
    (tmp_path / "tree").mkdir()
    with SshSystem.connect(sshd.target(), sshd.options(sshd.trust(tmp_path / "kh")), str(base)) as remote:
        remote.write_bytes_atomic("/etc/grub.conf", b"x", backup=True)
        remote.write_bytes_atomic("/etc/grub.conf", b"y", backup=True)
        remote.put_tree(tmp_path / "tree", "/lib/modules/x")
        with remote.lock("toa-kernel.lock"):
            remote.free_bytes("/boot")
    commands = sshd.commands()
    assert any("mv -f" in command for _user, command in commands)
    assert forbidden_commands(commands) == []
    assert forbidden_commands([("root", "sync /boot/grub/grub.conf")]) != []
    assert forbidden_commands([("root", "python3 -c 1")]) != []


# --- the primitives the steps use besides reading and writing --------------------------


def test_a_fifo_or_device_is_never_read(system, base: Path):
    from toa_kernel.system.api import NotRegularFile

    os.mkfifo(base / "etc/pipe")
    (base / "etc/null").symlink_to("/dev/null")  # inside the root: ROOT/dev/null, absent
    os.mknod(base / "etc/device", 0o600 | 0o020000, os.makedev(1, 3))  # a character device
    for path in ("/etc/pipe", "/etc/device"):
        with pytest.raises(NotRegularFile):
            system.read_bytes(path)
        with pytest.raises(NotRegularFile):
            system.read_tail(path, 10)
        assert system.read_text(path) is None and system.sha256(path) is None
    assert system.read_text("/etc/null") is None


def test_read_tail_sha256_and_find(system, base: Path):
    data = bytes(range(256)) * 40
    (base / "boot/log").write_bytes(data)
    assert system.read_tail("/boot/log", 100) == data[-100:]
    assert system.read_tail("/boot/log", 10**6) == data
    import hashlib

    assert system.sha256("/boot/log") == hashlib.sha256(data).hexdigest()
    assert system.sha256("/boot/missing") is None
    for directory in ("lib/modules/r/kernel/net/toa", "lib/modules/r/extra", "lib/modules/r/odd dir"):
        (base / directory).mkdir(parents=True)
        (base / directory / "toa.ko").write_bytes(b"ko")
    (base / "lib/modules/r/build").symlink_to("/lib/modules/r/extra")  # not followed
    (base / "lib/modules/r/toa.ko").mkdir()  # a directory of that name is no file
    assert system.find("/lib/modules/r", "toa.ko") == [
        "/lib/modules/r/extra/toa.ko",
        "/lib/modules/r/kernel/net/toa/toa.ko",
        "/lib/modules/r/odd dir/toa.ko",
    ]
    assert system.find("/lib/modules/none", "toa.ko") == []


def test_backup_set_mode_and_symlink(system, base: Path):
    target = base / "etc/cron.d"
    target.mkdir()
    (target / "toa").write_bytes(b"* * * * * root true\n")
    (target / "toa").chmod(0o640)
    os.chown(target / "toa", 4321, 1234)
    hidden = system.backup("/etc/cron.d/toa", hidden=True)
    plain = system.backup("/etc/cron.d/toa")
    assert hidden.startswith("/etc/cron.d/.toa" + BACKUP_TAG) and plain.startswith(
        "/etc/cron.d/toa" + BACKUP_TAG
    )
    for backup in (hidden, plain):
        st = (base / backup[1:]).stat()
        assert (base / backup[1:]).read_bytes() == b"* * * * * root true\n"
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 4321, 1234)
    with pytest.raises(FileNotFoundError):
        system.backup("/etc/cron.d/missing")
    system.set_mode("/etc/cron.d/toa", 0o644, 0, 0)
    st = (target / "toa").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o644, 0, 0)
    system.set_mode("/etc/cron.d/toa", 0o600)
    assert (target / "toa").stat().st_mode & 0o7777 == 0o600
    system.symlink("/etc/systemd/system/toa.service", "/etc/cron.d/link")
    system.symlink("../other", "/etc/cron.d/link")  # replaced
    assert os.readlink(target / "link") == "../other"
    system.symlink("x", "/etc/cron.d/toa")  # a file there is replaced too
    assert os.readlink(target / "toa") == "x"
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith((".toa", "toa."))) == [
        "link",
        "toa",
    ]


def test_which_uid_writable_and_host_realpath(system, base: Path, tmp_path: Path):
    assert system.which("sh").endswith("/sh")
    assert system.which("depmod") in ("/sbin/depmod", "/usr/sbin/depmod", "/bin/depmod", "/usr/bin/depmod")
    assert system.which("toa-no-such-tool") is None
    assert system.effective_uid() == 0
    assert system.writable("/boot") and system.writable("/etc")
    (base / "etc/file").write_text("x")
    assert system.writable("/etc/file")
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "var/ext").symlink_to(outside)
    assert system.host_realpath("/var/ext") == str(outside)
    assert system.host_realpath("/boot") == str(base / "boot")
    assert system.stat("/boot").device == os.stat(base / "boot").st_dev


def test_stream_hands_over_each_line_as_it_comes(system, base: Path):
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    script = 'echo one; echo two >&2; sleep 1; printf "three\\nlast without newline"; exit 4'
    status = system.stream(["sh", "-c", script], lambda line: seen.append((time.monotonic() - started, line)))
    assert status == 4
    assert [line for _, line in seen] == ["one", "two", "three", "last without newline"]
    assert seen[0][0] < 0.9 <= seen[2][0]  # the first lines came before the command ended
    assert system.stream(["pwd"], seen.append, cwd=system.host_path("/boot")) == 0
    assert seen[-1] == str(base / "boot")
    assert system.stream(["toa-no-such-tool"], lambda line: None) == 127


def test_put_tree_names_and_get_tree(system, base: Path, tmp_path: Path):
    tree = tmp_path / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/new.c").write_text("int x;\n")
    (tree / "a/old.c").write_text("old\n")
    (tree / "top").write_bytes(os.urandom(70_000))
    system.put_tree(tree, "/var/build", names=["a/b/new.c", "top"])
    shipped = base / "var/build"
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == [
        "a/b/new.c",
        "top",
    ]
    assert (shipped / "top").read_bytes() == (tree / "top").read_bytes()
    (shipped / "link").symlink_to("/etc/passwd")
    (shipped / "run.sh").write_text("#!/bin/sh\n")
    (shipped / "run.sh").chmod(0o755)
    back = tmp_path / "back"
    system.get_tree("/var/build", back)
    assert (back / "a/b/new.c").read_text() == "int x;\n" and (back / "top").read_bytes() == (
        tree / "top"
    ).read_bytes()
    assert not (back / "link").exists() and not (back / "link").is_symlink()
    assert (back / "run.sh").stat().st_mode & 0o111
    only = tmp_path / "only"
    system.get_tree("/var/build", only, names=["top"])
    assert [p.name for p in only.iterdir()] == ["top"]
    with pytest.raises(FileNotFoundError):
        system.get_tree("/var/nothing", tmp_path / "x")
