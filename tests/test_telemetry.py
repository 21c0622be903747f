"""(No Ray) The self-supervised health statistics equal hand computations on fixed tensors, and a real model's
forward pass reports them over its masked frames (unispeech_core/telemetry.py)."""

from __future__ import annotations

import math

import pytest
import torch

from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining
from unispeech_core.losses import contrastive_candidates, contrastive_loss, contrastive_sum
from unispeech_core.telemetry import code_perplexity, code_randomness, contrastive_accuracy, target_cosines


def test_code_perplexity_counts_hard_codes_per_group():
    same = torch.zeros(6, 2, dtype=torch.long)  # every frame the same code in both groups: 1 per group
    assert code_perplexity(same, 4).item() == pytest.approx(2.0)
    spread = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0]])  # group 0 uses 4 codes evenly, group 1 one
    assert code_perplexity(spread, 4).item() == pytest.approx(4.0 + 1.0)
    skewed = torch.tensor([[0], [0], [0], [1]])  # exp(H(3/4, 1/4))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert code_perplexity(skewed, 2).item() == pytest.approx(math.exp(h))


def test_code_randomness_is_the_share_of_samples_off_the_argmax():
    argmax = torch.tensor([[0, 1], [2, 3]])
    assert code_randomness(argmax, argmax).item() == 0.0
    assert code_randomness(torch.tensor([[0, 0], [2, 0]]), argmax).item() == pytest.approx(0.5)


def _frames(n: int = 5, k: int = 3, h: int = 8):
    """One utterance of n+k frames, the first n masked; negatives of frame i: the last k frames."""
    torch.manual_seed(0)
    quantized = torch.randn(1, n + k, h)
    mask = torch.zeros(1, n + k, dtype=torch.bool)
    mask[0, :n] = True
    negatives = torch.arange(n, n + k).expand(1, n + k, k).clone()
    return quantized, mask, negatives


def test_contrastive_accuracy_is_one_when_the_prediction_is_the_positive_and_zero_when_all_logits_tie():
    quantized, mask, negatives = _frames()
    hit = contrastive_candidates(quantized.clone(), quantized, mask, negatives, 0.1)
    assert contrastive_accuracy(hit.logits).item() == 1.0
    assert contrastive_sum(hit).item() == pytest.approx(contrastive_loss(quantized, quantized, mask, negatives, 0.1).item())
    tie = torch.ones(4, 6)
    assert contrastive_accuracy(tie).item() == 0.0  # all equal: fairseq counts it as wrong
    wrong = torch.tensor([[0.0, 1.0, -1.0], [2.0, 1.0, 0.0]])
    assert contrastive_accuracy(wrong).item() == pytest.approx(0.5)


def test_cosines_are_one_for_identical_codevectors_and_match_a_hand_computation():
    pos = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    same = pos[:, None].expand(2, 3, 2)
    pos_neg, pos_pred = target_cosines(pos, pos, same)
    assert pos_neg.item() == pytest.approx(1.0) and pos_pred.item() == pytest.approx(1.0)
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    pred = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    pos_neg, pos_pred = target_cosines(pred, pos, negatives)
    assert pos_neg.item() == pytest.approx((0.0 - 1.0 + 1.0 + 1 / math.sqrt(2)) / 4)
    assert pos_pred.item() == pytest.approx((1 / math.sqrt(2) - 1.0) / 2)


def test_a_pretraining_forward_reports_every_statistic_over_its_masked_frames():
    config = UniSpeechConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2, codevector_dim=16, proj_codevector_dim=16,
                             num_codevectors_per_group=8, num_codevector_groups=2, mask_time_prob=0.5,
                             mask_time_length=2, num_negatives=4)
    torch.manual_seed(0)
    model = UniSpeechForPreTraining(config).train()
    out = model(torch.randn(3, 4000))
    t = out.telemetry
    assert set(t) == {"code_perplexity", "prob_perplexity", "code_randomness", "contrastive_accuracy",
                      "cos_pos_neg", "cos_pos_pred", "masked_frames_per_utt"}
    assert t["masked_frames_per_utt"].item() == pytest.approx(out.num_masked.item() / 3)
    assert t["prob_perplexity"].item() == pytest.approx(out.codevector_perplexity.item())
    assert 2.0 <= t["code_perplexity"].item() <= 2 * 8  # 1..V per group, two groups
    assert out.encoder_input is not None and out.encoder_input.requires_grad
    model.eval()
    masks = torch.zeros(3, out.mask_time_indices.shape[1], dtype=torch.bool)
    masks[:, ::3] = True
    evaluated = model(torch.randn(3, 4000), mask_time_indices=masks)
    assert evaluated.telemetry["code_randomness"].item() == 0.0  # argmax codes: no sampling noise


@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_a_centred_codebook_starts_the_targets_apart_where_transformers_init_starts_them_collinear(init):
    """docs/training.md#collinear-targets: U(0,1) codevectors share a positive mean, so every projected target
    points the same way at init; the zero-mean 'normal' init (same mean square) does not."""
    config = UniSpeechConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2, codevector_dim=64, proj_codevector_dim=16,
                             num_codevectors_per_group=32, num_codevector_groups=2, mask_time_prob=0.5,
                             mask_time_length=2, num_negatives=8, codevector_init=init)
    torch.manual_seed(0)
    model = UniSpeechForPreTraining(config).train()
    books = model.quantizer.codevectors
    assert (books ** 2).mean().item() == pytest.approx(1 / 3, rel=0.1)
    cos = model(torch.randn(4, 8000)).telemetry["cos_pos_neg"].item()
    if init == "uniform":
        assert books.min().item() >= 0.0 and cos > 0.6, cos
    else:
        assert abs(books.mean().item()) < 0.05 and cos < 0.2, cos
