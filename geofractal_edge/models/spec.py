"""What an exporter needs to know about a family, as data. No torch here.

Each family carries an `ExportSpec`: named inputs with dtypes, static or named dynamic dimensions
and value ranges; the dynamic dimensions' ranges (for TensorRT optimization profiles); which inputs
stay float32 through the feature stage at fp16; which op types the quantizers touch; the task
metric parity reports; and tolerance overrides. The exporter reads it and never guesses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from geofractal_edge.errors import Bug

Dim = int | str  # a fixed size, or the name of a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64"
    shape: tuple[Dim, ...]
    range: tuple[float, float] | None = None  # allowed values, checked by the runtime
    role: str = "data"  # "data", "key" (bound from the key cache), "logits", ...

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["range"] = None if self.range is None else list(self.range)
        return data


@dataclass(frozen=True)
class DimRange:
    """min / opt / max of one dynamic dimension: the TensorRT optimization profile."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class ExportSpec:
    family: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dim_ranges: dict[str, DimRange]
    task_metric: str  # a name in geofractal_edge.parity.tasks
    fp32_inputs: tuple[str, ...] = ()  # inputs whose feature stage stays float32 at fp16
    quantize_op_types: tuple[str, ...] = ("Gemm", "MatMul")
    # (codes, scale) initializer pairs holding ternary weights: stored 2-bit packed, never re-quantized
    ternary: tuple[tuple[str, str], ...] = ()
    # initializers whose consumers stay float (e.g. routing signatures: int8 noise would flip routes)
    keep_float: tuple[str, ...] = ()
    # int8: SmoothQuant migration strength for the weight products' inputs (export/quantize/smooth.py), 0 to 1; 0: none.
    # The family's choice: an Int8Config that names smooth_alpha wins; the manifest records the value used.
    smooth_alpha: float = 0.0

    @property
    def unquantized(self) -> tuple[str, ...]:
        """Initializers the quantizers must leave alone: ternary codes and keep_float tensors."""
        return tuple(c for c, _ in self.ternary) + self.keep_float
    tolerance_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    # outputs whose argmax int4 noise flips (routes): int4 keeps the float weights they depend on at 8 bits
    int8_upstream_of: tuple[str, ...] = ()
    # int4's weights per scale and, on onnxruntime targets, MatMulNBits' accuracy_level (4: int8 activations),
    # unless the quantization config names them: the family's trade of speed against accuracy (Int4Config)
    int4_block_size: int = 16
    int4_accuracy_level: int = 0
    # (block size, accuracy level) pairs export also builds, verifies and times on an onnxruntime target, keeping one only
    # where it runs clearly faster than the pair above on the export host (export/int4_choice.py)
    int4_alternatives: tuple[tuple[int, int], ...] = ()
    # Precisions whose bundles ask for onnxruntime's lookup-table kernel for 2-bit MatMulNBits on "ort" targets
    # (RuntimeSettings.lut_gemm): it quantizes the tiles' activations to int8, so only where that is the precision's
    # own contract. Export keeps it only where the export host measures it faster (export/lut_choice.py), and keeps
    # float any keep_float tensor it would otherwise pack 2-bit wherever it was asked for (routing scores stay exact).
    lut_gemm_precisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        both = sorted({c for c, _ in self.ternary} & set(self.keep_float))
        if both:
            raise Bug(f"family {self.family}'s ExportSpec lists {both[0]} as both ternary codes and keep_float")
        if not is_smooth_alpha(self.smooth_alpha):
            raise Bug(f"family {self.family}'s ExportSpec has smooth_alpha {self.smooth_alpha!r}, not a number from 0 to 1")

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    @property
    def key_input(self) -> str | None:
        return next((t.name for t in self.inputs if t.role == "key"), None)

    def validation_shape(self, tensor: TensorSpec, *, use: str) -> tuple[int, ...]:
        """A concrete shape: `use` is "min", "opt" or "max" of each dynamic dimension."""
        return tuple(d if isinstance(d, int) else getattr(self.dim_ranges[d], use) for d in tensor.shape)


def is_smooth_alpha(alpha) -> bool:
    """A SmoothQuant migration strength: a finite number from 0 (no smoothing) to 1 (all of it moved to the weights)."""
    return not isinstance(alpha, bool) and isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0 <= alpha <= 1
