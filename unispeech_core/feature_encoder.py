"""Conv feature encoder (waveform → frames) and the frame-length arithmetic that the masks and losses rely on."""

from __future__ import annotations

import torch
from torch import nn

from .activations import activation
from .config import UniSpeechConfig


class ConvLayer(nn.Module):
    """One conv block. ``norm`` is 'group' (GroupNorm, first layer of base models), 'layer' or None."""

    def __init__(self, config: UniSpeechConfig, layer_id: int, norm: str | None):
        super().__init__()
        in_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_dim = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(
            in_dim,
            out_dim,
            kernel_size=config.conv_kernel[layer_id],
            stride=config.conv_stride[layer_id],
            bias=config.conv_bias,
        )
        self.norm = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        return self.activation(x)


class FeatureEncoder(nn.Module):
    """Module name ``feature_extractor`` in checkpoints; params ``conv_layers.N.conv`` / ``.layer_norm``."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        n = config.num_feat_extract_layers
        if config.feat_extract_norm == "group":
            norms = ["group"] + [None] * (n - 1)
        else:
            norms = ["layer"] * n
        self.conv_layers = nn.ModuleList(ConvLayer(config, i, norm) for i, norm in enumerate(norms))
        self.gradient_checkpointing = False
        self._requires_grad = True

    def _freeze_parameters(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self._requires_grad = False

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        # Waveforms arrive in fp32; a model whose weights were cast to bf16/fp16 (DeepSpeed's mixed precision on
        # GPU) needs them in its own dtype. A no-op for fp32 models and under autocast.
        x = input_values[:, None].to(self.conv_layers[0].conv.weight.dtype)
        if self._requires_grad and self.training and self.gradient_checkpointing:
            # checkpointed segments need an input that requires grad to backpropagate into their params
            x = x.requires_grad_(True)
        for layer in self.conv_layers:
            if self.gradient_checkpointing and self.training and self._requires_grad:
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm + Linear(conv_dim[-1] → hidden). Also returns the normed features: the quantizer's input."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(x)
        return self.dropout(self.projection(normed)), normed


def conv_output_lengths(lengths: torch.Tensor | int, config: UniSpeechConfig) -> torch.Tensor | int:
    """Frames the conv stack produces for ``lengths`` samples (floor arithmetic of Conv1d, no padding)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        if isinstance(lengths, torch.Tensor):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        else:
            lengths = (lengths - kernel) // stride + 1
    return lengths


def frame_mask(attention_mask: torch.Tensor, num_frames: int, config: UniSpeechConfig) -> torch.Tensor:
    """Bool [B, num_frames] mask of valid frames from a sample-level attention mask (right padding)."""
    lengths = conv_output_lengths(attention_mask.sum(-1), config).to(torch.long)
    return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]
