"""Shared helpers for tests that use transformers as the parity oracle."""

from __future__ import annotations

import torch

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_stride=(5, 2, 2),
    conv_kernel=(10, 3, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_codevectors_per_group=8,
    num_codevector_groups=2,
    codevector_dim=16,
    proj_codevector_dim=16,
    classifier_proj_size=8,
    num_ctc_classes=12,
    vocab_size=12,
    mask_time_prob=0.2,
    mask_time_length=2,
    num_negatives=4,
)
VARIANTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "layer_stableln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def padded_batch(seed: int = 0, lengths: tuple[int, ...] = (4000, 3100, 2400)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, generator=g)
        mask[i, :n] = 1
    return x, mask


def rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> float:
    """Max abs difference relative to the reference's max magnitude."""
    err = (a.float() - b.float()).abs().max().item()
    scale = max(b.float().abs().max().item(), 1e-6)
    assert err / scale <= tol, f"relative error {err / scale:.2e} > {tol:.0e}"
    return err / scale
