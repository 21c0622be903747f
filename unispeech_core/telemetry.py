"""Health statistics of the self-supervised objective, computed from tensors the forward pass already holds.

Why these and not only the loss: the contrastive loss alone cannot tell "learning" from its two failure states.
At exactly ln(K+1) every candidate gets the same logit (the targets have become collinear, cos_pos_neg → 1); at 0
with a collapsed codebook every target is the same code and every negative is masked as equal to the positive
(code_perplexity → 1 per group). The soft ``prob_perplexity`` (the diversity term's input) stays high while the
hard codes are random (``code_randomness`` → 1) or collapsed, so the hard statistics are logged beside it.
Names follow fairseq's wav2vec2 criterion where it has one (code_perplexity, prob_perplexity, correct/count as
contrastive_accuracy). All are means over the masked, non-padded frames of one forward pass, without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_perplexity(codes: torch.Tensor, num_vars: int) -> torch.Tensor:
    """Σ_g exp(H(histogram of the hard codes of group g)) of ``codes`` [N, G] (code indices); fairseq's
    code_perplexity. 1 per group when every frame picks the same code; at most min(N, V) per group."""
    if codes.shape[0] == 0:
        return torch.zeros((), device=codes.device)
    one_hot = F.one_hot(codes, num_vars).float()  # [N, G, V]
    marginal = one_hot.mean(dim=0)
    return torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()


def code_randomness(sampled: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """Share of (frame, group) hard Gumbel samples that differ from the argmax code: 0 when the temperature is
    low enough for the codes to be decisions, → 1 − 1/V when the samples are noise."""
    if sampled.numel() == 0:
        return torch.zeros((), device=sampled.device)
    return (sampled != argmax).float().mean()


def contrastive_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Share of masked frames whose positive (column 0 of ``logits`` [N, K+1]) has the highest logit; a frame whose
    logits are all equal counts as wrong (fairseq's correct/count: argmax == 0 and not argmin == 0)."""
    if logits.shape[0] == 0:
        return torch.zeros((), device=logits.device)
    best, worst = logits.argmax(dim=-1) == 0, logits.argmin(dim=-1) == 0
    return (best & ~worst).float().mean()


def target_cosines(predicted: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos_pos_neg, cos_pos_pred): mean cosine of each masked frame's target ŷ_t [N, H] with its negatives
    [N, K, H], and with the prediction c_t [N, H]. cos_pos_neg ≈ 1 means the targets are collinear: every logit
    is the same and the contrastive loss sits at ln(K+1) with no gradient."""
    if positives.shape[0] == 0:
        zero = torch.zeros((), device=positives.device)
        return zero, zero
    pos = positives.float()
    pos_neg = F.cosine_similarity(pos[:, None], negatives.float(), dim=-1).mean()
    pos_pred = F.cosine_similarity(pos, predicted.float(), dim=-1).mean()
    return pos_neg, pos_pred
