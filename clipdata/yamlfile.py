"""Reading a YAML file safely (never executing anything it names), with errors that give
the file, line and column."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ClipdataError


def load_yaml(path: str | Path, error: type[ClipdataError]) -> object:
    """The parsed document; any problem raises `error` naming the file and place."""
    file = str(path)
    try:
        return yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error("file not found", file=file) from None
    except UnicodeDecodeError as e:
        raise error(f"not UTF-8 text (byte {e.start})", file=file) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise error(f"not valid YAML: {getattr(e, 'problem', e)}", file=file, where=where) from None
