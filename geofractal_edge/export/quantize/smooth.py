"""Input smoothing for int8 (SmoothQuant-style), as a graph rewrite that is exact in float.

A transformer's hidden states have a few channels 10-30x larger than the rest; one int8 scale per
tensor then leaves the other channels a handful of levels. For each MatMul X @ W with a constant
2-D weight, X is divided by s per input channel (one Mul, shared by every smoothed MatMul reading
X) and W's rows multiplied by s: s_j = (peak|x_j| / median_j peak|x_j|) ** alpha, activation-only
migration. With `outputs` (static int8, whose Q/DQ also quantizes the product's output per tensor)
the product is equalized too: W's columns divided by t_k = peak|(XW)_k| / its median and an
unquantized Mul by t restores the result; per-output-channel weight scales make 1/t free.
Peaks come from onnxruntime running the float graph on the calibration feeds.

The family's spec asks for it (`ExportSpec.smooth_alpha`); its float bundles carry none of these Muls.
A weight read by several MatMuls (Atlas iterates one block) is left alone: each reader would need its own copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from geofractal_edge.export import lowbit
from geofractal_edge.export.quantize import weights


def smooth(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], *, alpha: float, outputs: bool, skip: set[str]) -> onnx.ModelProto:
    """The model with its weight MatMuls (not in `skip`) smoothed; unchanged when alpha is 0 or nothing qualifies."""
    if alpha <= 0 or not feeds:
        return model
    inits = {i.name: i for i in model.graph.initializer}
    reads = weights.readers(model)
    nodes = [n for n in model.graph.node if n.op_type == "MatMul" and n.name not in skip and n.input[1] in inits
             and inits[n.input[1]].data_type == TensorProto.FLOAT and len(inits[n.input[1]].dims) == 2 and len(reads[n.input[1]]) == 1]
    if not nodes:
        return model
    xs = list(dict.fromkeys(n.input[0] for n in nodes))
    peaks = _peaks(model, feeds, xs + ([n.output[0] for n in nodes] if outputs else []))
    rw = weights.Rewriter(model)
    scales = {x: _ratio(peaks[x]) ** alpha for x in xs}  # [K] per input X
    for x in xs:
        rw.add(lowbit.constant(f"{x}.smooth_inv", (1.0 / scales[x]).astype(np.float32)))
        first = next(n for n in nodes if n.input[0] == x)
        rw.before.setdefault(id(first), []).append(helper.make_node("Mul", [x, f"{x}.smooth_inv"], [f"{x}.smoothed"], name=f"{x}.smooth"))
    for node in nodes:
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        t = _ratio(peaks[y]) if outputs else np.ones(rw.array(w_name).shape[1], np.float32)
        w = rw.array(w_name) * scales[x][:, None] / t[None, :]  # [K, N]
        rw.add(lowbit.constant(f"{w_name}.smoothed", w.astype(np.float32)))
        node.input[0], node.input[1] = f"{x}.smoothed", f"{w_name}.smoothed"
        if outputs:
            rw.add(lowbit.constant(f"{y}.smooth_out", t.astype(np.float32)))
            node.output[0] = f"{y}.unscaled"
            rw.replace[id(node)] = [node, helper.make_node("Mul", [f"{y}.unscaled", f"{y}.smooth_out"], [y], name=f"{y}.unsmooth")]
    return rw.apply()


def _ratio(peak: np.ndarray) -> np.ndarray:
    peak = np.maximum(peak, 1e-5)
    return (peak / np.median(peak)).astype(np.float32)


def _peaks(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    """Per tensor in `names`: max |value| per last-axis channel over every calibration feed (float graph, onnxruntime)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every named tensor as the graph computes it
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    found: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, {k: v for k, v in feed.items() if k in inputs})):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            found[name] = np.maximum(found[name], peak) if name in found else peak
    return found
