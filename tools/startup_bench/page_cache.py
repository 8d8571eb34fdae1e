"""How much of each file is in the page cache (mincore), and with --evict, drop our own files from it first.

    python tools/startup_bench/page_cache.py [--evict] FILE...

Issue 17 item 6 measures a first start that reads the weights from disk; on a machine that just wrote them
they are all in the page cache. --evict: fsync (dirty pages cannot be dropped), then
posix_fadvise(POSIX_FADV_DONTNEED) on each file: the kernel drops that file's clean pages, no privileges
needed (unlike /proc/sys/vm/drop_caches). On tmpfs (and ramfs) the pages are the file itself and stay; the
line printed says so, and the residency printed afterwards says what happened.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}  # the page cache is the file's only copy: nothing to drop


def resident(path: str) -> float:
    """Fraction of the file's pages in the page cache (mapping it reads nothing)."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return sum(b & 1 for b in vec) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: str) -> None:
    """Ask the kernel to drop the file's pages from the page cache (written back first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def filesystem(path: str) -> str:
    """The type of the filesystem holding `path` ("ext4", "tmpfs", ...): the longest mount point above it in
    /proc/self/mounts, whose fields escape spaces and tabs as octal (\\040)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1].encode().decode("unicode_escape")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):  # later mounts on the same point hide earlier ones
                best, kind = point, fields[2]
    return kind


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evict", action="store_true", help="drop each file from the page cache first")
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    for f in a.files:
        before = resident(f)
        line = f"{f}: {os.path.getsize(f) / 1e9:.2f} GB, {100 * before:.0f} % in the page cache"
        if a.evict:
            t = time.monotonic()
            evict(f)
            line += f" -> {100 * resident(f):.0f} % after fsync + FADV_DONTNEED ({time.monotonic() - t:.1f} s)"
            if (fs := filesystem(f)) in MEMORY_FILESYSTEMS:
                line += f"; on {fs} the page cache is the file: it cannot be dropped"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
