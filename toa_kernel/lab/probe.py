"""The TOA probe: talk TCP to a booted guest as a FULLNAT load balancer would.

The probe owns two addresses on the virtual link: the balancer's (the source
address of every packet it sends) and nothing else; the client address it puts
in the TOA option exists nowhere. Each case is one HTTP request to the guest's
``peer`` CGI, which prints the address ``accept()`` returned:

(a) module not loaded, option of the configured kind -> the packet's source;
(b) module loaded, the configured kind -> the carried client address and port;
(c) module loaded, another kind -> the source;
(d) module loaded, no option -> the source;
(v4-mapped) module loaded, configured kind, to a server on ``[::]`` -> the
    source as ``::ffff:…``: an IPv4-only TOA build never sees v4-mapped
    connections (a module that also hooks IPv6 shows ``::ffff:`` + the client).

Between (a) and (b) the ``load`` CGI loads the module; ``report`` returns
toa_stats (before the loaded cases and after them) and the TOA lines of dmesg.
The verdict is PASS only when every case shows what it should.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from toa_kernel.lab.frames import toa_option
from toa_kernel.lab.guest import GuestNet
from toa_kernel.lab.link import LinkDown, VirtualLink
from toa_kernel.lab.tcpclient import ConnectionFailed, Endpoint, Exchange, exchange
from toa_kernel.verify.facts import ToaStats, parse_toa_stats

GUEST_MAC = "52:54:00:12:34:56"
HOST_MAC = "02:00:00:00:70:01"  # locally administered: exists only on the virtual link
GUEST = GuestNet(address="192.0.2.2", prefix=24, port=80, v6_port=8080)  # TEST-NET-1
BALANCER_IP = "192.0.2.1"
CLIENT_IP = "203.0.113.7"  # TEST-NET-3: the client the balancer reports
CLIENT_PORT = 41234
FALLBACK_OTHER_KIND = 200
PORT_RANGE = (32768, 60999)
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 20.0
HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Case:
    """One connection the probe makes, and what the guest should see."""

    name: str
    title: str
    loaded: bool
    kind: int | None  # TOA option kind sent; None: no option
    v6_listener: bool = False
    expect_client: bool = False

    def options(self) -> bytes:
        return b"" if self.kind is None else toa_option(self.kind, CLIENT_PORT, CLIENT_IP)


def other_kind(option_code: int) -> int:
    """A TCP option kind the module must ignore (not the configured one, not IPv6 TOA's 253)."""
    return FALLBACK_OTHER_KIND if option_code != FALLBACK_OTHER_KIND else 254


def plan_cases(option_code: int, ipv6_hooks: bool = False) -> list[Case]:
    """The probe's cases for a module honouring ``option_code``."""
    other = other_kind(option_code)
    return [
        Case("a", f"module not loaded, kind {option_code}", loaded=False, kind=option_code),
        Case("b", f"module loaded, kind {option_code}", loaded=True, kind=option_code, expect_client=True),
        Case("c", f"module loaded, kind {other}", loaded=True, kind=other),
        Case("d", "module loaded, no option", loaded=True, kind=None),
        Case(
            "v4-mapped",
            f"module loaded, kind {option_code}, server on [::]",
            loaded=True,
            kind=option_code,
            v6_listener=True,
            expect_client=ipv6_hooks,
        ),
    ]


def expected_peer(case: Case, source_port: int) -> str:
    host, port = (CLIENT_IP, CLIENT_PORT) if case.expect_client else (BALANCER_IP, source_port)
    if case.v6_listener:
        host = f"::ffff:{host}"
    return format_peer(host, port)


def format_peer(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class CaseResult:
    name: str
    title: str
    expected: str
    seen: str
    seconds: float
    source_port: int
    retransmits: int = 0

    @property
    def ok(self) -> bool:
        return self.expected == self.seen

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"

    def line(self) -> str:
        return f"({self.name}) {self.title}: expected {self.expected}, seen {self.seen} -> {self.verdict}"

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["verdict"] = self.verdict
        return document


@dataclass
class GuestReport:
    """What the ``report`` CGI said."""

    release: str = ""
    loaded: bool = False
    stats: ToaStats | None = None
    dmesg: list[str] = field(default_factory=list)


@dataclass
class ProbeOutcome:
    """Everything the probe saw in one boot."""

    cases: list[CaseResult] = field(default_factory=list)
    load_status: str = ""
    load_output: list[str] = field(default_factory=list)
    ready_seconds: float | None = None
    before: GuestReport | None = None
    after: GuestReport | None = None
    first: GuestReport | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.cases) and all(case.ok for case in self.cases)


# --- HTTP over the probe's TCP -------------------------------------------------------


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: {GUEST.address}\r\nUser-Agent: toa-kernel-probe\r\n\r\n".encode()


def split_head(response: bytes) -> tuple[bytes, bytes]:
    """Headers and body: the first empty line ends the headers (CRLF or, from a CGI, LF)."""
    parts = HEAD_END_RE.split(response, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (response, b"")


def http_body(response: bytes) -> str:
    """The body of an HTTP response; an error for anything but 200.

    busybox httpd passes a CGI's own header block through, ended by ``\n\n``.
    """
    head, body = split_head(response)
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in f"{status} ":
        raise ConnectionFailed(f"the guest answered {status or 'nothing'!r}")
    return body.decode(errors="replace")


def key_values(body: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in body.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            values.setdefault(key, value)
    return values


def prefixed(body: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in body.splitlines() if line.startswith(prefix)]


def parse_report(body: str) -> GuestReport:
    values = key_values(body)
    stats_lines = prefixed(body, "stats:")
    return GuestReport(
        release=values.get("uname", ""),
        loaded=values.get("loaded") == "yes",
        stats=parse_toa_stats("\n".join(stats_lines) + "\n") if stats_lines else None,
        dmesg=[line.strip() for line in prefixed(body, "dmesg:")],
    )


class Prober:
    """Runs the cases against the guest behind ``link``."""

    def __init__(self, link: VirtualLink, say: Callable[[str], None] = print) -> None:
        self.link = link
        self.say = say
        self.ports = random.sample(range(*PORT_RANGE), 64)

    def get(
        self, path: str, *, options: bytes = b"", v6: bool = False, timeout: float = REQUEST_TIMEOUT
    ) -> tuple[Exchange, str]:
        """GET ``path`` from the guest's IPv4 (or ``[::]``) server; the exchange and the body."""
        local = Endpoint(BALANCER_IP, self.ports.pop())
        remote = Endpoint(GUEST.address, GUEST.v6_port if v6 else GUEST.port)
        done = exchange(self.link, local, remote, http_get(path), options=options, timeout=timeout)
        return done, http_body(done.response)

    def report(self) -> GuestReport:
        _, body = self.get("/cgi-bin/report")
        return parse_report(body)

    def run_case(self, case: Case) -> CaseResult:
        done, body = self.get("/cgi-bin/peer", options=case.options(), v6=case.v6_listener)
        values = key_values(body)
        host = values.get("REMOTE_ADDR", "?").strip("[]")  # busybox brackets IPv6 addresses
        seen = format_peer(host, values.get("REMOTE_PORT", "?"))
        result = CaseResult(
            case.name,
            case.title,
            expected_peer(case, done.local.port),
            seen,
            done.seconds,
            done.local.port,
            done.retransmits,
        )
        return result

    def load_module(self, outcome: ProbeOutcome) -> None:
        _, body = self.get("/cgi-bin/load")
        outcome.load_status = key_values(body).get("status", "?")
        outcome.load_output = [line for line in prefixed(body, "output:") if line.strip()]
        if outcome.load_status != "0":
            shown = "; ".join(outcome.load_output) or "no output"
            raise ConnectionFailed(
                f"insmod of the TOA module failed in the guest (status {outcome.load_status}): {shown}"
            )

    def run(self, cases: list[Case], started: float) -> ProbeOutcome:
        """Wait for the guest, then the cases in order, loading the module before the first loaded one."""
        outcome = ProbeOutcome()
        try:
            _, body = self.get("/cgi-bin/report", timeout=READY_TIMEOUT)
            outcome.first = parse_report(body)
            outcome.ready_seconds = round(time.monotonic() - started, 2)
            kernel = outcome.first.release
            self.say(f"probe: guest answered after {outcome.ready_seconds:g} s (kernel {kernel})")
            if outcome.first.loaded:
                raise ConnectionFailed("toa is already loaded at boot: case (a) needs it unloaded")
            for case in cases:
                if case.loaded and outcome.before is None:
                    self.load_module(outcome)
                    outcome.before = self.report()
                outcome.cases.append(self.run_case(case))
            outcome.after = self.report()
        except (ConnectionFailed, LinkDown) as exc:
            outcome.error = str(exc)
        return outcome

    def power_off(self) -> None:
        with contextlib.suppress(ConnectionFailed, LinkDown):  # QEMU is stopped anyway
            self.get("/cgi-bin/poweroff", timeout=5.0)
