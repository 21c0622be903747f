"""The UniSpeech objective: hand-checked terms, masking/negative invariants, and overfitting one batch."""

from __future__ import annotations

import math

import pytest
import torch
from parity_utils import TINY, padded_batch

import unispeech_core as uc
from unispeech_core.losses import contrastive_loss
from unispeech_core.masking import compute_mask_indices, sample_negative_indices

pytestmark = pytest.mark.usefixtures("one_thread")


def test_contrastive_loss_equals_hand_computation():
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    q = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    neg = torch.tensor([[[1], [0], [0]]])  # frame 0's distractor is frame 1 and vice versa
    kappa = 0.5

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))

    expected = 0.0
    for t, n in ((0, 1), (1, 0)):
        pos = cos(c[0, t].tolist(), q[0, t].tolist()) / kappa
        dis = cos(c[0, t].tolist(), q[0, n].tolist()) / kappa
        expected += -pos + math.log(math.exp(pos) + math.exp(dis))
    got = contrastive_loss(c, q, mask, neg, kappa)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distractor_identical_to_positive_is_ignored():
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])  # both frames quantize to the same vector
    mask = torch.ones(1, 2, dtype=torch.bool)
    neg = torch.tensor([[[1], [0]]])
    assert contrastive_loss(c, q, mask, neg, 0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_masks_never_cover_padding_and_are_reproducible():
    lengths = torch.tensor([50, 20, 7, 3])
    g = torch.Generator().manual_seed(0)
    m = compute_mask_indices((4, 50), 0.5, 4, lengths, min_masks=1, generator=g)
    assert m.shape == (4, 50)
    pos = torch.arange(50)[None, :]
    assert not (m & (pos >= lengths[:, None])).any()
    assert m[0].sum() >= 4 and m[1].sum() >= 4
    assert m[3].sum() == 0  # shorter than one span: nothing fits
    again = compute_mask_indices((4, 50), 0.5, 4, lengths, min_masks=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def test_negatives_come_from_other_masked_frames_of_the_same_utterance():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([40, 25, 12])
    mask = compute_mask_indices((3, 40), 0.6, 3, lengths, min_masks=2, generator=g)
    neg = sample_negative_indices(mask, 10, generator=g)
    flat_mask = mask.reshape(-1)
    for b in range(3):
        for t in mask[b].nonzero().flatten().tolist():
            idx = neg[b, t]
            assert (idx // 40 == b).all(), "distractor from another utterance"
            assert flat_mask[idx].all(), "distractor is not a masked frame (unmasked or padding)"
            assert not (idx == b * 40 + t).any(), "distractor is the positive itself"


def _config(**kw) -> uc.UniSpeechConfig:
    base = dict(TINY, hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0,
                layerdrop=0.0, mask_time_prob=0.4, mask_time_length=2, num_negatives=5)
    return uc.UniSpeechConfig(**(base | kw))


LABELS = torch.tensor([[1, 2, 3, 4], [5, 6, 7, -100], [-100, -100, -100, -100]])


def test_perplexity_counts_masked_valid_frames_only():
    torch.manual_seed(0)
    model = uc.UniSpeechForPreTraining(_config()).eval()
    x, am = padded_batch()
    base = model.unispeech(x, am)
    mask = model.unispeech.sample_mask_time_indices(base.frame_mask.sum(-1), torch.Generator().manual_seed(0))
    mask = torch.nn.functional.pad(mask, (0, base.frame_mask.shape[1] - mask.shape[1]))
    out = model(x, am, mask_time_indices=mask)
    logits = model.quantizer.weight_proj(base.extract_features)[mask].view(-1, 2, 8)
    one_hot = torch.nn.functional.one_hot(logits.argmax(-1), 8).float()
    expected = model.quantizer.perplexity(one_hot)
    assert out.codevector_perplexity.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not (out.mask_time_indices & ~base.frame_mask).any()


def test_alpha_zero_gives_ctc_proj_no_gradient_and_alpha_one_no_contrastive_gradient():
    x, am = padded_batch()
    torch.manual_seed(0)
    model = uc.UniSpeechForPreTraining(_config(ctc_weight=0.0)).train()
    model(x, am, labels=LABELS).loss.backward()
    assert model.ctc_proj.weight.grad is None or not model.ctc_proj.weight.grad.any()
    torch.manual_seed(0)
    model = uc.UniSpeechForPreTraining(_config(ctc_weight=1.0, replace_prob=0.0)).train()
    model(x, am, labels=LABELS).loss.backward()
    assert model.ctc_proj.weight.grad.abs().sum() > 0
    assert model.quantizer.codevectors.grad is None or not model.quantizer.codevectors.grad.any()


def test_unlabeled_samples_add_no_ctc():
    x, am = padded_batch()
    model = uc.UniSpeechForPreTraining(_config(replace_prob=0.0)).eval()
    frames = model.unispeech(x, am).frame_mask
    mask = compute_mask_indices(frames.shape, 0.4, 2, frames.sum(-1), 2, generator=torch.Generator().manual_seed(0))
    neg = sample_negative_indices(mask, 5, generator=torch.Generator().manual_seed(0))

    def run(labels, labeled=None):
        return model(x, am, labels=labels, labeled=labeled, mask_time_indices=mask, sampled_negative_indices=neg)

    ref = run(LABELS)
    # row 2 is all -100 (unlabeled); flagging row 1 unlabeled drops its term, whatever its labels say
    other = LABELS.clone()
    other[1] = torch.tensor([9, 9, 8, 7])
    flagged = run(other, labeled=torch.tensor([True, False, False]))
    only_row0 = run(torch.stack([LABELS[0], torch.full((4,), -100), torch.full((4,), -100)]))
    assert flagged.ctc_loss.item() == pytest.approx(only_row0.ctc_loss.item(), rel=1e-6)
    assert flagged.ctc_loss.item() != pytest.approx(ref.ctc_loss.item(), rel=1e-3)
    assert flagged.contrastive_loss.item() == pytest.approx(ref.contrastive_loss.item(), rel=1e-6)
    all_unlabeled = run(torch.full((3, 4), -100))
    assert all_unlabeled.ctc_loss.item() == 0.0
    alpha = model.config.ctc_weight
    expected = (1 - alpha) * (all_unlabeled.contrastive_loss + 0.1 * all_unlabeled.diversity_loss)
    assert all_unlabeled.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_is_the_weighted_combination():
    torch.manual_seed(0)
    model = uc.UniSpeechForPreTraining(_config(ctc_weight=0.3)).train()
    out = model(*padded_batch(), labels=LABELS)
    expected = 0.3 * out.ctc_loss + 0.7 * (out.contrastive_loss + 0.1 * out.diversity_loss)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    gv = 2 * 8
    assert out.diversity_loss.item() == pytest.approx((gv - out.codevector_perplexity.item()) / gv, rel=1e-6)


def test_gumbel_temperature_schedule():
    assert uc.gumbel_temperature(0, 2.0, 0.5, 0.999995) == 2.0
    assert uc.gumbel_temperature(100_000, 2.0, 0.5, 0.999995) == pytest.approx(2.0 * 0.999995**100_000)
    assert uc.gumbel_temperature(10**7, 2.0, 0.5, 0.999995) == 0.5


def _overfit(model, step_fn, steps: int, lr: float) -> tuple[float, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = step_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], min(losses[-5:])


SHORT = (1600, 1300, 1000)  # 80/65/50 frames: enough to fit, small enough to keep the test quick


def test_pretraining_overfits_one_batch():
    torch.manual_seed(0)
    model = uc.UniSpeechForPreTraining(_config(layerdrop=0.0)).train()
    x, am = padded_batch(lengths=SHORT)
    frames = model.unispeech(x, am).frame_mask
    mask = compute_mask_indices(frames.shape, 0.4, 2, frames.sum(-1), 2, generator=torch.Generator().manual_seed(0))
    neg = sample_negative_indices(mask, 5, generator=torch.Generator().manual_seed(0))
    first, last = _overfit(
        model, lambda: model(x, am, labels=LABELS, mask_time_indices=mask, sampled_negative_indices=neg).loss, 40, 3e-3
    )
    assert last < 0.5 * first, (first, last)


def test_ctc_overfits_one_batch():
    torch.manual_seed(0)
    model = uc.UniSpeechForCTC(_config(mask_time_prob=0.0)).train()
    x, am = padded_batch(lengths=SHORT)
    first, last = _overfit(model, lambda: model(x, am, labels=LABELS[:2].repeat(2, 1)[:3]).loss, 40, 3e-3)
    assert last < 0.5 * first, (first, last)


def test_classification_overfits_one_batch():
    torch.manual_seed(0)
    model = uc.UniSpeechForSequenceClassification(_config(mask_time_prob=0.0, use_weighted_layer_sum=True)).train()
    x, am = padded_batch(lengths=SHORT)
    labels = torch.tensor([0, 1, 0])
    first, last = _overfit(model, lambda: model(x, am, labels=labels).loss, 40, 3e-3)
    assert last < 0.5 * first, (first, last)
