"""CTC beam search with torchaudio's lexicon-free flashlight decoder, optionally with a KenLM n-gram over the
model's tokens. torchaudio 2.11 keeps ``torchaudio.models.decoder.ctc_decoder`` (the CUDA and prototype decoders
went in 2.9); it needs the ``flashlight-text`` wheel from PyPI, which also bundles KenLM. Kept library, not a
hand-written beam search: prefix merging, blank handling and LM fusion are easy to get subtly wrong.

In the model library so the served MLflow model (which ships this package as its code) decodes as
``jobs.transcribe`` does; the platform imports it as ``unispeech_platform.evaluate.beam``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unispeech_core.decoding import TokenSpan
from unispeech_core.tokenizer import BOS, PAD, UNK

WORD_DELIMITER = "|"


class LMLoadError(ValueError):
    """The LM file is not a KenLM model (the platform's jobs exit 3 naming it: evaluate/beam.py)."""


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 16
    lm_path: str | None = None
    """KenLM ``.arpa`` or ``.bin`` over the model's tokens (space-separated), or None."""
    lm_weight: float = 0.5
    word_score: float = 0.0


class BeamDecoder:
    """Callable: (log-probs [B, T, V], frame lengths) -> token spans per utterance, best beam only."""

    def __init__(self, tokens: list[str], options: BeamOptions):
        try:
            from torchaudio.models.decoder import ctc_decoder
        except ImportError as e:  # flashlight-text missing
            raise RuntimeError(f"beam search needs the flashlight-text package: {e}") from None
        # The decoder wants a silence token; a phone vocabulary has none, and <s> is never a CTC output.
        self.sil = WORD_DELIMITER if WORD_DELIMITER in tokens else BOS
        self.tokens = tokens
        try:
            self.decoder = ctc_decoder(
                lexicon=None, tokens=tokens, lm=options.lm_path, nbest=1, beam_size=options.beam_size,
                lm_weight=options.lm_weight if options.lm_path else 0.0, word_score=options.word_score,
                blank_token=PAD, sil_token=self.sil, unk_word=UNK,
            )
        except RuntimeError as e:  # KenLM: an unreadable file, or a unigram-only ARPA (it needs bigrams at least)
            raise LMLoadError(f"{options.lm_path}: cannot load the n-gram LM: {str(e).strip().splitlines()[-1]}") from None
        self.skip = {tokens.index(PAD), tokens.index(self.sil)} if self.sil != WORD_DELIMITER else {
            tokens.index(PAD)}
        self.skip.add(tokens.index(BOS))

    def __call__(self, log_probs: torch.Tensor, frame_lengths: torch.Tensor) -> list[list[TokenSpan]]:
        hyps = self.decoder(log_probs.float().cpu().contiguous(), frame_lengths.to(torch.int32).cpu())
        out = []
        for (best, *_), n in zip(hyps, frame_lengths.tolist()):
            spans = [(int(i), int(t)) for i, t in zip(best.tokens, best.timesteps) if int(i) not in self.skip]
            # flashlight frames the sentence with silences: drop leading/trailing word delimiters
            while spans and self.tokens[spans[0][0]] == WORD_DELIMITER:
                spans.pop(0)
            while spans and self.tokens[spans[-1][0]] == WORD_DELIMITER:
                spans.pop()
            # flashlight's timesteps count the leading silence as step 0: frame = timestep - 1
            frames = [min(max(t - 1, 0), n - 1) for _, t in spans]
            out.append([TokenSpan(i, f, f + 1) for (i, _), f in zip(spans, frames)])
        return out
