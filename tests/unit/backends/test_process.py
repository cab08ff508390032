"""The process readings and settings the device side measures and acts with (Linux + glibc)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geofractal_edge.backends import process

linux = pytest.mark.skipif(process.rss_bytes() is None or process.peak_rss_bytes() is None, reason="no /proc on this host")


# In a fresh child: in a long-lived process the heap may already hold a free chunk that large, which
# malloc would reuse and keep resident after the del.
PEAK_CHILD = """
import json, numpy as np
from geofractal_edge.backends import process
process.reset_peak_rss()
before = process.peak_rss_bytes()
touched = np.ones(64 << 20, np.uint8)  # 64 MiB, every page touched; over glibc's mmap ceiling: unmapped when freed
del touched
during = process.peak_rss_bytes()
reset = process.reset_peak_rss()
print(json.dumps({"before": before, "during": during, "reset": reset, "after": process.peak_rss_bytes()}))
"""


@linux
def test_the_peak_counts_a_buffer_gone_since_and_restarts_on_reset():
    got = json.loads(subprocess.run([sys.executable, "-c", PEAK_CHILD], capture_output=True, text=True, check=True).stdout)
    assert got["during"] >= got["before"] + (60 << 20), got
    assert got["reset"] is True and got["after"] < got["before"] + (60 << 20), got


# In a child: glibc's threshold is process-wide. 8 MiB buffers freed one after another: with the
# threshold fixed they are unmapped when freed; the RSS after the last is the RSS before the first.
CHILD = """
import json, numpy as np
from geofractal_edge.backends import process
ok = process.set_mmap_threshold(256 << 10)
base = process.rss_bytes()
grown = []
for _ in range(4):
    a = np.ones(8 << 20, np.uint8)
    del a
    grown.append(process.rss_bytes() - base)
print(json.dumps({"ok": ok, "grown": grown}))
"""


@linux
def test_a_fixed_mmap_threshold_hands_freed_buffers_back():
    got = json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
    assert got["ok"] is True
    assert max(got["grown"]) < (2 << 20), got  # none of the 8 MiB buffers stayed


def test_a_threshold_of_zero_or_less_is_not_set():
    assert process.set_mmap_threshold(0) is False
