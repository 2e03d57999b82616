"""The boot lab: boot what ``install-kernel`` wrote with the real GRUB legacy under QEMU.

``run.run_lab`` stages ``ROOT/boot`` (kernels replaced by a real one from
``kernel``, initramfs images by the reporting ones from ``initramfs``), writes
it into a disk image (``image``), installs GRUB 0.97 into its MBR (``grub``),
boots it (``qemu``), reads the console (``console``) and judges the result with
verify's boot checks. ``tools`` names the packages it needs.
"""

from __future__ import annotations

from toa_kernel.lab.tools import lab_available, missing_packages

__all__ = ["lab_available", "missing_packages"]
