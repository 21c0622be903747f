"""Transformer encoder: weight-normed positional conv, SDPA attention, post-LN and stable (pre-LN) layers.

LayerDrop decisions come from ``layerdrop_generator`` when one is set, so a distributed trainer can seed it
identically on every rank (ranks that drop different layers would issue mismatched collectives). The model
itself knows nothing about distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .activations import activation
from .config import UniSpeechConfig


class PositionalConvEmbedding(nn.Module):
    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        k = config.num_conv_pos_embeddings
        conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, kernel_size=k, padding=k // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = weight_norm(conv, name="weight", dim=2)
        self.num_pad_remove = 1 if k % 2 == 0 else 0
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        if self.num_pad_remove:
            x = x[:, :, : -self.num_pad_remove]
        return self.activation(x).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``key_mask``: bool [B, 1, 1, T], True = attend."""
        b, t, _ = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj), heads(self.k_proj), heads(self.v_proj)
        p = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1)
            out = F.dropout(weights, p=p, training=self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, t, self.embed_dim)
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """Post-LN (base) or pre-LN (``stable``, large) transformer layer; same parameter names for both."""

    def __init__(self, config: UniSpeechConfig, stable: bool):
        super().__init__()
        self.stable = stable
        self.attention = Attention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = x
        if self.stable:
            x, w = self.attention(self.layer_norm(x), key_mask, output_attentions)
            x = residual + self.dropout(x)
            return x + self.feed_forward(self.final_layer_norm(x)), w
        x, w = self.attention(x, key_mask, output_attentions)
        x = self.layer_norm(residual + self.dropout(x))
        return self.final_layer_norm(x + self.feed_forward(x)), w


class Encoder(nn.Module):
    """Module name ``encoder``. Stable variant: final LayerNorm after the layers, not before."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.config = config
        self.stable = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(config, self.stable) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.layerdrop_generator: torch.Generator | None = None

    def forward(
        self,
        x: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        key_mask = None
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask[..., None], 0.0)  # padded frames must not leak into the pos conv
            key_mask = frame_mask[:, None, None, :]
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        x = self.dropout(x)

        hidden: list[torch.Tensor] = []
        attns: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                hidden.append(x)
            if self.training and self.config.layerdrop > 0.0:
                draw = torch.rand([], generator=self.layerdrop_generator)
                if draw < self.config.layerdrop:
                    continue
            if self.gradient_checkpointing and self.training:
                x, w = torch.utils.checkpoint.checkpoint(
                    layer, x, key_mask, output_attentions, use_reentrant=False
                )
            else:
                x, w = layer(x, key_mask, output_attentions)
            if output_attentions:
                attns.append(w)
        if output_hidden_states:
            hidden.append(x)  # transformers 5 records the last layer's output, before the stable final norm
        if self.stable:
            x = self.layer_norm(x)
        return x, (tuple(hidden) if output_hidden_states else None), (tuple(attns) if output_attentions else None)
