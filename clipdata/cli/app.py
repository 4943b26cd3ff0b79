"""The typer app, its error handling and its progress bar: what every command shares.

Exit codes: 0 success; 1 a clear failure (bad input, a bad option file, broken layout); 2 a
usage error (unknown option, missing argument, a bad option value); 130 interrupted (Ctrl-C
or SIGTERM). Diagnostics are one line each and never wrapped, even when piped.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator, NoReturn

import click
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

from .._version import __version__
from ..errors import ClipdataError, OptionError
from ..names import message
from ..procs import sigterm_as_interrupt

# Help is plain text (rich_markup_mode=None): what the source says is what --help shows (rich
# markup would eat `clipdata[ray]`), and a flag reads `--square`, never `--square <bool>`.
app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Image datasets into the CLIP classification layout (split/class folders + _tokenization.txt).",
)
review_app = typer.Typer(help="Turn reviewed pre-labels into a CLIP layout.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(review_app, name="review")

class _Shown:
    """The process's stdout or stderr as it is at each write (tests swap them), with every
    name's undecodable byte spelled `\\xNN` (clipdata/names.py): printing a name never fails."""

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> int:
        return getattr(sys, self._name).write(message(text))

    def __getattr__(self, attr: str):
        return getattr(getattr(sys, self._name), attr)


# soft_wrap: rich would otherwise break lines at 80 columns when piped, splitting paths.
# markup off: text from the input (a class `[red]`, a file `photo[1].jpg`, a hint naming
# `clipdata[ray]`) is printed as it is; styles are given as `styled(("note:", "yellow"), …)`.
out_console = Console(file=_Shown("stdout"), soft_wrap=True, markup=False, highlight=False)
err_console = Console(file=_Shown("stderr"), soft_wrap=True, markup=False, highlight=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text with styled parts, never parsed as markup: styled(("note:", "yellow"), " ", text)."""
    return Text.assemble(*parts)
DEBUG = "CLIPDATA_DEBUG"


def _version(value: bool) -> None:
    if value:
        out_console.print(f"clipdata {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def _one_line(text: object) -> str:
    return " ".join(str(text).split("\n"))


def _fail(text: str, code: int) -> NoReturn:
    err_console.print(styled(("error:", "bold red"), " ", _one_line(text)))
    raise typer.Exit(code)


def last_resort(e: BaseException) -> NoReturn:
    """A bug, not the user's input: one line and a plea, never a traceback (unless
    CLIPDATA_DEBUG=1, for the report)."""
    if os.environ.get(DEBUG) == "1":
        raise e
    _fail(f"{type(e).__name__}: {e} — this is a bug in clipdata, please report this "
          f"(run again with {DEBUG}=1 for the traceback)", 1)


@contextmanager
def errors() -> Iterator[None]:
    """One clear line for anything a user can cause; never a traceback. A bad option value
    given on the command line (an OptionError naming no file) is a usage error, exit 2.
    SIGTERM stops a command the way Ctrl-C does."""
    try:
        with sigterm_as_interrupt():
            yield
    except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except OptionError as e:
        _fail(str(e), 2 if e.file is None else 1)
    except ClipdataError as e:
        _fail(str(e), 1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130)
    except Exception as e:
        last_resort(e)


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} items/s" if task.speed else "", style="progress.data.speed")


@contextmanager
def progress(label: str, quiet: bool) -> Iterator:
    """A progress callback `update(done, total)`, or None when quiet."""
    if quiet or not err_console.is_terminal:  # piped: a bar would only leave blank lines
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
    """The `clipdata` command: what escapes every command's own handler still ends in one line."""
    try:
        app(prog_name="clipdata")
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130)
    except Exception as e:
        try:
            last_resort(e)
        except click.exceptions.Exit as done:
            raise SystemExit(done.exit_code)
