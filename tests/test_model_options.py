"""Training options of the model: gradient checkpointing, freezing, seeded LayerDrop, SpecAugment."""

from __future__ import annotations

import pytest
import torch
from parity_utils import TINY, padded_batch

import unispeech_core as uc

pytestmark = pytest.mark.usefixtures("one_thread")

NO_DROPOUT = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0, layerdrop=0.0)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    labels = torch.tensor([[1, 2], [3, 4], [5, -100]])
    x, am = padded_batch()
    torch.manual_seed(0)
    plain = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, **NO_DROPOUT, "mask_time_prob": 0.0})).train()
    ckpt = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, **NO_DROPOUT, "mask_time_prob": 0.0})).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.gradient_checkpointing_enable()
    plain(x, am, labels=labels).loss.backward()
    ckpt(x, am, labels=labels).loss.backward()
    a, b = _grads(plain), _grads(ckpt)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_freeze_feature_encoder_and_base_model():
    x, am = padded_batch()
    model = uc.UniSpeechForCTC(uc.UniSpeechConfig(**TINY, **NO_DROPOUT)).train()
    model.freeze_feature_encoder()
    model(x, am, labels=torch.tensor([[1], [2], [3]])).loss.backward()
    grads = _grads(model)
    assert not any(k.startswith("unispeech.feature_extractor.") for k in grads)
    assert "unispeech.encoder.layers.0.attention.q_proj.weight" in grads
    model.zero_grad(set_to_none=True)
    model.freeze_base_model()
    model(x, am, labels=torch.tensor([[1], [2], [3]])).loss.backward()
    assert set(_grads(model)) == {"lm_head.weight", "lm_head.bias"}


def test_layerdrop_follows_a_seeded_generator():
    """Ranks seeded alike drop the same layers: the requirement for LayerDrop under DeepSpeed."""
    cfg = uc.UniSpeechConfig(**{**TINY, **NO_DROPOUT, "layerdrop": 0.5, "num_hidden_layers": 6, "mask_time_prob": 0.0})
    model = uc.UniSpeechModel(cfg).train()
    x, am = padded_batch()
    calls: list[int] = []
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
             for n, layer in enumerate(model.encoder.layers)]

    def ran(seed: int) -> list[int]:
        calls.clear()
        model.set_layerdrop_generator(torch.Generator().manual_seed(seed))
        out = model(x, am).last_hidden_state
        return list(calls), out

    (a, out_a), (b, out_b) = ran(7), ran(7)
    assert a == b and torch.equal(out_a, out_b)
    runs = [ran(s)[0] for s in range(20)]
    assert len({tuple(r) for r in runs}) > 1, "LayerDrop never varied across seeds"
    assert 0 < sum(map(len, runs)) < 20 * 6
    for h in hooks:
        h.remove()


def test_spec_augment_time_masks_in_training_only_and_never_on_padding():
    cfg = uc.UniSpeechConfig(**{**TINY, **NO_DROPOUT, "mask_time_prob": 0.5, "mask_time_length": 2,
                                "mask_feature_prob": 0.5, "mask_feature_length": 4})
    model = uc.UniSpeechModel(cfg)
    x, am = padded_batch()
    model.train()
    out = model(x, am)
    assert out.mask_time_indices is not None and out.mask_time_indices.any()
    assert not (out.mask_time_indices & ~out.frame_mask).any()
    model.eval()
    assert model(x, am).mask_time_indices is None
