"""Cap glibc's malloc arenas before the replica starts its threads.

glibc gives each thread that contends for the heap its own arena, up to 8 per core, and
an arena keeps the memory it once held. A replica runs a poll thread, a worker per
partition and librdkafka's threads, so during a drain their arenas, not live objects,
were ~40 MB of the peak RSS (docs/performance.md). `MALLOC_ARENA_MAX` in the environment
does the same and wins, since glibc read it before we ran.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """True when the cap was set; False off glibc or when the environment sets it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
