"""The boot lab: boot what ``install-kernel`` wrote with the real GRUB legacy under QEMU.

``run.run_lab`` stages ``ROOT/boot`` (kernels replaced by a real one from
``kernel``, initramfs images by the reporting ones from ``initramfs``), writes
it into a disk image (``image``), installs GRUB 0.97 into its MBR (``grub``),
boots it (``qemu``), reads the console (``console``) and judges the result with
verify's boot checks. ``tools`` names the packages it needs.

``proberun.run_probe`` (``invoke lab --probe``) boots a kernel with its TOA
module the same way, or directly, with an e1000 NIC whose frames reach a UDP
socket on 127.0.0.1 (``link``); the guest (``guest``) serves HTTP and the probe
(``probe``, ``tcpclient``, ``frames``) connects as a FULLNAT load balancer
would, with and without the TOA option, and judges the peer address the
guest's ``accept()`` reported.
"""

from __future__ import annotations

from toa_kernel.lab.tools import lab_available, missing_packages

__all__ = ["lab_available", "missing_packages"]
