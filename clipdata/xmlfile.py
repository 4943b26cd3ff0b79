"""Reading XML safely, with errors that give the file, line and column.

Safe means that no entity is ever expanded or fetched: a document that declares entities
(the "billion laughs" bomb, an external `SYSTEM "file:///etc/passwd"`) is refused with one
clear line, by defusedxml's parser, before any expansion. Annotation files (Pascal VOC,
CVAT) never need entities. Everything else is Python's own ElementTree.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from .errors import ClipdataError, SourceError

REFUSED = "this XML declares entities: refused, never expanded or fetched (a bomb or an external file)"
HINT = "annotation files need no entities; export the file again from its tool"


def _malformed(e: ET.ParseError, file: str | Path, error: type[ClipdataError]) -> ClipdataError:
    line, col = e.position
    return error(f"malformed XML: {e}", file=file, where=f"line {line}, column {col + 1}")


def parse(data: bytes, file: str | Path, error: type[ClipdataError] = SourceError) -> ET.Element:
    """The root element of an XML document held in memory."""
    try:
        return SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except ET.ParseError as e:
        raise _malformed(e, file, error) from None
    except DefusedXmlException as e:
        raise error(f"{REFUSED}: {type(e).__name__}", file=file, hint=HINT) from None


def iterparse(path: Path, error: type[ClipdataError] = SourceError) -> Iterator[tuple[str, ET.Element]]:
    """("start"/"end", element) events of an XML file read incrementally: a caller clears
    what it has used, so memory holds one record at a time, not the file."""
    try:
        with open(path, "rb") as f:
            yield from SafeET.iterparse(f, events=("start", "end"), forbid_dtd=False, forbid_entities=True,
                                        forbid_external=True)
    except ET.ParseError as e:
        raise _malformed(e, path, error) from None
    except DefusedXmlException as e:
        raise error(f"{REFUSED}: {type(e).__name__}", file=path, hint=HINT) from None
