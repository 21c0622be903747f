"""Tokenizer, feature extraction, decoding and PER against transformers' and jiwer's own results."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
import torch
import transformers

import unispeech_core as uc
from unispeech_core.features import normalize

PHONES = ["a b t͡ʃ", "ɛ r r o", "t͡ʃ a ʁ"]


def test_vocab_loads_in_transformers_with_same_ids(tmp_path):
    tok = uc.PhoneTokenizer.from_phones(PHONES)
    assert tok.vocab["<pad>"] == 0 == tok.pad_token_id
    assert [tok.vocab[t] for t in ("<s>", "</s>", "<unk>")] == [1, 2, 3]
    tok.save(tmp_path)
    theirs = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    assert theirs.pad_token_id == tok.pad_token_id and theirs.unk_token_id == tok.unk_token_id
    for phone, i in tok.vocab.items():
        assert theirs.convert_tokens_to_ids(phone) == i
    phon = transformers.Wav2Vec2PhonemeCTCTokenizer(str(tmp_path / "vocab.json"), do_phonemize=False)
    for s in PHONES + ["a zz b"]:
        assert phon(s).input_ids == tok.encode(s)
        assert tok.decode(tok.encode(s), skip_special_tokens=False) == " ".join(
            t if t in tok.vocab else "<unk>" for t in s.split()
        )
    assert uc.PhoneTokenizer.from_file(tmp_path).vocab == tok.vocab


def test_unknown_phones():
    tok = uc.PhoneTokenizer.from_phones(PHONES)
    assert tok.encode("a zz") == [tok.vocab["a"], tok.unk_token_id]
    assert tok.unknown_phones("a zz q") == ["zz", "q"]
    with pytest.raises(KeyError, match="'zz'"):
        tok.encode("a zz", strict=True)


def test_feature_extraction_matches_wav2vec2_feature_extractor():
    rng = np.random.default_rng(0)
    waves = [rng.normal(0.3, 2.0, n).astype(np.float32) for n in (1600, 1000, 1234)]
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    theirs = fe(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    ours = uc.pad_batch(waves)
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"].long())
    torch.testing.assert_close(ours["input_values"], theirs["input_values"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="resample"):
        uc.pad_batch(waves, sampling_rate=8000)
    with pytest.raises(ValueError, match="1-D"):
        normalize(np.zeros((2, 100)))


def test_pad_labels():
    labels = uc.pad_labels([[1, 2], [], [3]])
    assert labels.tolist() == [[1, 2], [-100, -100], [3, -100]]


def test_greedy_decoding_collapses_and_ignores_padding():
    tok = uc.PhoneTokenizer.from_phones(PHONES)
    a, b = tok.vocab["a"], tok.vocab["b"]
    seq = [a, a, 0, a, b, b, 0, b]
    logits = torch.full((1, len(seq) + 2, len(tok)), -5.0)
    for t, i in enumerate(seq + [a, a]):
        logits[0, t, i] = 5.0
    assert uc.ctc_greedy_decode(logits, torch.tensor([len(seq)]), tok) == ["a a b b"]


def test_per_matches_jiwer():
    refs = ["a b c d", "e f g", "h i"]
    hyps = ["a x c", "e f g h", ""]
    r = uc.error_rates(refs, hyps)
    out = jiwer.process_words(refs, hyps)
    assert r["error_rate"] == pytest.approx(out.wer)
    assert r["substitution_rate"] == pytest.approx(1 / 9)
    assert r["deletion_rate"] == pytest.approx(3 / 9)
    assert r["insertion_rate"] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="2 references but 1"):
        uc.error_rates(["a", "b"], ["a"])
