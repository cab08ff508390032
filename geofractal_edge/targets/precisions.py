"""The precisions geofractal_edge exports: the one list that profiles, schemes and tolerances share.

Each precision here has exactly one default quantization scheme (`export/quantize`) and one row of
parity tolerances (`parity/tolerances.toml`); tests hold both to this list, and a target profile
may only list precisions from it. bf16 and fp8 are absent because no scheme exports them: adding a
precision means a scheme file, a tolerance row, and its name here. Imports nothing heavy.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")


def precision_note(precision: str, ort_providers) -> str | None:
    """What a user should know about `precision` on a target run by `ort_providers`, or None: fp16 where onnxruntime's
    CPU provider alone runs it halves the file but neither memory nor time (benchmarks/RESULTS.md, sixth session)."""
    if precision == "fp16" and set(ort_providers) == {"CPUExecutionProvider"}:
        return ("fp16 on onnxruntime's CPU provider halves the file only: it computes in float32 and holds float32 copies "
                "of the weights, so memory and speed are fp32's; int8 or int4 shrink both")
    return None
