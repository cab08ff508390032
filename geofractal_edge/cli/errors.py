"""How the CLI reports failures: user errors in one line, bugs as bugs."""

from __future__ import annotations

import json
import os
import sys

from geofractal_edge.errors import Bug, GfedgeError

USER_ERROR = 2


def run_guarded(app) -> None:
    """Run the typer app; a GfedgeError prints one line and exits 2 (GFEDGE_DEBUG=1 shows the traceback).

    With --json among the arguments the error is also JSON on stdout, where the command's JSON would
    have been: {"error": problem, "fix": fix}; stderr keeps its one line and the exit code is the same.
    """
    try:
        app(standalone_mode=True)
    except GfedgeError as exc:
        if os.environ.get("GFEDGE_DEBUG"):
            raise
        if "--json" in sys.argv[1:]:
            sys.stdout.write(json.dumps({"error": exc.problem, "fix": exc.fix}) + "\n")
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(getattr(exc, "exit_code", USER_ERROR))
    except Bug as exc:
        sys.stderr.write(f"bug in geofractal_edge (please report it, with GFEDGE_DEBUG=1 output): {exc}\n")
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing was written\n")
        sys.exit(130)
