"""The experiment's corpora: <root>/high (pretraining languages, plus the unlabeled audio when configured),
<root>/low (targets: train/dev/test, plus the shifted test split when configured), and one merged phone
vocabulary <root>/vocab.json so the pretraining CTC head and the fine-tuning head share their classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unispeech_platform.experiments.config import CorpusSpec


@dataclass
class Corpora:
    high: Path
    low: Path
    vocab: Path


def corpus_args(spec: CorpusSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """make_corpus keyword arguments (SynthesisSpec's fields) of (high/, low/). The extras appear only when
    configured, so a spec without them gives exactly the arguments of before (and an existing corpus is
    reused unchanged)."""
    common: dict[str, Any] = dict(speakers=spec.speakers, min_words=spec.min_words, max_words=spec.max_words,
                                  seed=spec.seed)
    high = {**common, "langs": spec.high_resource, "per_lang": spec.high_per_lang}
    low = {**common, "langs": spec.low_resource, "per_lang": spec.low_per_lang,
           "test_speakers": spec.test_speakers, "dev_speakers": spec.dev_speakers}
    if spec.unlabeled_per_lang:
        # Same seed, so a target's voice order is the same in both corpora: holding out its first
        # test + dev voices keeps every evaluation speaker out of the unlabeled audio.
        high.update(unlabeled_langs=spec.unlabeled_languages(), unlabeled_per_lang=spec.unlabeled_per_lang,
                    unlabeled_held_out_speakers=spec.test_speakers + spec.dev_speakers)
    if spec.shifted_test.enabled:
        low["shifted"] = spec.shifted_test.condition()
    return high, low


def build_corpora(spec: CorpusSpec, *, progress: bool = True) -> Corpora:
    """Synthesise (or reuse) both corpora and write the merged vocabulary (ids stable for a given phone set)."""
    from unispeech_core import PhoneTokenizer
    from unispeech_platform.data.synthetic import make_corpus

    root = Path(spec.root)
    high, low = corpus_args(spec)
    make_corpus(root / "high", progress=progress, **high)
    make_corpus(root / "low", progress=progress, **low)
    phones: set[str] = set()
    for part in ("high", "low"):
        phones |= set(PhoneTokenizer.from_file(root / part / "vocab.json").phones)
    merged = PhoneTokenizer.from_phones(sorted(phones))
    merged.save(root)
    return Corpora(root / "high", root / "low", root / "vocab.json")
