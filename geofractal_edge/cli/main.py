"""The `gfedge` command: a thin typer layer over the library."""

from __future__ import annotations

import typer

from geofractal_edge import __version__
from geofractal_edge.cli import bench, build, env, export, generate, inspect, ps, run, serve, strip, targets, train, verify
from geofractal_edge.cli.errors import run_guarded

app = typer.Typer(
    name="gfedge",
    help="Train small routed models, export them per target device, run and verify them without torch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(targets.app, name="targets")
app.add_typer(train.app, name="train")
app.command("export")(export.export)
app.command("run")(run.run)
app.command("generate")(generate.generate)
app.command("strip-golden")(strip.strip_golden)
app.command("verify")(verify.verify)
app.command("bench")(bench.bench)
app.command("inspect")(inspect.inspect)
app.command("env")(env.env)
app.command("build")(build.build)
app.command("serve")(serve.serve)
app.command("ps")(ps.ps)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def main() -> None:
    run_guarded(app)


if __name__ == "__main__":
    main()
