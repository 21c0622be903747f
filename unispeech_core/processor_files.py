"""The files with which transformers' ``AutoProcessor`` and ``pipeline("automatic-speech-recognition")`` use an
exported model: ``preprocessor_config.json`` (a ``Wav2Vec2FeatureExtractor`` with the semantics of
``features.pad_batch``) beside the tokenizer's files.

Written by hand rather than through transformers' classes: the model library stays pure PyTorch
(docs/architecture.md#layers), and tests load the result with transformers as the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

from .features import SAMPLING_RATE
from .tokenizer import PhoneTokenizer

PREPROCESSOR_NAME = "preprocessor_config.json"


def feature_extractor_config() -> dict[str, object]:
    """What ``pad_batch`` does, in Wav2Vec2FeatureExtractor's words: 16 kHz mono, per-utterance normalisation,
    right padding with 0.0 and an attention mask (our models are trained with one)."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "processor_class": "Wav2Vec2Processor",
        "feature_size": 1,
        "sampling_rate": SAMPLING_RATE,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": True,
        "return_attention_mask": True,
    }


def save_processor_files(directory: str | Path, tokenizer: PhoneTokenizer | None) -> Path:
    """preprocessor_config.json, plus the tokenizer's files when the model has a vocabulary (CTC heads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(feature_extractor_config(), indent=1)
    (directory / PREPROCESSOR_NAME).write_text(text, encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
