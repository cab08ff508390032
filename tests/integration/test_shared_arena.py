"""The process arena behind `shared_arena` is registered once and never unregistered (loader.register_shared_arena):
two sessions asking for it register it once; after both close, a third draws from it without registering again.

Measured in a fresh process with onnxruntime's own registration counted (and still done): in this test process
another test may have registered the arena already, and a real registration cannot be undone.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import json, sys
import numpy as np
import onnxruntime as ort
from geofractal_edge.backends.onnxruntime import load, loader

calls = []
real = ort.create_and_register_allocator
def counted(info, config):
    calls.append(1)
    return real(info, config)
ort.create_and_register_allocator = counted

x = {"x": np.linspace(0, 1, 64, dtype=np.float32)}
seen = []
first, second = load(sys.argv[1], shared_arena=True), load(sys.argv[2], shared_arena=True)
with first, second:
    first.run(x), second.run(x)
    seen.append(len(calls))
with load(sys.argv[1], shared_arena=True) as third:  # both earlier sessions closed
    logits = third.run(x)["logits"]
    seen.append(len(calls))
print(json.dumps({"calls": seen, "registered": list(loader._registered), "finite": bool(np.isfinite(logits).all())}))
"""


def test_two_sessions_with_a_shared_arena_register_it_once_and_it_outlives_them(bundle_factory):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle_factory("fp32")), str(bundle_factory("int4"))],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] == [1, 1]  # once for two sessions; not again for a third after both closed
    assert result["registered"] == [True] and result["finite"]
