"""The typer app, its error handling and its progress bar: what every command shares.

Exit codes: 0 success; 1 a clear failure (bad input, a bad option file, broken layout); 2 a
usage error (unknown option, missing argument, a bad option value); 130 interrupted (Ctrl-C
or SIGTERM). Diagnostics are one line each and never wrapped, even when piped.
"""
from __future__ import annotations

import errno
import os
import sys
import time
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

import click
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

from .._version import __version__
from ..errors import ClipdataError, OptionError
from ..names import is_utf8, message, quoted
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

class OutputFailed(Exception):
    """Writing to stdout or stderr failed: the reader went away (`| head`), the disk is full
    (`>/dev/full`) or the stream was closed (`>&-`). Not the command's fault, and not a bug:
    main() ends the run with one line (or none, for a closed pipe)."""

    def __init__(self, stream: str, error: OSError) -> None:
        super().__init__(f"cannot write to standard {stream[3:]}put: {error.strerror or error}")
        self.stream, self.errno = stream, error.errno


class _Shown:
    """The process's stdout or stderr as it is at each write (tests swap them), with every
    name's undecodable byte spelled `\\xNN` (clipdata/names.py): printing a name never fails."""

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> int:
        stream = getattr(sys, self._name)
        try:
            if stream is None:  # started with the descriptor closed (`>&-`)
                raise OSError(errno.EBADF, "it is closed")
            return stream.write(message(text))
        except OSError as e:
            raise OutputFailed(self._name, e) from None

    def flush(self) -> None:
        stream = getattr(sys, self._name)
        try:
            if stream is not None:
                stream.flush()
        except OSError as e:
            raise OutputFailed(self._name, e) from None

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


# click's own control flow and usage errors (typer vendors click from 0.26 on: both kinds)
_CONTROL = tuple({click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort,
                  typer.Exit, typer.Abort, getattr(typer, "TyperException", typer.Exit)})
_said_interrupted = False


def _say_err(text: str | Text) -> None:
    """A line on stderr; when stderr itself cannot be written, the exit code alone speaks."""
    try:
        err_console.print(text)
    except OutputFailed:
        pass


def _interrupted() -> None:
    global _said_interrupted
    if not _said_interrupted:
        _said_interrupted = True
        _say_err("interrupted")


def _fail(text: str, code: int) -> NoReturn:
    _say_err(styled(("error:", "bold red"), " ", _one_line(text)))
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
    except (*_CONTROL, OutputFailed):
        raise
    except KeyboardInterrupt:
        _interrupted()
        raise typer.Exit(130)
    except Exception as e:
        if by_interrupt(e):
            _interrupted()
            raise typer.Exit(130)
        if isinstance(e, OptionError):
            _fail(str(e), 2 if e.file is None else 1)
        if isinstance(e, ClipdataError):
            _fail(str(e), 1)
        if isinstance(e, OSError):
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}", 1)
        last_resort(e)


def by_interrupt(e: BaseException) -> bool:
    """Whether a Ctrl-C or SIGTERM is what really stopped this: one that lands while a library
    defines a class comes back as RuntimeError("Error calling __set_name__ ..."), and the
    model loader turns that into "cannot load model"; the interrupt is still in the chain."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


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


# --model and --weights name folders and files: bytes are fine there, as in every path
_NAMES_OF_FILES = {"model", "weights"}
# the path parameters a command writes (OUT, --out, report files, --copy-to, --cache-dir)
_WRITTEN = {"out", "jsonl", "json_path", "html_out", "plot", "copy_to", "cache_dir"}


def _kind(param: click.Parameter) -> str | None:
    """"text" for a str (or list of str) parameter, "path" for a Path one, else None (typer
    0.26+ keeps the annotation; older typer hands click a type)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:
        name = getattr(getattr(param, "type", None), "name", "")
        return {"text": "text", "path": "path"}.get(name)
    for kind, cls in (("text", str), ("path", Path)):
        if annotation is cls or any(a is cls or cls in typing.get_args(a) for a in typing.get_args(annotation)):
            return kind
    return None


def _checked(param: click.Parameter, kind: str, process_value):
    """`process_value` that first looks at what was typed, before typer turns it into a value:
    text that reaches a model, a caption or a file (a query, a template, a class name) must be
    UTF-8, or a Latin-1 terminal's byte crashes the run halfway or lands in a caption as
    `\\xff`; a path must not be empty, or Path("") is the current folder (an unset
    shell variable, `clipdata search "$DIR" cat`, would search wherever the user stands); an
    output path must not be `-`, which many tools read as stdout (`--jsonl - | jq`) and which
    would be a file of that name here."""
    def process(ctx: click.Context, value):
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if not isinstance(v, str):
                continue
            if kind == "text" and not is_utf8(v):
                raise typer.BadParameter(f"{quoted(v)} is not UTF-8 text: type it in UTF-8 "
                                         f"(or set a UTF-8 locale: LANG=C.UTF-8)", ctx=ctx, param=param)
            if kind == "path" and v == "":
                raise typer.BadParameter("an empty path: give a file or folder ('.' for this one)",
                                         ctx=ctx, param=param)
            if kind == "path" and v == "-" and param.name in _WRITTEN:
                raise typer.BadParameter("'-' is not standard output here: it would be a file named '-'; "
                                         "give a file name (./- if that is what you mean)", ctx=ctx, param=param)
        return process_value(ctx, value)
    return process


def command(group: click.Command | None = None) -> click.Command:
    """The click command behind `clipdata`, each text parameter held to UTF-8 and each path
    parameter to a non-empty path (_checked)."""
    group = group or typer.main.get_command(app)
    for p in group.params:
        kind = _kind(p)
        if kind == "path" or (kind == "text" and p.name not in _NAMES_OF_FILES):
            p.process_value = _checked(p, kind, p.process_value)
        if kind == "path":  # an unreadable input is the command's to say (exit 1, the file and why),
            for holder in (getattr(getattr(p, "type_descriptor", None), "parameter_info", None), getattr(p, "type", None)):
                if hasattr(holder, "readable"):  # not typer's usage error (exit 2) before the command runs
                    holder.readable = False
    for sub in getattr(group, "commands", {}).values():
        command(sub)
    return group


_OUTPUT_ERRNOS = {getattr(errno, n) for n in ("EPIPE", "ENOSPC", "EBADF", "EIO", "EDQUOT", "EFBIG", "EINVAL")
                  if hasattr(errno, n)}  # EDQUOT is not on every platform


def _output_failed(e: OutputFailed) -> int:
    if e.stream == "stdout" and e.errno == errno.EPIPE:  # `| head`: the reader has what it wanted
        return 141  # 128 + SIGPIPE, as a tool killed by SIGPIPE reports it
    _say_err(styled(("error:", "bold red"), " ", str(e)))
    return 1


def _exit_code(run) -> int:
    """Run `run()` (click in non-standalone mode) and turn what ends it into an exit code and at
    most one line. Kept here, not in click: a Ctrl-C or SIGTERM at any point (an import, the
    table at the end) says 'interrupted' once; a closed pipe is silent; a full disk is one line."""
    try:
        try:
            with sigterm_as_interrupt():
                code = run()
        finally:
            sys.stdout and _Shown("stdout").flush()  # here, not at exit, where Python would print a traceback
    except OSError as e:  # click's own echo (--help, usage) writes past _Shown
        if e.filename is not None or e.errno not in _OUTPUT_ERRNOS:
            _say_err(styled(("error:", "bold red"), " ", _one_line(f"{e.filename}: {e.strerror}" if e.filename else e)))
            return 1
        return _output_failed(OutputFailed("stdout", e))
    except OutputFailed as e:
        return _output_failed(e)
    except typer.Exit as e:  # typer turns KeyboardInterrupt into Exit(130) where it catches it first
        code = e.exit_code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except (click.exceptions.Abort, getattr(typer, "Abort", click.exceptions.Abort)):
        _say_err("Aborted!")
        return 1
    except (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException)) as e:
        ctx = getattr(e, "ctx", None)
        if e.exit_code == 2 and ctx is not None and "NoArgsIsHelp" not in type(e).__name__:
            # a usage error is one line like every other diagnostic, not click's usage block
            _say_err(styled(("error:", "bold red"), " ", _one_line(e.format_message()).rstrip("."),
                            f" — see '{ctx.command_path} --help'"))
            return 2
        try:
            e.show()
        except OSError:
            pass
        return e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        if by_interrupt(e):
            _interrupted()
            return 130
        try:
            last_resort(e)
        except _CONTROL as done:
            return done.exit_code
    code = code if isinstance(code, int) else 0
    if code == 130:
        _interrupted()
    return code


def _quiet_streams() -> None:
    """Point stdout/stderr that failed at /dev/null, so Python's own flush at exit stays quiet."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            except OSError:
                pass


def _hold_standard_descriptors() -> None:
    """Started with stdin, stdout or stderr closed (`<&- >&- 2>&-`, some daemons), the next file
    opened takes descriptor 0, 1 or 2: a crop or the manifest would then receive what a C
    library writes to stderr, and a worker process (spawned with those descriptors) its whole
    output. /dev/null holds each closed one first; sys.stdout stays None, so output that was
    asked for still fails in one line."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                opened = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if opened != fd:  # a lower one was free after all: never keep a stray descriptor
                os.dup2(opened, fd)
                os.close(opened)


def main() -> None:
    """The `clipdata` command: whatever ends a run ends it in one line and the exit code
    (0 ok, 1 failure, 2 usage, 130 interrupted, 141 output pipe closed), never a traceback."""
    _hold_standard_descriptors()
    for stream in (sys.stdout, sys.stderr):
        # an ASCII or Latin-1 terminal (PYTHONIOENCODING, a legacy locale) shows a class `café`
        # as `caf\xe9`, as Python's own stderr does, instead of failing on the first accent
        if stream is not None and getattr(stream, "errors", "") == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    code = _exit_code(lambda: command().main(prog_name="clipdata", standalone_mode=False))
    _quiet_streams()
    raise SystemExit(code)
