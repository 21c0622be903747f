"""Manifests: TSV, CSV or JSONL (chosen by extension), one utterance per row, with an audio path column
(relative to the manifest) and optional text, speaker, language, phones, id and split columns.

NeMo's ``audio_filepath``/``text`` JSONL and the ``path``/``sentence`` TSVs of Common Voice read as they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from .common import ImportInputError, Record, map_split, pick_column
from .hf import ID_COLUMNS, LANG_COLUMNS, PHONE_COLUMNS, SPEAKER_COLUMNS, TEXT_COLUMNS
from .text_files import check_text_file, csv_rows

PATH_COLUMNS = ("path", "audio", "audio_path", "audio_filepath", "file", "filename", "wav")
SPLIT_COLUMNS = ("split",)


def _rows(path: Path) -> Iterator[dict]:
    suffix = path.suffix.lower()
    check_text_file(path)  # a regular file, UTF-8 throughout: before the first row is imported
    with path.open(encoding="utf-8", newline="") as f:
        if suffix in (".jsonl", ".json", ".ndjson"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise ImportInputError(f"{path}:{n}: not a JSON object ({e})") from None
                    if not isinstance(obj, dict):
                        raise ImportInputError(f"{path}:{n}: not a JSON object")
                    yield obj
        elif suffix in (".tsv", ".csv", ".txt"):
            # TSV: no quoting (transcripts contain quotes, as in Common Voice); CSV: standard quoting.
            kw = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix != ".csv" else {}
            yield from csv_rows(path, csv.DictReader(f, **kw))
        else:
            raise ImportInputError(f"{path}: unknown manifest type (use .tsv, .csv or .jsonl)")


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    file_split = map_split(path.stem) if path.stem.lower().split(".")[0] in (
        "train", "dev", "test", "valid", "validation", "val") else "train"
    cols: dict[str, str | None] | None = None
    for index, row in enumerate(_rows(path)):
        if cols is None:
            keys = list(row)
            cols = {
                "path": pick_column(keys, overrides.get("audio"), PATH_COLUMNS, "audio path", path),
                "text": pick_column(keys, overrides.get("text"), TEXT_COLUMNS, "text", path),
                "speaker": pick_column(keys, overrides.get("speaker"), SPEAKER_COLUMNS, "speaker", path),
                "id": pick_column(keys, overrides.get("id"), ID_COLUMNS, "id", path),
                "lang": pick_column(keys, overrides.get("lang"), LANG_COLUMNS, "language", path),
                "phones": pick_column(keys, overrides.get("phones"), PHONE_COLUMNS, "phones", path),
                "split": pick_column(keys, None, SPLIT_COLUMNS, "split", path),
            }
            if cols["path"] is None:
                raise ImportInputError(
                    f"{path}: no audio path column ({'/'.join(PATH_COLUMNS)}; columns: {', '.join(keys)}); "
                    "pass --audio-column")
            if lang is None and cols["lang"] is None:
                raise ImportInputError(f"{path}: no language column ({'/'.join(LANG_COLUMNS)}); pass --lang")

        def get(key: str, row: dict = row, cols: dict = cols) -> str | None:
            c = cols[key]
            v = row.get(c) if c else None
            return None if v is None or str(v) == "" else str(v)

        audio = get("path")
        where = f"{path}:{index + 2 if path.suffix.lower() in ('.tsv', '.csv', '.txt') else index + 1}"
        file = None if audio is None else str(Path(audio) if Path(audio).is_absolute() else path.parent / audio)
        yield Record(
            id=get("id") or (Path(audio).stem if audio else f"{path.stem}-{index:07d}"),
            split=split or (map_split(get("split")) if get("split") else file_split),
            lang=lang or get("lang"),
            where=where,
            path=file,
            speaker=get("speaker"),
            text=get("text"),
            phones=get("phones"),
            problem=None if audio else ("missing_audio_file", f"empty {cols['path']!r} column"),
        )
