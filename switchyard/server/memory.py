"""How a worker's C heap gives memory back.

glibc serves a large block (a 1 MB request body, its parsed text, the upstream payload) from
mmap at first, but after the first such block is freed it raises its own threshold to that
size and serves the next ones from the heap, where they fragment and stay: a worker that saw
a few 1 MB prompts kept about 20 MB more for good (measured). A fixed threshold keeps large
blocks in mmap, returned to the system the moment they are freed.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("switchyard.server.memory")

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK_BYTES = 256 * 1024  # blocks this size and up live in their own mapping


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold (a no-op on other C libraries). True if it was set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded: no search for it
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok
