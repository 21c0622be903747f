"""Evaluation scores without Ray: CER/WER equal jiwer's own on fixtures, phone models get no CER/WER, reference
phones outside the model's vocabulary are counted per language, and the table says which metric is which."""

from __future__ import annotations

import json

import jiwer
import pandas as pd
import pytest

from unispeech_platform.evaluate.references import is_character_model, reference_vocab
from unispeech_platform.evaluate.report import LEGEND, markdown_table
from unispeech_platform.evaluate.scoring import per_metrics, score_per, tokens_to_text

REF_TEXT = {"a1": "The cat sat.", "a2": "on the mat", "b1": "Hola, mundo", "b2": "dos gatos"}
HYP_TOKENS = {"a1": "t h e | c a t | s a t", "a2": "o n | t e | m a t t", "b1": "o l a | m u n d o",
              "b2": "d o s | g a t o s | y"}
# The same texts lower-cased and without punctuation, written out by hand: the independent reference.
NORMALISED = {"a1": "the cat sat", "a2": "on the mat", "b1": "hola mundo", "b2": "dos gatos"}


def _char_to_tokens(text: str) -> str:
    return " ".join("|" if c == " " else c for c in text)


def _char_predictions() -> pd.DataFrame:
    rows = []
    for rid, hyp in HYP_TOKENS.items():
        rows.append({"id": rid, "lang": "en" if rid[0] == "a" else "es", "split": "test",
                     "ref": _char_to_tokens(NORMALISED[rid]), "hyp": hyp, "error": None,
                     "ref_text": REF_TEXT[rid], "hyp_text": tokens_to_text(hyp)})
    return pd.DataFrame(rows)


def test_cer_and_wer_equal_jiwers_on_fixtures():
    scores = {s.lang: s for s in score_per(_char_predictions())}
    for lang, ids in (("en", ["a1", "a2"]), ("es", ["b1", "b2"])):
        refs = [NORMALISED[i] for i in ids]
        hyps = [tokens_to_text(HYP_TOKENS[i]) for i in ids]
        assert scores[lang].cer == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
        assert scores[lang].wer == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
        assert 0 < scores[lang].cer < scores[lang].wer  # a real mix of errors, not a trivial 0 or 1
    assert scores["avg"].wer == pytest.approx((scores["en"].wer + scores["es"].wer) / 2, abs=1e-12)
    metrics = per_metrics(list(scores.values()))
    assert metrics["cer/en"] == scores["en"].cer and metrics["wer/avg"] == scores["avg"].wer
    assert tokens_to_text("h i | y o u") == "hi you"


def test_phone_model_has_no_cer_wer_and_the_table_says_so():
    preds = pd.DataFrame([{"id": "x", "lang": "es", "split": "test", "ref": "o l a", "hyp": "o a", "error": None}])
    (score, *_) = score_per(preds)
    assert score.cer is None and score.wer is None
    assert score.per == pytest.approx(jiwer.wer("o l a", "o a"))
    assert not any(k.startswith(("cer/", "wer/")) for k in per_metrics([score]))
    row = markdown_table([score]).splitlines()[2]
    assert row.count("–") == 2  # CER and WER cells
    assert "CER" in LEGEND and "WER" in LEGEND and "character models" in LEGEND


def test_reference_phones_outside_the_model_vocabulary_are_counted_per_language(tmp_path):
    model_vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5}
    path, extra = reference_vocab(model_vocab, {"a", "b", "ʃ", "x"}, tmp_path / "ref.json")
    vocab = json.loads(path.read_text())
    assert extra == ["x", "ʃ"] and vocab["x"] == 6 and vocab["ʃ"] == 7  # model ids unchanged, new ones after
    assert not is_character_model(model_vocab) and is_character_model({**model_vocab, "|": 6})
    preds = pd.DataFrame([
        {"id": "1", "lang": "de", "split": "dev", "ref": "a ʃ b ʃ", "hyp": "a b", "error": None},
        {"id": "2", "lang": "en", "split": "dev", "ref": "a x", "hyp": "a", "error": None},
        {"id": "3", "lang": "en", "split": "dev", "ref": "a b", "hyp": "a b", "error": None},
    ])
    scores = {s.lang: s for s in score_per(preds, set(model_vocab))}
    assert (scores["de"].oov_phones, scores["de"].oov_list) == (2, "ʃ")
    assert (scores["en"].oov_phones, scores["en"].oov_list) == (1, "x")
    assert scores["de"].per == pytest.approx(0.5) and scores["en"].per == pytest.approx(0.25)  # OOV = errors
    assert per_metrics(list(scores.values()))["oov_phones/de"] == 2.0
    assert "2 (ʃ)" in markdown_table(list(scores.values()))
