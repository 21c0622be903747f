"""Tasks without Ray: the transformer is frozen for the first K updates (no gradient reaches it) and
unfrozen afterwards; the feature encoder stays frozen; LayerDrop draws are identical across 'ranks'."""

from __future__ import annotations

import torch

from unispeech_platform.config import FinetuneSection, TrainSection
from unispeech_platform.train.tasks import make_task

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=[32] * 7,
            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, vocab_size=12,
            mask_time_prob=0.0, layerdrop=0.0)


class _Engine:  # the loop calls engine(...) and engine.module: a plain module stands in for DeepSpeed here
    def __init__(self, module):
        self.module = module

    def __call__(self, **kw):
        return self.module(**kw)


def _grads(model, step: int, task) -> tuple[bool, bool, bool]:
    model.zero_grad(set_to_none=True)
    task.before_update(model, step)
    batch = {"input_values": torch.randn(2, 8000), "attention_mask": torch.ones(2, 8000, dtype=torch.long),
             "labels": torch.tensor([[4, 5, 6], [7, 8, -100]])}
    loss, _ = task.forward(_Engine(model), batch, torch.device("cpu"))
    loss.backward()
    has = lambda mod: any(p.grad is not None for p in mod.parameters())  # noqa: E731
    base = model.unispeech
    return has(model.lm_head), has(base.encoder), has(base.feature_extractor)


def test_transformer_frozen_for_k_updates_then_trained():
    torch.manual_seed(0)
    task = make_task("ctc", TINY, TrainSection(), FinetuneSection(freeze_transformer_steps=2), tokenizer=None)
    model = task.build_model()
    model.train()
    assert _grads(model, 0, task) == (True, False, False)
    assert _grads(model, 1, task) == (True, False, False)
    assert _grads(model, 2, task) == (True, True, False)  # feature encoder stays frozen throughout
    assert torch.is_grad_enabled()


def test_layerdrop_generator_is_seeded_by_step_identically():
    task = make_task("pretrain", {**TINY, "layerdrop": 0.5}, TrainSection(seed=3))
    a, b = task.build_model(), task.build_model()
    task.before_update(a, 7)
    task.before_update(b, 7)
    ga, gb = a.unispeech.encoder.layerdrop_generator, b.unispeech.encoder.layerdrop_generator
    assert torch.equal(torch.rand(5, generator=ga), torch.rand(5, generator=gb))
