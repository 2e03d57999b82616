"""The host end of the guest's NIC: Ethernet frames in UDP datagrams on 127.0.0.1.

QEMU's ``-netdev dgram`` sends every frame the guest's NIC transmits as one UDP
datagram to the probe's socket and puts every datagram it receives on the wire.
The link answers ARP for the addresses the probe uses (they exist only on this
virtual wire) and hands IPv4/TCP segments to whoever reads. No raw sockets, no
tap device, no route on the host: nothing leaves 127.0.0.1. Every frame both
ways is kept and can be written as a pcap file (``tcpdump -r``, Wireshark).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import time
from dataclasses import dataclass

from toa_kernel.lab.frames import (
    ARP_REQUEST,
    ETH_ARP,
    ETH_IPV4,
    PROTO_TCP,
    FrameError,
    Ipv4,
    TcpSegment,
    arp_frame,
    parse_arp,
    parse_ethernet,
    parse_ipv4,
    parse_tcp,
    tcp_frame,
)

LOOPBACK = "127.0.0.1"
MAX_FRAME = 65535
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, MAX_FRAME, 1)  # LINKTYPE_ETHERNET


class LinkDown(Exception):
    """The link was closed (QEMU ended) while the probe was still using it."""


@dataclass(frozen=True)
class Received:
    """One TCP segment from the guest, with the IPv4 addresses it travelled between."""

    packet: Ipv4
    segment: TcpSegment


class VirtualLink:
    """A UDP socket on 127.0.0.1 that QEMU's dgram netdev exchanges frames with."""

    def __init__(self, mac: str, addresses: set[str], guest_mac: str) -> None:
        self.mac = mac
        self.addresses = set(addresses)
        self.guest_mac = guest_mac
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.peer: tuple[str, int] | None = None
        self.closed = False
        self.captured: list[tuple[float, bytes]] = []
        self.ident = itertools.count(1)
        self.frames_in = 0
        self.frames_out = 0
        self.arp_answered = 0

    @property
    def port(self) -> int:
        """The UDP port QEMU sends the guest's frames to."""
        return int(self.sock.getsockname()[1])

    def connect(self, qemu_port: int) -> None:
        """Send to QEMU's own datagram socket (its ``local.port``)."""
        self.peer = (LOOPBACK, qemu_port)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def send_frame(self, frame: bytes) -> None:
        if self.peer is None:
            raise RuntimeError("the link does not know QEMU's port yet")
        try:
            self.sock.sendto(frame, self.peer)
        except OSError as exc:
            raise LinkDown(f"the virtual link is down: {exc}") from exc
        self.frames_out += 1
        self.captured.append((time.time(), frame))

    def send_tcp(self, src_ip: str, dst_ip: str, segment: TcpSegment) -> None:
        self.send_frame(tcp_frame(self.guest_mac, self.mac, src_ip, dst_ip, segment, next(self.ident)))

    def receive_tcp(self, deadline: float) -> Received | None:
        """The next TCP segment addressed to one of the link's addresses (None at ``deadline``)."""
        while True:
            frame = self.receive_frame(deadline)
            if frame is None:
                return None
            received = self.handle(frame)
            if received is not None:
                return received

    def receive_frame(self, deadline: float) -> bytes | None:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return None
        try:
            self.sock.settimeout(wait)
            frame, _ = self.sock.recvfrom(MAX_FRAME)
        except (socket.timeout, TimeoutError):
            return None
        except OSError as exc:
            raise LinkDown(f"the virtual link is down: {exc}") from exc
        self.frames_in += 1
        self.captured.append((time.time(), frame))
        return frame

    def handle(self, frame: bytes) -> Received | None:
        """Answer ARP; return a TCP segment for us; drop everything else (IPv6, broken frames)."""
        try:
            ethernet = parse_ethernet(frame)
            if ethernet.ethertype == ETH_ARP:
                self.answer_arp(ethernet.payload)
                return None
            if ethernet.ethertype != ETH_IPV4:
                return None
            packet = parse_ipv4(ethernet.payload)
            if packet.protocol != PROTO_TCP or packet.dst not in self.addresses:
                return None
            return Received(packet, parse_tcp(packet.payload, packet.src, packet.dst))
        except FrameError:
            return None

    def answer_arp(self, payload: bytes) -> None:
        arp = parse_arp(payload)
        if arp.op == ARP_REQUEST and arp.target_ip in self.addresses:
            self.send_frame(arp_frame(arp.sender_mac, self.mac, arp.reply(self.mac)))
            self.arp_answered += 1


def pcap_bytes(frames: list[tuple[float, bytes]]) -> bytes:
    """Frames as a classic pcap file (microsecond timestamps, Ethernet link type)."""
    records = [PCAP_HEADER]
    for stamp, frame in frames:
        seconds, micros = int(stamp), int((stamp % 1) * 1_000_000)
        records.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return b"".join(records)


def read_pcap(data: bytes) -> list[bytes]:
    """The frames of a classic little-endian pcap file (as ``pcap_bytes`` writes)."""
    if data[:4] != PCAP_HEADER[:4]:
        raise ValueError("not a little-endian pcap file")
    frames, offset = [], len(PCAP_HEADER)
    while offset + 16 <= len(data):
        _, _, length, _ = struct.unpack("<IIII", data[offset : offset + 16])
        frames.append(data[offset + 16 : offset + 16 + length])
        offset += 16 + length
    return frames
