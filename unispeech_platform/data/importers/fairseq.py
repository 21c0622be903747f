"""fairseq wav2vec 2.0 manifests: ``<split>.tsv`` whose first line is the audio root and every other line
``relative/path.flac<TAB>num_samples``, with optional label files of the same stem: ``.phn`` (phones, kept
as they are), ``.wrd`` (words: the text), ``.ltr`` (letters with ``|`` between words: the text when no .wrd).
Line i of a label file belongs to line i+1 of the .tsv. ``valid.tsv`` is our dev split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .common import ImportInputError, Record, map_split
from .text_files import check_text_file

LABELS = ("phn", "wrd", "ltr")


def manifests(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    found = sorted(path.glob("*.tsv"))
    if not found:
        raise ImportInputError(f"{path}: no *.tsv fairseq manifests in it")
    return found


def read_records(
    input_path: str | Path, *, lang: str | None, split: str | None, overrides: dict[str, str | None]
) -> Iterator[Record]:
    if lang is None:
        raise ImportInputError("fairseq manifests carry no language: pass --lang")
    found = manifests(Path(input_path))
    for text_file in (p for tsv in found for p in [tsv, *(tsv.with_suffix(f".{e}") for e in LABELS)]):
        if text_file.exists():  # every manifest and label file, before the first row
            check_text_file(text_file)
    for tsv in found:
        labels = {ext: tsv.with_suffix(f".{ext}") for ext in LABELS}
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(tsv.open(encoding="utf-8"))
            root_line = f.readline().rstrip("\n")
            if not root_line:
                raise ImportInputError(f"{tsv}: empty (line 1 must be the audio root directory)")
            root = Path(root_line)
            if not root.is_absolute():
                root = tsv.parent / root
            streams = {ext: stack.enter_context(p.open(encoding="utf-8")) for ext, p in labels.items() if p.exists()}
            for n, line in enumerate(f, 2):
                got = {ext: s.readline() for ext, s in streams.items()}
                if not line.strip():
                    continue
                for ext, text in got.items():
                    if text == "":
                        raise ImportInputError(f"{labels[ext]}: fewer lines than {tsv} (ends before its line {n})")
                rel = line.rstrip("\n").split("\t")[0]
                text = got.get("wrd")
                if text is None and got.get("ltr") is not None:
                    text = got["ltr"].replace(" ", "").replace("|", " ")
                yield Record(
                    id=f"{tsv.stem}-{Path(rel).with_suffix('').as_posix().replace('/', '-')}",
                    split=split or map_split(tsv.stem),
                    lang=lang,
                    where=f"{tsv}:{n}",
                    path=str(root / rel),
                    text=text.strip() if text else None,
                    phones=got["phn"].replace("|", " ").strip() if got.get("phn") else None,
                )
