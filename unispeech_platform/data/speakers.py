"""Who spoke each utterance of a corpus split: what the experiment's hierarchical bootstrap groups test
utterances by (utterances of one speaker are not independent draws; experiments/statistics.py)."""

from __future__ import annotations

import functools

from unispeech_platform.data.schema import CorpusError, scan_corpus, select_parts


@functools.lru_cache(maxsize=8)
def _speakers(root: str, splits: tuple[str, ...]) -> dict[tuple[str, str], str]:
    return _read_speakers(root, list(splits))


def corpus_speakers(root: str, splits: list[str]) -> dict[tuple[str, str], str]:
    """(lang, id) -> speaker of every row of ``splits`` (two columns read per part, no audio). A null speaker
    stays its own group: the row's id stands in for it. Read once per corpus and splits in a process: every arm
    and seed of an experiment scores the same test split (the map is shared: do not change it)."""
    return _speakers(str(root), tuple(splits))


def _read_speakers(root: str, splits: list[str]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for part in select_parts(scan_corpus(root, check_schema=False), splits=splits):
        try:
            table = part.open().read(columns=["id", "speaker"])
        except (OSError, ValueError) as e:  # a corrupt footer or page: name the file, not a pyarrow traceback
            raise CorpusError(f"{part.path}: cannot read id/speaker ({' '.join(str(e).split())})") from None
        cols = table.to_pydict()
        for rid, speaker in zip(cols["id"], cols["speaker"]):
            out[(part.lang, rid)] = speaker if speaker is not None else f"utterance:{rid}"
    return out
