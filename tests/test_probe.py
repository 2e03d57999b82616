"""The TOA probe's parts, fast: frames and checksums (against values computed
independently and frames a real guest sent), the link and the TCP client over
real UDP sockets, the cases and their verdicts, the guest's initramfs, and how
the probe finds its kernel, module and NIC driver."""

from __future__ import annotations

import gzip
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import have
from probe_support import DATA, ScriptedServer

from toa_kernel.core.errors import UserError
from toa_kernel.lab import frames as fr
from toa_kernel.lab.console import parse_console
from toa_kernel.lab.guest import CGI_SCRIPTS, GUEST_MODULE, NIC_DIR, build_guest_initramfs, probe_init
from toa_kernel.lab.link import VirtualLink, pcap_bytes, read_pcap
from toa_kernel.lab.probe import (
    BALANCER_IP,
    CLIENT_IP,
    CLIENT_PORT,
    GUEST,
    CaseResult,
    ProbeOutcome,
    expected_peer,
    http_body,
    key_values,
    other_kind,
    parse_report,
    plan_cases,
)
from toa_kernel.lab.proberun import (
    boot_failure,
    find_module,
    find_nic,
    module_hooks_ipv6,
    network_args,
    probe_is_over,
)
from toa_kernel.lab.tcpclient import ConnectionFailed, Endpoint, exchange, seq_after_or_equal
from toa_kernel.system.rootfs import Root

GUEST_MAC = "52:54:00:12:34:56"
HOST_MAC = "02:00:00:00:70:01"


def captured() -> list[fr.Ethernet]:
    """Frames of a real probe run against Debian's 6.1 kernel (tests/data/probe)."""
    return [fr.parse_ethernet(f) for f in read_pcap((DATA / "guest-6.1.pcap").read_bytes())]


def tcp_of(ethernet: fr.Ethernet) -> tuple[fr.Ipv4, fr.TcpSegment]:
    packet = fr.parse_ipv4(ethernet.payload)
    return packet, fr.parse_tcp(packet.payload, packet.src, packet.dst)


# --- checksums and frames ----------------------------------------------------------


def test_checksum_matches_rfc1071s_worked_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement); checksum 220d
    assert fr.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert fr.checksum(bytes.fromhex("0001f203f4f5f6f7220d")) == 0  # a correct checksum verifies to 0
    assert fr.checksum(b"\x01") == fr.checksum(b"\x01\x00")  # odd length: padded with a zero byte


def test_ipv4_header_checksum_matches_a_reference_header():
    # a well-known example header (192.168.0.1 -> 192.168.0.199, UDP, 115 bytes): checksum b861
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert fr.checksum(header) == 0xB861
    packet = fr.Ipv4("192.168.0.1", "192.168.0.199", 17, b"\0" * 95, ident=0).encode()
    assert packet[:20] == bytes.fromhex("450000730000400040 11 b861 c0a80001c0a800c7".replace(" ", ""))


def test_tcp_checksum_covers_the_pseudo_header_and_is_verified_on_parse():
    segment = fr.TcpSegment(40000, 80, 1, 0, fr.SYN, options=fr.mss_option(1460))
    raw = segment.encode("192.0.2.1", "192.0.2.2")
    words = fr.pseudo_header("192.0.2.1", "192.0.2.2", len(raw)) + raw
    assert fr.checksum(words) == 0
    assert fr.parse_tcp(raw, "192.0.2.1", "192.0.2.2") == segment
    with pytest.raises(fr.FrameError, match="checksum"):
        fr.parse_tcp(raw, "192.0.2.1", "192.0.2.3")  # another destination: another pseudo-header


def test_the_toa_option_is_kind_length_port_and_address_in_network_order():
    option = fr.toa_option(254, 41234, "203.0.113.7")
    assert option == bytes([254, 8]) + struct.pack("!H", 41234) + bytes([203, 0, 113, 7])
    segment = fr.TcpSegment(1, 2, 3, 4, fr.ACK, options=option)
    raw = segment.encode("192.0.2.1", "192.0.2.2")
    assert raw[12] >> 4 == 7  # 20 bytes of header + 8 of option = 7 words
    assert fr.parse_options(fr.parse_tcp(raw, "192.0.2.1", "192.0.2.2").options).get(254) == option[2:]


def test_option_parsing_skips_nops_and_stops_at_the_end_of_list():
    found = fr.parse_options(bytes([1, 1]) + fr.mss_option(1460) + bytes([0, 254, 8]))
    assert found.get(fr.TCPOPT_MSS) == struct.pack("!H", 1460) and found.get(254) is None
    with pytest.raises(fr.FrameError):
        fr.parse_options(bytes([254, 1]))


def test_frames_a_real_guest_sent_parse_and_their_checksums_hold():
    frames = captured()
    arp = fr.parse_arp(frames[0].payload)
    assert (arp.op, arp.sender_ip, arp.target_ip) == (fr.ARP_REQUEST, GUEST.address, BALANCER_IP)
    assert arp.sender_mac == GUEST_MAC
    assert fr.parse_arp(frames[1].payload) == arp.reply(HOST_MAC)  # our answer, byte for byte
    packet, syn_ack = tcp_of(frames[2])
    assert (packet.src, packet.dst, syn_ack.src_port) == (GUEST.address, BALANCER_IP, GUEST.port)
    assert syn_ack.flags == fr.SYN | fr.ACK
    assert fr.parse_options(syn_ack.options).get(fr.TCPOPT_MSS) == struct.pack("!H", 1460)
    _, answer = tcp_of(frames[3])
    assert answer.payload == b"HTTP/1.1 200 OK\r\n"
    _, fin = tcp_of(frames[4])
    assert fin.flags == fr.FIN | fr.ACK


def test_the_probes_ack_and_request_carry_the_toa_option_and_its_syn_does_not():
    frames = captured()
    _, syn_ack = tcp_of(frames[5])
    _, ack = tcp_of(frames[6])
    _, request = tcp_of(frames[7])
    assert ack.flags == fr.ACK and ack.ack == syn_ack.seq + 1 and not ack.payload
    carried = fr.toa_option(254, CLIENT_PORT, CLIENT_IP)
    assert ack.options == carried and request.options == carried
    assert request.payload.startswith(b"GET /cgi-bin/peer HTTP/1.0\r\n")


def test_a_broken_frame_is_refused():
    with pytest.raises(fr.FrameError):
        fr.parse_ethernet(b"\x00" * 10)
    packet = bytearray(fr.Ipv4("192.0.2.1", "192.0.2.2", 6, b"x" * 20).encode())
    packet[8] ^= 1  # the TTL changes, the checksum does not
    with pytest.raises(fr.FrameError, match="checksum"):
        fr.parse_ipv4(bytes(packet))


def test_pcap_round_trip():
    data = pcap_bytes([(1.5, b"abc"), (2.25, b"defg")])
    assert data[:4] == struct.pack("<I", 0xA1B2C3D4) and read_pcap(data) == [b"abc", b"defg"]


# --- link and TCP client over real UDP sockets ----------------------------------


@pytest.fixture
def wire(monkeypatch):
    monkeypatch.setattr("toa_kernel.lab.tcpclient.RETRANSMIT_SECONDS", 0.2)

    def make(answer: bytes, **drops: bool):
        server = ScriptedServer(answer, **drops).start()
        link = VirtualLink(HOST_MAC, {BALANCER_IP}, GUEST_MAC)
        link.connect(server.port)
        made.append((server, link))
        return server, link

    made: list = []
    yield make
    for server, link in made:
        link.close()
        server.close()


def test_the_client_gets_the_answer_and_sends_toa_in_the_ack_and_the_data(wire):
    server, link = wire(b"HTTP/1.0 200 OK\r\n\r\nhello\n")
    option = fr.toa_option(254, CLIENT_PORT, CLIENT_IP)
    local, remote = Endpoint(BALANCER_IP, 40001), Endpoint(GUEST.address, 80)
    done = exchange(link, local, remote, b"GET / HTTP/1.0\r\n\r\n", options=option)
    assert done.response == b"HTTP/1.0 200 OK\r\n\r\nhello\n" and not server.errors
    syn, ack, data = server.seen[:3]
    assert syn.flags == fr.SYN and syn.options == fr.mss_option(1460)  # no TOA in the SYN
    assert ack.flags == fr.ACK and ack.options == option
    assert data.flags == fr.PSH | fr.ACK and data.options == option and data.payload.startswith(b"GET /")
    assert server.seen[-1].flags & fr.FIN  # the client closed its side too


def test_lost_syn_and_lost_request_are_sent_again(wire):
    server, link = wire(b"ok", drop_first_syn=True, drop_first_data=True)
    local, remote = Endpoint(BALANCER_IP, 40002), Endpoint(GUEST.address, 80)
    done = exchange(link, local, remote, b"GET / HTTP/1.0\r\n\r\n")
    assert done.response == b"ok"
    assert done.syn_attempts == 2 and done.retransmits >= 1
    assert [s.flags for s in server.seen].count(fr.PSH | fr.ACK) == 2


def test_no_answer_is_a_connection_failure_after_the_timeout(monkeypatch):
    monkeypatch.setattr("toa_kernel.lab.tcpclient.RETRANSMIT_SECONDS", 0.2)
    link = VirtualLink(HOST_MAC, {BALANCER_IP}, GUEST_MAC)
    silent = ScriptedServer(b"")  # never started: nobody answers
    link.connect(silent.port)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=r"no SYN-ACK from 192\.0\.2\.2:80 after [3-5] SYN"):
        exchange(link, Endpoint(BALANCER_IP, 40003), Endpoint(GUEST.address, 80), b"x", timeout=0.9)
    assert time.monotonic() - started < 2
    link.close()
    silent.sock.close()


def test_the_link_answers_arp_for_its_own_addresses_only():
    guest = ScriptedServer(b"")  # only its socket: it plays the guest asking
    link = VirtualLink(HOST_MAC, {BALANCER_IP}, GUEST_MAC)
    link.connect(guest.port)
    guest.link_address = ("127.0.0.1", link.port)
    guest.ask_arp(GUEST_MAC, GUEST.address, BALANCER_IP)
    guest.ask_arp(GUEST_MAC, GUEST.address, "192.0.2.99")
    assert link.receive_tcp(time.monotonic() + 0.3) is None  # ARP is handled, not returned
    assert link.arp_answered == 1
    answer = fr.parse_arp(fr.parse_ethernet(guest.sock.recvfrom(2048)[0]).payload)
    assert (answer.op, answer.sender_ip, answer.sender_mac) == (fr.ARP_REPLY, BALANCER_IP, HOST_MAC)
    link.close()
    guest.sock.close()


def test_sequence_comparison_wraps_around():
    assert seq_after_or_equal(5, 2**32 - 5) and not seq_after_or_equal(2**32 - 5, 5)
    assert seq_after_or_equal(7, 7)


# --- cases and verdicts -------------------------------------------------------------


def test_cases_a_to_d_and_the_v4_mapped_one():
    cases = plan_cases(254)
    assert [c.name for c in cases] == ["a", "b", "c", "d", "v4-mapped"]
    assert [c.loaded for c in cases] == [False, True, True, True, True]
    assert [c.kind for c in cases] == [254, 254, 200, None, 254]
    assert [c.expect_client for c in cases] == [False, True, False, False, False]
    assert plan_cases(254, ipv6_hooks=True)[-1].expect_client
    assert other_kind(200) == 254 and other_kind(252) == 200


def test_expected_peers():
    a, b, _, _, mapped = plan_cases(254)
    assert expected_peer(a, 40000) == "192.0.2.1:40000"
    assert expected_peer(b, 40000) == f"{CLIENT_IP}:{CLIENT_PORT}"
    assert expected_peer(mapped, 40000) == "[::ffff:192.0.2.1]:40000"
    assert expected_peer(plan_cases(254, True)[-1], 1) == f"[::ffff:{CLIENT_IP}]:{CLIENT_PORT}"


def test_verdict_is_pass_only_when_every_case_holds():
    good = CaseResult("b", "t", "203.0.113.7:41234", "203.0.113.7:41234", 0.1, 40000)
    bad = CaseResult("b", "t", "203.0.113.7:41234", "192.0.2.1:40000", 0.1, 40000)
    assert good.line() == "(b) t: expected 203.0.113.7:41234, seen 203.0.113.7:41234 -> PASS"
    assert ProbeOutcome(cases=[good, good]).ok
    assert not ProbeOutcome(cases=[good, bad]).ok and bad.verdict == "FAIL"
    assert not ProbeOutcome(cases=[]).ok and not ProbeOutcome(cases=[good], error="x").ok


REPORT_BODY = "\n".join(
    [
        "uname=6.1.0-57-amd64",
        "loaded=yes",
        "stats:                                  CPU0       ",
        "stats:syn_recv_sock_toa        :         1 ",
        "stats:syn_recv_sock_no_toa     :         4 ",
        "stats:getname_toa_ok           :         1 ",
        "stats:getname_toa_mismatch     :         0 ",
        "stats:getname_toa_bypass       :         0 ",
        "stats:getname_toa_empty        :         4 ",
        "dmesg:[    6.816342] TOA: write protection restored on inet_stream_ops and ipv4_specific",
        "dmesg:[    6.816556] TOA: toa loaded",
    ]
)


def test_the_guests_report_and_cgi_answers_parse():
    report = parse_report(REPORT_BODY)
    assert report.release == "6.1.0-57-amd64" and report.loaded
    assert report.stats.counters["syn_recv_sock_toa"] == 1 and not report.stats.problem
    assert report.dmesg[-1].endswith("TOA: toa loaded")
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\n"  # busybox passes the CGI's \n\n
    response += b"REMOTE_ADDR=[::ffff:192.0.2.1]\nREMOTE_PORT=7\n"
    assert key_values(http_body(response)) == {"REMOTE_ADDR": "[::ffff:192.0.2.1]", "REMOTE_PORT": "7"}
    with pytest.raises(ConnectionFailed, match="404"):
        http_body(b"HTTP/1.1 404 Not Found\r\n\r\n")


# --- the guest ---------------------------------------------------------------------------


def test_the_probe_init_marks_serves_ipv4_and_ipv6_and_waits_for_poweroff():
    init = probe_init("2.6.32-220.23.1.el6.x86_64.rs-toa", GUEST)
    assert 'echo "TOA-LAB release="2.6.32-220.23.1.el6.x86_64.rs-toa' in init
    assert "httpd -p 0.0.0.0:80 -h /www" in init and "httpd -p [::]:8080 -h /www" in init
    assert "ip addr add 192.0.2.2/24" in init and init.rstrip().endswith("poweroff -f")
    assert "insmod" not in init.split("for module in")[0]  # toa is loaded only when the probe asks
    assert f"insmod {GUEST_MODULE}" in CGI_SCRIPTS["load"]
    assert "REMOTE_ADDR" in CGI_SCRIPTS["peer"] and "/proc/net/toa_stats" in CGI_SCRIPTS["report"]
    with pytest.raises(UserError):
        probe_init("6.1; reboot", GUEST)


@pytest.mark.skipif(not have("busybox"), reason="busybox-static is not installed")
def test_the_guest_initramfs_holds_busybox_init_cgis_the_module_and_the_nic_driver(tmp_path):
    module, nic = tmp_path / "toa.ko", tmp_path / "e1000.ko"
    module.write_bytes(b"MODULE")
    nic.write_bytes(b"NIC")
    image = build_guest_initramfs("6.1.0-57-amd64", tmp_path / "probe.img", GUEST, module, [nic])
    archive = gzip.decompress(image.read_bytes())
    names = set(
        subprocess.run(["busybox", "cpio", "-t"], input=archive, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    expected = {"init", "bin/busybox", "www/cgi-bin/peer", "www/cgi-bin/load", "www/cgi-bin/report"}
    assert expected | {GUEST_MODULE.lstrip("/"), f"{NIC_DIR.lstrip('/')}/e1000.ko"} <= names


# --- what the probe boots ----------------------------------------------------------------


def fake_ko(path: Path, release: str, extra: bytes = b"") -> Path:
    """A minimal ELF relocatable with a .modinfo section naming ``release`` (as Kbuild writes one)."""
    modinfo = f"name=toa\0vermagic={release} SMP mod_unload\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body = modinfo + extra + shstrtab
    shoff = 64 + len(body)
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    )
    null = b"\0" * 64
    info = struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, 64, len(modinfo), 0, 0, 1, 0)
    names = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, 64 + len(modinfo) + len(extra), len(shstrtab), 0, 0, 1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + null + info + names)
    return path


def test_the_module_is_found_under_the_roots_modules_and_must_fit_the_kernel(tmp_path):
    release = "6.1.0-57-amd64"
    (tmp_path / "root").mkdir()
    root = Root.of(tmp_path / "root")
    with pytest.raises(UserError, match=r"no toa\.ko for kernel 6\.1\.0-57-amd64"):
        find_module(root, release, None)
    updates = fake_ko(tmp_path / "root" / "lib/modules" / release / "updates/toa.ko", release)
    assert find_module(root, release, None) == updates
    extra = fake_ko(tmp_path / "root" / "lib/modules" / release / "extra/toa.ko", release)
    assert find_module(root, release, None) == extra  # install-module's place comes first
    other = fake_ko(tmp_path / "other.ko", "2.6.32-toa")
    with pytest.raises(UserError, match=r"built for kernel 2\.6\.32-toa, not 6\.1\.0-57-amd64"):
        find_module(root, release, other)
    in_tree = fake_ko(tmp_path / "tree" / "lib/modules/2.6.32-toa/kernel/net/toa/toa.ko", "2.6.32-toa")
    assert find_module(Root.of(tmp_path / "tree"), "2.6.32-toa", None) == in_tree  # make modules_install


def test_ipv6_hooks_are_recognised_from_the_modules_symbols(tmp_path):
    v4 = fake_ko(tmp_path / "v4.ko", "6.1.0-57-amd64", b"inet_getname_toa\0")
    v6 = fake_ko(tmp_path / "v6.ko", "6.1.0-57-amd64", b"inet_getname_toa\0inet6_getname_toa\0")
    assert not module_hooks_ipv6(v4) and module_hooks_ipv6(v6)


def test_the_nic_driver_comes_from_the_root_else_the_lab_cache(tmp_path):
    release = "6.1.0-57-amd64"
    cache = tmp_path / "cache"
    (tmp_path / "root").mkdir()
    assert find_nic(Root.of(tmp_path / "root"), release, cache) == []  # none: built into the kernel
    cached = cache / "modules" / release / "e1000.ko"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find_nic(Root.of(tmp_path / "root"), release, cache) == [cached]
    assert find_nic(Root.of(tmp_path / "root"), release, tmp_path / "elsewhere", cache) == [cached]
    own = tmp_path / "root/lib/modules" / release / "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"y")
    assert find_nic(Root.of(tmp_path / "root"), release, cache) == [own]


def test_the_nic_is_an_e1000_on_a_udp_link_of_127_0_0_1():
    args = network_args(5555, 6666)
    assert args[0] == "-netdev" and args[1].startswith("dgram,id=probe,local.type=inet,local.host=127.0.0.1")
    assert "local.port=5555" in args[1] and "remote.port=6666" in args[1]
    assert args[2:] == ["-device", f"e1000,netdev=probe,mac={GUEST_MAC}"]


def test_the_console_of_a_real_probe_boot_and_why_a_boot_failed(tmp_path):
    text = (DATA / "console-6.1-grub.log").read_text(errors="replace")
    report = parse_console(text)
    assert report.booted_title == "Debian GNU/Linux, with Linux 6.1.0-57-amd64"
    assert {"ready", "nic", "end"} <= set(report.markers) and probe_is_over(text)
    assert not probe_is_over(text[: text.index("TOA-LAB ready")])
    broken = "TOA-LAB release=R\nTOA-LAB error=no network interface (is the NIC driver ...)\n"
    assert probe_is_over(broken)
    assert boot_failure(parse_console(broken), broken, "", tmp_path / "c.log").startswith(
        "the guest could not serve: no network interface"
    )
    assert "never reached the probe's /init" in boot_failure(parse_console("SeaBIOS\n"), "", "", tmp_path)
