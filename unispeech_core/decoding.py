"""CTC decoding: greedy best path (argmax per frame, collapse repeats, drop blanks), with the frame span of every
emitted token so callers can turn frames into seconds (``frame_seconds``). Beam search lives in the platform
(``unispeech_platform.evaluate.beam``): it needs torchaudio's flashlight-text decoder, not pure PyTorch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .tokenizer import PhoneTokenizer


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token and the frames [start, end) of its best-path run."""

    id: int
    start: int
    end: int


def frame_seconds(conv_stride: Sequence[int], sample_rate: int = 16_000) -> float:
    """Seconds between two CTC frames: the feature encoder's total stride (product of ``conv_stride``) in samples."""
    return math.prod(conv_stride) / sample_rate


def _valid_lengths(b: int, t: int, frame_lengths: torch.Tensor | None) -> list[int]:
    if frame_lengths is None:
        return [t] * b
    return [min(int(n), t) for n in frame_lengths]


def ctc_greedy_spans(
    logits: torch.Tensor, frame_lengths: torch.Tensor | None = None, blank: int = 0
) -> list[list[TokenSpan]]:
    """Best-path tokens per utterance with their frame runs; frames past ``frame_lengths`` (padding) are ignored.
    A token repeated across a blank (``a _ a``) is two tokens, as in CTC."""
    best = logits.argmax(dim=-1).cpu()
    b, t = best.shape
    out: list[list[TokenSpan]] = []
    for row, n in zip(best, _valid_lengths(b, t, frame_lengths)):
        ids, counts = torch.unique_consecutive(row[:n], return_counts=True)
        ends = torch.cumsum(counts, 0)
        starts = ends - counts
        out.append([TokenSpan(int(i), int(s), int(e)) for i, s, e in zip(ids, starts, ends) if int(i) != blank])
    return out


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
