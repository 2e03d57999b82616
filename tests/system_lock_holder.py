"""A second process for the lock tests: take the system lock, say "held", wait to be killed.

system_lock_holder.py ROOT NAME                      # LocalSystem under ROOT
system_lock_holder.py ROOT NAME PORT KEY KNOWN_HOSTS # SshSystem on 127.0.0.1:PORT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from toa_kernel.core.sshtarget import SshTarget
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.ssh import SshSystem
from toa_kernel.system.sshconnect import SshOptions


def main(argv: list[str]) -> None:
    root, name = argv[:2]
    if len(argv) > 2:
        port, key, known_hosts = argv[2:5]
        options = SshOptions(key=key, known_hosts=Path(known_hosts))
        system = SshSystem.connect(SshTarget("root", "127.0.0.1", int(port)), options, root)
    else:
        system = LocalSystem(Root.of(root))
    with system.lock(name):
        print("held", flush=True)
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1:])
