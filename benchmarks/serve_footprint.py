"""What the HTTP serving stack costs on the device side: import time, resident memory, request latency.

Three measurements, each in fresh processes with torch blocked (as on a device):
1. import: the zoo runtime first (numpy, onnxruntime, the zoo), then the serving stack (starlette,
   uvicorn, prometheus_client, anyio, geofractal_edge's serving/) on top of it; wall time and RSS
   growth of each step, median of --repeats processes. The standard library's http.server (what
   `gfedge serve` was built on before) is measured the same way for scale. `python -X importtime`
   gives each package's share.
2. serving: `gfedge serve ZOO` (tiny Atlas bundles; --max-loaded 2 of 3 so swaps happen): RSS when
   ready, after --requests sequential requests and after 8 concurrent clients x --requests/4 each.
3. latency: client-side p50/p99 of those requests (JSON tensors of 48 floats, the zoo choosing).

    python benchmarks/serve_footprint.py [--zoo DIR] [--work DIR] [--requests 800] [--repeats 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from _bundles import has_bundle
from _report import MIB

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.torch_block import BLOCK_TORCH  # noqa: E402

IMPORT_STEP = BLOCK_TORCH + textwrap.dedent(
    """
    import json, os, time
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    t0, r0 = time.perf_counter(), rss()
    import geofractal_edge.runtimes.zoo, onnxruntime
    t1, r1 = time.perf_counter(), rss()
    import {second}
    t2, r2 = time.perf_counter(), rss()
    print(json.dumps({{"runtime_s": t1 - t0, "runtime_rss": r1 - r0, "stack_s": t2 - t1, "stack_rss": r2 - r1, "total_rss": r2}}))
    """
)
STACK = "geofractal_edge.runtimes.zoo.serving.app, geofractal_edge.runtimes.zoo.serving.lifecycle"
STACK_PACKAGES = ("starlette", "uvicorn", "h11", "anyio", "prometheus_client", "geofractal_edge.runtimes.zoo.serving")


def measure_imports(repeats: int) -> dict:
    rows = {}
    for label, module in (("serving stack", STACK), ("http.server (before)", "http.server")):
        runs = [json.loads(subprocess.run([sys.executable, "-c", IMPORT_STEP.format(second=module)], capture_output=True, text=True,
                                          cwd=ROOT, check=True).stdout) for _ in range(repeats)]
        rows[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", BLOCK_TORCH + "import geofractal_edge.runtimes.zoo, onnxruntime\nimport " + STACK],
                           capture_output=True, text=True, cwd=ROOT, check=True).stderr
    packages = dict.fromkeys(STACK_PACKAGES, 0.0)
    for line in trace.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        owner = match and next((p for p in STACK_PACKAGES if match.group(3) == p or match.group(3).startswith(p + ".")), None)
        if owner:  # self times add up: each package's modules, wherever they were imported from
            packages[owner] += int(match.group(1)) / 1e3
    rows["packages"] = packages
    return rows


def build_zoo(work: Path) -> Path:
    """Three tiny Atlas bundles (two fp32 copies and an int8), trained and exported once into work/zoo."""
    zoo = work / "zoo"
    if all(has_bundle(zoo / n) for n in ("a-fp32", "b-fp32", "c-int8")):
        return zoo
    sys.path.insert(0, str(ROOT))
    from geofractal_edge.models.atlas.checkpoint import save_checkpoint
    from geofractal_edge.models.atlas.config import AtlasConfig
    from geofractal_edge.models.atlas.data import build_vocab, default_texts
    from geofractal_edge.models.atlas.train import train_library
    from geofractal_edge.pipeline import export_bundle

    texts = {name: text[:300] for name, text in list(default_texts().items())[:2]}
    library, _ = train_library(texts, config=AtlasConfig.tiny(build_vocab(texts.values())), seed=0)
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(work / "tiny.safetensors", library, texts)
    for precision in ("fp32", "int8"):
        export_bundle(family="atlas", target="host-cpu", precision=precision, model=work / "tiny.safetensors", out=work / "bundles" / precision,
                      overwrite=True)  # a stale bundle of an older format is replaced
    zoo.mkdir(exist_ok=True)
    for name, precision in (("a-fp32", "fp32"), ("b-fp32", "fp32"), ("c-int8", "int8")):
        shutil.rmtree(zoo / name, ignore_errors=True)  # no file of a stale bundle stays beside the new one
        shutil.copytree(work / "bundles" / precision, zoo / name)
    return zoo


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def measure_serving(zoo: Path, requests: int) -> dict:
    script = BLOCK_TORCH + f"sys.argv = ['gfedge', 'serve', {str(zoo)!r}, '--port', '0', '--json', '--budget', '64', '--max-loaded', '2', '--rescan', '0']\n" \
        "from geofractal_edge.cli.main import main\nmain()\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        out = {"ready_rss": _rss(proc.pid)}
        x = np.linspace(0.0, 1.0, 48, dtype=np.float32).tolist()

        def client(n: int, sink: list, offset: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for j in range(n):
                model = ("_zoo", "a-fp32", "b-fp32", "c-int8")[(j + offset) % 4] if (j + offset) % 10 == 0 else "_zoo"
                body = json.dumps({"inputs": [{"name": "x", "shape": [48], "datatype": "FP32", "data": x}],
                                   "parameters": {"key": ("assignment", "async")[(j + offset) % 2]}}).encode()  # one send: no Nagle wait
                started = time.perf_counter()
                connection.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                sink.append(time.perf_counter() - started)
                assert response.status == 200, response.status
            connection.close()

        sequential: list[float] = []
        client(requests, sequential, 0)
        out["sequential_rss"] = _rss(proc.pid)
        concurrent: list[float] = []
        threads = [threading.Thread(target=client, args=(requests // 4, concurrent, i)) for i in range(8)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["concurrent_s"] = time.perf_counter() - started
        out["concurrent_rss"] = _rss(proc.pid)
        out["sequential_ms"] = [float(np.percentile(sequential, q) * 1e3) for q in (50, 99)]
        out["concurrent_ms"] = [float(np.percentile(concurrent, q) * 1e3) for q in (50, 99)]
        out["concurrent_n"] = len(concurrent)
    finally:
        proc.terminate()
        out["exit_code"] = proc.wait(timeout=60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="a folder of bundles to serve (default: tiny Atlas bundles built under --work)")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("GFEDGE_CACHE", Path.home() / ".cache" / "gfedge")) / "serve-footprint")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    imports = measure_imports(args.repeats)
    print(f"import, median of {args.repeats} fresh processes (torch blocked), after the zoo runtime "
          f"({imports['serving stack']['runtime_s'] * 1e3:.0f} ms, +{imports['serving stack']['runtime_rss'] / MIB:.1f} MiB RSS):")
    for label in ("serving stack", "http.server (before)"):
        row = imports[label]
        print(f"  {label:22s} +{row['stack_s'] * 1e3:6.1f} ms  +{row['stack_rss'] / MIB:5.1f} MiB RSS  (process {row['total_rss'] / MIB:.1f} MiB)")
    print("  -X importtime, self ms summed per package: " + ", ".join(f"{k} {v:.0f}" for k, v in imports["packages"].items()))
    served = measure_serving(args.zoo or build_zoo(args.work), args.requests)
    print(f"gfedge serve RSS: ready {served['ready_rss'] / MIB:.1f} MiB, after {args.requests} sequential requests "
          f"{served['sequential_rss'] / MIB:.1f} MiB, after 8 clients x {args.requests // 4} {served['concurrent_rss'] / MIB:.1f} MiB")
    print(f"latency: sequential p50 {served['sequential_ms'][0]:.2f} ms p99 {served['sequential_ms'][1]:.2f} ms; "
          f"8 clients p50 {served['concurrent_ms'][0]:.2f} ms p99 {served['concurrent_ms'][1]:.2f} ms "
          f"({served['concurrent_n'] / served['concurrent_s']:.0f} requests/s); exit code on SIGTERM {served['exit_code']}")


if __name__ == "__main__":
    main()
