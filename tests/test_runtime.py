"""cotune.runtime: glibc settings under which a freed large block comes back without new
page faults (as XLA's per-step temporary buffer does), and the shared JAX compile cache."""

import json
import platform
import subprocess
import sys

import pytest

_PROBE = """
import ctypes, json, resource
import cotune  # applies the settings on import
from cotune import runtime
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 96 << 20  # far above glibc's mmap threshold, as XLA's step buffers are
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)  # touch every page, as a computation writing it does
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": runtime.malloc_tuned, "faults": faults}))
"""


def _probe(tuning: str) -> dict:
    env = {"COTUNE_MALLOC_TUNING": tuning, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc settings only")
def test_freed_large_blocks_are_reused_without_page_faults() -> None:
    on, off = _probe("1"), _probe("0")
    assert on["applied"] and not off["applied"]
    pages = (96 << 20) // 4096
    # Default glibc: every 96 MB block is a fresh mmap, so every round faults its pages in.
    assert min(off["faults"][1:]) > pages // 2
    # Tuned: the first round grows the heap, later rounds reuse it.
    assert max(on["faults"][1:]) < pages // 20


def test_compilation_cache_goes_where_cotune_jax_cache_says(tmp_path) -> None:
    code = (
        "import jax\n"
        "from cotune import runtime\n"
        "runtime.enable_compilation_cache()\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
    )
    env = {"COTUNE_JAX_CACHE": str(tmp_path / "jax"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "jax")
    assert (tmp_path / "jax").is_dir()
