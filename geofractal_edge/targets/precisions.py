"""The precisions geofractal_edge exports: the one list that profiles, schemes and tolerances share.

Each precision here has exactly one default quantization scheme (`export/quantize`) and one row of
parity tolerances (`parity/tolerances.toml`); tests hold both to this list, and a target profile
may only list precisions from it. bf16 and fp8 are absent because no scheme exports them: adding a
precision means a scheme file, a tolerance row, and its name here. Imports nothing heavy.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")
