"""Scores of per-utterance predictions: PER per (split, language) with jiwer, CER/WER where they mean something,
and their averages.

Per language: jiwer's corpus-level WER over phone tokens (= PER) with substitution/deletion/insertion rates per
reference phone (``unispeech_core.metrics.error_rates``). When the corpus has a ``text`` column *and* the model
writes characters (its vocabulary holds the word delimiter ``|``, the convention of transformers'
Wav2Vec2CTCTokenizer), also jiwer's CER and WER of the decoded text against ``text``, both normalised the same
way (``TEXT_NORMALISATION``). A phone model has no text output, so its CER/WER are ``None`` (shown as ``–``):
phones are not spelling, and WER over phone strings would only repeat PER. Per split, two averages over languages:

- ``avg``: macro average, every language counts the same (the paper's cross-lingual average);
- ``weighted``: utterance-weighted, sum_l n_utt(l) * PER(l) / sum_l n_utt(l).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from unispeech_core.metrics import error_rates

MACRO, WEIGHTED = "avg", "weighted"
WORD_DELIMITER = "|"

TEXT_NORMALISATION = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                                    jiwer.Strip()])
"""Applied to reference text and hypothesis alike before CER/WER: casing and punctuation are not what a CTC
character model is judged on (its vocabulary usually has neither)."""


@dataclass
class Score:
    split: str
    lang: str
    """Language code, or MACRO / WEIGHTED for the averages."""
    utterances: int
    ref_phones: int
    per: float
    sub: float
    dele: float
    ins: float
    dropped: int = 0
    """Rows the data path could not use (not scored)."""
    cer: float | None = None
    """Character error rate of the decoded text vs the corpus ``text`` (character models only)."""
    wer: float | None = None
    """Word error rate of the decoded text vs the corpus ``text`` (character models only)."""
    oov_phones: int = 0
    """Reference phones outside the model's vocabulary (scored: the model cannot emit them)."""
    oov_list: str = ""
    """Those phones, distinct, space-separated."""

    def as_dict(self) -> dict:
        return asdict(self)


def tokens_to_text(tokens: str) -> str:
    """Decoded character tokens (space-separated, ``|`` between words) -> plain text."""
    return "".join(tokens.split()).replace(WORD_DELIMITER, " ").strip()


def text_error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float]:
    """Corpus-level (CER, WER) with jiwer after TEXT_NORMALISATION; empty normalised references are skipped."""
    pairs = [(TEXT_NORMALISATION(r), TEXT_NORMALISATION(h or "")) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no non-empty reference text")
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return float(jiwer.cer(refs, hyps)), float(jiwer.wer(refs, hyps))


def _mean_of(rows: list[Score], weights: list[float], attr: str) -> float | None:
    got = [(getattr(r, attr), w) for r, w in zip(rows, weights) if getattr(r, attr) is not None]
    if not got:
        return None
    return sum(v * w for v, w in got) / sum(w for _, w in got)


def _average(split: str, name: str, rows: list[Score], weights: list[float]) -> Score:
    mean = {a: _mean_of(rows, weights, a) for a in ("per", "sub", "dele", "ins", "cer", "wer")}
    oov = sorted({p for r in rows for p in r.oov_list.split()})
    return Score(split, name, sum(r.utterances for r in rows), sum(r.ref_phones for r in rows),
                 mean["per"], mean["sub"], mean["dele"], mean["ins"], sum(r.dropped for r in rows),
                 mean["cer"], mean["wer"], sum(r.oov_phones for r in rows), " ".join(oov))


def _text_scores(good) -> tuple[float | None, float | None]:
    if "ref_text" not in good or "hyp_text" not in good:
        return None, None
    rows = good[good["ref_text"].notna() & good["hyp_text"].notna()]
    if rows.empty:
        return None, None
    try:
        return text_error_rates(rows["ref_text"].tolist(), rows["hyp_text"].tolist())
    except ValueError:
        return None, None


def _oov(good, model_tokens: set[str] | None) -> tuple[int, str]:
    if model_tokens is None:
        return 0, ""
    unknown = [p for ref in good["ref"] for p in ref.split() if p not in model_tokens]
    return len(unknown), " ".join(sorted(set(unknown)))


def score_per(predictions, model_tokens: set[str] | None = None) -> list[Score]:
    """One Score per (split, language), then the two averages of each split. ``predictions``: inference rows,
    optionally with ``ref_text``/``hyp_text`` columns (CER/WER). ``model_tokens``: the model's vocabulary, to
    count reference phones outside it."""
    scores: list[Score] = []
    for split in sorted(predictions["split"].unique()):
        per_split = predictions[predictions["split"] == split]
        rows = []
        for lang in sorted(per_split["lang"].unique()):
            group = per_split[per_split["lang"] == lang]
            good = group[group["error"].isna() & group["ref"].fillna("").str.strip().astype(bool)]
            dropped = len(group) - len(good)
            if good.empty:
                continue
            r = error_rates(good["ref"].tolist(), good["hyp"].fillna("").tolist())
            cer, wer = _text_scores(good)
            oov, oov_list = _oov(good, model_tokens)
            rows.append(Score(split, lang, int(r["num_utterances"]), int(r["num_ref_tokens"]), float(r["error_rate"]),
                              float(r["substitution_rate"]), float(r["deletion_rate"]), float(r["insertion_rate"]),
                              dropped, cer, wer, oov, oov_list))
        if not rows:
            continue
        scores += rows
        scores.append(_average(split, MACRO, rows, [1.0] * len(rows)))
        scores.append(_average(split, WEIGHTED, rows, [float(r.utterances) for r in rows]))
    if not scores:
        raise ValueError("no scorable utterances (every row was dropped or unlabeled)")
    return scores


def per_metrics(scores: list[Score]) -> dict[str, float]:
    """MLflow metrics: per/<lang>, per/avg, per/weighted (plus sub/del/ins/oov_phones per language, cer/ and wer/
    where scored); with several splits every key gets the split as a suffix, e.g. per/es/dev."""
    multi = len({s.split for s in scores}) > 1
    out: dict[str, float] = {}
    for s in scores:
        suffix = f"/{s.split}" if multi else ""
        out[f"per/{s.lang}{suffix}"] = s.per
        for name, value in (("cer", s.cer), ("wer", s.wer)):
            if value is not None:
                out[f"{name}/{s.lang}{suffix}"] = value
        if s.lang not in (MACRO, WEIGHTED):
            out[f"sub/{s.lang}{suffix}"] = s.sub
            out[f"del/{s.lang}{suffix}"] = s.dele
            out[f"ins/{s.lang}{suffix}"] = s.ins
            if s.oov_phones:
                out[f"oov_phones/{s.lang}{suffix}"] = float(s.oov_phones)
    return out
