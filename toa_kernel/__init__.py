"""toa-kernel: build, install and verify a TOA-enabled 2.6.32 kernel.

The logic lives in small modules, one concern each; ``tasks.py`` at the top of the
project holds the thin Invoke tasks that call them.
"""

__version__ = "0.1.0"
