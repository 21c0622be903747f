"""Fixtures of the evaluation, sweep and LID tests: one two-language corpus per session, a tiny CTC model."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CI_MODEL = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())["model"]
os.environ.setdefault("RAY_AUTH_MODE", "token")  # ~/.ray/auth_token may exist: be explicit (docs/architecture.md#ray-token-auth-and-security)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def two_lang_corpus(tmp_path_factory) -> Path:
    """es + ru, 64 utterances each from 12 speakers (9 train, 2 dev, 1 test), made once per test session. Language
    ID needs the many training speakers: with 4 per language a tiny model learns the voices, not the language."""
    from unispeech_platform.data.synthetic import make_corpus

    root = tmp_path_factory.getbasetemp() / "two-lang-corpus"
    if not (root / "vocab.json").is_file():
        make_corpus(root, ["es", "ru"], 64, speakers=12, dev_speakers=2, test_speakers=1, min_words=2, max_words=3,
                    workers=1, progress=False)
    return root


def tiny_ctc_model(vocab: Path, out: Path, *, logit_scale: float = 50.0) -> Path:
    """A random 32 x 2-layer UniSpeechForCTC over a vocabulary (vocab.json), saved in transformers' format. The
    head is scaled up so that greedy decoding emits varied phones with wide argmax margins (padding-proof)."""
    import torch

    from unispeech_core import PhoneTokenizer, UniSpeechConfig, UniSpeechForCTC

    tok = PhoneTokenizer.from_file(vocab)
    torch.manual_seed(0)
    model = UniSpeechForCTC(UniSpeechConfig(**CI_MODEL, vocab_size=len(tok), pad_token_id=tok.pad_token_id))
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(out)
    tok.save(out)
    return out
