"""The typer app, its error handling and its progress bar: what every command shares.

Exit codes: 0 success; 1 a clear failure (bad input, bad option, broken layout); 2 a usage
error (unknown option, missing argument).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

from .._version import __version__
from ..errors import ClipdataError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
    help="Image datasets into the CLIP classification layout (split/class folders + _tokenization.txt).",
)
review_app = typer.Typer(help="Turn reviewed pre-labels into a CLIP layout.", no_args_is_help=True)
app.add_typer(review_app, name="review")

out_console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"clipdata {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


@contextmanager
def errors() -> Iterator[None]:
    """One clear line for anything a user can cause; never a traceback for those."""
    try:
        yield
    except ClipdataError as e:
        err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[bold red]error:[/] {where}{e.strerror or e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130)


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} items/s" if task.speed else "", style="progress.data.speed")


@contextmanager
def progress(label: str, quiet: bool) -> Iterator:
    """A progress callback `update(done, total)`, or None when quiet."""
    if quiet:
        yield None
        return
    # No refresh thread (auto_refresh=False): worker processes can then be forked safely.
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), _SpeedColumn(),
                   TimeRemainingColumn(), console=err_console, transient=True, auto_refresh=False)
    with bar:
        task = bar.add_task(label, total=None)
        last = [0.0]

        def update(done: int, total: int) -> None:
            now = time.monotonic()
            finished = done >= total
            bar.update(task, completed=done, total=total)
            if finished or now - last[0] > 0.1:
                bar.refresh()
                last[0] = now

        yield update


def main() -> None:
    app(prog_name="clipdata")
