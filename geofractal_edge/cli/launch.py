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
    if environ is not None and _started_as_the_command():
        try:
            os.execve(sys.executable, sys.orig_argv, environ)  # the same command line, once more, with the tunable
        except (OSError, TypeError):
            pass  # could not re-execute (no interpreter path, no permission): run as started
    from geofractal_edge.cli.main import main as cli_main

    cli_main()


def _started_as_the_command() -> bool:
    """True where this process is the `gfedge` script or `python -m geofractal_edge.cli.launch`: never a REPL, a notebook
    kernel, `python -c` or a program that called main(), which re-executing would run again."""
    if not getattr(sys, "orig_argv", None) or not sys.executable or not sys.argv:
        return False
    return os.path.basename(sys.argv[0]) in ("gfedge", "launch.py")  # the console script (".exe" removed), or -m of this module


if __name__ == "__main__":
    main()
