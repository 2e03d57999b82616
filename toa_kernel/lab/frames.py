"""Ethernet, ARP, IPv4 and TCP frames as the probe sends and reads them (standard library only).

The probe speaks to the guest's NIC frame by frame, so it builds the headers
itself: Ethernet II, ARP for IPv4 over Ethernet, IPv4 without options and TCP
with the Internet checksum over the IPv4 pseudo-header (RFC 791, 793, 826,
1071). The TOA option is the load balancer's: kind, length 8, the client's
port and IPv4 address, both in network order.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
ARP_REQUEST = 1
ARP_REPLY = 2
PROTO_TCP = 6
IPV4_HEADER = 20
TCP_HEADER = 20
TOA_LENGTH = 8
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
FLAG_NAMES = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."))


class FrameError(ValueError):
    """A frame that is too short, malformed or fails its checksum."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    """``52:54:00:12:34:56`` -> 6 bytes."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return bytes(int(part, 16) for part in parts)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in raw)


def ip_bytes(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ip_text(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


# --- Ethernet -------------------------------------------------------------------


@dataclass(frozen=True)
class Ethernet:
    dst: str
    src: str
    ethertype: int
    payload: bytes

    def encode(self) -> bytes:
        return mac_bytes(self.dst) + mac_bytes(self.src) + struct.pack("!H", self.ethertype) + self.payload


def parse_ethernet(frame: bytes) -> Ethernet:
    if len(frame) < 14:
        raise FrameError(f"Ethernet frame of {len(frame)} bytes")
    (ethertype,) = struct.unpack("!H", frame[12:14])
    return Ethernet(mac_text(frame[0:6]), mac_text(frame[6:12]), ethertype, frame[14:])


# --- ARP --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arp:
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str

    def encode(self) -> bytes:
        return (
            struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, self.op)
            + mac_bytes(self.sender_mac)
            + ip_bytes(self.sender_ip)
            + mac_bytes(self.target_mac)
            + ip_bytes(self.target_ip)
        )

    def reply(self, mac: str) -> Arp:
        """The answer to this request from the owner of ``target_ip`` at ``mac``."""
        return Arp(ARP_REPLY, mac, self.target_ip, self.sender_mac, self.sender_ip)


def parse_arp(payload: bytes) -> Arp:
    if len(payload) < 28:
        raise FrameError(f"ARP packet of {len(payload)} bytes")
    hardware, protocol, hlen, plen, op = struct.unpack("!HHBBH", payload[:8])
    if (hardware, protocol, hlen, plen) != (1, ETH_IPV4, 6, 4):
        raise FrameError("ARP for something other than IPv4 over Ethernet")
    return Arp(
        op,
        mac_text(payload[8:14]),
        ip_text(payload[14:18]),
        mac_text(payload[18:24]),
        ip_text(payload[24:28]),
    )


# --- IPv4 -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ipv4:
    src: str
    dst: str
    protocol: int
    payload: bytes
    ident: int = 0
    ttl: int = 64

    def encode(self) -> bytes:
        total = IPV4_HEADER + len(self.payload)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            self.ident & 0xFFFF,
            0x4000,  # don't fragment
            self.ttl,
            self.protocol,
            0,
            ip_bytes(self.src),
            ip_bytes(self.dst),
        )
        return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + self.payload


def parse_ipv4(packet: bytes) -> Ipv4:
    if len(packet) < IPV4_HEADER or packet[0] >> 4 != 4:
        raise FrameError("not an IPv4 packet")
    header_length = (packet[0] & 0x0F) * 4
    (total,) = struct.unpack("!H", packet[2:4])
    if header_length < IPV4_HEADER or total < header_length or len(packet) < total:
        raise FrameError("truncated IPv4 packet")
    if checksum(packet[:header_length]) != 0:
        raise FrameError("bad IPv4 header checksum")
    (ident,) = struct.unpack("!H", packet[4:6])
    return Ipv4(
        ip_text(packet[12:16]),
        ip_text(packet[16:20]),
        packet[9],
        packet[header_length:total],
        ident,
        packet[8],
    )


# --- TCP --------------------------------------------------------------------------


def toa_option(kind: int, port: int, address: str) -> bytes:
    """The TOA option: kind, length 8, port and IPv4 address in network order."""
    return struct.pack("!BBH4s", kind, TOA_LENGTH, port, ip_bytes(address))


def mss_option(mss: int) -> bytes:
    return struct.pack("!BBH", TCPOPT_MSS, 4, mss)


@dataclass(frozen=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int = 65535
    options: bytes = b""
    payload: bytes = b""

    def encode(self, src_ip: str, dst_ip: str) -> bytes:
        options = self.options + b"\0" * (-len(self.options) % 4)
        offset = (TCP_HEADER + len(options)) // 4
        header = struct.pack(
            "!HHIIBBHHH",
            self.src_port,
            self.dst_port,
            self.seq & 0xFFFFFFFF,
            self.ack & 0xFFFFFFFF,
            offset << 4,
            self.flags,
            self.window,
            0,
            0,
        )
        segment = header + options + self.payload
        value = checksum(pseudo_header(src_ip, dst_ip, len(segment)) + segment)
        return segment[:16] + struct.pack("!H", value) + segment[18:]

    @property
    def length(self) -> int:
        """Sequence space the segment takes: its data, plus one for SYN and for FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def describe(self) -> str:
        flags = "".join(name for bit, name in FLAG_NAMES if self.flags & bit)
        ports = f"{self.src_port}>{self.dst_port}"
        return f"{ports} [{flags}] seq {self.seq} ack {self.ack} len {len(self.payload)}"


def pseudo_header(src_ip: str, dst_ip: str, length: int) -> bytes:
    return ip_bytes(src_ip) + ip_bytes(dst_ip) + struct.pack("!BBH", 0, PROTO_TCP, length)


def parse_tcp(segment: bytes, src_ip: str, dst_ip: str) -> TcpSegment:
    """A TCP segment whose checksum (over the pseudo-header of ``src_ip``/``dst_ip``) holds."""
    if len(segment) < TCP_HEADER:
        raise FrameError(f"TCP segment of {len(segment)} bytes")
    if checksum(pseudo_header(src_ip, dst_ip, len(segment)) + segment) != 0:
        raise FrameError("bad TCP checksum")
    src_port, dst_port, seq, ack, offset, flags, window = struct.unpack("!HHIIBBH", segment[:16])
    header_length = (offset >> 4) * 4
    if header_length < TCP_HEADER or header_length > len(segment):
        raise FrameError("bad TCP data offset")
    return TcpSegment(
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        segment[TCP_HEADER:header_length],
        segment[header_length:],
    )


@dataclass
class Options:
    """The TCP options of a segment, by kind (a kind seen twice keeps the first)."""

    values: dict[int, bytes] = field(default_factory=dict)

    def get(self, kind: int) -> bytes | None:
        return self.values.get(kind)


def parse_options(options: bytes) -> Options:
    found = Options()
    index = 0
    while index < len(options):
        kind = options[index]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            index += 1
            continue
        if index + 1 >= len(options) or options[index + 1] < 2:
            raise FrameError("malformed TCP option")
        length = options[index + 1]
        found.values.setdefault(kind, options[index + 2 : index + length])
        index += length
    return found


def tcp_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, segment: TcpSegment, ident: int) -> bytes:
    """An Ethernet frame carrying ``segment`` from ``src_ip`` to ``dst_ip``."""
    packet = Ipv4(src_ip, dst_ip, PROTO_TCP, segment.encode(src_ip, dst_ip), ident).encode()
    return Ethernet(dst_mac, src_mac, ETH_IPV4, packet).encode()


def arp_frame(dst_mac: str, src_mac: str, arp: Arp) -> bytes:
    return Ethernet(dst_mac, src_mac, ETH_ARP, arp.encode()).encode()
