"""The text files of a source (manifests, Kaldi tables, fairseq .tsv and label files, Common Voice TSVs) are
checked whole before the first row is imported: each must be a regular file and UTF-8.

Why up front rather than per row: a file in another encoding (a Latin-1 export from a spreadsheet) is wrong as a
whole, and its bytes are the transcripts, i.e. the labels; failing only the rows whose text happens to be
non-ASCII would import the others as if nothing were wrong. A decode error found halfway would also stop an
import that has already written parts. One line names the file, the line and the byte offset, exit 3. The check
streams the file (1 MiB at a time), so a manifest of any size costs one extra sequential read.
"""

from __future__ import annotations

import codecs
import csv
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .common import ImportInputError

_CHUNK = 1 << 20


def check_text_file(path: Path) -> None:
    """ImportInputError naming ``path`` unless it is a regular file of UTF-8 text (a FIFO or a device is never
    opened: reading it could block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ImportInputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise ImportInputError(f"{path}: not a regular file")
    decoder = codecs.getincrementaldecoder("utf-8")()  # strict
    consumed, lines = 0, 1  # bytes before the current chunk, 1 + newlines in them
    try:
        with path.open("rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                pending = len(decoder.getstate()[0])  # an incomplete sequence carried over from the last chunk
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as e:
                    at = consumed - pending + e.start
                    line = lines + e.object[: e.start].count(b"\n")
                    raise ImportInputError(
                        f"{path}: not UTF-8 at line {line} (byte {at}: 0x{e.object[e.start]:02x}); save it as UTF-8 "
                        "(e.g. `iconv -f LATIN1 -t UTF-8` for a Latin-1 file)") from None
                if not chunk:
                    return
                consumed += len(chunk)
                lines += chunk.count(b"\n")
    except OSError as e:
        raise ImportInputError(f"{path}: cannot read ({e.strerror or e})") from None


def csv_rows(path: Path, reader: csv.DictReader) -> Iterator[dict[str, str]]:
    """The rows of ``reader`` (reading ``path``), whose parse errors (a field over the csv module's size limit, a
    stray quote) name the file and line instead of escaping as a traceback."""
    try:
        yield from reader
    except csv.Error as e:
        raise ImportInputError(f"{path}:{reader.line_num}: cannot parse ({e})") from None
