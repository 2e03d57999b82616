"""Real TOA probes (slow, lab): the vendor's elb-toa, built by build-module with our
patches against Debian 12's linux-headers, loaded into Debian's own 6.1 kernel
booted under QEMU, and sent real TCP packets with and without option 254.

- branch master, installed by install-module into a Debian root whose /boot GRUB
  legacy boots: ``invoke lab --probe`` passes (a)-(d) and shows the [::] pitfall;
- branch IPv6, kernel booted directly: (a)-(d) pass and its IPv6 hooks rewrite
  the v4-mapped connection too;
- branch master built with ``--option-code 200``: kind 200 is honoured, 254 ignored;
- a port that keeps ``retval == 0`` and the vendor's no-op write-protect restore:
  the probe catches both (case b fails, the kernel says the page stayed writable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab_support import kernel_cache_dir
from module_support import installed_headers
from probe_support import PROJECT_DIR, debian_root, real_input

from toa_kernel.core.console import Console
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.lab import tools
from toa_kernel.lab.kernel import bzimage_release, cached_package, chosen_kernel, nic_modules
from toa_kernel.lab.probe import BALANCER_IP, CLIENT_IP, CLIENT_PORT
from toa_kernel.lab.proberun import run_probe
from toa_kernel.module.steps import SourceRequest, build_module, install_module
from toa_kernel.system.rootfs import Root

HEADERS = installed_headers()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.lab,
    pytest.mark.skipif(not tools.lab_available(), reason="lab packages missing"),
    pytest.mark.skipif(HEADERS is None, reason="no linux-headers package installed"),
]
WP_RESTORED = "TOA: write protection restored on inet_stream_ops and ipv4_specific, TLB flushed"
WP_NOT_RESTORED = "TOA: write protection NOT restored on inet_stream_ops and ipv4_specific"
PROBE_SECONDS = 90  # measured 13-25 s per boot and probe on 2 shared cores


@pytest.fixture(scope="session")
def lab_kernel() -> Path:
    """Debian's kernel (and its e1000.ko), downloaded once per machine."""
    return chosen_kernel(None, kernel_cache_dir(), say=lambda text: None, with_nic=True)


def build(tmp_path: Path, branch: str, patches_dir: Path | None = None, option_code: int = 254) -> dict:
    settings = Settings(
        workdir=tmp_path / f"work-{branch}",
        root=Path("/"),
        patches_dir=patches_dir or PROJECT_DIR / "patches",  # type: ignore[arg-type]
        option_code=option_code,
    )
    request = SourceRequest(tarball=real_input(f"elb-toa-{branch}.tar.gz"), nat64=branch == "IPv6")
    return build_module(settings, request, Console(quiet=True), release=HEADERS)


def root_with_nic(base: Path, lab_kernel: Path) -> Path:
    """A Debian root for the lab kernel, holding its e1000 driver where the package puts it."""
    root = debian_root(base, HEADERS, lab_kernel)
    nic = root / "lib/modules" / HEADERS / "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"
    nic.parent.mkdir(parents=True)
    shutil.copyfile(nic_modules(kernel_cache_dir(), HEADERS)[0], nic)
    return root


def by_name(cases: list[dict]) -> dict[str, dict]:
    return {case["name"]: case for case in cases}


def test_the_lab_kernel_and_the_build_headers_are_the_same_debian_kernel(lab_kernel):
    assert bzimage_release(lab_kernel) == HEADERS
    name, version = cached_package(kernel_cache_dir()).split()
    assert name == f"linux-image-{HEADERS}"
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", f"linux-headers-{HEADERS}"], capture_output=True, text=True
    ).stdout
    assert version == installed, f"lab kernel {version}, headers {installed}: run apt-get update and upgrade"
    assert [p.name for p in nic_modules(kernel_cache_dir(), HEADERS)] == ["e1000.ko"]


def test_invoke_lab_probe_passes_for_elb_toa_master_installed_by_install_module(tmp_path, lab_kernel):
    record = build(tmp_path, "master")
    assert [p["applies"] for p in record["patches"]] == [True] * 6
    root = root_with_nic(tmp_path, lab_kernel)
    settings = Settings(workdir=tmp_path / "work-master", root=root)  # type: ignore[arg-type]
    installed = install_module(settings, Console(quiet=True), release=HEADERS)
    assert installed["changes"] and (root / "lib/modules" / HEADERS / "extra/toa.ko").is_file()
    command = [
        sys.executable, "-m", "invoke", "lab", "--probe", "--root", str(root),
        "--workdir", str(tmp_path / "work-master"), "--kernel", str(lab_kernel), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    cases = by_name(result["cases"])
    assert result["verdict"] == "PASS" and result["target"]["boot"] == "grub"
    assert result["booted_entry"] == f"Debian GNU/Linux, with Linux {HEADERS}"
    assert result["target"]["module"] == str(root / "lib/modules" / HEADERS / "extra/toa.ko")
    assert cases["a"]["seen"] == f"{BALANCER_IP}:{cases['a']['source_port']}"
    assert cases["b"]["seen"] == f"{CLIENT_IP}:{CLIENT_PORT}"
    assert cases["c"]["seen"] == f"{BALANCER_IP}:{cases['c']['source_port']}"
    assert cases["d"]["seen"] == f"{BALANCER_IP}:{cases['d']['source_port']}"
    assert cases["v4-mapped"]["seen"] == f"[::ffff:{BALANCER_IP}]:{cases['v4-mapped']['source_port']}"
    assert result["toa_stats_change"]["syn_recv_sock_toa"] == 1  # (b) only: (c), (d) and [::] carry none
    assert result["toa_stats_change"]["getname_toa_ok"] == 1
    assert WP_RESTORED in "\n".join(result["dmesg"])
    assert result["seconds"]["boot_and_probe"] < PROBE_SECONDS
    assert Path(result["artifacts"]["link_pcap"]).stat().st_size > 1000


def test_the_ipv6_branch_passes_booted_directly_and_rewrites_v4_mapped_too(tmp_path, lab_kernel):
    record = build(tmp_path, "IPv6")
    root = root_with_nic(tmp_path, lab_kernel)
    (root / "boot").rename(root / "boot.off")  # no grub.conf: the kernel boots directly
    result = run_probe(
        Root.of(root),
        Workdir(tmp_path / "work"),
        kernel=lab_kernel,
        module=Path(record["ko"]),
        say=lambda text: None,
    )
    cases = {case.name: case for case in result.outcome.cases}
    assert result.verdict == "PASS", result.lines()
    assert result.target.boot == "direct" and result.target.ipv6_hooks
    assert cases["b"].seen == f"{CLIENT_IP}:{CLIENT_PORT}"
    assert cases["v4-mapped"].seen == f"[::ffff:{CLIENT_IP}]:{CLIENT_PORT}"
    assert "TOA: write protection restored on inet6_stream_ops and ipv6_specific, TLB flushed" in "\n".join(
        result.dmesg
    )
    assert result.outcome.after.stats.counters["ip6_address_alloc"] == 1


def test_elb_toa_built_with_option_code_200_honours_200_and_ignores_254(tmp_path, lab_kernel):
    record = build(tmp_path, "master", option_code=200)
    assert record["option_code"] == {"before": 254, "after": 200} and record["recorded_option_code"] == 200
    root = root_with_nic(tmp_path, lab_kernel)
    command = [
        sys.executable, "-m", "invoke", "lab", "--probe", "--root", str(root),
        "--workdir", str(tmp_path / "w"), "--kernel", str(lab_kernel), "--module", record["ko"],
        "--option-code", "200", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    cases = by_name(result["cases"])
    assert result["verdict"] == "PASS"
    assert cases["b"]["title"] == "module loaded, kind 200"
    assert cases["b"]["seen"] == f"{CLIENT_IP}:{CLIENT_PORT}"
    assert cases["c"]["title"] == "module loaded, kind 254"
    assert cases["c"]["seen"] == f"{BALANCER_IP}:{cases['c']['source_port']}"  # the vendor's kind is ignored
    assert result["toa_stats_change"]["getname_toa_ok"] == 1
    assert WP_RESTORED in "\n".join(result["dmesg"])


def naive_patches(tmp_path: Path) -> Path:
    """Our patches, except that inet_getname's result is still tested with ``== 0`` and the
    write-protect restore is the vendor's ``pte |= pte & ~_PAGE_RW``."""
    patches = tmp_path / "naive-patches"
    shutil.copytree(PROJECT_DIR / "patches", patches)
    version = patches / "elb-toa" / "1.0.0.0"
    getname = version / "0001-inet-getname-returns-length.patch"
    getname.write_text(getname.read_text().replace("+\tif (retval >= 0 &&", "+\tif (retval == 0 &&"))
    protect = version / "0005-write-protect-both-tables.patch"
    protect.write_text(
        protect.read_text().replace("+\t\tpte->pte &= ~_PAGE_RW;", "+\t\tpte->pte |= pte->pte & ~_PAGE_RW;")
    )
    return patches


def test_the_probe_catches_retval_zero_and_the_vendors_no_op_write_protect(tmp_path, lab_kernel):
    record = build(tmp_path, "master", naive_patches(tmp_path))
    root = root_with_nic(tmp_path, lab_kernel)
    command = [
        sys.executable, "-m", "invoke", "lab", "--probe", "--root", str(root),
        "--workdir", str(tmp_path / "w"), "--kernel", str(lab_kernel), "--module", record["ko"],
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    case_b = next(line for line in lines if line.startswith("(b) "))
    assert case_b.endswith("-> FAIL") and f"seen {BALANCER_IP}:" in case_b  # the address was never rewritten
    assert all(line.endswith("-> PASS") for line in lines if line.startswith(("(a) ", "(c) ", "(d) ")))
    assert any(WP_NOT_RESTORED in line for line in lines)  # the vendor's restore left the page writable
    assert "lab (probe): FAIL" in done.stdout
    after = next(line for line in lines if line.startswith("toa_stats after"))
    assert "syn_recv_sock_toa=1 " in after and "getname_toa_ok=0 " in after  # seen, never applied
