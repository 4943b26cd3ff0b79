"""Reading a YAML file safely, with errors that give the file, line and column.

Safe means three things. Nothing a file names is executed (PyYAML's safe tags only).
Aliases (`*name`) are refused: a 460-byte file of nested aliases expands to gigabytes once
anything walks it, and no dataset or ontology file needs them. And the fields that hold
names can be read exactly as written: YAML 1.1 turns a class called `yes`, `no`, `on`,
`010` or `~` into True, False, 8 or None, so those fields are given as `as_written` paths
and every scalar under them stays the string in the file.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ClipdataError
from .textfiles import decode, read_bytes

MAX_YAML_BYTES = 64 << 20  # option and dataset YAML files are kilobytes

KEYS = object()  # in an `as_written` path: the keys of the mapping there (e.g. class names)
ANY = "*"  # in an `as_written` path: any key at that level

Path_ = tuple[object, ...]

_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    def __init__(self, message: str, node_or_mark: object) -> None:
        super().__init__(message)
        self.mark = getattr(node_or_mark, "start_mark", node_or_mark)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses aliases before anything is expanded."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(AliasEvent):
            raise _Refused("YAML aliases (*name) are not accepted; write the value out", self.peek_event())
        return super().compose_node(parent, index)


def _matches(pattern: Path_, path: Path_) -> bool:
    return len(path) >= len(pattern) and all(p == ANY and q is not KEYS or p is q or p == q
                                             for p, q in zip(pattern, path))


class _Builder:
    def __init__(self, loader: _Loader, as_written: Iterable[Path_]) -> None:
        self.loader = loader
        self.patterns = [tuple(p) for p in as_written]

    def written(self, path: Path_) -> bool:
        return any(_matches(p, path) for p in self.patterns)

    def _scalar(self, node: ScalarNode) -> object:
        try:
            return self.loader.construct_object(node, deep=True)
        except ValueError:  # int() refuses more than 4,300 digits; a float just becomes inf
            if len(node.value) <= sys.get_int_max_str_digits():
                raise
            raise _Refused(f"a number of {len(node.value):,} digits; no dataset file needs one", node) from None

    def build(self, node: Node, path: Path_) -> object:
        raw = self.written(path)
        if isinstance(node, ScalarNode):
            return node.value if raw else self._scalar(node)
        if isinstance(node, SequenceNode) and (raw or node.tag == _SEQ):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode) and (raw or node.tag == _MAP):
            out: dict = {}
            raw_keys = raw or self.written(path + (KEYS,))
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    raise _Refused("merge keys (<<) are not accepted; write the keys out", key_node)
                if not isinstance(key_node, ScalarNode):
                    raise _Refused("a mapping key must be plain text, not a list or mapping", key_node)
                key = key_node.value if raw_keys else self._scalar(key_node)
                if key in out:
                    raise _Refused(f"the key {key_node.value!r} appears twice in one mapping", key_node)
                out[key] = self.build(value_node, path + (key_node.value,))
            return out
        return self.loader.construct_object(node, deep=True)  # other safe tags, or a refusal


def _where(mark: object) -> str | None:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None


def parse_yaml(text: str, file: str, error: type[ClipdataError], as_written: Iterable[Path_] = ()) -> object:
    """The parsed document of `text` (see `load_yaml`)."""
    loader = None
    try:
        loader = _Loader(text)  # its reader already refuses unprintable characters
        node = loader.get_single_node()
        return None if node is None else _Builder(loader, as_written).build(node, ())
    except _Refused as e:
        raise error(str(e), file=file, where=_where(e.mark)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if isinstance(e, yaml.reader.ReaderError):
            raise error(f"not valid YAML: character 0x{e.character:x} is not allowed", file=file,
                        where=f"character {e.position + 1}") from None
        raise error(f"not valid YAML: {getattr(e, 'problem', None) or e}", file=file, where=_where(mark)) from None
    except RecursionError:
        raise error("YAML nested too deep to read; dataset files nest a few levels", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path, error: type[ClipdataError], as_written: Iterable[Path_] = ()) -> object:
    """The parsed document; any problem raises `error` naming the file and place.

    `as_written` lists paths (keys from the top, `ANY` for any key, `KEYS` for the keys of a
    mapping) whose scalars are returned as the exact text written: `[("names",)]` keeps
    `names: [yes, 010]` as `["yes", "010"]` and `names: {0: a}` keyed by `"0"`."""
    file = str(path)
    return parse_yaml(decode(read_bytes(path, error, MAX_YAML_BYTES), file, error), file, error, as_written)
