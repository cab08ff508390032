"""What a dispatch_by_route session's nodes cost, and what `export.dispatch.split_dispatch` saves: RSS, latency, outputs.

    python benchmarks/dispatch_nodes.py BUNDLE [BUNDLE ...] [--micro] [--rounds 200]

--micro: hand-built graphs (onnx.helper) of n Add nodes, n MatMulNBits (2-bit, 256 x 256) sharing one weight and n
with their own, each loaded in a fresh process primed by another session, with the first BUNDLE's runtime settings:
the session's RSS growth per node. (Other sizes and 4 bits were measured with a one-off variant of these graphs.)
Per BUNDLE (a dispatch_by_route bundle written before the pass): its model.onnx and the same graph after
split_dispatch, each loaded in a fresh process (primed by the original) with the bundle's session settings at
1 thread (not its mmap threshold or per-call run options), twice: RSS growth at load and over 5 batch-1 calls;
then both in one process, interleaved: p50 per call at batch 1 and at 16 windows, and whether every output is
bitwise equal on the bundle's golden cases.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import uptime  # noqa: E402
from _residency import growth_cells, in_fresh_process, primed_growth  # noqa: E402
from geofractal_edge.backends.timing import interleaved  # noqa: E402

FIELDS = ("VmRSS", "RssAnon")
D = 256


@functools.cache
def _settings(bundle: str):
    from geofractal_edge.artifacts import open_bundle

    return open_bundle(bundle).manifest.target.runtime.but(intra_op_threads=1, inter_op_threads=1)


def _options(bundle: str):
    from geofractal_edge.backends.onnxruntime.loader import session_options

    return session_options(_settings(bundle))


def _session(path: str, bundle: str):
    import onnxruntime as ort

    from geofractal_edge.backends.process import trim_heap

    session = ort.InferenceSession(path, _options(bundle), providers=["CPUExecutionProvider"])
    trim_heap()  # as the runtime's loader does: the initializers' pages freed after prepacking
    return session


def _feeds(session, batch: int) -> dict[str, np.ndarray]:
    """tokens [batch, 64] (bundles) or x [batch, 256] (micro graphs), fixed seed."""
    rng = np.random.default_rng(0)
    names = {i.name: i for i in session.get_inputs()}
    if "tokens" in names:
        return {"tokens": rng.integers(0, 103, (batch, names["tokens"].shape[1])).astype(np.int64)}
    return {"x": rng.standard_normal((batch, names["x"].shape[1])).astype(np.float32)}


def _caller(session, batch: int):
    feeds = _feeds(session, batch)
    return lambda: session.run(None, feeds)


def measure(path: str, primer: str, bundle: str, calls: int) -> dict:
    """In this process: load `primer` and run it once, then load `path` and run it `calls` times at batch 1."""
    return primed_growth(path, primer, open_session=lambda p: _session(p, bundle), caller=_caller, calls=calls, batch=1, fields=FIELDS)


def _fresh(path: str, primer: str, bundle: str) -> dict:
    return in_fresh_process(__file__, "--one", path, "--primer", primer, "--bundle", bundle)


def _row(label: str, r: dict) -> str:
    cols = growth_cells(r, FIELDS)
    return f"{label:<44} {cols[0]:>15} {cols[1]:>15}"


def micro_graphs(folder: Path) -> dict[str, str]:
    """name -> path of hand-built graphs: Add chains and MatMulNBits chains (2-bit 256 x 256, shared or own weight)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", D]) for n in ("x", "y"))

    def chain(n: int, make) -> list:
        return [make(i, "x" if i == 0 else f"a{i - 1}", "y" if i == n - 1 else f"a{i}") for i in range(n)]

    def add(n: int):
        nodes = chain(n, lambda i, a, o: helper.make_node("Add", [a, "c"], [o]))
        return helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(np.ones(D, np.float32), "c")]), []

    def nbits(n: int, own: bool):
        rng = np.random.default_rng(0)
        weights = [numpy_helper.from_array(rng.integers(0, 256, (D, D // 128, 32), dtype=np.uint8), f"w{i}") for i in range(n if own else 1)]
        scales = numpy_helper.from_array(np.full((D, 2), 0.01, np.float32), "s")
        nodes = chain(n, lambda i, a, o: helper.make_node("MatMulNBits", [a, f"w{i if own else 0}", "s"], [o], domain="com.microsoft",
                                                          K=D, N=D, bits=2, block_size=128))
        return helper.make_graph(nodes, "g", [x], [y], [scales, *weights]), [helper.make_opsetid("com.microsoft", 1)]

    made = {}
    for name, (graph, extra) in {"add 10": add(10), "add 1500": add(1500), "add 3000": add(3000),
                                 "MatMulNBits shared 10": nbits(10, False), "MatMulNBits shared 512": nbits(512, False),
                                 "MatMulNBits own 512": nbits(512, True)}.items():
        path = folder / f"{name.replace(' ', '_')}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), *extra], ir_version=10), path)
        made[name] = str(path)
    return made


def compare(bundle: str, folder: Path, rounds: int) -> None:
    import onnx

    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.export.dispatch import split_dispatch

    original = str(Path(bundle) / "model.onnx")
    model = onnx.load(original)
    before = len(model.graph.node)
    rewritten = split_dispatch(model)
    path = str(folder / f"{Path(bundle).name}.split.onnx")
    onnx.save(rewritten, path)
    print(f"{bundle}: {before} -> {len(rewritten.graph.node)} nodes; {uptime()}")
    for label, p in (("  original", original), ("  split_dispatch", path)) * 2:
        print(_row(label, _fresh(p, original, bundle)), flush=True)
    sessions = {"original": _session(original, bundle), "split": _session(path, bundle)}
    cases = [case.inputs["tokens"] for case in open_bundle(bundle).golden_cases()]
    same = all(np.array_equal(a, b) for tokens in cases
               for a, b in zip(*(s.run(None, {"tokens": tokens}) for s in sessions.values())))
    print(f"  outputs bitwise equal on {len(cases)} golden cases: {same}")
    for batch, n in ((1, rounds), (16, max(rounds // 5, 10))):
        feeds = _feeds(sessions["original"], batch)
        samples = interleaved({k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}, rounds=n, reps=1, warmup=3, rotate=True)
        a, b = samples["original"], samples["split"]
        print(f"  batch {batch:>2}: p50 wall {a.wall_median * 1e3:.2f} -> {b.wall_median * 1e3:.2f} ms (x{b.wall_median / a.wall_median:.3f}), "
              f"cpu {a.cpu_median * 1e3:.2f} -> {b.cpu_median * 1e3:.2f} ms (x{b.cpu_median / a.cpu_median:.3f}); {uptime()}", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*")
    parser.add_argument("--micro", action="store_true", help="measure hand-built graphs of n nodes")
    parser.add_argument("--rounds", type=int, default=200, help="interleaved rounds at batch 1 (a fifth at 16)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this graph in this process
    parser.add_argument("--primer", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.primer, args.bundle, 5)))
        return
    print(f"growth in MiB, RSS / private: {'load':>15} {'5 calls':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.micro:
            settings = args.bundles[0] if args.bundles else sys.exit("--micro needs a bundle for its runtime settings")
            graphs = micro_graphs(Path(tmp))
            print(f"hand-built graphs (settings of {settings}); {uptime()}")
            for name, path in graphs.items():
                print(_row(f"  {name}", _fresh(path, graphs["add 10"], settings)), flush=True)
        for bundle in args.bundles:
            compare(bundle, Path(tmp), args.rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
