"""Scores of per-utterance predictions: PER per (split, language) with jiwer, and their averages.

Per language: jiwer's corpus-level WER over phone tokens (= PER) with substitution/deletion/insertion rates per
reference phone (``unispeech_core.metrics.error_rates``). Per split, two averages over languages:

- ``avg``: macro average, every language counts the same (the paper's cross-lingual average);
- ``weighted``: utterance-weighted, sum_l n_utt(l) * PER(l) / sum_l n_utt(l).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from unispeech_core.metrics import error_rates

MACRO, WEIGHTED = "avg", "weighted"


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

    def as_dict(self) -> dict:
        return asdict(self)


def _average(split: str, name: str, rows: list[Score], weights: list[float]) -> Score:
    total = sum(weights)

    def mean(attr: str) -> float:
        return sum(w * getattr(r, attr) for r, w in zip(rows, weights)) / total

    return Score(split, name, sum(r.utterances for r in rows), sum(r.ref_phones for r in rows),
                 mean("per"), mean("sub"), mean("dele"), mean("ins"), sum(r.dropped for r in rows))


def score_per(predictions) -> list[Score]:
    """One Score per (split, language), then the two averages of each split. ``predictions``: inference rows."""
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
            rows.append(Score(split, lang, int(r["num_utterances"]), int(r["num_ref_tokens"]), float(r["error_rate"]),
                              float(r["substitution_rate"]), float(r["deletion_rate"]), float(r["insertion_rate"]),
                              dropped))
        if not rows:
            continue
        scores += rows
        scores.append(_average(split, MACRO, rows, [1.0] * len(rows)))
        scores.append(_average(split, WEIGHTED, rows, [float(r.utterances) for r in rows]))
    if not scores:
        raise ValueError("no scorable utterances (every row was dropped or unlabeled)")
    return scores


def per_metrics(scores: list[Score]) -> dict[str, float]:
    """MLflow metrics: per/<lang>, per/avg, per/weighted (plus sub/del/ins per language); with several splits
    every key gets the split as a suffix, e.g. per/es/dev."""
    multi = len({s.split for s in scores}) > 1
    out: dict[str, float] = {}
    for s in scores:
        suffix = f"/{s.split}" if multi else ""
        out[f"per/{s.lang}{suffix}"] = s.per
        if s.lang not in (MACRO, WEIGHTED):
            out[f"sub/{s.lang}{suffix}"] = s.sub
            out[f"del/{s.lang}{suffix}"] = s.dele
            out[f"ins/{s.lang}{suffix}"] = s.ins
    return out
