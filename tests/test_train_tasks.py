"""Tasks without Ray: the transformer is frozen for the first K updates (no gradient reaches it) and
unfrozen afterwards; the feature encoder stays frozen; LayerDrop draws are identical across 'ranks'; every task
declared in config/tasks.py is implemented and builds the model it declares."""

from __future__ import annotations

import pytest
import torch

from unispeech_platform.config import TASK_SPECS, FinetuneSection, ModelSection, TrainSection
from unispeech_platform.train.tasks import make_task

TINY_SETTINGS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=[32] * 7, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                     mask_time_prob=0.0, layerdrop=0.0)
TINY = ModelSection(**TINY_SETTINGS, vocab_size=12)


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
    task = make_task("pretrain", ModelSection(**{**TINY.overrides(), "layerdrop": 0.5}), TrainSection(seed=3))
    a, b = task.build_model(), task.build_model()
    task.before_update(a, 7)
    task.before_update(b, 7)
    ga, gb = a.unispeech.encoder.layerdrop_generator, b.unispeech.encoder.layerdrop_generator
    assert torch.equal(torch.rand(5, generator=ga), torch.rand(5, generator=gb))


@pytest.mark.parametrize("name", list(TASK_SPECS))
def test_each_declared_task_builds_the_model_it_declares(name):
    """config/tasks.py is the one declaration of a task: its implementation resolves, builds the declared
    architecture, and the job config class and finetune.task choices follow from the declaration."""
    from unispeech_platform.config import FinetuneJobConfig, job_config_class

    spec = TASK_SPECS[name]
    labels = {"id2label": {"0": "es", "1": "pt"}} if spec.evaluator == "lid" else {}
    task = make_task(name, ModelSection(**TINY.overrides(), **labels), TrainSection())
    assert type(task.build_model()).__name__ == spec.architecture
    assert issubclass(job_config_class(name), FinetuneJobConfig) == spec.finetunes
    if spec.finetunes:
        assert FinetuneSection(task=name).task == name


def test_the_corpus_vocabulary_decides_the_model_sizes_the_section_leaves_unset():
    """One function resolves the vocabulary-dependent fields (ModelSection.settings): the tasks get the typed
    section and the vocabulary, never a resolved dict."""
    from unispeech_core import PhoneTokenizer

    tokenizer = PhoneTokenizer.from_phones(["a", "b", "c"])
    task = make_task("ctc", ModelSection(**TINY_SETTINGS), TrainSection(), tokenizer=tokenizer)
    config = task.build_model().config
    assert (config.vocab_size, config.num_ctc_classes, config.pad_token_id) == (
        len(tokenizer), len(tokenizer), tokenizer.pad_token_id)
    assert make_task("pretrain", TINY, TrainSection(), tokenizer=tokenizer).build_model().config.vocab_size == 12
