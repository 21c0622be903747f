"""Waveform normalisation, padding and attention masks with Wav2Vec2FeatureExtractor's semantics.

Normalisation is per utterance over its valid samples only: ``(x - mean) / sqrt(var + 1e-7)``, and padded
positions hold ``padding_value`` (0.0), so a padded batch gives the same numbers as transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SAMPLING_RATE = 16_000


def normalize(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance float32 copy of a 1-D waveform (computed in float64 like numpy's var)."""
    x = torch.as_tensor(wave)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {tuple(x.shape)}")
    x64 = x.to(torch.float64)
    out = (x64 - x64.mean()) / torch.sqrt(x64.var(unbiased=False) + 1e-7)
    return out.to(torch.float32)


def pad_batch(
    waves: Sequence[np.ndarray | torch.Tensor],
    *,
    do_normalize: bool = True,
    padding_value: float = 0.0,
    pad_to_multiple_of: int | None = None,
    sampling_rate: int = SAMPLING_RATE,
) -> dict[str, torch.Tensor]:
    """Batch 1-D waveforms into ``input_values`` [B, T] float32 and ``attention_mask`` [B, T] long."""
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"models expect {SAMPLING_RATE} Hz audio, got {sampling_rate} Hz: resample first")
    if len(waves) == 0:
        raise ValueError("empty batch")
    tensors = []
    for i, w in enumerate(waves):
        t = torch.as_tensor(w)
        if t.ndim != 1:
            raise ValueError(f"waveform {i}: expected 1-D mono audio, got shape {tuple(t.shape)}")
        if not torch.is_floating_point(t):
            t = t.to(torch.float32)
        tensors.append(normalize(t) if do_normalize else t.to(torch.float32))
    max_len = max(t.numel() for t in tensors)
    if pad_to_multiple_of:
        max_len = -(-max_len // pad_to_multiple_of) * pad_to_multiple_of
    values = torch.full((len(tensors), max_len), padding_value, dtype=torch.float32)
    mask = torch.zeros((len(tensors), max_len), dtype=torch.long)
    for i, t in enumerate(tensors):
        values[i, : t.numel()] = t
        mask[i, : t.numel()] = 1
    return {"input_values": values, "attention_mask": mask}


def pad_labels(label_ids: Sequence[Sequence[int]], *, ignore_index: int = -100) -> torch.Tensor:
    """Right-pad label id lists with -100 (ignored by the CTC loss), shape [B, L]."""
    max_len = max((len(x) for x in label_ids), default=0)
    out = torch.full((len(label_ids), max(max_len, 1)), ignore_index, dtype=torch.long)
    for i, ids in enumerate(label_ids):
        if len(ids):
            out[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out
