"""Conv feature encoder (waveform → frames) and the frame-length arithmetic that the masks and losses rely on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import activation
from .config import UniSpeechConfig


def conv1d_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Strided Conv1d on [B, T, C_in] as one matmul over gathered windows → [B, T_out, C_out].

    Why by hand: on CPU, oneDNN's conv1d (and especially its backward) runs this encoder's strided
    k=2/3/10 convs far below matmul speed (bench/model_step.py); gathering each window (k/stride blocks of
    ``stride`` frames, all views plus one concat) turns the layer into a single GEMM, and channels-last frames
    need no transposes for the norms or the projection that follow.
    """
    b, t, cin = x.shape
    cout, _, k = weight.shape
    tout = (t - k) // stride + 1
    full, rest = divmod(k, stride)
    nblocks = tout + full - 1 + (1 if rest else 0)
    if nblocks * stride > t:  # the last block is only partly read: pad it rather than copy-slice every block
        x = F.pad(x, (0, 0, 0, nblocks * stride - t))
    blocks = x[:, : nblocks * stride].reshape(b, nblocks, stride * cin)
    parts = [blocks[:, j : j + tout] for j in range(full)]
    if rest:
        parts.append(blocks[:, full : full + tout, : rest * cin])
    windows = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    w = weight.permute(2, 1, 0).reshape(k * cin, cout)
    out = windows.reshape(-1, k * cin)
    out = torch.addmm(bias, out, w) if bias is not None else out @ w
    return out.view(b, tout, cout)


class ConvLayer(nn.Module):
    """One conv block on channels-last frames. ``norm``: 'group' (first layer of base models), 'layer' or None."""

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
            # one group per channel: each channel normalised over time (the parameters of nn.GroupNorm)
            self.layer_norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C_in] → [B, T_out, C_out]."""
        x = conv1d_channels_last(x, self.conv.weight, self.conv.bias, self.conv.stride[0])
        if self.norm == "group":
            gn = self.layer_norm
            var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
            scale = torch.rsqrt(var + gn.eps) * gn.weight  # [B, 1, C]: fold the affine into one pass over x
            x = torch.addcmul(gn.bias - mean * scale, x, scale)
        elif self.norm == "layer":
            x = self.layer_norm(x)
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
        """[B, samples] → channels-last frames [B, T, conv_dim[-1]]."""
        x = input_values[:, :, None]
        checkpointing = self.gradient_checkpointing and self.training and self._requires_grad
        if checkpointing:
            # checkpointed segments need an input that requires grad to backpropagate into their params
            x = x.requires_grad_(True)
        for layer in self.conv_layers:
            x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False) if checkpointing else layer(x)
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
