"""What evaluation needs from the corpus besides audio, read on the driver: the reference ``text`` per utterance
(for CER/WER) and the phone inventory of the scored rows (to evaluate with the model's vocabulary).

Only the small string columns of the chosen parts are read (no audio), so this stays cheap next to inference.
The reference vocabulary is the model's ``vocab.json`` with every corpus phone it lacks appended after it: the
data path then encodes every reference (none is dropped as ``unknown_phones``), the model can never emit the
appended ids, and scoring counts those phones per language (``Score.oov_phones``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from unispeech_core import PhoneTokenizer
from unispeech_platform.data.schema import CorpusError, PartFile


def read_references(parts: list[PartFile]) -> tuple[dict[str, str], set[str]]:
    """(id -> text for rows with text, the set of phone tokens in the labeled rows)."""
    texts: dict[str, str] = {}
    phones: set[str] = set()
    for part in parts:
        try:
            pf = pq.ParquetFile(str(part.path), filesystem=getattr(part, "fs", None))  # local or object store
            cols = [c for c in ("id", "phones", "text") if c in pf.schema_arrow.names]
            table = pf.read(columns=cols).to_pydict()
        except Exception as e:  # pages the corpus check did not sample: one line naming the part, exit 3
            raise CorpusError(f"{part.path}: cannot read its id/phones/text columns: {e}") from None
        for value in table.get("phones", []):
            if value:
                phones.update(value.split())
        if "text" in table and "id" in table:
            texts.update((i, t) for i, t in zip(table["id"], table["text"]) if i is not None and t)
    return texts, phones


def reference_vocab(model_vocab: dict[str, int], corpus_phones: set[str], out: Path) -> tuple[Path, list[str]]:
    """Write the model's vocabulary plus the corpus phones it lacks (ids after the model's) to ``out``; returns the
    path and the appended phones."""
    extra = sorted(corpus_phones - set(model_vocab))
    vocab = dict(model_vocab)
    for phone in extra:
        vocab[phone] = len(vocab)
    PhoneTokenizer(vocab)  # same rules as any vocabulary (specials present, ids 0..N-1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    return out, extra


def is_character_model(model_vocab: dict[str, int]) -> bool:
    """A character model carries the word delimiter ``|`` (transformers' Wav2Vec2CTCTokenizer convention)."""
    from unispeech_platform.evaluate.scoring import WORD_DELIMITER

    return WORD_DELIMITER in model_vocab
