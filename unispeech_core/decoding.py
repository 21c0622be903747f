"""Greedy CTC decoding: argmax per frame, collapse repeats, drop blanks."""

from __future__ import annotations

import torch

from .tokenizer import PhoneTokenizer


def ctc_greedy_ids(logits: torch.Tensor, frame_lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path ids per utterance; frames past ``frame_lengths`` (padding) are ignored."""
    best = logits.argmax(dim=-1)
    b, t = best.shape
    if frame_lengths is None:
        frame_lengths = torch.full((b,), t, dtype=torch.long)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    keep &= torch.arange(t, device=best.device)[None, :] < frame_lengths.to(best.device)[:, None]
    return [row[k].tolist() for row, k in zip(best.cpu(), keep.cpu())]


def ctc_greedy_decode(
    logits: torch.Tensor, frame_lengths: torch.Tensor | None, tokenizer: PhoneTokenizer
) -> list[str]:
    """Space-separated phone strings, one per utterance."""
    return [tokenizer.decode(ids) for ids in ctc_greedy_ids(logits, frame_lengths, tokenizer.pad_token_id)]
