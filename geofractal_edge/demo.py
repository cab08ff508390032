"""`make demo`: train the default Atlas library, export it for two targets at four precisions,
verify every bundle in the torch-free runtime, and print one table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.table import Table

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.cli.render import console, progress_bar
from geofractal_edge.models.atlas.family import default_checkpoint, load_exportable
from geofractal_edge.parity import verify_bundle
from geofractal_edge.pipeline import export_bundle

TARGETS = ("jetson-orin-nano", "host-cpu")
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def main(out: Path = Path("demo-out")) -> int:
    started = time.perf_counter()
    with progress_bar() as progress:
        default_checkpoint(progress=progress)
        exportable = load_exportable(None, progress=progress)
        paths = []
        for target in TARGETS:
            for precision in PRECISIONS:
                path = out / f"atlas-{target}-{precision}"
                export_bundle(family="atlas", target=target, precision=precision, out=path, overwrite=True, exportable=exportable, progress=None)
                paths.append(path)
                progress("export bundles", len(paths), len(TARGETS) * len(PRECISIONS))
    table = Table("target", "precision", "model bytes", "bundle bytes", "char acc torch", "char acc runtime", "SQNR dB", "verdict",
                  title=f"Atlas default library ({len(exportable.cases)} texts), verified in the torch-free runtime")
    passed = True
    for path in paths:
        report = verify_bundle(path)
        bundle = open_bundle(path)
        task = report.metrics["char_accuracy"]
        table.add_row(report.target, report.precision, f"{bundle.model_bytes:,}", f"{bundle.total_bytes:,}",
                      f"{task['torch']:.2f}%", f"{task['runtime']:.2f}%", f"{report.metrics['sqnr_db']:.1f}",
                      "[green]PASSED[/]" if report.passed else "[red]FAILED[/]")
        passed &= report.passed
    console.print(table)
    console.print(f"bundles in {out}/ ; try: gfedge inspect {paths[0]}  |  gfedge verify {paths[0]}")
    console.print(f"{'PASSED' if passed else 'FAILED'} demo in {time.perf_counter() - started:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
