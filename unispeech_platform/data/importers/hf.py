"""Hugging Face ``datasets`` Parquet (the Hub layout of LibriSpeech, MLS, Common Voice, FLEURS...).

``audio`` is ``struct<bytes: binary, path: string>`` where ``bytes`` is an encoded file (FLAC, MP3, WAV...);
the file's own header gives its rate. The ``huggingface`` schema metadata (``info.features``) names the Audio
column and its ``sampling_rate`` (the rate ``datasets`` would resample to; shown in the summary). A row with
null bytes and a ``path`` is read from that path, relative to the Parquet file. The split comes from the file
name (``train.clean.100-00000-of-00014.parquet``) or its directory (``validation/0000.parquet``).

Every file's footer is read before the first row is converted: a file whose footer cannot be read (a download cut
short) stops the import with one line naming it (exit 3), nothing written, since without its footer neither its
rows nor how many were lost are known. A row group whose pages cannot be read fails its rows (one report line
naming the file, the group and its rows: ``unreadable_row_group``) and the other groups and files are imported
(data/row_groups.py, docs/data.md#unreadable-row-groups).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..row_groups import UNREADABLE_ROW_GROUP, BadGroup, first_rows, one_line, read_groups
from .common import ImportInputError, Record, map_split, pick_column

TEXT_COLUMNS = ("text", "transcript", "sentence", "transcription", "normalized_text", "raw_transcription")
SPEAKER_COLUMNS = ("speaker_id", "client_id", "speaker")
ID_COLUMNS = ("id", "utt_id", "key", "segment_id")
LANG_COLUMNS = ("language", "lang", "locale")
PHONE_COLUMNS = ("phones", "phonemes", "phonetic")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
_BATCH_ROWS = 32  # rows turned into records at a time (a row group is read whole: data/row_groups.py)


@dataclass(frozen=True)
class Columns:
    audio: str
    text: str | None
    speaker: str | None
    id: str | None
    lang: str | None
    phones: str | None


def parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*.parquet") if not any(s.startswith((".", "_")) for s in p.parts))
    if not files:
        raise ImportInputError(f"{path}: no *.parquet files below it")
    return files


def split_of(path: Path, root: Path) -> str:
    """``train-00000-of-00003.parquet`` -> train; ``validation/0000.parquet`` -> dev; else train."""
    stem = _SHARD.sub("", path.stem)
    if not re.fullmatch(r"\d+|data|part-?\d*", stem):
        return map_split(stem)
    if path.parent != root and path.parent.name not in ("data", root.name):
        return map_split(path.parent.name)
    return "train"


def features(schema: pa.Schema) -> dict[str, Any]:
    """The ``datasets`` feature dict from the schema metadata ({} when a plain Parquet)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def sampling_rate(schema: pa.Schema, audio_column: str) -> int | None:
    feat = features(schema).get(audio_column) or {}
    return feat.get("sampling_rate") if isinstance(feat, dict) else None


def resolve_columns(path: Path, schema: pa.Schema, overrides: dict[str, str | None], *, need_lang: bool) -> Columns:
    names = list(schema.names)
    audio_default = tuple(n for n, f in features(schema).items() if isinstance(f, dict) and f.get("_type") == "Audio")
    audio = pick_column(names, overrides.get("audio"), audio_default + ("audio",), "audio", path)
    if audio is None:
        raise ImportInputError(f"{path}: no audio column (columns: {', '.join(names)}); pass --audio-column")
    t = schema.field(audio).type
    ok = pa.types.is_struct(t) and t.get_field_index("bytes") >= 0
    if not (ok or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise ImportInputError(f"{path}: column {audio!r} has type {t}, expected struct<bytes, path> or binary")
    cols = Columns(
        audio=audio,
        text=pick_column(names, overrides.get("text"), TEXT_COLUMNS, "text", path),
        speaker=pick_column(names, overrides.get("speaker"), SPEAKER_COLUMNS, "speaker", path),
        id=pick_column(names, overrides.get("id"), ID_COLUMNS, "id", path),
        lang=pick_column(names, overrides.get("lang"), LANG_COLUMNS if need_lang else (), "language", path),
        phones=pick_column(names, overrides.get("phones"), PHONE_COLUMNS, "phones", path),
    )
    if need_lang and cols.lang is None:
        raise ImportInputError(f"{path}: no language column ({'/'.join(LANG_COLUMNS)}); pass --lang")
    return cols


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def footer_schema(path: Path) -> pa.Schema:
    """The file's schema from its Parquet footer (with the ``huggingface`` metadata); ImportInputError naming the
    file when the footer cannot be read (a cut download)."""
    try:
        return pq.read_schema(path)
    except MemoryError:
        raise
    except Exception as e:  # pyarrow: ArrowInvalid "Parquet magic bytes not found", OSError...
        raise ImportInputError(f"{path}: not a readable Parquet file ({one_line(e)}); a download or copy cut "
                               "short? Fetch it again: nothing was imported") from None


def _row_record(row: dict[str, Any], cols: Columns, path: Path, index: int, lang: str | None, split: str) -> Record:
    audio = row[cols.audio]
    data, rel = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (audio, None)
    file = None
    if data is None and rel:
        file = str(Path(rel) if Path(rel).is_absolute() else path.parent / rel)
    rid = _str(row.get(cols.id)) if cols.id else None
    return Record(
        id=rid or f"{path.stem}-{index:07d}",
        split=split,
        lang=lang or _str(row.get(cols.lang)),
        where=f"{path}:{index}",
        audio=data,
        path=file,
        speaker=_str(row.get(cols.speaker)) if cols.speaker else None,
        text=_str(row.get(cols.text)) if cols.text else None,
        phones=_str(row.get(cols.phones)) if cols.phones else None,
    )


def _read_group(pf: pq.ParquetFile, columns: list[str], group: int) -> pa.Table:
    return pf.read_row_group(group, columns=columns)


def _bad_group_record(bad: BadGroup, path: Path, lang: str | None, split: str) -> Record:
    """One record that fails all rows of an unreadable row group (``rows``), naming the file and the group."""
    return Record(id=bad.label(), split=split, lang=lang or "", where=f"{path}#row_group={bad.group}",
                  problem=(UNREADABLE_ROW_GROUP, bad.describe()), rows=bad.rows)


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    """Every row of every Parquet file under ``input_path``, read one row group at a time and yielded a few rows
    at a time. All footers and columns are checked before the first record."""
    root = Path(input_path)
    files = parquet_files(root)
    base = root if root.is_dir() else root.parent
    plans = [(path, resolve_columns(path, footer_schema(path), overrides, need_lang=lang is None)) for path in files]
    for path, cols in plans:
        wanted = [c for c in dict.fromkeys(
            (cols.audio, cols.text, cols.speaker, cols.id, cols.lang, cols.phones)) if c]
        row_split = split or split_of(path, base)
        with pq.ParquetFile(path) as pf:
            starts = first_rows(pf.metadata)
            read = functools.partial(_read_group, pf, wanted)
            for g, got in read_groups(pf.metadata, str(path), read):
                if isinstance(got, BadGroup):
                    yield _bad_group_record(got, path, lang, row_split)
                    continue
                index = starts[g]
                for batch in got.to_batches(max_chunksize=_BATCH_ROWS):
                    for row in batch.to_pylist():
                        yield _row_record(row, cols, path, index, lang, row_split)
                        index += 1


def describe(input_path: str | Path) -> dict[str, Any]:
    """Per file: the Audio feature's declared sampling rate (for the summary)."""
    out = {}
    for path in parquet_files(Path(input_path)):
        schema = footer_schema(path)
        names = [n for n, f in features(schema).items() if isinstance(f, dict) and f.get("_type") == "Audio"]
        out[path.name] = {"audio_sampling_rate": sampling_rate(schema, names[0]) if names else None}
    return out
