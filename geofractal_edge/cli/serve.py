"""gfedge serve ZOO_DIR: serve a folder of bundles over HTTP (Open Inference Protocol v2) under a memory budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from geofractal_edge.cli.render import console

MIB = 1 << 20


def serve(
    zoo_dir: Path = typer.Argument(..., help="Folder of bundle directories (and optionally keys/)."),
    budget: float | None = typer.Option(None, "--budget", help="Memory budget in MiB (default: from the target profile)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs --token-file."),
    port: int = typer.Option(8470, "--port", help="Port (0: any free port, printed)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the bearer token every request must send (chmod 600)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another name clients may use in Host/Origin, e.g. a DNS name (repeatable)."),
    target: str = typer.Option("host-cpu", "--target", "-t", help="Target profile whose memory pool sets the default budget."),
    policy: str = typer.Option("sage", "--policy", help="sage (expertise x cheapness x persistence), lru or always-best."),
    max_loaded: int | None = typer.Option(None, "--max-loaded", help="Also cap the number of resident models."),
    keys: list[Path] = typer.Option([], "--keys", help="Extra key folders, watched while serving; hot-added folders must lie under these or the zoo (repeatable)."),
    persistence: float = typer.Option(1.2, "--persistence", help="sage: boost for resident models."),
    trust_threshold: float = typer.Option(0.3, "--trust-threshold", help="sage: below this trust, fall back to the best-trusted alternative."),
    rescan: float = typer.Option(2.0, "--rescan", help="Seconds between scans of ZOO_DIR for new or changed bundles (0: never)."),
    low_power: bool = typer.Option(False, "--low-power", help="Start in the low-power state (cheap models preferred)."),
    workers: int = typer.Option(4, "--workers", help="Threads that parse, check and run requests; more wait in the queue."),
    max_connections: int = typer.Option(64, "--max-connections", help="Open connections at most; the next one is answered 503."),
    max_body: float = typer.Option(64, "--max-body", help="Largest request body in MiB (413 past it, before it is read)."),
    request_timeout: float = typer.Option(60.0, "--request-timeout", help="Seconds a request may take to arrive, get a worker, or wait for room in the budget."),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", help="On SIGTERM/SIGINT: seconds in-flight requests get to finish."),
    as_json: bool = typer.Option(False, "--json", help="Print the ready line as JSON."),
) -> None:
    """Serve a model zoo over the Open Inference Protocol (KServe v2, tritonclient.http works): /v2/health, /v2/models/NAME/infer
    (NAME `_zoo` lets the zoo choose), /v2/repository, /v2/gfedge/*, /metrics. See the README's serving section."""
    from geofractal_edge.runtimes.zoo import Zoo
    from geofractal_edge.runtimes.zoo.server import listen
    from geofractal_edge.runtimes.zoo.server import serve as serve_forever
    from geofractal_edge.runtimes.zoo.serving.options import ServeOptions, read_token

    options = ServeOptions(host=host, port=port, token=None if token_file is None else read_token(token_file), allowed_hosts=tuple(allow_host),
                           key_roots=tuple(keys), max_body_bytes=int(max_body * MIB), workers=workers, max_connections=max_connections,
                           request_timeout_s=request_timeout, drain_timeout_s=drain_timeout, rescan_s=rescan)
    sock = listen(options)  # a busy port or a foreign address fails here, before any model loads
    sage = {"persistence": persistence, "trust_threshold": trust_threshold} if policy == "sage" else None
    zoo = Zoo(zoo_dir, budget_bytes=None if budget is None else int(budget * MIB), target=target, policy=policy, policy_options=sage,
              key_folders=tuple(keys), max_loaded=max_loaded, wait_s=request_timeout)
    zoo.set_power(low=low_power)

    def ready(bound: int) -> None:
        status = zoo.status()
        quarantined = {m["id"]: m["reason"] for m in status["models"] if m["state"] == "quarantined"}
        shown = f"[{host}]" if ":" in host else host
        line = {"url": f"http://{shown}:{bound}", "port": bound, "host": host, "models": len(status["models"]), "quarantined": quarantined,
                "budget_bytes": zoo.budget_bytes, "policy": zoo.policy.name, "token": options.token is not None}
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            console.print(f"serving {len(status['models'])} models from {zoo_dir} on {line['url']}/v2 "
                          f"(policy {zoo.policy.name}, budget {zoo.budget_bytes / MIB:.1f} MiB"
                          f"{', token required' if options.token else ''}); Ctrl-C or SIGTERM drains and stops")
            for model, reason in quarantined.items():
                console.print(f"[yellow]quarantined[/] {model}: {reason}")
        sys.stdout.flush()

    serve_forever(zoo, options, sock=sock, on_ready=ready)
