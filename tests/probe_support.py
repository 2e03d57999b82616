"""Helpers for the probe's tests: a scripted TCP server on the far end of a real
UDP link (playing QEMU and the guest), frames captured from a real probe run,
sandbox roots for the 6.1 kernel, and the real third-party inputs."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from toa_kernel.lab.frames import (
    ACK,
    ETH_ARP,
    ETH_IPV4,
    FIN,
    PSH,
    SYN,
    Arp,
    TcpSegment,
    arp_frame,
    parse_ethernet,
    parse_ipv4,
    parse_tcp,
    tcp_frame,
)
from toa_kernel.lab.link import LOOPBACK

DATA = Path(__file__).resolve().parent / "data" / "probe"
PROJECT_DIR = Path(__file__).resolve().parent.parent

# The real inputs live outside the repository (third-party code, never copied in):
# TOA_REAL_INPUTS names their directory; by default the inputs directory kept
# beside the project checkout.
REAL_INPUTS = {
    "elb-toa-master.tar.gz": "7bd50474e7c4ec163a8b4e452c3c1adb93aed67adc149fd816ed96e7915fdf6c",
    "elb-toa-IPv6.tar.gz": "fef5b6ed3dd5163e7a7921dcb6a3c54eb2a33ba7dae530640baaaf09f259b27b",
    "lvs-kernel-2.6.32-220.23.1.el6.rs.tar.xz": (
        "c2334ef9a2eadc70077aed9877042b8a511c61a1f72881e721ee0701cc6ad9c8"
    ),
}


def real_input(name: str) -> Path:
    """A real input file, checked against its published sha256; the test fails loudly without it."""
    directory = Path(os.environ.get("TOA_REAL_INPUTS") or PROJECT_DIR.parent / "shared" / "data")
    path = directory / name
    if not path.is_file():
        pytest.fail(f"real input {name} is missing from {directory}: set TOA_REAL_INPUTS to its directory")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == REAL_INPUTS[name], f"{path} has sha256 {digest}, not the published one"
    return path


def debian_root(base: Path, release: str, kernel: Path) -> Path:
    """A Debian 12 root whose /boot boots ``release`` with GRUB legacy (the lab's boot loader)."""
    root = base / "debian-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    (root / "lib" / "modules" / release).mkdir(parents=True)
    boot = root / "boot"
    (boot / "grub").mkdir(parents=True)
    (boot / f"vmlinuz-{release}").write_bytes(kernel.read_bytes())
    (boot / f"initrd.img-{release}").write_bytes(b"replaced by the lab's initramfs")
    (boot / "grub" / "grub.conf").write_text(
        "default=0\ntimeout=5\n"
        f"title Debian GNU/Linux, with Linux {release}\n"
        "\troot (hd0,0)\n"
        f"\tkernel /boot/vmlinuz-{release} root=/dev/sda1 ro quiet\n"
        f"\tinitrd /boot/initrd.img-{release}\n"
    )
    return root


@dataclass
class ScriptedServer:
    """The far end of the link: answers ARP-less TCP as a tiny HTTP server would.

    ``drop_first_syn`` ignores the first SYN (the client must send it again);
    ``drop_first_data`` ignores the first request segment (it must be retransmitted).
    Every TCP segment the client sent is kept in ``seen``.
    """

    answer: bytes
    drop_first_syn: bool = False
    drop_first_data: bool = False
    seen: list[TcpSegment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.link_address: tuple[str, int] | None = None
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def start(self) -> ScriptedServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)

    def send(self, src_mac: str, dst_mac: str, src: str, dst: str, segment: TcpSegment) -> None:
        assert self.link_address is not None
        self.sock.sendto(tcp_frame(dst_mac, src_mac, src, dst, segment, 1), self.link_address)

    def ask_arp(self, guest_mac: str, guest_ip: str, wanted_ip: str) -> None:
        request = Arp(1, guest_mac, guest_ip, "00:00:00:00:00:00", wanted_ip)
        assert self.link_address is not None
        self.sock.sendto(arp_frame("ff:ff:ff:ff:ff:ff", guest_mac, request), self.link_address)

    def serve(self) -> None:
        isn, syns, datas, done = 5000, 0, 0, False
        try:
            while not done:
                frame, self.link_address = self.sock.recvfrom(65535)
                ethernet = parse_ethernet(frame)
                if ethernet.ethertype == ETH_ARP:
                    continue
                assert ethernet.ethertype == ETH_IPV4
                packet = parse_ipv4(ethernet.payload)
                segment = parse_tcp(packet.payload, packet.src, packet.dst)
                self.seen.append(segment)
                reply = (ethernet.dst, ethernet.src, packet.dst, packet.src)
                ports = (segment.dst_port, segment.src_port)
                if segment.flags & SYN:
                    syns += 1
                    if self.drop_first_syn and syns == 1:
                        continue
                    self.send(*reply, TcpSegment(*ports, isn, segment.seq + 1, SYN | ACK))
                elif segment.payload:
                    datas += 1
                    if self.drop_first_data and datas == 1:
                        continue
                    ack = segment.seq + len(segment.payload)
                    self.send(*reply, TcpSegment(*ports, isn + 1, ack, PSH | ACK, payload=self.answer))
                    self.send(*reply, TcpSegment(*ports, isn + 1 + len(self.answer), ack, FIN | ACK))
                elif segment.flags & FIN:
                    self.send(*reply, TcpSegment(*ports, isn + 2 + len(self.answer), segment.seq + 1, ACK))
                    done = True
        except (OSError, AssertionError) as exc:
            self.errors.append(repr(exc))
