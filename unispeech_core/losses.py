"""The UniSpeech objective: contrastive (InfoNCE), codebook diversity, phonetic CTC, and their combination.

Following the authors' criterion, every term is summed and then divided by the number of masked frames, so
``loss = α·L_ctc + (1−α)·(L_contrastive + w·L_diversity)`` with each component per masked frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def contrastive_loss(
    predicted: torch.Tensor,
    quantized: torch.Tensor,
    mask: torch.Tensor,
    negative_indices: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Σ over masked frames of −log softmax(cos(c_t, [ŷ_t, ŷ_neg…]) / κ)[0].

    predicted, quantized: [B, T, H]; mask: bool [B, T]; negative_indices: [B, T, K] into the flat B·T frames.
    Only masked frames are gathered, so memory is O(N_masked · K · H) rather than O(B · T · K · H).
    """
    return contrastive_sum(contrastive_candidates(predicted, quantized, mask, negative_indices, temperature))


@dataclass
class ContrastiveCandidates:
    """The masked frames' predictions, positives, negatives and logits (what the loss and the telemetry read)."""

    predicted: torch.Tensor
    """[N, H] c_t of the masked frames."""
    positives: torch.Tensor
    """[N, H] ŷ_t."""
    negatives: torch.Tensor
    """[N, K, H] the distractors."""
    logits: torch.Tensor
    """[N, K+1] cos / κ, positive first; a distractor identical to the positive is −inf."""


def contrastive_candidates(
    predicted: torch.Tensor,
    quantized: torch.Tensor,
    mask: torch.Tensor,
    negative_indices: torch.Tensor,
    temperature: float,
) -> ContrastiveCandidates:
    """Gather the masked frames and score each prediction against its positive and negatives."""
    b, t, h = quantized.shape
    c = predicted[mask]  # [N, H]
    pos = quantized[mask]  # [N, H]
    neg = quantized.reshape(b * t, h)[negative_indices[mask]]  # [N, K, H]
    targets = torch.cat([pos[:, None], neg], dim=1)  # [N, K+1, H]
    logits = F.cosine_similarity(c[:, None].float(), targets.float(), dim=-1) / temperature
    same = (neg == pos[:, None]).all(dim=-1)  # a distractor identical to the positive is no distractor
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
    return ContrastiveCandidates(c, pos, neg, logits)


def contrastive_sum(candidates: ContrastiveCandidates) -> torch.Tensor:
    """Cross-entropy with the positive as target, summed over masked frames."""
    logits = candidates.logits
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum")


def diversity_loss(perplexity: torch.Tensor, num_groups: int, num_vars: int) -> torch.Tensor:
    """(G·V − perplexity) / (G·V): 0 when every code is used equally, →1 as the codebook collapses."""
    gv = num_groups * num_vars
    return (gv - perplexity) / gv


def ctc_loss(
    logits: torch.Tensor,
    frame_lengths: torch.Tensor,
    labels: torch.Tensor,
    *,
    blank: int,
    reduction: str,
    zero_infinity: bool,
) -> torch.Tensor:
    """CTC on float32 log-softmax; labels [B, L] padded with −100 (negative = ignored), blank = pad id."""
    label_mask = labels >= 0
    target_lengths = label_mask.sum(-1)
    too_long = target_lengths > frame_lengths
    if too_long.any():
        i = int(too_long.nonzero()[0, 0])
        raise ValueError(
            f"sample {i}: {int(target_lengths[i])} labels but only {int(frame_lengths[i])} frames; "
            "CTC needs at least one frame per label (use longer audio or shorter transcripts)"
        )
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    return F.ctc_loss(
        log_probs,
        labels.masked_select(label_mask),
        frame_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


def unispeech_loss(
    ctc_sum: torch.Tensor | None,
    contrastive_sum: torch.Tensor,
    diversity: torch.Tensor,
    num_masked: torch.Tensor,
    *,
    ctc_weight: float,
    diversity_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine summed terms into per-masked-frame components and the weighted total."""
    denom = num_masked.clamp(min=1).to(contrastive_sum.dtype)
    contrastive = contrastive_sum / denom
    ssl = contrastive + diversity_weight * diversity
    ctc = ctc_sum / denom if ctc_sum is not None else contrastive_sum.new_zeros(())
    total = ctc_weight * ctc + (1.0 - ctc_weight) * ssl
    return total, {"ctc_loss": ctc, "contrastive_loss": contrastive, "diversity_loss": diversity}
