"""Rendering shared by the commands: JSON for machines, rich for people, a progress bar."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

UNBOUNDED = 1_000_000  # columns: piped output is never cut (rich would assume 80 and truncate cells)


def _console(*, stderr: bool = False) -> Console:
    """A rich console; when its stream is not a terminal (and $COLUMNS is unset) its width is unbounded."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = getattr(stream, "isatty", lambda: False)()
    return Console(stderr=stderr, width=None if terminal or os.environ.get("COLUMNS") else UNBOUNDED)


console = _console()
errors = _console(stderr=True)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def verdict(passed: bool, detail: str) -> None:
    """The one closing line of a check: PASSED or FAILED."""
    style = "bold green" if passed else "bold red"
    console.print(f"[{style}]{'PASSED' if passed else 'FAILED'}[/] {detail}")


@contextlib.contextmanager
def progress_bar(*, enabled: bool = True) -> Iterator:
    """Yield a callback `(phase, done, total)` that draws one bar per phase (on stderr). A phase "bar | detail" moves
    the bar named before the " | " and shows the detail beside it (export: "export trix int4 | verify")."""
    if not enabled:
        yield None
        return
    bars: dict[str, int] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=False) as progress:

        def update(phase: str, done: int, total: int) -> None:
            bar = phase.partition(" | ")[0]
            if bar not in bars:
                bars[bar] = progress.add_task(phase, total=total)
            progress.update(bars[bar], completed=done, total=total, description=phase)

        yield update


def kept_line(name: str, record) -> str:
    """One line: a setting export measured (small calls, the lookup-table kernel), whether it was kept and why."""
    return f"{name}: {'kept' if record.kept else 'not kept'}: {record.why}"


def int4_setting(choice) -> str:
    """One line: the int4 setting export kept and why."""
    kept = choice.variants[choice.chosen]
    how = "timed against" if choice.fp32_p50_us else "built with"
    return f"blocks of {kept.block_size}, accuracy_level {kept.accuracy_level} ({how} {len(choice.variants) - 1} alternative(s)): {choice.why}"
