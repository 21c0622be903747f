"""Phone/word error rates through jiwer (tokens are whitespace-separated, so PER is jiwer's WER over phones)."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float | int]:
    """Corpus-level error rate with substitution/deletion/insertion rates (per reference token)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no utterances to score")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    if not pairs:
        raise ValueError("every reference is empty: nothing to score")
    refs = [r for r, _ in pairs]
    hyps = [h if h.strip() else "" for _, h in pairs]
    out = jiwer.process_words(refs, hyps)
    n = out.hits + out.substitutions + out.deletions
    return {
        "error_rate": out.wer,
        "substitution_rate": out.substitutions / n,
        "deletion_rate": out.deletions / n,
        "insertion_rate": out.insertions / n,
        "num_ref_tokens": n,
        "num_utterances": len(refs),
    }


def phone_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return float(error_rates(references, hypotheses)["error_rate"])
