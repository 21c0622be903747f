"""FLOP counting of UniSpeechForPreTraining (CPU), GPU peaks and MFU arithmetic."""

from __future__ import annotations

import pytest
import torch

from unispeech_core import UniSpeechConfig
from unispeech_platform.runtime.flops import (
    count_pretraining_flops,
    flop_counter,
    mfu,
    peak_for,
    pretraining_flops_per_audio_second,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# conv_dim 64 (not 32): keeps the linear-in-time conv/FFN work dominant over the quadratic attention at 20 s, as in
# the real models (with width 32 attention alone makes 20 s cost 2.44x of 10 s).
TINY = UniSpeechConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[64] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_codevectors_per_group=8,
    codevector_dim=16,
    proj_codevector_dim=16,
    num_ctc_classes=12,
    vocab_size=12,
)


@pytest.fixture(scope="module")
def counts() -> dict[str, float]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            "fwd10": count_pretraining_flops(TINY, 10.0, backward=False),
            "train10": count_pretraining_flops(TINY, 10.0),
            "train20": count_pretraining_flops(TINY, 20.0),
        }
    finally:
        torch.set_num_threads(before)


def test_count_is_positive_and_deterministic(counts):
    assert counts["train10"] > 1e9  # measured 2.63e9
    assert count_pretraining_flops(TINY, 10.0) == counts["train10"]


def test_count_scales_about_linearly_with_audio_length(counts):
    # measured 2.146; a constant count gives 1.0, an attention-only (quadratic) count 4.0
    ratio = counts["train20"] / counts["train10"]
    assert 1.8 <= ratio <= 2.3, ratio


def test_backward_is_counted(counts):
    # measured 2.954 (below 3: the first conv needs no input gradient); a forward-only count gives 1.0
    ratio = counts["train10"] / counts["fwd10"]
    assert 2.7 <= ratio <= 3.3, ratio


def test_per_audio_second_divides_by_the_length(counts):
    assert pretraining_flops_per_audio_second(TINY, 10.0) == counts["train10"] / 10.0


def test_counting_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    count_pretraining_flops(TINY, 1.0)
    assert torch.equal(torch.rand(3), expected)


def test_too_short_audio_is_refused():
    with pytest.raises(ValueError) as e:
        count_pretraining_flops(TINY, 0.01)
    assert str(e.value) == "0.01 s is shorter than the feature encoder's receptive field"


def test_grouped_conv_backward_costs_twice_its_forward():
    """torch's stock formula counts the weight gradient of a grouped conv `groups` times too high."""
    conv = torch.nn.Conv1d(8, 8, kernel_size=4, groups=4)
    x = torch.randn(2, 8, 20, requires_grad=True)
    counter = flop_counter()
    with counter:
        conv(x).sum().backward()
    flops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    forward = 2 * 2 * 17 * 8 * 2 * 4  # 2 * batch * out_frames * C_out * C_in/groups * kernel
    assert flops == {"aten.convolution": forward, "aten.convolution_backward": 2 * forward}


def test_first_layer_without_input_gradient_counts_weight_gradient_only():
    conv = torch.nn.Conv1d(1, 4, kernel_size=10, stride=5)
    counter = flop_counter()
    with counter:
        conv(torch.randn(1, 1, 100)).sum().backward()
    flops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    forward = 2 * 1 * 19 * 4 * 1 * 10
    assert flops == {"aten.convolution": forward, "aten.convolution_backward": forward}


def test_mfu_arithmetic():
    assert mfu(2000.0, 50e9, 400e12) == 0.25
    assert mfu(0.0, 50e9, 400e12) == 0.0
    with pytest.raises(ValueError) as e:
        mfu(1.0, 1.0, 0.0)
    assert str(e.value) == "peak_flops must be > 0, got 0.0"


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("Tesla V100-SXM2-16GB", 125e12),
        ("Tesla T4", 65e12),
        ("NVIDIA A10G", None),
        ("NVIDIA L40S", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_for_matches_whole_names(name, peak):
    assert peak_for(name) == peak
