"""The `gfedge` console script: start under glibc's huge-page malloc, then run the CLI.

Before anything else this re-executes the command once with `glibc.malloc.hugetlb=1` added to `GLIBC_TUNABLES`
(targets/hugepages.py says why). Nothing changes where the tunable is set already, the kernel gives no huge
pages, the C library is not glibc 2.35 or newer, or `GFEDGE_HUGEPAGES=0`; `gfedge env` shows whether it is on.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from geofractal_edge.targets.hugepages import hugepage_environ

    environ = hugepage_environ(dict(os.environ))
    if environ is not None and getattr(sys, "orig_argv", None):
        try:
            os.execve(sys.executable, sys.orig_argv, environ)  # the same command line, once more, with the tunable
        except OSError:
            pass  # could not re-execute: run as started
    from geofractal_edge.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
