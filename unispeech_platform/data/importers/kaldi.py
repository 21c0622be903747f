"""Kaldi data directories: ``wav.scp`` (``<recording> <path>``), ``text`` (``<utt> <words>``), ``utt2spk``
and optional ``segments`` (``<utt> <recording> <start> <end>`` in seconds). ``--input`` is one data dir
(its split from its name, e.g. ``train_clean_100`` -> train) or a directory of them. Piped ``wav.scp``
entries (``sph2pipe ... |``) and ark offsets are not run: those rows are listed as failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .common import UNSUPPORTED_AUDIO_SOURCE, ImportInputError, Record, map_split


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


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    if lang is None:
        raise ImportInputError("Kaldi data directories carry no language: pass --lang")
    for d in data_dirs(Path(input_path)):
        wav = read_table(d / "wav.scp")
        text, spk = read_table(d / "text"), read_table(d / "utt2spk")
        dir_split = split or map_split(d.name)
        if (d / "segments").exists():
            with (d / "segments").open(encoding="utf-8") as f:
                lines = [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
            utts = []
            for n, parts in lines:
                if len(parts) != 4:
                    raise ImportInputError(f"{d / 'segments'}:{n}: expected '<utt> <recording> <start> <end>'")
                utts.append((n, parts[0], parts[1], float(parts[2]), float(parts[3])))
        else:
            utts = [(n, key, key, None, None) for n, key in enumerate(wav, 1)]
        for n, utt, rec_id, start, end in utts:
            src = wav.get(rec_id)
            problem = None
            if src is None:
                problem = (UNSUPPORTED_AUDIO_SOURCE, f"recording {rec_id!r} is not in wav.scp")
            elif src.endswith("|") or ":" in Path(src).name:
                problem = (UNSUPPORTED_AUDIO_SOURCE, f"wav.scp entry {src!r} is a pipe or an ark offset; "
                           "convert it to audio files first")
            path = None
            if src is not None and not problem:  # relative: to the data dir if there, else to the cwd (Kaldi's)
                path = src if Path(src).is_absolute() or not (d / src).exists() else str(d / src)
            yield Record(
                id=utt, split=dir_split, lang=lang,
                where=f"{d / ('segments' if start is not None else 'wav.scp')}:{n}",
                path=path, start=start, end=end, speaker=spk.get(utt), text=text.get(utt), problem=problem,
            )
