"""Pictures people would rather look at than read. matplotlib loads only when a picture is asked for."""

from __future__ import annotations

from pathlib import Path

from geofractal_edge.artifacts import atomic
from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import GfedgeError


def tile_usage_png(info: dict, path: Path, *, title: str) -> None:
    layers = info.get("layers") or []
    if not layers:
        raise GfedgeError("this bundle has no routed layers to plot", "--plot applies to TriX bundles")
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(layers), 1, figsize=(8, 2.2 * len(layers)), squeeze=False)
    for i, (ax, layer) in enumerate(zip(axes[:, 0], layers)):
        usage = layer["usage"]
        total = max(1, sum(usage))
        ax.bar(range(len(usage)), [u / total for u in usage], color=["#c44" if u == 0 else "#48a" for u in usage])
        ax.axhline(1 / len(usage), color="#888", lw=0.8, ls="--", label="uniform")
        ax.set_ylabel(f"layer {i}\nshare")
        ax.set_xlim(-0.5, len(usage) - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("tile (red: never chosen)")
    axes[0, 0].legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(Path(path), buffer.getvalue())
