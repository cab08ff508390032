"""How the CLI reports failures: user errors in one line, bugs as bugs."""

from __future__ import annotations

import os
import sys

from geofractal_edge.errors import Bug, GfedgeError

USER_ERROR = 2


def run_guarded(app) -> None:
    """Run the typer app; a GfedgeError prints one line and exits 2 (GFEDGE_DEBUG=1 shows the traceback)."""
    try:
        app(standalone_mode=True)
    except GfedgeError as exc:
        if os.environ.get("GFEDGE_DEBUG"):
            raise
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(getattr(exc, "exit_code", USER_ERROR))
    except Bug as exc:
        sys.stderr.write(f"bug in geofractal_edge (please report it, with GFEDGE_DEBUG=1 output): {exc}\n")
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing was written\n")
        sys.exit(130)
