"""The worker's heap setting takes on this machine's C library (glibc, as in the image)."""

from __future__ import annotations

import platform

from switchyard.server.memory import return_large_blocks


def test_glibc_accepts_the_fixed_mmap_threshold() -> None:
    if platform.libc_ver()[0] == "glibc":
        assert return_large_blocks() is True
    else:  # another C library: a quiet no-op, never an error
        assert return_large_blocks() is False

