"""glibc's huge-page malloc for the processes gfedge starts: asked for through the environment, read at process start.

A session that hands its activations back after large calls (host-cpu's `shrink_above_batch`) maps them again on
the next one, and every 4 KiB page of them is a fault: x1.32-1.73 on the weight-dominated collective at 64 rows,
against x1.05-1.12 where glibc asks the kernel for transparent huge pages on what it maps (`glibc.malloc.hugetlb=1`,
glibc >= 2.35; benchmarks/RESULTS.md, "Issue 11, fifth session"). torch eager ran the same under it (1.10 / 1.06 ms
for the shipped collective, 19.6 / 18.5 ms for MiniLM). glibc reads the tunable only when a process starts:
the `gfedge` command re-executes itself once with it (cli/launch.py), and the processes it starts inherit it. A
program that imports geofractal_edge sets it itself: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python app.py`.
This module imports only os (importing it runs targets/__init__ too, ~27 ms).
"""

from __future__ import annotations

import os

TUNABLE = "glibc.malloc.hugetlb"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
# Set in the re-executed process: it never re-executes again, even where glibc dropped the tunable (a setuid or
# file-capability python runs with AT_SECURE, and glibc then removes GLIBC_TUNABLES entries).
REEXECUTED = "GFEDGE_HUGEPAGES_REEXEC"


def hugepage_environ(environ: dict[str, str]) -> dict[str, str] | None:
    """`environ` with glibc's huge-page malloc asked for, or None where nothing should change (see the module's doc)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get("GFEDGE_HUGEPAGES") == "0" or REEXECUTED in environ or TUNABLE in tunables or not _glibc_has_it() or not _kernel_gives_them():
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, f"{TUNABLE}=1"))), REEXECUTED: "1"}


def hugepages_asked(environ: dict[str, str] | None = None) -> bool:
    """Whether this process started with glibc's huge-page malloc asked for (`glibc.malloc.hugetlb` 1 or 2); a glibc
    older than 2.35 ignores the tunable, so there it says what was asked, not what glibc does."""
    tunables = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    return any(t.strip() in (f"{TUNABLE}=1", f"{TUNABLE}=2") for t in tunables.split(":"))


def _glibc_has_it() -> bool:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    except (AttributeError, ValueError, OSError):  # not glibc, or no confstr (macOS, Windows)
        return False


def _kernel_gives_them() -> bool:
    try:
        with open(THP) as f:
            return "[never]" not in f.read()
    except OSError:
        return False
