"""Render docs/bundle-format.md from the manifest schema, so the document cannot drift from the code.

`python -m geofractal_edge.artifacts.format_doc > docs/bundle-format.md` writes it; a test renders it
again and compares. Every field of every schema class needs an entry in `FIELDS` (the test checks).
"""

from __future__ import annotations

import dataclasses

from geofractal_edge.artifacts import manifest as m
from geofractal_edge.artifacts.schema import describe, hints
from geofractal_edge.targets import TargetProfile

FIELDS = {
    "Manifest.format": "always `gfedge-bundle`",
    "Manifest.format_version": "the bundle format version (see Versions)",
    "Manifest.created": "UTC time of export, ISO 8601",
    "Manifest.family": "model family: `atlas`, `trix`, `collective`, `collective-encoder`",
    "Manifest.model": "what was exported",
    "Manifest.target": "the full target profile the bundle was exported for (`geofractal_edge/targets/profiles/*.toml`)",
    "Manifest.precision": "`fp32`, `fp16`, `int8` or `int4`",
    "Manifest.quantization": "the quantization scheme's config: `scheme`, `precision`, `version` and the scheme's own fields",
    "Manifest.weight_dialect": "how low-bit weights sit in the graph, the target's `weight_dialect`: `ort` (onnxruntime's "
                               "`com.microsoft` MatMulNBits / GatherBlockQuantized: int4 weights and 2-bit TriX tiles stay packed "
                               "in the session, but for a TriX tile run with int8 activations, `tile_accuracy_level` 4 in "
                               "`quantization`, which onnxruntime prepacks at ~2.7x its bytes) or `qdq` (standard blocked DequantizeLinear, zero point 0, for TensorRT)",
    "Manifest.opset": "ONNX opset of `model.onnx`",
    "Manifest.toolchain": "package versions of the exporting host",
    "Manifest.graph": "the ONNX graph and its declared inputs and outputs",
    "Manifest.golden": "reference cases: inputs and torch's outputs",
    "Manifest.task": "what the model does, for the task metric and for decoding",
    "Manifest.files": "every file of the bundle but the manifest and its hash, by relative path",
    "Manifest.keys": "latent keys; present exactly when an input has role `key`",
    "Manifest.family_info": "the family's own report (TriX: routing tables and tile usage)",
    "Manifest.tolerance_overrides": "per precision, parity tolerances that replace the defaults",
    "Manifest.ternary": "format 1 only (never written since format 2, where the tiles are inside `model.onnx`): ternary weights stored 2-bit packed outside it",
    "Manifest.tensorrt": "TensorRT builder settings (TensorRT targets only)",
    "Manifest.parity": "the parity report measured at export",
    "Manifest.tokenizer": "encoders: the tokenizer that turns text into the graph's token inputs, torch-free",
    "Manifest.small_calls": "host CPU targets: the measurement behind `target.runtime.small_call_threads` (small calls on fewer threads)",
    "Manifest.int4_choice": "int4 on onnxruntime targets whose family lists alternatives: the block sizes and accuracy levels export "
                            "built, verified and timed on the export host, and which one the bundle holds (`quantization` records it)",
    "Manifest.lut_choice": "onnxruntime targets where the family asks for the lookup-table 2-bit kernel at this precision (TriX int8 / int4 "
                           "of many tiles): the measurement behind `target.runtime.lut_gemm`, or that the user decided at export",
    "TokenizerInfo.file": "the `tokenizers` library's JSON, relative to the bundle",
    "TokenizerInfo.kind": "always `tokenizers-json`",
    "TokenizerInfo.max_length": "texts are truncated to this many tokens",
    "TokenizerInfo.pad_id": "id that pads shorter texts (their attention mask is 0)",
    "TokenizerInfo.pad_token": "the padding token",
    "ModelInfo.name": "the checkpoint's model name",
    "ModelInfo.config": "the family's training config, as trained",
    "ModelInfo.core_sha256": "sha256 of the frozen core's weights: keys and chained bundles are checked against it",
    "ModelInfo.source": "where the checkpoint came from (`checkpoint`, `sha256`)",
    "Graph.file": "the ONNX file, relative to the bundle",
    "Graph.inputs": "inputs in graph order; names unique",
    "Graph.outputs": "outputs in graph order; names unique",
    "Graph.dim_ranges": "min/opt/max of every named dimension; the runtime refuses sizes outside [min, max]",
    "TensorDecl.name": "tensor name in the graph",
    "TensorDecl.dtype": "numpy dtype name",
    "TensorDecl.shape": "an integer is a fixed size; a string names a dynamic dimension bounded in `dim_ranges`",
    "TensorDecl.range": "[low, high] of allowed values, checked before a run; null: any finite value",
    "TensorDecl.role": "`data`, `key` (bound from the key cache, never passed by a caller), `logits`, `routes`, `margins`, `embedding`, ...",
    "DimRange.min": "smallest size (>= 1)",
    "DimRange.opt": "the size engines are tuned for",
    "DimRange.max": "largest size the runtime accepts",
    "Keys.dir": "folder of key files, `NAME.safetensors`",
    "Keys.dim": "floats per key; equals the key input's shape",
    "Keys.names": "keys shipped in the bundle (letters, digits, `_ . -`)",
    "Keys.default": "the key bound at load, one of names",
    "Golden.files": "case files, `golden/case_NNN.safetensors`",
    "Golden.cases": "number of cases; equals the number of files",
    "Task.metric": "parity's task metric (`char_accuracy`, `accuracy`, `next_char_accuracy`, `embedding_retrieval`, ...)",
    "Task.vocab": "character models: output index -> character",
    "Task.classes": "classifiers: number of classes",
    "Task.labels": "classifiers: class names",
    "Task.streams": "collectives: stream names",
    "Task.route_outputs": "routed models: outputs holding routing decisions",
    "Task.encoder": "a collective that runs behind an encoder bundle",
    "Task.pooling": "encoders: token pooling",
    "Task.normalize": "encoders: whether embeddings are L2-normalised",
    "EncoderLink.family": "the encoder bundle's family",
    "EncoderLink.core_sha256": "the encoder bundle's `model.core_sha256`; any other encoder is refused",
    "EncoderLink.output": "the encoder output this graph takes",
    "EncoderLink.folder": "where the encoder came from on the build host (informative)",
    "TernaryPacks.file": "the packed file (safetensors of uint8, four weights per byte)",
    "TernaryPacks.tensors": "graph initializer name -> its unpacked shape and dtype",
    "TernaryTensor.shape": "shape of the unpacked codes",
    "TernaryTensor.dtype": "dtype of the unpacked codes in the graph",
    "TernaryTensor.fp32_bytes": "what the tensor would take as float32",
    "TensorRTSettings.tensorrt_version": "the TensorRT the target runs",
    "TensorRTSettings.tensorrt_major": "its major version",
    "TensorRTSettings.sm": "the target GPU's compute capability",
    "TensorRTSettings.strongly_typed": "always true: precision lives in the graph",
    "TensorRTSettings.workspace_bytes": "builder workspace cap",
    "TensorRTSettings.builder_optimization_level": "TensorRT builder optimization level",
    "TensorRTSettings.optimization_profiles": "per profile, input name -> min/opt/max shape",
    "TensorRTSettings.dla": "DLA use on Jetson",
    "TensorRTSettings.engine": "written by `gfedge build` on the device",
    "ShapeRange.min": "smallest shape",
    "ShapeRange.opt": "tuned shape",
    "ShapeRange.max": "largest shape",
    "Dla.available_cores": "DLA cores on the target",
    "Dla.allowed_for_precision": "whether DLA takes this precision",
    "Dla.use": "whether the build puts layers on DLA",
    "Dla.why_not": "why DLA is not used",
    "Dla.core": "which DLA core",
    "EngineRecord.file": "the engine plan file",
    "EngineRecord.key": "the engine's compatibility key: TensorRT version, SM, graph and settings hashes",
    "EngineRecord.built": "build facts (seconds, GPU, CUDA)",
    "EngineRecord.engine": "the engine inspector's summary",
    "EngineRecord.timing_cache": "the timing cache file and what made it",
    "EngineRecord.dla": "layers placed on DLA and their fallbacks",
    "ParityRecord.passed": "all checks passed",
    "ParityRecord.family": "as Manifest.family",
    "ParityRecord.precision": "as Manifest.precision",
    "ParityRecord.target": "target name",
    "ParityRecord.task_metric": "as Task.metric",
    "ParityRecord.metrics": "float64 error statistics and the task metric, torch vs runtime",
    "ParityRecord.checks": "each tolerance check",
    "ParityRecord.cases": "per golden case detail",
    "ParityRecord.providers_used": "onnxruntime providers that ran",
    "ParityRecord.fallbacks": "profile providers this host lacked",
    "ParityRecord.seconds": "time taken",
    "ParityCheck.name": "statistic",
    "ParityCheck.value": "measured",
    "ParityCheck.limit": "tolerance",
    "ParityCheck.kind": "`min`: value >= limit; `max`: value <= limit",
    "ParityCheck.passed": "the verdict",
    "SmallCalls.threads": "intra-op threads of the small-call session measured",
    "SmallCalls.batch": "calls at or below this batch",
    "SmallCalls.session_us": "median microseconds per such call on the bundle's one session (export host)",
    "SmallCalls.small_us": "the same on the small-call session, interleaved",
    "SmallCalls.kept": "whether `target.runtime.small_call_threads` keeps the small-call session",
    "SmallCalls.why": "the reason, in words",
    "Int4Variant.block_size": "weights per scale",
    "Int4Variant.accuracy_level": "MatMulNBits' accuracy_level (0: float32 arithmetic, 4: int8 activations)",
    "Int4Variant.parity_passed": "whether this variant's bundle passed every parity gate",
    "Int4Variant.sqnr_db": "its output SQNR against torch over the golden cases, dB; null: not finite",
    "Int4Variant.weight_bytes": "bytes of its graph's initializers",
    "Int4Variant.batches": "the batch sizes the variants are timed at (0: the first golden case as recorded)",
    "Int4Variant.p50_us": "median microseconds per call at each batch, the variants interleaved; empty: not timed (failed parity, weights above 1.2x the family's choice's, or only one candidate)",
    "Int4Variant.error": "why the variant could not be built or verified (export went on without it); empty: it was",
    "Int4Choice.variants": "every variant built, the family's own choice first",
    "Int4Choice.chosen": "index of the variant the bundle holds",
    "Int4Choice.why": "the reason, in words",
    "Int4Choice.fp32_p50_us": "the same model at fp32, timed with the variants at their batches (median microseconds per call): "
                              "each variant is judged by its worst ratio to it; empty: no variant was timed",
    "LutChoice.kept": "whether `target.runtime.lut_gemm` keeps onnxruntime's lookup-table 2-bit kernel",
    "LutChoice.why": "the reason, in words",
    "LutChoice.batches": "the batch sizes timed (0: the first golden case as recorded); empty: not measured (`--lut-gemm on` or `off`)",
    "LutChoice.fp32_p50_us": "the same model at fp32, median microseconds per call at each batch, interleaved with the two below: "
                             "each setting is judged by its worst ratio to it",
    "LutChoice.on_p50_us": "the bundle with the lookup-table kernel",
    "LutChoice.off_p50_us": "the bundle without the lookup-table kernel (its tiles at float arithmetic) and its routing "
                            "signatures packed 2-bit (the graph model.onnx holds where the kernel is not kept)",
    "FileEntry.sha256": "64 lowercase hex digits",
    "FileEntry.bytes": "size in bytes",
}

CLASSES = (m.Manifest, m.ModelInfo, m.Graph, m.TensorDecl, m.DimRange, m.Keys, m.Golden, m.Task, m.EncoderLink,
           m.TokenizerInfo, m.TernaryPacks, m.TernaryTensor, m.TensorRTSettings, m.ShapeRange, m.Dla, m.EngineRecord,
           m.ParityRecord, m.ParityCheck, m.SmallCalls, m.Int4Choice, m.Int4Variant, m.LutChoice, m.FileEntry)

HEAD = f"""# The gfedge bundle format (version {m.FORMAT_VERSION})

Generated from `geofractal_edge/artifacts/manifest.py` by `python -m geofractal_edge.artifacts.format_doc`;
a test fails when this file and the schema disagree.

A bundle is a directory:

```
manifest.json          the manifest below (UTF-8 JSON, at most {m.MAX_MANIFEST_BYTES >> 20} MiB)
manifest.json.sha256   sha256 of manifest.json's exact bytes, hex, then a newline
model.onnx             the graph: self-contained ONNX, every weight inside it (see weight_dialect)
keys/NAME.safetensors  latent keys (float32 vector `key`; metadata format, name, family, dim, core_sha256)
golden/case_NNN.safetensors   reference inputs, torch outputs and labels
```

`model.onnx` opens in plain `onnxruntime.InferenceSession(path)` and passes
`onnx.checker.check_model(path, full_check=True)`. In the `ort` dialect it uses onnxruntime's
`com.microsoft` operators (onnxruntime >= 1.31: 2-bit `MatMulNBits` and `GatherBlockQuantized`); in the `qdq` dialect only
standard ONNX operators. A format-1 bundle could instead keep TriX codes in
`weights/ternary.safetensors` (2 bits each, named by `ternary`), handed to onnxruntime at load.

## Reading rules

- A reader checks `manifest.json.sha256`, parses the manifest once into the classes below, and then
  checks every file's size and sha256. Nothing is loaded from a bundle that fails any check; the
  error names the field (`graph.inputs[0].range`) and the fix, in one line.
- Types are strict: an integer is not a boolean, a number is finite, a list is a list. Fields not
  in the schema are refused. A field with a default may be absent.
- Every path is relative, inside the bundle, without `..`, backslashes or NUL.
- Rules between fields: `keys` is present exactly when an input has role `key`, and `keys.dim`
  equals that input's shape; every named dimension has a range with 1 <= min <= opt <= max;
  every file the manifest names (graph, keys, golden cases, ternary pack) is listed in `files`;
  `quantization.precision` equals `precision`; TensorRT profiles cover exactly the graph's inputs.

## Versions

`format_version` changes when a reader of the old version could misread a new bundle. A reader
reads every version from {m.OLDEST_READABLE} to its own ({m.FORMAT_VERSION}): an older manifest is upgraded in memory,
step by step, before it is checked. A newer version is refused ("upgrade geofractal_edge on the
device, or re-export with the version it runs"); so is a version older than {m.OLDEST_READABLE}.
"""


def render() -> str:
    parts = [HEAD]
    for cls in CLASSES:
        parts.append(_section(cls))
    parts.append("## TargetProfile\n\nThe target profile as written by `TargetProfile.to_dict()` "
                 "(fields: " + ", ".join(f"`{f.name}`" for f in dataclasses.fields(TargetProfile)) +
                 ", plus the derived `tensorrt_major`, which readers ignore).\n")
    return "\n".join(parts)


def _section(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        required = "yes" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING else f"no (default {_default(f)})"
        rows.append(f"| `{f.name}` | {describe(hints(cls)[f.name])} | {required} | {FIELDS[f'{cls.__name__}.{f.name}']} |")
    return f"## {cls.__name__}\n\n" + (f"{doc}\n\n" if doc else "") + "\n".join(rows) + "\n"


def _default(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return "null" if value is None else "empty" if not value and value != 0 else repr(value)


if __name__ == "__main__":
    print(render(), end="")
