"""gfedge serve ZOO_DIR: serve a folder of bundles over local HTTP under a memory budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from geofractal_edge.cli.render import console


def serve(
    zoo_dir: Path = typer.Argument(..., help="Folder of bundle directories (and optionally keys/)."),
    budget: float | None = typer.Option(None, "--budget", help="Memory budget in MiB (default: from the target profile)."),
    port: int = typer.Option(8470, "--port", help="Port on 127.0.0.1 (0: any free port, printed)."),
    target: str = typer.Option("host-cpu", "--target", "-t", help="Target profile whose memory pool sets the default budget."),
    policy: str = typer.Option("sage", "--policy", help="sage (expertise x cheapness x persistence), lru or always-best."),
    max_loaded: int | None = typer.Option(None, "--max-loaded", help="Also cap the number of resident models."),
    keys: list[Path] = typer.Option([], "--keys", help="Extra key folders, watched while serving (repeatable)."),
    persistence: float = typer.Option(1.2, "--persistence", help="sage: boost for resident models."),
    trust_threshold: float = typer.Option(0.3, "--trust-threshold", help="sage: below this trust, fall back to the best-trusted alternative."),
    rescan: float = typer.Option(2.0, "--rescan", help="Seconds between scans of ZOO_DIR for new or changed bundles (0: never)."),
    low_power: bool = typer.Option(False, "--low-power", help="Start in the low-power state (cheap models preferred)."),
    as_json: bool = typer.Option(False, "--json", help="Print the ready line as JSON."),
) -> None:
    """Serve a model zoo. Endpoints: GET /status /keys /health; POST /infer /feedback /load /unload /prefetch /keys /power /rescan."""
    from geofractal_edge.runtimes.zoo import Zoo
    from geofractal_edge.runtimes.zoo.server import serve as serve_forever

    options = {"persistence": persistence, "trust_threshold": trust_threshold} if policy == "sage" else None
    zoo = Zoo(zoo_dir, budget_bytes=None if budget is None else int(budget * (1 << 20)), target=target, policy=policy,
              policy_options=options, key_folders=tuple(keys), max_loaded=max_loaded)
    zoo.set_power(low=low_power)

    def ready(server) -> None:
        status = zoo.status()
        quarantined = {m["id"]: m["reason"] for m in status["models"] if m["state"] == "quarantined"}
        line = {"url": f"http://127.0.0.1:{server.port}", "port": server.port, "models": len(status["models"]),
                "quarantined": quarantined, "budget_bytes": zoo.budget_bytes, "policy": zoo.policy.name}
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            console.print(f"serving {len(status['models'])} models from {zoo_dir} on {line['url']} "
                          f"(policy {zoo.policy.name}, budget {zoo.budget_bytes / (1 << 20):.1f} MiB); Ctrl-C stops")
            for model, reason in quarantined.items():
                console.print(f"[yellow]quarantined[/] {model}: {reason}")
        sys.stdout.flush()

    serve_forever(zoo, port=port, rescan_s=rescan, on_ready=ready)
