"""The experiment's corpora: <root>/high (pretraining languages), <root>/low (targets), and one merged phone
vocabulary <root>/vocab.json so the pretraining CTC head and the fine-tuning head share their classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.experiments.config import CorpusSpec


@dataclass
class Corpora:
    high: Path
    low: Path
    vocab: Path


def build_corpora(spec: CorpusSpec, *, progress: bool = True) -> Corpora:
    """Synthesise (or reuse) both corpora and write the merged vocabulary (ids stable for a given phone set)."""
    from unispeech_core import PhoneTokenizer
    from unispeech_platform.data.synthetic import make_corpus

    root = Path(spec.root)
    common = dict(speakers=spec.speakers, min_words=spec.min_words, max_words=spec.max_words, seed=spec.seed,
                  progress=progress)
    make_corpus(root / "high", spec.high_resource, spec.high_per_lang, **common)
    make_corpus(root / "low", spec.low_resource, spec.low_per_lang, **common)
    phones: set[str] = set()
    for part in ("high", "low"):
        phones |= set(PhoneTokenizer.from_file(root / part / "vocab.json").phones)
    merged = PhoneTokenizer.from_phones(sorted(phones))
    merged.save(root)
    return Corpora(root / "high", root / "low", root / "vocab.json")
