"""Giving memory back to the system after large images.

glibc's malloc keeps what is freed for reuse: the buffers of a large image (its decoded
pixels, its full-size mask) mostly land in the heaps of the threadpool's threads, and after a
burst of large images the process would stay hundreds of megabytes to gigabytes above its
baseline. `give_back_soon()` runs malloc_trim(0) in a background thread (one at a time)
after a large image: it hands the free pages inside every heap back to the system. On other
C libraries it does nothing.

`bound_kernel_cache()` caps oneDNN's cache of compiled kernels: it keeps up to 1024 of them,
each with its own buffers, and a convolution compiles one per input shape, so every new frame
size the scene model meets used to add about 2 MB for good (several hundred MB after a few
hundred sizes, which any client can send). 128 kernels hold the scene model's layers at one
shape and then some; a 1024x576 frame ran no slower (90 ms against 93 ms; 16 kernels: 129 ms).

(Pinning M_MMAP_THRESHOLD low, so that large buffers get mappings of their own, does the
same for those buffers, but it made inference batches markedly slower on the CPU (about
40 % in one measurement): its activations then page-fault afresh on each call. The trim
costs nothing in between.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

_trim_lock = threading.Lock()
_trim_state = {"running": False, "again": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc has it, musl does not)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()
KERNEL_CACHE_CAPACITY = 128


def bound_kernel_cache() -> None:
    """Cap oneDNN's kernel cache at KERNEL_CACHE_CAPACITY unless the environment sets its
    own. oneDNN reads the variable when it first compiles a kernel: call this before any
    model runs."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE_CAPACITY))


def give_back() -> bool:
    """malloc_trim(0): return free heap pages to the system. True when some were."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def give_back_soon() -> None:
    """give_back() in a background thread. Calls while one runs make it run once more when
    done (the last large image's memory may have been freed only meanwhile)."""
    if _LIBC is None:
        return
    with _trim_lock:
        if _trim_state["running"]:
            _trim_state["again"] = True
            return
        _trim_state["running"] = True

    def trim() -> None:
        while True:
            give_back()
            with _trim_lock:
                if not _trim_state["again"]:
                    _trim_state["running"] = False
                    return
                _trim_state["again"] = False

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
