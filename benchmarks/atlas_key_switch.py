"""Key switch vs bundle load, side by side in one run.

A key is a graph input: switching texts binds another vector. The alternative a user would otherwise
have (one model per text) pays a bundle load per switch. Both are timed here, interleaved, on the
same bundle, and the ratio is printed. Usage: python benchmarks/atlas_key_switch.py [BUNDLE]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geofractal_edge.runtimes import load

ROUNDS = 20


def _bundle(argv: list[str]) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if argv:
        return Path(argv[0]), None
    from geofractal_edge.pipeline import export_bundle

    tmp = tempfile.TemporaryDirectory()
    out = Path(tmp.name) / "atlas-host-cpu-fp32"
    export_bundle(family="atlas", target="host-cpu", precision="fp32", out=out)
    return out, tmp


def main(argv: list[str]) -> None:
    path, tmp = _bundle(argv)
    session = load(path)
    names = session.keys.names()
    x = np.linspace(0, 1, 64, dtype=np.float32)
    for name in names:  # warm the key cache and the graph
        session.run({"x": x}, key=name)
    switch, switch_run, reload_run = [], [], []
    for i in range(ROUNDS):
        name = names[i % len(names)]
        t0 = time.perf_counter()
        session.use_key(name)
        t1 = time.perf_counter()
        session.run({"x": x})
        t2 = time.perf_counter()
        fresh = load(path)  # open, check every hash, create the onnxruntime session
        fresh.run({"x": x}, key=name)
        t3 = time.perf_counter()
        switch.append(t1 - t0)
        switch_run.append(t2 - t0)
        reload_run.append(t3 - t2)
    med = statistics.median
    print(f"bundle {path.name}: {len(names)} keys, {ROUNDS} rounds interleaved, medians")
    print(f"{'key switch (bind vector)':<34}{med(switch) * 1e6:>12.1f} us")
    print(f"{'key switch + run 64 positions':<34}{med(switch_run) * 1e6:>12.1f} us")
    print(f"{'bundle load + run 64 positions':<34}{med(reload_run) * 1e6:>12.1f} us")
    print(f"bundle load / key switch: {med(reload_run) / med(switch):,.0f}x ; with a run on each side: {med(reload_run) / med(switch_run):,.1f}x")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
