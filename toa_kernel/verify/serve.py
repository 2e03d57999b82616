"""``invoke serve``: an HTTP server that shows the client address the kernel reports.

The vendor checks TOA with ``python -m SimpleHTTPServer PORT`` and reads its
access log. This server answers every request with the peer address
``getpeername()`` returns (with TOA working: the real client, not the
balancer) and logs it. When the TOA module offers its NAT64 lookup
(``getsockopt(fd, IPPROTO_IP, 4096)`` filling ``struct toa_nat64_peer
{struct in6_addr saddr; u16 sport;}``, port in network order) the IPv6 client
is shown too. ``/proc/net/toa_stats`` is read before and after, so the operator
sees TOA options being counted. ``--count`` and ``--timeout`` stop it by itself.

Connections are served concurrently (a thread each, at most ``MAX_CONNECTIONS``
at once; more are closed at once), and each has ``CONNECTION_TIMEOUT`` seconds
in all, not per read: a client that sends a byte a second cannot hold a
connection, nor starve the others.

Listen on an IPv4 address (``0.0.0.0``) for IPv4 clients: a server on
``[::]`` receives them as v4-mapped IPv6 connections (``::ffff:a.b.c.d``),
which a TOA module that hooks only IPv4 (the 2.6.32 kernel's, elb-toa's
branch master) never rewrites, so it shows the balancer's address with TOA
loaded. ``serve`` warns when it is told to bind ``::``.

The socket-option call is injectable (``sockopt``): tests pass a fake provider
because no TOA kernel runs on the build machines.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import socketserver
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.system.api import System
from toa_kernel.verify.facts import ToaStats, read_toa_stats

TOA_SO_GET_LOOKUP = 4096
# sizeof(struct toa_nat64_peer): 16 + 2 bytes, padded to in6_addr's 4-byte alignment.
# The module answers EINVAL when the buffer is shorter than that.
NAT64_PEER_SIZE = 20
CONNECTION_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
POLL_SECONDS = 0.5

SockoptProvider = Callable[[socket.socket, int, int, int], bytes]


def kernel_sockopt(sock: socket.socket, level: int, option: int, size: int) -> bytes:
    """The real lookup: ``getsockopt(2)`` on the accepted connection."""
    return sock.getsockopt(level, option, size)


@dataclass
class Nat64Peer:
    """The answer of the NAT64 lookup: ``ok`` with an address, or why there is none."""

    status: str  # ok, none, unsupported, error
    address: str | None = None
    port: int | None = None
    detail: str = ""

    def describe(self) -> str:
        if self.status == "ok":
            return f"[{self.address}]:{self.port}"
        return f"{self.status} ({self.detail})"


NAT64_ERRORS = {
    errno.ENOPROTOOPT: ("unsupported", "no TOA NAT64 lookup in this kernel"),
    errno.EINVAL: ("none", "no NAT64 TOA address on this connection"),
    errno.EFAULT: ("none", "not a NAT64 connection"),
    errno.ENOTCONN: ("none", "the connection closed before the lookup"),
}


def nat64_peer(sock: socket.socket, sockopt: SockoptProvider = kernel_sockopt) -> Nat64Peer:
    """Ask the TOA module for the IPv6 client of a NAT64 connection."""
    try:
        data = sockopt(sock, socket.IPPROTO_IP, TOA_SO_GET_LOOKUP, NAT64_PEER_SIZE)
    except OSError as exc:
        status, detail = NAT64_ERRORS.get(exc.errno or 0, ("error", exc.strerror or str(exc)))
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return Nat64Peer(status, detail=f"{detail}: {name}")
    if len(data) < 18:
        return Nat64Peer("error", detail=f"short answer of {len(data)} bytes")
    address = socket.inet_ntop(socket.AF_INET6, data[:16])
    (port,) = struct.unpack("!H", data[16:18])
    return Nat64Peer("ok", address=address, port=port)


def host_port(address: Any) -> tuple[str, int]:
    return str(address[0]), int(address[1])


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class RequestRecord:
    """One answered request, as logged and as reported in JSON."""

    time: str
    method: str
    path: str
    peer_host: str
    peer_port: int
    nat64: Nat64Peer
    user_agent: str = ""

    @property
    def peer(self) -> str:
        return format_address(self.peer_host, self.peer_port)

    def log_line(self) -> str:
        return f"{self.time} {self.method} {self.path} peer {self.peer} nat64 {self.nat64.describe()}"

    def body(self) -> str:
        return f"peer {self.peer}\nnat64 {self.nat64.describe()}\n"

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["peer"] = self.peer
        return document


class PeerHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD with the peer address; never serves files."""

    server: PeerServer
    server_version = "toa-kernel-serve"
    sys_version = ""

    def setup(self) -> None:
        """Each read may wait ``connection_timeout``; so may the whole connection."""
        self.timeout = self.server.connection_timeout
        super().setup()
        self.expiry = threading.Timer(self.server.connection_timeout, self.expire)
        self.expiry.daemon = True
        self.expiry.start()

    def expire(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.expiry.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def answer(self, send_body: bool) -> None:
        host, port = host_port(self.connection.getpeername())
        record = RequestRecord(
            time=time.strftime("%H:%M:%S"),
            method=self.command,
            path=self.path,
            peer_host=host,
            peer_port=port,
            nat64=nat64_peer(self.connection, self.server.sockopt),
            user_agent=self.headers.get("User-Agent", ""),
        )
        body = record.body().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self.close_connection = True
        self.server.record(record)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's access log: requests are logged by ``record``."""


class PeerServer(socketserver.ThreadingMixIn, HTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        sockopt: SockoptProvider,
        on_request: Callable[[RequestRecord], None],
        connection_timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sockopt = sockopt
        self.on_request = on_request
        self.connection_timeout = connection_timeout
        self.records: list[RequestRecord] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, PeerHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection while a slot is free; beyond that, close it at once."""
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def answered(self) -> int:
        with self.lock:
            return len(self.records)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (slow offline)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = host_port(self.server_address)

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.records.append(record)
            self.on_request(record)


@dataclass
class ServeReport:
    listen: str
    stopped: str
    requests: list[RequestRecord] = field(default_factory=list)
    stats_before: ToaStats | None = None
    stats_after: ToaStats | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "listen": self.listen,
            "stopped": self.stopped,
            "requests": [record.as_dict() for record in self.requests],
            "toa_stats_before": asdict(self.stats_before) if self.stats_before else None,
            "toa_stats_after": asdict(self.stats_after) if self.stats_after else None,
            "toa_stats_change": stats_change(self.stats_before, self.stats_after),
        }


def stats_change(before: ToaStats | None, after: ToaStats | None) -> dict[str, int]:
    if not before or not after or not before.present or not after.present:
        return {}
    return {name: value - before.counters.get(name, 0) for name, value in after.counters.items()}


def describe_stats(stats: ToaStats | None) -> str:
    if stats is None or not stats.present:
        return "no /proc/net/toa_stats (toa is not loaded)"
    return " ".join(f"{name}={value}" for name, value in stats.counters.items()) or stats.problem


def v4_mapped_warning(bind: str) -> str | None:
    """The pitfall of listening on every IPv6 address (``::``) behind an IPv4 balancer."""
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        return None
    if address.version != 6 or not address.is_unspecified:
        return None
    return (
        f"listening on [{address}]: IPv4 clients arrive as v4-mapped IPv6 connections (::ffff:a.b.c.d), "
        "which a TOA module hooking only IPv4 (the 2.6.32 TOA kernel's, elb-toa master) never rewrites: "
        "they show the balancer's address even with toa loaded. Use --bind 0.0.0.0 for IPv4 clients"
    )


def check_options(port: int, count: int, timeout: float) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port", "use 1..65535 (0 picks a free port)")
    if count < 0:
        raise UserError(f"--count {count} is negative", "use 0 (no limit) or a number of requests")
    if timeout < 0:
        raise UserError(f"--timeout {timeout} is negative", "use 0 (no limit) or a number of seconds")


def open_server(
    bind: str,
    port: int,
    sockopt: SockoptProvider,
    on_request: Callable[[RequestRecord], None],
    connection_timeout: float = CONNECTION_TIMEOUT,
) -> PeerServer:
    """Bind and listen, turning the usual failures into clear errors."""
    try:
        return PeerServer((bind, port), sockopt, on_request, connection_timeout)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"--bind {bind!r} is not an address: {reason}", "use e.g. 0.0.0.0") from None
    except OSError as exc:
        where = format_address(bind, port)
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"{where} is already in use",
                "choose another --port or stop the program holding it (ss -ltnp)",
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"not allowed to listen on {where}", "ports below 1024 need root") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UserError(
                f"{bind} is not an address of this host", "use --bind 0.0.0.0 or an address from 'ip addr'"
            ) from None
        raise UserError(f"cannot listen on {where}: {exc.strerror}") from None


def serve(
    system: System,
    console: Console,
    *,
    bind: str = "0.0.0.0",
    port: int = 8000,
    count: int = 0,
    timeout: float = 0.0,
    sockopt: SockoptProvider = kernel_sockopt,
    ready: Callable[[tuple[str, int]], None] | None = None,
    connection_timeout: float = CONNECTION_TIMEOUT,
) -> ServeReport:
    """Answer requests until ``count`` were answered or ``timeout`` seconds passed (0: no limit)."""
    check_options(port, count, timeout)
    warning = v4_mapped_warning(bind)
    if warning:
        console.warn(warning)
    before = read_toa_stats(system)
    server = open_server(
        bind, port, sockopt, lambda record: console.say(record.log_line()), connection_timeout
    )
    listen = format_address(*host_port(server.server_address))
    limits = [f"{count} request(s)" if count else "", f"{timeout:g} s" if timeout else ""]
    limit = " or ".join(x for x in limits if x) or "Ctrl-C"
    console.say(f"serve: listening on {listen} until {limit}; toa_stats {describe_stats(before)}")
    if ready is not None:
        ready(host_port(server.server_address))
    stopped = answer_until(server, count, timeout)
    after = read_toa_stats(system)
    with server.lock:
        records = list(server.records[: count or None])
    return ServeReport(listen, stopped, records, before, after)


def answer_until(server: PeerServer, count: int, timeout: float) -> str:
    """Accept connections (each served on its own thread); return why it stopped."""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while not count or server.answered < count:
            wait = POLL_SECONDS
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return "timeout"
                wait = min(wait, POLL_SECONDS)
            server.timeout = wait
            server.handle_request()
        return "count reached"
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        server.server_close()


def show(report: ServeReport, console: Console, as_json: bool) -> None:
    """The one-screen summary, or the JSON document."""
    if as_json:
        console.emit_json(report.as_dict())
        return
    change = stats_change(report.stats_before, report.stats_after)
    changed = " ".join(f"{name}+{value}" for name, value in change.items() if value) or "none"
    peers = sorted({record.peer_host for record in report.requests})
    console.summary(
        "serve",
        [
            ("listened on", report.listen),
            ("stopped", report.stopped),
            ("requests", len(report.requests)),
            ("client addresses", ", ".join(peers) or "-"),
            ("toa_stats before", describe_stats(report.stats_before)),
            ("toa_stats after", describe_stats(report.stats_after)),
            ("toa_stats change", changed if change else "-"),
        ],
    )
