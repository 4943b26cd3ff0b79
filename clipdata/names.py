"""Names are bytes: the one rule for file and folder names that are not UTF-8
(formats/runs.md, "Names that are not UTF-8").

A file system hands out names as bytes. Unpacking a Windows archive on Linux gives `caf\\xe9`
(cp1252), which Python spells with a lone surrogate, `'caf\\udce9'` (PEP 383): the file opens
fine, but no UTF-8 text can hold that character, and every output clipdata writes is UTF-8
text that other tools read (JSON lines by Arrow, pandas and `datasets`, CSV by open_clip,
captions by tokenizers), tools that refuse such a character or stop on the whole file.

The rule, decided here and used everywhere:
- **Left out, with a reason.** An item whose name clipdata would write down (an image, its
  class) that is not UTF-8 is skipped as `name_not_utf8`, counted like any skipped item
  (convert's ledger, the unreadable images of the commands that embed), with the command
  that renames such names. No output ever holds a name that is not UTF-8.
- **One spelling wherever it is shown**: the bytes as `\\xNN` — `caf\\xe9`, bash's `$'caf\\xe9'`
  spelling, so a shown name can be typed back (`--rename $'caf\\xe9=café'`). Messages, skip
  records, JSON and CSV all use it; a path the user typed that holds such bytes (SOURCE, OUT)
  is written that way too, never as a character that would break the file.
"""
from __future__ import annotations

import codecs
import json
import re

NOT_UTF8 = "name_not_utf8"
RENAME_HINT = ("rename it in UTF-8 (a whole tree from a Windows archive: "
               "convmv -f cp1252 -t utf-8 -r --notest FOLDER)")


def _shown_chars(chars: str) -> str:
    """A surrogate that stands for a byte (U+DC80..U+DCFF) as `\\xNN`, any other as `\\uXXXX`."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                   for c in chars)


def _shown_handler(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeEncodeError):
        raise e
    return _shown_chars(e.object[e.start:e.end]), e.end


SHOWN = "clipdata-shown"  # an encoding error handler: `text.encode("utf-8", SHOWN)` never fails
codecs.register_error(SHOWN, _shown_handler)

_SURROGATES = re.compile("[\ud800-\udfff]+")
_REPR_ESCAPE = re.compile(r"\\udc([89a-f][0-9a-f])")


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8: it holds no lone surrogate (no undecodable byte)."""
    return _SURROGATES.search(text) is None


def shown(text: str) -> str:
    """`text` with each undecodable byte spelled `\\xNN`: always UTF-8, for any output."""
    return _SURROGATES.sub(lambda m: _shown_chars(m.group()), text)


def quoted(text: str) -> str:
    """repr() of a name, with its undecodable bytes spelled `\\xNN` (repr says `\\udcNN`)."""
    return _REPR_ESCAPE.sub(r"\\x\1", repr(text))


def message(text: str) -> str:
    """A message ready to print: names inside it, raw or repr()'d, spelled `\\xNN`."""
    return _REPR_ESCAPE.sub(r"\\x\1", shown(text))


def dumps(obj: object, **kwargs) -> str:
    """json.dumps with non-ASCII kept, and any undecodable byte in a string spelled `\\xNN`
    (as the JSON text `\\\\xNN`): valid JSON that every reader takes, whatever the names."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _SURROGATES.sub(lambda m: _shown_chars(m.group()).replace("\\", "\\\\"), text)


def utf8(text: str) -> bytes:
    """Text as UTF-8 bytes; an undecodable byte is spelled `\\xNN`, never an error."""
    return text.encode("utf-8", SHOWN)


def problem(name: str, what: str = "the name") -> str | None:
    """Why `name` cannot be written down (None when it can): the detail of a `name_not_utf8` skip."""
    if is_utf8(name):
        return None
    return f"{what} {quoted(name)} is not UTF-8: {RENAME_HINT}"
