"""What one more session costs a process, measured in a fresh process: its memory's growth over the load and over
its first calls, after a primer session has faulted onnxruntime's own code pages in (dispatch_nodes, weight_residency)."""

from __future__ import annotations

import json
import subprocess
import sys

from _report import MIB


def primed_growth(path, primer, *, open_session, caller, calls: int, batch: int, fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{load, calls: {field: growth in bytes}} of `path`'s session in this process, opened after `primer`'s session was
    opened and called once at batch 1: the load's growth is then the session's own weights and structures, not the
    library code every session shares. `open_session(path)`: a session, as the script opens one; `caller(session,
    batch)`: a callable making one call of it at that batch (its feeds made before). `fields`: /proc/self/status's."""
    from geofractal_edge.backends.process import status_bytes

    primed = open_session(primer)
    caller(primed, 1)()
    before = status_bytes(*fields)
    session = open_session(path)
    loaded = status_bytes(*fields)
    call = caller(session, batch)
    for _ in range(calls):
        call()
    warm = status_bytes(*fields)
    return {"load": _minus(loaded, before), "calls": _minus(warm, loaded)}


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {f: after[f] - before[f] for f in before}


def growth_cells(growth: dict[str, dict[str, int]], fields: tuple[str, ...]) -> list[str]:
    """The load's and the calls' growth as printed: MiB per field, "RSS / private [/ file-backed]"."""
    return [" / ".join(f"{growth[k][f] / MIB:.2f}" for f in fields) for k in ("load", "calls")]


def in_fresh_process(script: str, *args: str) -> dict:
    """The JSON a benchmark `script` prints last when run with `args` in a fresh Python process (its measurement)."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
