"""A minimal TCP client over the virtual link: one request, one response, closed properly.

Enough TCP for an HTTP/1.0 exchange with a guest, the way a FULLNAT load
balancer talks to a real server: SYN (retried until the guest listens), the
ACK that completes the handshake carrying the TOA option, the request in one
segment carrying it too, every data segment of the answer acknowledged in
order, the guest's FIN answered with ours. Lost segments are sent again after
``RETRANSMIT_SECONDS``. No window scaling, SACK or timestamps are offered, so
the guest sends none.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from toa_kernel.lab.frames import ACK, FIN, PSH, RST, SYN, TcpSegment, mss_option
from toa_kernel.lab.link import Received, VirtualLink

RETRANSMIT_SECONDS = 1.0
REFUSED_PAUSE = 0.5
MSS = 1460
CLOSE_ATTEMPTS = 3
SEQ_MOD = 1 << 32


class ConnectionFailed(Exception):
    """The guest did not answer, refused or reset the connection."""


def seq_after_or_equal(a: int, b: int) -> bool:
    """``a >= b`` in 32-bit sequence space."""
    return (a - b) % SEQ_MOD < SEQ_MOD // 2


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass
class Exchange:
    """What one connection carried, and how it went."""

    local: Endpoint
    remote: Endpoint
    response: bytes = b""
    seconds: float = 0.0
    syn_attempts: int = 0
    retransmits: int = 0
    refused: int = 0
    log: list[str] = field(default_factory=list)


class TcpClient:
    """One client connection from ``local`` to ``remote`` over ``link``."""

    def __init__(self, link: VirtualLink, local: Endpoint, remote: Endpoint, options: bytes = b"") -> None:
        self.link = link
        self.options = options  # sent in the handshake's ACK and the data segments
        self.exchange = Exchange(local, remote)
        self.iss = random.getrandbits(32)
        self.snd_nxt = self.iss
        self.rcv_nxt = 0
        self.fin_seen = False

    @property
    def local(self) -> Endpoint:
        return self.exchange.local

    @property
    def remote(self) -> Endpoint:
        return self.exchange.remote

    def send(self, flags: int, payload: bytes = b"", options: bytes = b"", seq: int | None = None) -> None:
        segment = TcpSegment(
            self.local.port,
            self.remote.port,
            self.snd_nxt if seq is None else seq,
            self.rcv_nxt if flags & ACK else 0,
            flags,
            options=options,
            payload=payload,
        )
        self.exchange.log.append(f"> {segment.describe()}")
        self.link.send_tcp(self.local.ip, self.remote.ip, segment)

    def next_segment(self, deadline: float) -> TcpSegment | None:
        """The next segment of this connection before ``deadline``; others are dropped."""
        while True:
            received = self.link.receive_tcp(deadline)
            if received is None:
                return None
            if self.belongs(received):
                self.exchange.log.append(f"< {received.segment.describe()}")
                return received.segment

    def belongs(self, received: Received) -> bool:
        segment, packet = received.segment, received.packet
        return (
            packet.src == self.remote.ip
            and packet.dst == self.local.ip
            and segment.src_port == self.remote.port
            and segment.dst_port == self.local.port
        )

    # --- the three phases ------------------------------------------------------------

    def connect(self, deadline: float) -> None:
        """SYN until a SYN-ACK comes back; then the ACK with the options."""
        while True:
            if time.monotonic() >= deadline:
                raise ConnectionFailed(
                    f"no SYN-ACK from {self.remote.ip}:{self.remote.port} "
                    f"after {self.exchange.syn_attempts} SYN(s)"
                )
            self.exchange.syn_attempts += 1
            self.send(SYN, options=mss_option(MSS), seq=self.iss)
            answer = self.next_segment(min(deadline, time.monotonic() + RETRANSMIT_SECONDS))
            if answer is None:
                continue
            if answer.flags & RST:
                self.exchange.refused += 1  # not listening yet: the guest is still starting
                time.sleep(REFUSED_PAUSE)
                continue
            if answer.flags & SYN and answer.flags & ACK and answer.ack == (self.iss + 1) % SEQ_MOD:
                self.snd_nxt = (self.iss + 1) % SEQ_MOD
                self.rcv_nxt = (answer.seq + 1) % SEQ_MOD
                self.send(ACK, options=self.options)
                return

    def request(self, payload: bytes, deadline: float) -> bytes:
        """Send ``payload`` and read the answer until the guest's FIN."""
        start = self.snd_nxt
        self.send(PSH | ACK, payload, options=self.options)
        self.snd_nxt = (start + len(payload)) % SEQ_MOD
        acked = False
        body = bytearray()
        while not (acked and self.fin_seen):
            segment = self.next_segment(min(deadline, time.monotonic() + RETRANSMIT_SECONDS))
            if segment is None:
                if time.monotonic() >= deadline:
                    raise ConnectionFailed(f"the answer from {self.remote.ip}:{self.remote.port} stopped")
                self.retransmit(start, payload, acked)
                continue
            if segment.flags & RST:
                raise ConnectionFailed(f"{self.remote.ip}:{self.remote.port} reset the connection")
            if segment.flags & SYN:  # our ACK was lost: the guest repeats its SYN-ACK
                self.send(ACK, options=self.options, seq=start)
                continue
            if segment.flags & ACK and seq_after_or_equal(segment.ack, self.snd_nxt):
                acked = True
            self.take(segment, body)
        return bytes(body)

    def retransmit(self, start: int, payload: bytes, acked: bool) -> None:
        self.exchange.retransmits += 1
        if not acked:
            self.send(PSH | ACK, payload, options=self.options, seq=start)
        else:
            self.send(ACK)

    def take(self, segment: TcpSegment, body: bytearray) -> None:
        """Keep in-order data, count the FIN, acknowledge (again, for a repeat)."""
        if not segment.payload and not segment.flags & FIN:
            return
        if segment.seq == self.rcv_nxt:
            body.extend(segment.payload)
            self.rcv_nxt = (self.rcv_nxt + len(segment.payload)) % SEQ_MOD
            if segment.flags & FIN:
                self.rcv_nxt = (self.rcv_nxt + 1) % SEQ_MOD
                self.fin_seen = True
        self.send(ACK)

    def close(self, deadline: float) -> None:
        """Our FIN, until the guest acknowledges it (a few tries; the data is already in)."""
        fin_seq = self.snd_nxt
        self.snd_nxt = (fin_seq + 1) % SEQ_MOD
        for _ in range(CLOSE_ATTEMPTS):
            self.send(FIN | ACK, seq=fin_seq)
            wait_until = min(deadline, time.monotonic() + RETRANSMIT_SECONDS)
            while True:
                segment = self.next_segment(wait_until)
                if segment is None:
                    break
                if segment.flags & ACK and seq_after_or_equal(segment.ack, self.snd_nxt):
                    return
                if segment.flags & FIN:
                    self.send(ACK)


def exchange(
    link: VirtualLink,
    local: Endpoint,
    remote: Endpoint,
    payload: bytes,
    *,
    options: bytes = b"",
    timeout: float = 30.0,
) -> Exchange:
    """Connect, send ``payload``, read the answer, close; the ``Exchange`` says how it went."""
    started = time.monotonic()
    deadline = started + timeout
    client = TcpClient(link, local, remote, options)
    client.connect(deadline)
    client.exchange.response = client.request(payload, deadline)
    client.close(deadline)
    client.exchange.seconds = round(time.monotonic() - started, 3)
    return client.exchange
