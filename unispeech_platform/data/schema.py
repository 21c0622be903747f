"""The corpus layout (docs/architecture.md#corpus-layout): one Arrow schema, hive partitions, and a tree scan that fails loudly.

Every reader (training, evaluation, validation) calls :func:`scan_corpus` first: it reads only Parquet
footers, so a stray file or a missing column is reported with its path before any Ray job starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from unispeech_core.tokenizer import VOCAB_NAME
from unispeech_platform.runtime.errors import JobSetupError

TARGET_SAMPLE_RATE = 16_000
MIN_SAMPLES = 400  # the model's conv receptive field at 16 kHz: anything shorter yields no frame
SPLITS = ("train", "dev", "test")
VOCAB_FILE = VOCAB_NAME  # the corpus vocabulary has the name a model directory gives it
SUMMARY_FILE = "summary.json"

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
_PART_DIR = re.compile(r"^(lang|split)=(.+)$")


class CorpusError(JobSetupError, ValueError):
    """The corpus tree or a file in it does not follow the layout, or cannot be read; the message names the file.
    A setup error (exit 3 in a job's CLI) that is also a ValueError for callers that catch that."""


@dataclass(frozen=True)
class PartFile:
    """One Parquet part with the partition values taken from its directory names."""

    path: Path
    lang: str
    split: str
    num_rows: int


def partition_dir(root: str | Path, lang: str, split: str) -> Path:
    return Path(root) / f"lang={lang}" / f"split={split}"


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Accept the large_/view variants writers other than ours produce (e.g. pandas, polars)."""
    if actual == expected:
        return True
    groups = [
        {pa.string(), pa.large_string(), pa.string_view()},
        {pa.binary(), pa.large_binary(), pa.binary_view()},
    ]
    return any(actual in g and expected in g for g in groups)


def check_file_schema(path: str | Path) -> int:
    """Raise CorpusError naming the file and the column if ``path`` lacks a column or has a wrong type.

    Returns the row count from the footer.
    """
    path = Path(path)
    try:
        meta = pq.read_metadata(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise CorpusError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    schema = meta.schema.to_arrow_schema()
    for field in SCHEMA:
        if field.name not in schema.names:
            raise CorpusError(
                f"{path}: missing column {field.name!r} (expected columns: {', '.join(COLUMNS)})"
            )
        actual = schema.field(field.name).type
        if not _compatible(actual, field.type):
            raise CorpusError(f"{path}: column {field.name!r} has type {actual}, expected {field.type}")
    return meta.num_rows


def _is_hidden(name: str) -> bool:
    # pyarrow and Ray skip these too; our writer uses a hidden temp name until the part is complete.
    return name.startswith((".", "_"))


def scan_corpus(root: str | Path, *, check_schema: bool = True) -> list[PartFile]:
    """List every part under ``root`` (sorted), checking layout and (optionally) each file's schema.

    Files at the root are metadata (vocab.json, summary.json, reports) and are allowed. Below it, only
    ``lang=<code>/split=<name>/*.parquet`` may exist; anything else raises CorpusError naming the path.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus directory does not exist")
    parts: list[PartFile] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(_is_hidden(p) for p in rel.parts):
            continue
        depth = len(rel.parts)
        if depth == 1 and path.is_file():
            continue
        keys = [_PART_DIR.match(p) for p in rel.parts[:2]]
        expected = ["lang", "split"][: min(depth, 2)]
        if [k.group(1) if k else None for k in keys] != expected:
            raise CorpusError(f"{path}: not in the corpus layout lang=<code>/split=<name>/part-NNNNN.parquet")
        if depth <= 2:
            if path.is_file():
                raise CorpusError(f"{path}: unexpected file outside a split directory")
            continue
        if depth > 3 or path.is_dir():
            raise CorpusError(f"{path}: unexpected nesting below a split directory")
        if path.suffix != ".parquet":
            raise CorpusError(
                f"{path}: not a Parquet file (only *.parquet parts belong in a split directory)"
            )
        lang, split = keys[0].group(2), keys[1].group(2)
        num_rows = check_file_schema(path) if check_schema else -1
        parts.append(PartFile(path=path, lang=lang, split=split, num_rows=num_rows))
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
