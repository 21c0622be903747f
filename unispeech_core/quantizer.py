"""Gumbel product quantizer and its temperature schedule.

Perplexity is computed over the frames in ``mask`` only (masked, non-padded frames in pretraining): counting
padding or unmasked frames — as transformers does — inflates it and hides codebook collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import UniSpeechConfig


def gumbel_temperature(step: int, max_temperature: float, min_temperature: float, decay: float) -> float:
    """τ = max(τ_min, τ_max · decay^step), updated once per optimizer update."""
    return max(min_temperature, max_temperature * decay**step)


class GumbelVectorQuantizer(nn.Module):
    """Module name ``quantizer``; params ``codevectors`` [1, G·V, D/G] and ``weight_proj``."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        self.codevectors = nn.Parameter(
            torch.empty(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups)
        )
        self.weight_proj = nn.Linear(config.conv_dim[-1], self.num_groups * self.num_vars)
        self.temperature = config.max_gumbel_temperature

    @staticmethod
    def perplexity(probs: torch.Tensor) -> torch.Tensor:
        """Σ_g exp(H(mean_t p_g)) of probs [N, G, V]; 0 when N == 0."""
        if probs.shape[0] == 0:
            return probs.new_zeros(())
        marginal = probs.mean(dim=0)
        return torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, with_codes: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """x [B, T, C] → (codevectors [B, T, D], perplexity over ``mask`` frames, or all frames if None); with
        ``with_codes`` also the sampled and argmax codes of the ``mask`` frames (QuantizerOutput's fields in order:
        what the telemetry reads, unispeech_core/telemetry.py). Called as the module and returning a plain tuple of
        tensors: DeepSpeed ZeRO-3 gathers the codebook in the module's forward hooks and, for the backward pass,
        in hooks it can only attach to tensors in tuples, lists or dicts."""
        out = self._quantize(x, mask)
        if with_codes:
            return out.vectors, out.perplexity, out.sampled_codes, out.argmax_codes
        return out.vectors, out.perplexity

    def _quantize(self, x: torch.Tensor, mask: torch.Tensor | None) -> QuantizerOutput:
        b, t, _ = x.shape
        logits = self.weight_proj(x).view(b * t, self.num_groups, self.num_vars)
        flat_mask = mask.reshape(-1) if mask is not None else None
        if self.training:
            one_hot = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True).type_as(logits)
            dist = logits.float().softmax(-1)
        else:
            idx = logits.argmax(dim=-1, keepdim=True)
            one_hot = torch.zeros_like(logits).scatter_(-1, idx, 1.0)
            dist = one_hot
        ppl = self.perplexity(dist[flat_mask] if flat_mask is not None else dist)
        # [B·T, G, V] @ per-group codebooks [G, V, D/G] → [B·T, G, D/G]
        books = self.codevectors.view(self.num_groups, self.num_vars, -1)
        vectors = torch.einsum("ngv,gvd->ngd", one_hot, books.to(one_hot.dtype))
        with torch.no_grad():
            chosen = one_hot[flat_mask] if flat_mask is not None else one_hot
            scored = logits[flat_mask] if flat_mask is not None else logits
            sampled, argmax = chosen.argmax(dim=-1), scored.argmax(dim=-1)
        return QuantizerOutput(vectors.reshape(b, t, -1), ppl, sampled, argmax)


@dataclass
class QuantizerOutput:
    vectors: torch.Tensor
    """[B, T, D] the chosen codevectors (hard Gumbel samples in training, argmax codes in eval)."""
    perplexity: torch.Tensor
    """Soft perplexity (Σ_g over groups) over the mask frames: fairseq's prob_perplexity, the diversity term's input."""
    sampled_codes: torch.Tensor
    """[N, G] the code each mask frame got (a Gumbel sample in training)."""
    argmax_codes: torch.Tensor
    """[N, G] the most probable code of each mask frame."""
