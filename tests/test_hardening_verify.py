"""Hardening of verify and serve: bounded reads of facts files and of what lies under a
root, an exit code of its own for a verify that could not look, and a server that
slow clients cannot starve. Real files, FIFOs, sockets and the real ``invoke`` CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time

import pytest
from cli_support import run_invoke
from verify_support import make_root

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.facts import gather
from toa_kernel.verify.factsfile import load_facts
from toa_kernel.verify.serve import serve


def local(root) -> LocalSystem:
    return LocalSystem(Root.of(root))


def finishes(action, seconds: float = 10.0):
    """Run ``action`` on a thread; fail (instead of hanging) when it blocks."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = action()
        except BaseException as exc:  # handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s: it blocks"
    if "error" in result:
        raise result["error"]
    return result["value"]


# --- 7. --facts is bounded in size and depth ---------------------------------------------------


def test_facts_from_a_character_device_are_refused_without_reading_it():
    with pytest.raises(UserError, match="character device, not a regular file"):
        finishes(lambda: load_facts("/dev/zero"))


def test_facts_from_a_fifo_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "facts.json"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="FIFO"):
        finishes(lambda: load_facts(fifo))


def test_a_huge_facts_file_is_refused(tmp_path):
    path = tmp_path / "facts.json"
    path.write_bytes(b'{"schema": 1, "source": "' + b"x" * (5 << 20) + b'"}')
    with pytest.raises(UserError, match="larger than 4 MiB"):
        load_facts(path)


def test_a_deeply_nested_facts_file_is_refused(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text('{"schema": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserError, match="100001 levels deep"):
        load_facts(path)


def test_invoke_verify_with_facts_from_dev_zero_is_exit_2_without_traceback():
    done = run_invoke("verify", "--facts", "/dev/zero")
    assert done.returncode == 2 and "character device" in done.stderr
    assert "Traceback" not in done.stderr


# --- reads under a root never block nor read forever --------------------------------------------


def test_gathering_facts_from_a_root_with_fifos_in_proc_and_logs_finishes(tmp_path):
    root = make_root(tmp_path)
    for system_path in ("proc/cmdline", "var/log/messages"):
        (root / system_path).unlink()
        os.mkfifo(root / system_path)
    facts = finishes(lambda: gather(local(root), dmesg=lambda: ""))
    assert facts.cmdline is None and facts.release == "2.6.32-toa"


# --- 11. a verify that could not look is not a pass -------------------------------------------


def test_verify_without_proc_under_the_root_exits_4_inconclusive(tmp_path):
    root = make_root(tmp_path)
    shutil.rmtree(root / "proc")
    done = run_invoke("verify", "--root", str(root), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "inconclusive" in done.stdout and "exit code  4" in done.stdout
    document = json.loads(
        run_invoke("verify", "--json", "--root", str(root), "--workdir", str(tmp_path)).stdout
    )
    assert document["inconclusive"] is True and document["exit_code"] == 4
    assert document["counts"]["FAIL"] == 0 and document["counts"]["n/a"] > 0


def test_verify_of_a_good_root_still_exits_0(tmp_path):
    root = make_root(tmp_path)
    done = run_invoke(
        "verify", "--root", str(root), "--workdir", str(tmp_path / "work"), "--release", "2.6.32-toa"
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- serve: slow clients do not starve the others -------------------------------------------


def test_eight_slow_clients_do_not_starve_a_normal_request(tmp_path):
    root = make_root(tmp_path)
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        holder["report"] = serve(
            local(root),
            Console(stream=io.StringIO()),
            bind="127.0.0.1",
            port=0,
            count=1,
            timeout=20,
            ready=lambda address: (holder.setdefault("port", address[1]), ready.set()),
            connection_timeout=2.0,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    port = holder["port"]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    stop = threading.Event()

    def trickle() -> None:  # one byte a second on each slow connection
        while not stop.wait(1.0):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"G")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") and time.monotonic() - started < 2.0
        thread.join(10)
        assert holder["report"].stopped == "count reached"
        # Each slow connection had 2 s in all, however often it sent a byte.
        time.sleep(2.5)
        for sock in slow:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server
    finally:
        stop.set()
        for sock in slow:
            sock.close()
