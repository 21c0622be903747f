"""The corpus layout (docs/architecture.md#corpus-layout): one Arrow schema, hive partitions, and a tree scan that fails loudly.

Every reader (training, evaluation, validation) calls :func:`scan_corpus` first: it reads only Parquet
footers, so a stray file or a column that cannot be used is reported with its path before any Ray job starts.
Reading is lenient where it is safe (docs/data.md#what-a-part-may-look-like): Parquet written by pandas,
polars or pyarrow with other integer widths, large/view/dictionary string and binary types, integer ids or
speakers, or without the optional columns is read through :data:`READ_SCHEMA`, which casts on read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from unispeech_core.audio import MIN_SAMPLES, TARGET_SAMPLE_RATE  # noqa: F401 (the corpus constants, re-exported)
from unispeech_core.tokenizer import VOCAB_NAME
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.output_paths import component_problem

from .storage import Location, locate

SPLITS = ("train", "dev", "test")
VOCAB_FILE = VOCAB_NAME  # the corpus vocabulary has the name a model directory gives it
SUMMARY_FILE = "summary.json"
REPORT_FILE = "import_report.tsv"
"""The importers' list of the rows they did not import, at the corpus root."""

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("audio", pa.binary()),  # encoded file bytes: FLAC preferred; WAV/OGG/MP3 accepted
        pa.field("sample_rate", pa.int32()),
        pa.field("num_samples", pa.int64()),  # per channel, for length filters without decoding
        pa.field("speaker", pa.string()),
        pa.field("text", pa.string()),  # nullable transcript
        pa.field("phones", pa.string()),  # space-separated phone tokens; null = unlabeled
    ]
)
COLUMNS = tuple(SCHEMA.names)
PARTITION_COLUMNS = ("lang", "split")
OPTIONAL_COLUMNS = ("num_samples", "speaker", "text")
"""Columns a part may lack: read as null (num_samples then comes from the audio file's header when needed)."""
READ_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in SCHEMA] + [pa.field(c, pa.string()) for c in PARTITION_COLUMNS]
)
"""What every reader asks pyarrow for: each part is cast to it on read and missing columns come back null."""
_PART_DIR = re.compile(r"^(lang|split)=(.+)$")


class CorpusError(JobSetupError, ValueError):
    """The corpus tree or a file in it does not follow the layout, or cannot be read; the message names the file.
    A setup error (exit 3 in a job's CLI) that is also a ValueError for callers that catch that."""


@dataclass(frozen=True)
class PartFile:
    """One Parquet part with the partition values taken from its directory names.

    ``path`` is inside ``fs``: a ``Path`` for local corpora, a ``PurePosixPath`` (``bucket/key``) on object stores.
    """

    path: PurePosixPath
    lang: str
    split: str
    num_rows: int
    fs: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem, compare=False, repr=False)

    @property
    def location(self) -> Location:
        return Location(self.fs, str(self.path))

    def open(self) -> pq.ParquetFile:
        """The part's footer (and pages on demand), through its filesystem."""
        return pq.ParquetFile(str(self.path), filesystem=self.fs)


def partition_dir(root: str | Path, lang: str, split: str) -> Path:
    """``root/lang=<lang>/split=<split>``; CorpusError when a value is not one safe path component (it would name
    a directory outside the partition, docs/data.md#where-a-job-writes)."""
    for what, value in (("language", lang), ("split", split)):
        problem = component_problem(value)
        if problem:
            raise CorpusError(f"{root}: {what} {problem}")
    return Path(root) / f"lang={lang}" / f"split={split}"


_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_BINARIES = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_fixed_size_binary)
_KINDS = {  # column -> (accepted type tests, what to say when the type is not one of them)
    "id": ((*_STRINGS, pa.types.is_integer), "a string (or integer) utterance id"),
    "audio": (_BINARIES, "binary: the bytes of an encoded audio file (FLAC, WAV, OGG, MP3)"),
    "sample_rate": ((pa.types.is_integer,), "an integer sample rate in Hz"),
    "num_samples": ((pa.types.is_integer,), "an integer count of samples per channel"),
    "speaker": ((*_STRINGS, pa.types.is_integer), "a string (or integer) speaker id"),
    "text": (_STRINGS, "a string transcript"),
    "phones": (_STRINGS, "a string of phone tokens separated by spaces"),
}


def column_problem(name: str, actual: pa.DataType) -> str | None:
    """Why a column of type ``actual`` cannot be read as ``name`` (None: it can, cast on read).

    Accepted: what pandas, polars and pyarrow write for the same data (any integer width, large/view
    strings and binaries, dictionary-encoded strings, integer ids and speakers). Not accepted: whatever would
    need a guess, such as decoded samples (a list of floats) for ``audio`` or integers for ``phones``.
    """
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    tests, expected = _KINDS[name]
    if any(test(actual) for test in tests):
        return None
    return f"column {name!r} has type {actual}; expected {expected}"


def check_file_schema(path: str | Path, fs: pafs.FileSystem | None = None, *, shown: str | None = None) -> int:
    """Raise CorpusError naming the file and the column if ``path`` lacks a required column or has a column of
    a kind that cannot be read (see :func:`column_problem`). Reads only the footer; returns its row count."""
    shown = shown or str(path)
    try:
        meta = pq.read_metadata(str(path), filesystem=fs)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise CorpusError(f"{shown}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    schema = meta.schema.to_arrow_schema()
    for name in COLUMNS:
        if name not in schema.names:
            if name in OPTIONAL_COLUMNS:
                continue
            required = ", ".join(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
            raise CorpusError(
                f"{shown}: missing column {name!r} (required: {required}; optional: {', '.join(OPTIONAL_COLUMNS)})"
            )
        problem = column_problem(name, schema.field(name).type)
        if problem:
            raise CorpusError(f"{shown}: {problem}")
    return meta.num_rows


def _is_hidden(name: str) -> bool:
    # pyarrow and Ray skip these too; our writer uses a hidden temp name until the part is complete.
    return name.startswith((".", "_"))


def scan_corpus(root: str | Path, *, check_schema: bool = True) -> list[PartFile]:
    """List every part under ``root`` (a local path or a URI; sorted), checking layout and (optionally) each
    file's footer schema.

    Files at the root are metadata (vocab.json, summary.json, reports) and are allowed. Below it, only
    ``lang=<code>/split=<name>/*.parquet`` may exist; anything else raises CorpusError naming the path.
    On object stores this is one recursive listing plus one footer read per part.
    """
    try:
        loc = locate(root)
        infos = loc.walk() if loc.is_dir() else None
    except (OSError, ValueError) as e:  # unknown scheme, unreachable endpoint, missing credentials
        raise CorpusError(f"{root}: cannot list the corpus ({' '.join(str(e).split())})") from None
    if infos is None:
        raise CorpusError(f"{root}: corpus directory does not exist")
    parts: list[PartFile] = []
    for info in infos:
        rel = loc.relative(info.path)
        shown = str(loc.join(*rel))
        if any(_is_hidden(p) for p in rel):
            continue
        depth, is_file = len(rel), info.type == pafs.FileType.File
        if depth == 1 and is_file:
            continue
        keys = [_PART_DIR.match(p) for p in rel[:2]]
        expected = ["lang", "split"][: min(depth, 2)]
        if [k.group(1) if k else None for k in keys] != expected:
            raise CorpusError(f"{shown}: not in the corpus layout lang=<code>/split=<name>/part-NNNNN.parquet")
        if depth <= 2:
            if is_file:
                raise CorpusError(f"{shown}: unexpected file outside a split directory")
            continue
        if depth > 3 or not is_file:
            raise CorpusError(f"{shown}: unexpected nesting below a split directory")
        if not info.path.endswith(".parquet"):
            raise CorpusError(
                f"{shown}: not a Parquet file (only *.parquet parts belong in a split directory)"
            )
        lang, split = keys[0].group(2), keys[1].group(2)
        num_rows = check_file_schema(info.path, loc.fs, shown=shown) if check_schema else -1
        path = Path(info.path) if loc.is_local else PurePosixPath(info.path)
        parts.append(PartFile(path=path, lang=lang, split=split, num_rows=num_rows, fs=loc.fs))
    if not parts:
        raise CorpusError(f"{root}: no lang=<code>/split=<name>/*.parquet parts found")
    return parts


def select_parts(
    parts: list[PartFile], langs: list[str] | None = None, splits: list[str] | None = None
) -> list[PartFile]:
    """The partition filter: parts of the requested languages and splits (None = all)."""
    chosen = [p for p in parts if (not langs or p.lang in langs) and (not splits or p.split in splits)]
    if not chosen:
        have = sorted({(p.lang, p.split) for p in parts})
        raise CorpusError(f"no parts for langs={langs} splits={splits}; the corpus has {have}")
    return chosen
