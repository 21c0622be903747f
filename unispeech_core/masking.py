"""SpecAugment span masks and contrastive negatives, sampled in torch on the model's device.

Both are vectorised over the batch (no NumPy, no per-utterance Python loop), take an optional
``torch.Generator`` for reproducibility, and never touch padded frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    lengths: torch.Tensor | None = None,
    min_masks: int = 0,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool [B, T] mask of spans of ``mask_length``; span starts drawn without replacement per row.

    Each row gets ``int(mask_prob · L / mask_length + u)`` spans (u ~ U[0,1): probabilistic rounding), at least
    ``min_masks``, and only where a whole span fits inside its valid length L — so padding is never masked.
    """
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    b, t = shape
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    device = lengths.device
    u = torch.rand((b,), device=device, generator=generator)
    num = (mask_prob * lengths / mask_length + u).floor().long().clamp(min=min_masks)
    max_starts = (lengths - mask_length + 1).clamp(min=0)
    num = torch.minimum(num, torch.minimum(max_starts, torch.full_like(num, t // mask_length)))

    scores = torch.rand((b, t), device=device, generator=generator)
    positions = torch.arange(t, device=device)
    scores = scores.masked_fill(positions[None, :] >= max_starts[:, None], 2.0)  # invalid starts sort last
    order = scores.argsort(dim=1)
    chosen = positions[None, :] < num[:, None]  # the first `num` of the random order
    starts = torch.zeros((b, t), dtype=torch.long, device=device).scatter_(1, order, chosen.long())
    # frame f is masked iff a span starts in (f - mask_length, f]
    c = starts.cumsum(dim=1)
    shifted = F.pad(c, (mask_length, 0))[:, :t]
    return (c - shifted) > 0


def sample_negative_indices(
    mask: torch.Tensor, num_negatives: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Long [B, T, K] indices into the flattened [B·T] frames: K distractors for every masked frame.

    Distractors come from the *other* masked frames of the same utterance (as in fairseq), uniformly, never
    the positive itself and never padding. An utterance with a single masked frame has no distractor: its
    indices point at the positive, which the loss then scores −inf. Values at unmasked frames are unused.
    """
    b, t = mask.shape
    device = mask.device
    n = mask.sum(dim=1)  # masked frames per row
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # masked frame times first, ascending
    rank = mask.long().cumsum(dim=1) - 1  # index of each masked frame within its row's masked frames
    upper = (n - 1).clamp(min=0)[:, None, None]
    r = (torch.rand((b, t, num_negatives), device=device, generator=generator) * upper).long()
    r = r + (r >= rank[..., None]).long()  # skip the positive
    r = torch.minimum(r, upper)
    times = order.gather(1, r.view(b, t * num_negatives)).view(b, t, num_negatives)
    return times + (torch.arange(b, device=device) * t)[:, None, None]
