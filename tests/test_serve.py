"""``invoke serve`` against real clients on 127.0.0.1.

The peer address is what this machine's kernel reports for a real TCP
connection. The NAT64 lookup needs the TOA module, which no test machine runs:
its path is exercised with ``FakeNat64Sockopt`` from verify_support (a fake
provider, clearly named), and the real kernel's answer without TOA (ENOPROTOOPT)
is checked on a real socket.
"""

from __future__ import annotations

import errno
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from verify_support import FakeNat64Sockopt, make_root, set_toa_stats

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.serve import (
    NAT64_PEER_SIZE,
    TOA_SO_GET_LOOKUP,
    kernel_sockopt,
    nat64_peer,
    serve,
    show,
    v4_mapped_warning,
)


def local(root) -> LocalSystem:
    return LocalSystem(Root.of(root))


def http_get(port: int, method: str = "GET") -> tuple[str, str, tuple[str, int]]:
    """One request from a socket bound to 127.0.0.1; returns (status line, body, our address)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.1", 0)) as sock:
        ours = sock.getsockname()
        sock.sendall(f"{method} /probe HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body, ours


def run_server(root, count=0, timeout=10.0, sockopt=kernel_sockopt):
    """Start serve() in a thread on a free port; return (thread, result holder, port, log)."""
    ready = threading.Event()
    holder: dict = {}
    log = io.StringIO()

    def on_ready(address):
        holder["address"] = address
        ready.set()

    def target():
        holder["report"] = serve(
            local(root),
            Console(stream=log),
            bind="127.0.0.1",
            port=0,
            count=count,
            timeout=timeout,
            sockopt=sockopt,
            ready=on_ready,
        )

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    return thread, holder, holder["address"][1], log


def test_reports_the_peer_address_the_kernel_gives(tmp_path):
    root = make_root(tmp_path)
    thread, holder, port, log = run_server(root, count=2)
    status, body, ours = http_get(port)
    set_toa_stats(root, syn_toa=20, getname_ok=18)  # the module counted more options meanwhile
    head_status, head_body, ours2 = http_get(port, "HEAD")
    thread.join(10)

    assert status == "HTTP/1.0 200 OK" and head_status == "HTTP/1.0 200 OK"
    assert body.splitlines()[0] == f"peer {ours[0]}:{ours[1]}"
    assert head_body == ""
    report = holder["report"]
    assert report.stopped == "count reached"
    assert [(r.method, r.peer_host, r.peer_port) for r in report.requests] == [
        ("GET", *ours),
        ("HEAD", *ours2),
    ]
    assert f"peer 127.0.0.1:{ours[1]}" in log.getvalue()  # logged as it happened
    document = report.as_dict()
    assert document["toa_stats_before"]["counters"]["syn_recv_sock_toa"] == 17
    assert document["toa_stats_change"]["syn_recv_sock_toa"] == 3
    assert document["toa_stats_change"]["getname_toa_ok"] == 4


def test_nat64_address_with_the_fake_provider(tmp_path):
    fake = FakeNat64Sockopt(address="2001:db8::7", port=40000)
    thread, holder, port, _ = run_server(make_root(tmp_path), count=1, sockopt=fake)
    _, body, ours = http_get(port)
    thread.join(10)

    assert body == f"peer 127.0.0.1:{ours[1]}\nnat64 [2001:db8::7]:40000\n"
    assert fake.calls == [(socket.IPPROTO_IP, TOA_SO_GET_LOOKUP, NAT64_PEER_SIZE)]
    nat64 = holder["report"].requests[0].nat64
    assert (nat64.status, nat64.address, nat64.port) == ("ok", "2001:db8::7", 40000)


@pytest.mark.parametrize(
    ("error", "status", "word"),
    [
        (errno.ENOPROTOOPT, "unsupported", "ENOPROTOOPT"),
        (errno.EINVAL, "none", "EINVAL"),
        (errno.ENOTCONN, "none", "ENOTCONN"),
        (errno.EPERM, "error", "EPERM"),
    ],
)
def test_nat64_lookup_errors(error, status, word):
    answer = nat64_peer(socket.socket(), FakeNat64Sockopt(error=error))
    assert answer.status == status
    assert word in answer.detail and answer.address is None


def test_nat64_short_answer_is_an_error():
    answer = nat64_peer(socket.socket(), lambda sock, level, option, size: b"\0" * 6)
    assert (answer.status, answer.detail) == ("error", "short answer of 6 bytes")


def test_the_real_kernel_without_toa_says_unsupported(tmp_path):
    thread, _, port, _ = run_server(make_root(tmp_path), count=1)
    _, body, _ = http_get(port)
    thread.join(10)
    assert body.splitlines()[1] == "nat64 unsupported (no TOA NAT64 lookup in this kernel: ENOPROTOOPT)"


def test_timeout_stops_an_idle_server(tmp_path):
    root = make_root(tmp_path, toa_loaded=False)
    started = time.monotonic()
    report = serve(local(root), Console(stream=io.StringIO()), bind="127.0.0.1", port=0, timeout=0.3)
    assert report.stopped == "timeout" and report.requests == []
    assert time.monotonic() - started < 3
    out = io.StringIO()
    show(report, Console(stream=out), as_json=False)
    assert "no /proc/net/toa_stats (toa is not loaded)" in out.getvalue()


def test_port_in_use_and_bad_options_are_user_errors(tmp_path):
    root = local(make_root(tmp_path))
    quiet = Console(stream=io.StringIO())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(UserError, match="already in use"):
            serve(root, quiet, bind="127.0.0.1", port=taken, timeout=1)
    with pytest.raises(UserError, match="not an address of this host"):
        serve(root, quiet, bind="192.0.2.1", port=0, timeout=1)
    with pytest.raises(UserError, match="is not a TCP port"):
        serve(root, quiet, port=70000)
    with pytest.raises(UserError, match="--count -1 is negative"):
        serve(root, quiet, count=-1)


def test_cli_serve_answers_a_real_client_and_prints_json(project_dir, tmp_path):
    root = make_root(tmp_path)
    flags = ["--bind", "127.0.0.1", "--port", "0", "--count", "1", "--timeout", "30", "--json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "serve", *flags, "--root", str(root)],
        cwd=project_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        _, body, ours = http_get(int(match.group(1)))
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    document = json.loads(out)
    assert document["stopped"] == "count reached"
    assert document["requests"][0]["peer"] == f"127.0.0.1:{ours[1]}"
    assert document["toa_stats_after"]["counters"]["getname_toa_ok"] == 14
    assert body.startswith(f"peer 127.0.0.1:{ours[1]}\n")


def test_a_server_on_all_ipv6_addresses_is_warned_about_v4_mapped_clients():
    warning = v4_mapped_warning("::")
    assert "::ffff:a.b.c.d" in warning and "--bind 0.0.0.0" in warning
    assert v4_mapped_warning("[::]") == warning == v4_mapped_warning("0:0::0")
    assert v4_mapped_warning("0.0.0.0") is None and v4_mapped_warning("::1") is None
    assert v4_mapped_warning("localhost") is None


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_serve_on_all_ipv6_addresses_prints_the_warning(tmp_path, capsys):
    root = make_root(tmp_path)
    report = serve(local(root), Console(stream=io.StringIO()), bind="::", port=0, timeout=0.2)
    assert report.stopped == "timeout"
    assert "warning: listening on [::]: IPv4 clients arrive as v4-mapped" in capsys.readouterr().err
