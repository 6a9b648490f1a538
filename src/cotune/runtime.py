"""The process settings cotune runs under: glibc's heap knobs and JAX's compilation cache.

Both are set once per process, before the work they speed up, and both are optimisations
that never fail a run: without them cotune computes the same numbers, slower.

**Heap.** XLA's CPU runtime allocates one temporary buffer per executable run (close to
2 GB for a 270M LoRA step at 8 x 128) and frees it at the end. glibc serves an allocation
that large from a thread arena with a fresh ``mmap`` and returns it with ``munmap``, so
every step touches every page of it anew: ``strace`` shows the ``mmap``/``munmap`` pair per
step and ``getrusage`` counts the page faults (``tests/test_runtime.py`` measures the
effect on a freed 96 MB block). :func:`tune_malloc` sets glibc's own knobs through
``mallopt``, applied by ``import cotune`` before JAX starts its threads: one arena
(``M_ARENA_MAX=1``, so big blocks come from the main heap), no ``mmap`` for large blocks
(``M_MMAP_MAX=0``) and no trimming of the heap's top (``M_TRIM_THRESHOLD``). Freed blocks
are then reused by the next step. The cost is that the process keeps its peak heap until
it exits, which a training or generation run reaches anyway. Not glibc (macOS, musl) or
``COTUNE_MALLOC_TUNING=0``: nothing is changed.

**Compilation cache.** :func:`enable_compilation_cache` points JAX's persistent cache at
``~/.cache/cotune/jax`` (``COTUNE_JAX_CACHE`` overrides it), shared by training and
generation, so a later process reuses the first one's compiled steps instead of compiling
them again.

This module imports nothing heavy at import time (JAX is imported only when the cache is
enabled): ``import cotune`` must stay fast for the CLI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_SETTINGS = (
    (_M_ARENA_MAX, 1),
    (_M_MMAP_MAX, 0),
    (_M_TRIM_THRESHOLD, -1),  # -1: never give the heap top back (man mallopt)
    (_M_TOP_PAD, 64 << 20),  # grow the heap in 64 MB steps: fewer brk calls
)

malloc_tuned: bool = False


def tune_malloc() -> bool:
    """Apply the heap settings once; True when they are in effect."""
    global malloc_tuned
    if malloc_tuned:
        return True
    if os.environ.get("COTUNE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu = ctypes.CDLL(None).gnu_get_libc_version  # glibc only (musl has no mallopt knobs)
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    malloc_tuned = all(mallopt(param, value) == 1 for param, value in _SETTINGS)
    return malloc_tuned


def compilation_cache_dir() -> str:
    """Where compiled JAX executables are kept: ``$COTUNE_JAX_CACHE`` or ``~/.cache/cotune/jax``."""
    return os.environ.get("COTUNE_JAX_CACHE", os.path.expanduser("~/.cache/cotune/jax"))


def enable_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache, so re-runs skip compiling what an earlier
    process compiled (the first training step, generation's prefill and decode). Only
    compilations of 2 s or more are stored: small ones cost less than reading them back."""
    try:
        import jax

        d = compilation_cache_dir()
        os.makedirs(d, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", d)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        pass
