"""Model outputs: dataclasses with transformers' field names, plus our loss components and masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BaseModelOutput:
    last_hidden_state: torch.Tensor
    """[B, T, hidden] transformer output."""
    extract_features: torch.Tensor
    """[B, T, conv_dim[-1]] layer-normed conv features (the quantizer's input)."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    """Input of every layer plus the final output (num_hidden_layers + 1), when requested."""
    attentions: tuple[torch.Tensor, ...] | None = None
    """Attention probabilities per layer, when requested."""
    frame_mask: torch.Tensor | None = None
    """Bool [B, T]: valid (non-padded) frames."""
    mask_time_indices: torch.Tensor | None = None
    """Bool [B, T]: frames replaced by masked_spec_embed."""
    encoder_input: torch.Tensor | None = None
    """[B, T, hidden] what enters the transformer (after masking): where each loss term's gradient is measured."""


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None = None
    """α·ctc + (1−α)·(contrastive + w·diversity), each per masked frame; None when no frame is masked."""
    projected_states: torch.Tensor | None = None
    """[B, T, hidden] transformer output c_t (compared with the quantized targets)."""
    projected_quantized_states: torch.Tensor | None = None
    """[B, T, hidden] project_hid(project_q(q_t)): the contrastive targets ŷ_t."""
    codevector_perplexity: torch.Tensor | None = None
    """Perplexity of the code distribution over masked (else valid) frames."""
    ctc_loss: torch.Tensor | None = None
    """Phonetic CTC over labeled utterances, summed and divided by the masked frames."""
    contrastive_loss: torch.Tensor | None = None
    """InfoNCE summed over masked frames, divided by their number."""
    diversity_loss: torch.Tensor | None = None
    """(G·V − perplexity)/(G·V)."""
    ctc_logits: torch.Tensor | None = None
    """[B, T, num_ctc_classes] of the pretraining CTC head (after replace mixing in training)."""
    mask_time_indices: torch.Tensor | None = None
    """Bool [B, T]: masked frames."""
    num_masked: torch.Tensor | None = None
    """Number of masked frames (the loss normaliser)."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    telemetry: dict[str, torch.Tensor] | None = None
    """Health statistics of the self-supervised terms (unispeech_core/telemetry.py); None when nothing is masked."""
    encoder_input: torch.Tensor | None = None
    """[B, T, hidden] the transformer's input (for measuring each term's gradient there)."""


@dataclass
class CTCOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    """[B, T, vocab_size]."""
    frame_lengths: torch.Tensor | None = None
    """Valid frames per utterance (for decoding)."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    """[B, num_labels]."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
