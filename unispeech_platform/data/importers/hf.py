"""Hugging Face ``datasets`` Parquet (the Hub layout of LibriSpeech, MLS, Common Voice, FLEURS...).

``audio`` is ``struct<bytes: binary, path: string>`` where ``bytes`` is an encoded file (FLAC, MP3, WAV...);
the file's own header gives its rate. The ``huggingface`` schema metadata (``info.features``) names the Audio
column and its ``sampling_rate`` (the rate ``datasets`` would resample to; shown in the summary). A row with
null bytes and a ``path`` is read from that path, relative to the Parquet file. The split comes from the file
name (``train.clean.100-00000-of-00014.parquet``) or its directory (``validation/0000.parquet``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .common import ImportInputError, Record, map_split, pick_column

TEXT_COLUMNS = ("text", "transcript", "sentence", "transcription", "normalized_text", "raw_transcription")
SPEAKER_COLUMNS = ("speaker_id", "client_id", "speaker")
ID_COLUMNS = ("id", "utt_id", "key", "segment_id")
LANG_COLUMNS = ("language", "lang", "locale")
PHONE_COLUMNS = ("phones", "phonemes", "phonetic")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
_BATCH_ROWS = 32  # rows per Parquet read: a few MB of audio, whatever the file's row-group size


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


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    """Every row of every Parquet file under ``input_path``, streamed a few rows at a time."""
    root = Path(input_path)
    files = parquet_files(root)
    base = root if root.is_dir() else root.parent
    for path in files:
        pf = pq.ParquetFile(path)
        cols = resolve_columns(path, pf.schema_arrow, overrides, need_lang=lang is None)
        wanted = [c for c in dict.fromkeys(
            (cols.audio, cols.text, cols.speaker, cols.id, cols.lang, cols.phones)) if c]
        row_split = split or split_of(path, base)
        index = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=wanted):
            for row in batch.to_pylist():
                where = f"{path}:{index}"
                audio = row[cols.audio]
                data, rel = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (audio, None)
                file = None
                if data is None and rel:
                    file = str(Path(rel) if Path(rel).is_absolute() else path.parent / rel)
                rid = _str(row.get(cols.id)) if cols.id else None
                yield Record(
                    id=rid or f"{path.stem}-{index:07d}",
                    split=row_split,
                    lang=lang or _str(row.get(cols.lang)),
                    where=where,
                    audio=data,
                    path=file,
                    speaker=_str(row.get(cols.speaker)) if cols.speaker else None,
                    text=_str(row.get(cols.text)) if cols.text else None,
                    phones=_str(row.get(cols.phones)) if cols.phones else None,
                )
                index += 1


def describe(input_path: str | Path) -> dict[str, Any]:
    """Per file: the Audio feature's declared sampling rate (for the summary)."""
    out = {}
    for path in parquet_files(Path(input_path)):
        schema = pq.read_schema(path)
        names = [n for n, f in features(schema).items() if isinstance(f, dict) and f.get("_type") == "Audio"]
        out[path.name] = {"audio_sampling_rate": sampling_rate(schema, names[0]) if names else None}
    return out
