"""Kaldi data directories: ``wav.scp`` (``<recording> <path>``), ``text`` (``<utt> <words>``), ``utt2spk``
and optional ``segments`` (``<utt> <recording> <start> <end>`` in seconds). ``--input`` is one data dir
(its split from its name, e.g. ``train_clean_100`` -> train) or a directory of them. Piped ``wav.scp``
entries (``sph2pipe ... |``) and ark offsets are not run: those rows are listed as failed, as is a ``segments``
line whose times are not two finite numbers with 0 <= start < end (the other segments are imported).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from .common import BAD_SEGMENT, UNSUPPORTED_AUDIO_SOURCE, ImportInputError, Record, map_split
from .text_files import check_text_file

TABLES = ("wav.scp", "text", "utt2spk", "segments")


def data_dirs(path: Path) -> list[Path]:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such Kaldi data directory")
    if (path / "wav.scp").exists():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "wav.scp").exists())
    if not found:
        raise ImportInputError(f"{path}: no wav.scp in it or in any directory below it")
    return found


def read_table(path: Path) -> dict[str, str]:
    """``key rest-of-line`` files (text, utt2spk, wav.scp); a missing file is an empty table."""
    table: dict[str, str] = {}
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                key, _, rest = line.strip().partition(" ")
                if key:
                    table[key] = rest.strip()
    return table


def source_problem(rec_id: str, src: str | None) -> tuple[str, str] | None:
    """Why a recording's wav.scp entry is not read (missing, a pipe, an ark offset), or None."""
    if src is None:
        return UNSUPPORTED_AUDIO_SOURCE, f"recording {rec_id!r} is not in wav.scp"
    if src.endswith("|") or ":" in Path(src).name:
        return UNSUPPORTED_AUDIO_SOURCE, f"wav.scp entry {src!r} is a pipe or an ark offset; convert it to audio files first"
    return None


def segment_times(parts: list[str]) -> tuple[float | None, float | None, tuple[str, str] | None]:
    """(start, end, None) of a ``segments`` line's fields, or (None, None, (BAD_SEGMENT, why)): a line is one row,
    so a bad one fails that row only."""
    if len(parts) != 4:
        return None, None, (BAD_SEGMENT, f"expected '<utt> <recording> <start> <end>', got {len(parts)} fields")
    try:
        start, end = float(parts[2]), float(parts[3])
    except ValueError:
        return None, None, (BAD_SEGMENT, f"times {parts[2]!r} {parts[3]!r} are not numbers (seconds)")
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        return None, None, (BAD_SEGMENT, f"times {parts[2]} {parts[3]}: need finite seconds with 0 <= start < end")
    return start, end, None


def read_segments(path: Path) -> list[tuple[int, str, str, float | None, float | None, tuple[str, str] | None]]:
    """(line, utt, recording, start, end, problem) of every non-empty line of a ``segments`` file."""
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if parts:
                start, end, problem = segment_times(parts)
                out.append((n, parts[0], parts[1] if len(parts) > 1 else "", start, end, problem))
    return out


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    if lang is None:
        raise ImportInputError("Kaldi data directories carry no language: pass --lang")
    dirs = data_dirs(Path(input_path))
    for table in (d / name for d in dirs for name in TABLES):  # every table of every dir, before the first row
        if table.exists():
            check_text_file(table)
    for d in dirs:
        wav = read_table(d / "wav.scp")
        text, spk = read_table(d / "text"), read_table(d / "utt2spk")
        dir_split = split or map_split(d.name)
        has_segments = (d / "segments").exists()
        if has_segments:
            utts = read_segments(d / "segments")
        else:
            utts = [(n, key, key, None, None, None) for n, key in enumerate(wav, 1)]
        for n, utt, rec_id, start, end, problem in utts:
            src = wav.get(rec_id)
            problem = problem or source_problem(rec_id, src)
            path = None
            if src is not None and not problem:  # relative: to the data dir if there, else to the cwd (Kaldi's)
                path = src if Path(src).is_absolute() or not (d / src).exists() else str(d / src)
            yield Record(
                id=utt, split=dir_split, lang=lang,
                where=f"{d / ('segments' if has_segments else 'wav.scp')}:{n}",
                path=path, start=start, end=end, speaker=spk.get(utt), text=text.get(utt), problem=problem,
            )
