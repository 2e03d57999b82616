"""``open_system(settings)``: the local system, or the server named by ``host``."""

from __future__ import annotations

from toa_kernel.core.settings import Settings
from toa_kernel.system.api import System
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.ssh import SshSystem
from toa_kernel.system.sshconnect import SshOptions, target_of


def open_system(settings: Settings) -> System:
    """``LocalSystem`` under ``settings.root`` when no host is set, else an ``SshSystem``.

    The root is a path on that system (``/`` in production). Close the result
    (or use it as a context manager) to drop the connection.
    """
    if not settings.host:
        return LocalSystem(Root.of(settings.root))
    return SshSystem.connect(
        target_of(settings), SshOptions.from_settings(settings), settings.root.as_posix()
    )
