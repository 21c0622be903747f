"""Model FLOPs per second of audio, peak FLOPs of common GPUs, and MFU.

Throughput in audio seconds per second says nothing about how well a GPU is used; MFU (model FLOPs utilisation)
does: achieved model FLOPs per second over the device's dense peak. The model FLOPs are counted, not estimated
by hand, with ``torch.utils.flop_counter.FlopCounterMode`` over one real forward + backward of
UniSpeechForPreTraining (the model has data-dependent shapes, masks and negatives, so the meta device cannot run
it). Only matmul-like ops (linear, conv, attention) are counted, as usual for MFU; element-wise work is not.

torch's own formula for the convolution backward ignores ``groups`` in the weight gradient, which counts the
positional conv's backward (16 groups, kernel 128) 16x too high: +15% on the BASE model. ``flop_counter()``
replaces it with the exact count (each of grad-input and grad-weight costs what the forward conv costs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unispeech_core import UniSpeechConfig

if TYPE_CHECKING:
    from torch.utils.flop_counter import FlopCounterMode

SAMPLE_RATE = 16_000

# Dense (non-sparse) bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s per GPU. The data sheets'
# headline numbers for Ampere/Hopper are "with sparsity" (2x); these are half of those. V100 and T4 have no
# bf16: their entry is the dense fp16 tensor-core peak. First match wins, so specific names precede general ones.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("A10", 125e12),
    ("L4", 121e12),
    ("V100", 125e12),  # fp16 (SXM2)
    ("T4", 65e12),  # fp16
)


def peak_for(gpu_name: str) -> float | None:
    """Dense bf16 (fp16 for pre-Ampere) peak FLOP/s of a GPU named like torch.cuda.get_device_name(), or None.

    A key matches as a whole token, so "A10" does not match "A100" or "A10G" and "L4" does not match "L40S"."""
    for key, peak in PEAK_BF16_FLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", gpu_name):
            return peak
    return None


def mfu(audio_seconds_per_s: float, flops_per_audio_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s (throughput x FLOPs per audio second) over the peak."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return audio_seconds_per_s * flops_per_audio_s / peak_flops


def _conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: Sequence[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """aten.convolution_backward: the forward conv's FLOPs once per gradient asked for (input, weight). The
    weight's shape [C_out, C_in / groups, *k] already carries the groups."""
    spatial = (x_shape if transposed else grad_out_shape)[2:]  # as torch counts the forward conv
    forward = 2 * x_shape[0] * math.prod(spatial) * math.prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode with the grouped-convolution backward counted correctly."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


def count_pretraining_flops(
    config: UniSpeechConfig, seconds: float = 10.0, *, backward: bool = True, device: str = "cpu", seed: int = 0
) -> float:
    """FLOPs of one training forward (and, with ``backward``, its backward) of UniSpeechForPreTraining on one
    utterance of ``seconds`` seconds at 16 kHz, counted by FlopCounterMode on a real run.

    LayerDrop is disabled for the count (MFU counts the whole model's FLOPs); masks, negatives and labels are
    seeded, and the caller's RNG state is left untouched."""
    import torch

    from unispeech_core import UniSpeechForPreTraining

    samples = round(seconds * SAMPLE_RATE)
    cfg = UniSpeechConfig.from_dict(config.to_dict(), layerdrop=0.0)
    if samples < cfg.receptive_field:
        raise ValueError(f"{seconds} s is shorter than the feature encoder's receptive field")
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = UniSpeechForPreTraining(cfg).to(device).train()
        x = torch.randn(1, samples, generator=g).to(device)
        attention_mask = torch.ones(1, samples, dtype=torch.long, device=device)
        frames = int(model._get_feat_extract_output_lengths(samples))
        mask = model.unispeech.sample_mask_time_indices(torch.tensor([frames]), g).to(device)
        labels = torch.randint(1, cfg.num_ctc_classes, (1, max(1, frames // 5)), generator=g).to(device)
        counter = flop_counter()
        with counter:
            out = model(x, attention_mask, labels=labels, mask_time_indices=mask)
            if backward:
                out.loss.backward()
    return float(counter.get_total_flops())


def pretraining_flops_per_audio_second(config: UniSpeechConfig, seconds: float = 10.0, *, device: str = "cpu") -> float:
    """Training FLOPs (forward + backward, ~3x the forward) of UniSpeechForPreTraining per second of audio, for
    utterances of ``seconds`` seconds (attention makes longer utterances slightly costlier per second)."""
    return count_pretraining_flops(config, seconds, backward=True, device=device) / seconds
