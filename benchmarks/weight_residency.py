"""Weight bytes, resident memory and latency of bundles under plain onnxruntime, each in a fresh process.

    python benchmarks/weight_residency.py BUNDLE [BUNDLE ...] [--runs 50] [--threads 1] [--batch N]

Per bundle: the bytes of the graph's initializers (as stored: INT4 at half a byte, packed uint8 as
is), the process's resident memory after the session is created and after the first run, minus
what it was before (numpy and onnxruntime imported), the peak, and the median latency of the first
golden case (`--batch N`: its rows repeated to N along each input's first, dynamic axis). A format-1 TriX bundle gets its external 2-bit codes handed over as the runtime did.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, onnxruntime as ort

def rss():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

from geofractal_edge.artifacts import open_bundle
bundle = open_bundle(Path(sys.argv[1]))
case = bundle.golden_cases()[0]
feeds = dict(case.inputs)
batch = int(sys.argv[4])
if batch:
    for decl in bundle.manifest.graph.data_inputs:
        if isinstance(decl.shape[0], str):
            feeds[decl.name] = np.resize(feeds[decl.name], (batch, *feeds[decl.name].shape[1:]))
key = bundle.manifest.graph.key_input
if key is not None:
    feeds[key.name] = bundle.key(case.key).vector
codes = {name: ort.OrtValue.ortvalue_from_numpy(c) for name, c in bundle.ternary_codes().items()}
before, _ = rss()
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[3])
if codes:
    options.add_external_initializers(list(codes), list(codes.values()))
session = ort.InferenceSession(str(bundle.model_path), options, providers=["CPUExecutionProvider"])
loaded, _ = rss()
session.run(None, feeds)
ran, peak = rss()
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    session.run(None, feeds)
    times.append(time.perf_counter() - start)
print(json.dumps({"load": loaded - before, "run": ran - before, "peak": peak - before, "ms": 1000 * float(np.median(times))}))
"""


def weight_bytes(model_path: Path) -> int:
    import numpy as np
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    total = 0
    for t in list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue  # a format-1 TriX pack: counted with its file below
        count = int(np.prod(t.dims)) if t.dims else 1
        total += (count + 1) // 2 if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    pack = model_path.parent / "weights" / "ternary.safetensors"
    return total + (pack.stat().st_size if pack.is_file() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0, help="rows along the first dynamic axis (0: the golden case's)")
    args = parser.parse_args()
    print(f"{'bundle':42s} {'weights B':>11s} {'load MiB':>9s} {'run MiB':>8s} {'peak MiB':>9s} {'median ms':>10s}")
    for bundle in args.bundles:
        out = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(args.runs), str(args.threads), str(args.batch)], capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        mib = 1 << 20
        print(f"{str(bundle)[-42:]:42s} {weight_bytes(bundle / 'model.onnx'):>11,d} {m['load'] / mib:>9.2f} {m['run'] / mib:>8.2f} {m['peak'] / mib:>9.2f} {m['ms']:>10.3f}")


if __name__ == "__main__":
    main()
