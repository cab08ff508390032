"""What one core's float32 matrix multiply reaches here: onnxruntime's MatMul (MLAS) on 1024 x 1024 x 1024, 1 thread, under the runtime's
session settings (host-cpu's, at 1 thread).

    python benchmarks/sgemm_peak.py [--size 1024] [--runs 10]

The ceiling for compute-bound fp32 graphs (the MiniLM encoder at batch 1): a runtime near it cannot be
many times faster than torch eager, whatever it does (benchmarks/RESULTS.md, "Issue 11, fourth session").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import uptime  # noqa: E402
from geofractal_edge.backends.timing import interleaved  # noqa: E402


def main(argv: list[str]) -> None:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from geofractal_edge.backends.onnxruntime.loader import prepared_options
    from geofractal_edge.targets import get_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    n = args.size
    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "sgemm",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                   prepared_options(get_target("host-cpu").runtime.but(intra_op_threads=1, inter_op_threads=1), asked_by="target host-cpu"),
                                   providers=["CPUExecutionProvider"])
    x = rng.standard_normal((n, n)).astype(np.float32)
    seconds = interleaved({"matmul": lambda: session.run(None, {"X": x})}, rounds=args.runs, reps=1, warmup=3)["matmul"].wall_median
    print(f"{uptime()}; onnxruntime {ort.__version__} MatMul {n}^3 fp32, 1 thread: {2 * n ** 3 / seconds / 1e9:.1f} GFLOP/s (median of {args.runs})")


if __name__ == "__main__":
    main(sys.argv[1:])
