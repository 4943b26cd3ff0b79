"""Reading the text files of a dataset (lists, names files, JSON) so that any problem is one
clear line naming the file and the place: not UTF-8, not a regular file, nested too deep.

Text is UTF-8; a leading byte-order mark (Excel's "CSV UTF-8", Notepad) is dropped, never
made part of the first line. Lines are split at "\\n" only (a trailing "\\r" is removed), so
a name holding another line break (U+2028, form feed) stays whole and is refused later by
the name check instead of silently becoming two names.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
from pathlib import Path

from .errors import ClipdataError, SourceError

# A text file larger than this is refused rather than read whole (a names file or an image
# list is kilobytes; COCO files, which can be larger, are read by their own reader).
MAX_TEXT_BYTES = 1 << 30

_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def check_regular(path: str | Path, error: type[ClipdataError] = SourceError) -> os.stat_result:
    """The file's stat, refusing before any open what is not a regular file: a FIFO or a
    device would block or never end, a folder is no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error("file not found", file=path) from None
    except NotADirectoryError:
        raise error("file not found (a part of the path is not a folder)", file=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise error("is a folder, not a file", file=path)
    if not stat.S_ISREG(st.st_mode):
        raise error("is not a regular file (a pipe, socket or device)", file=path,
                    hint="pass the file itself, not a special file")
    return st


def read_bytes(path: str | Path, error: type[ClipdataError] = SourceError, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The file's bytes, after `check_regular`; a file over `limit` bytes is refused."""
    st = check_regular(path, error)
    if st.st_size > limit:
        raise error(f"is {st.st_size} bytes, more than the {limit} this file may hold", file=path)
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    begin = data.rfind(b"\n", 0, offset)
    if begin < 0 and data.startswith(codecs.BOM_UTF8):
        begin = len(codecs.BOM_UTF8) - 1  # the first line's columns count from after the mark
    column = offset - begin
    return f"line {line}, column {column}, byte {offset}: 0x{data[offset]:02x}"


def _encoding_hint(data: bytes, file: str | Path) -> str:
    name = Path(file).name
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return f"the file is {encoding} text; save it as UTF-8: iconv -f {encoding} -t UTF-8 {name} > {name}.utf8"
    return ("save it as UTF-8; a file from Excel or an old Windows tool is usually Windows-1252: "
            f"iconv -f CP1252 -t UTF-8 {name} > {name}.utf8")


def decode(data: bytes, file: str | Path, error: type[ClipdataError] = SourceError) -> str:
    """UTF-8 text without its byte-order mark; anything else raises `error` naming the
    first bad byte and how to convert the file."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise error(f"not UTF-8 text: it starts with a {name} byte-order mark", file=file,
                        hint=_encoding_hint(data, file))
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:  # its place in the file, byte-order mark included
        raise error("not UTF-8 text", file=file, where=_position(data, e.start + len(data) - len(body)),
                    hint=_encoding_hint(data, file)) from None


def read_text(path: str | Path, error: type[ClipdataError] = SourceError) -> str:
    """A text file as a str (see `decode`), never blocking on a special file."""
    return decode(read_bytes(path, error), path, error)


def split_lines(text: str) -> list[str]:
    """Lines split at "\\n" only, each without a trailing "\\r"; no empty last line for a
    final newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | Path, error: type[ClipdataError] = SourceError) -> list[str]:
    return split_lines(read_text(path, error))


# --- JSON --------------------------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nesting(text: str) -> tuple[int, str | None]:
    """(deepest nesting, where it first passes NESTING_NOTED levels); run only once the
    parser has given up, so its cost never touches a good file."""
    depth, deepest, place = 0, 0, None
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if depth == NESTING_NOTED + 1 and place is None:
                line = text.count("\n", 0, m.start()) + 1
                place = f"line {line}, column {m.start() - text.rfind(chr(10), 0, m.start())}"
        elif tok in "]}":
            depth -= 1
    return deepest, place


NESTING_NOTED = 100  # where a too-deep error points: real dataset files nest a few levels


def loads(text: str, file: str | Path, error: type[ClipdataError] = SourceError) -> object:
    """Parse JSON; malformed JSON names its line and column, and nesting too deep for the
    parser (a 100,000-deep array) or an integer too long for Python's int() (over 4,300
    digits) is one clear line, not a RecursionError or ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"malformed JSON: {e.msg}", file=file, where=f"line {e.lineno}, column {e.colno}") from None
    except ValueError as e:  # Python's int() refuses more than 4,300 digits (sys.int_info)
        if "integer string conversion" not in str(e):
            raise
        limit = sys.get_int_max_str_digits()
        m = re.search(r"\d{%d,}" % (limit + 1), text)
        where = None
        if m:
            start = m.start()
            line, column = text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
            where = f"line {line}, column {column}"
        raise error(f"a number of more than {limit:,} digits; no annotation needs one",
                    file=file, where=where, hint="this is not an annotation file; check what was exported") from None
    except RecursionError:
        deepest, place = _nesting(text)
        raise error(f"JSON nested {deepest} levels deep, too deep to parse; dataset files nest a few levels",
                    file=file, where=place, hint="this is not an annotation file; check what was exported") from None


_KEEP = bytes(range(256)).translate(None, b'"[]{}')  # every byte but quotes and brackets
_SAME_BRACKETS = bytes.maketrans(b"{}", b"[]")
STREAM_NESTING_LIMIT = 64  # a streamed file nested deeper is refused (COCO nests 5 levels)


def _marks(block: bytes) -> bytes:
    """The quotes and brackets of a block of JSON, escapes dropped."""
    if b"\\" in block:  # rare in dataset files; the scan for it is cheap
        block = block.replace(b"\\\\", b"").replace(b'\\"', b"")
    return block.translate(None, _KEEP)


def _deeper_than(marks: bytes, limit: int) -> bool:
    """Whether the brackets outside strings nest deeper than `limit`. When no string holds a
    bracket every run of quotes is even and dropping `""` pairs is exact (the first string
    holding one would leave an odd run); otherwise split at the quotes and keep what lies
    outside them. Then innermost bracket pairs are removed once per level."""
    skeleton = marks.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(marks.split(b'"')[0::2])
    skeleton = skeleton.translate(_SAME_BRACKETS)  # depth is all that counts: {} nests as [] does
    for _ in range(limit):  # each pass removes one level: the innermost pairs
        shorter = skeleton.replace(b"[]", b"")
        if len(shorter) == len(skeleton):
            return False
        skeleton = shorter
    return b"[]" in skeleton


def nested_deeper(data: bytes, limit: int) -> bool:
    """Whether JSON text nests deeper than `limit`, in linear time and without parsing (so
    before a parser that recurses is given it)."""
    return _deeper_than(_marks(data), limit)


def check_stream_nesting(path: str | Path, error: type[ClipdataError] = SourceError,
                         limit: int = STREAM_NESTING_LIMIT, chunk: int = 8 << 20) -> None:
    """Refuse a JSON file nested deeper than `limit` before a streaming parser sees it: an
    incremental parser carries the path to every value, so deep nesting costs it memory
    quadratic in the depth (8,000 levels: 165 MB; 100,000: out of memory).

    Linear and at C speed: escapes are dropped, everything but quotes and brackets is
    deleted, strings are cut out, then innermost bracket pairs are removed once per level
    up to `limit` levels. Memory holds only those quotes and brackets (5% of a COCO file;
    0.3 s for 130 MB, against 3 s for one of the three streamed passes)."""
    parts, carry = [], b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            block = carry + block
            cut = len(block.rstrip(b"\\"))  # trailing backslashes wait for the next block: never split an escape
            block, carry = block[:cut], block[cut:]
            parts.append(_marks(block))
    marks = b"".join(parts)
    del parts
    if _deeper_than(marks, limit):
        raise error(f"JSON nested more than {limit} levels deep, too deep to stream; dataset files nest a few levels",
                    file=path, hint="this is not an annotation file; check what was exported")


def load_json(path: str | Path, error: type[ClipdataError] = SourceError) -> object:
    """A JSON file, read as `read_text` reads text and parsed as `loads` parses."""
    return loads(read_text(path, error), path, error)
